package events

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
)

// leaks reports which rendering of secret bytes appears in out.
func leaks(out string, secret []byte) string {
	forms := map[string]string{
		"raw":       string(secret),
		"hex":       hex.EncodeToString(secret),
		"HEX":       strings.ToUpper(hex.EncodeToString(secret)),
		"base64":    base64.StdEncoding.EncodeToString(secret)[:16],
		"decimal":   strings.Trim(fmt.Sprint([]byte(secret[:6])), "[]"),
		"go-hex":    fmt.Sprintf("%#x", secret[0]) + ", " + fmt.Sprintf("%#x", secret[1]),
		"spaced-hx": fmt.Sprintf("% x", secret[:4]),
	}
	for name, f := range forms {
		if strings.Contains(out, f) {
			return name
		}
	}
	return ""
}

var verbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "% x", "%d", "%08.3x"}

var distinctiveKey = []byte("ROOTKEY-0123456789abcdef-SECRET!")

func TestRootKeyNeverPrintsBytes(t *testing.T) {
	raw := distinctiveKey
	k, err := NewRootKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	holder := struct{ Key RootKey }{k}
	// fmt cannot call methods on unexported fields; the key must not leak
	// through reflection either.
	hidden := struct{ key RootKey }{k}
	var outs []string
	for _, v := range verbs {
		outs = append(outs, fmt.Sprintf(v, k), fmt.Sprintf(v, &k), fmt.Sprintf(v, holder))
		if l := leaks(fmt.Sprintf(v, hidden), raw); l != "" {
			t.Errorf("%s of a struct with an unexported RootKey leaks (%s)", v, l)
		}
	}
	outs = append(outs, k.String(), k.GoString(), fmt.Sprint(k))
	js, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	txt, err := k.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(js), string(txt))
	for i, o := range outs {
		if l := leaks(o, raw); l != "" {
			t.Errorf("output %d leaks key bytes (%s): %s", i, l, o)
		}
		if !strings.Contains(o, "REDACTED") {
			t.Errorf("output %d is not the redacted placeholder: %s", i, o)
		}
	}
}

func TestKeyringNeverPrintsBytes(t *testing.T) {
	raw := distinctiveKey
	k, err := NewRootKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewKeyring(5, k)
	if err != nil {
		t.Fatal(err)
	}
	var outs []string
	for _, v := range verbs {
		outs = append(outs, fmt.Sprintf(v, r), fmt.Sprintf(v, struct{ R *Keyring }{r}), fmt.Sprintf(v, struct{ r *Keyring }{r}))
	}
	js, _ := json.Marshal(struct{ R *Keyring }{r})
	outs = append(outs, string(js), r.String())
	for i, o := range outs {
		if l := leaks(o, raw); l != "" {
			t.Errorf("output %d leaks key bytes (%s): %s", i, l, o)
		}
		if l := leaks(o, r.st.pseudoKey.Get()); l != "" {
			t.Errorf("output %d leaks the pseudonym key (%s): %s", i, l, o)
		}
		if l := leaks(o, r.st.keys[5].bindingKey[:]); l != "" {
			t.Errorf("output %d leaks the binding key (%s): %s", i, l, o)
		}
	}
	if !strings.Contains(r.String(), "current=5") {
		t.Errorf("keyring string %q does not show the current key id", r)
	}
}

func TestEventsNeverPrintSecrets(t *testing.T) {
	for kind, e := range samples(testInst) {
		var outs []string
		for _, v := range verbs {
			outs = append(outs, fmt.Sprintf(v, e), fmt.Sprintf(v, e.Body), fmt.Sprintf(v, &e))
		}
		js, err := json.Marshal(e)
		if err != nil {
			t.Fatal(err)
		}
		plain, err := json.Marshal(e.Body) // default encoding/json on the body
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, string(js), string(plain))
		for i, o := range outs {
			if l := leaks(o, secretMark); l != "" {
				t.Errorf("%s: output %d leaks a secret (%s): %s", kind, i, l, o)
			}
		}
		revealed, err := MarshalJSONReveal(e)
		if err != nil {
			t.Fatal(err)
		}
		hasSecret := strings.Contains(fmt.Sprintf("%v", e.Body), "REDACTED")
		if got := bytes.Contains(revealed, []byte(base64.StdEncoding.EncodeToString(secretMark)[:16])); got != hasSecret {
			t.Errorf("%s: reveal shows secret: %v, body has a secret: %v\n%s", kind, got, hasSecret, revealed)
		}
		if !bytes.Contains(js, []byte(`"kind":"`+string(kind)+`"`)) {
			t.Errorf("%s: JSON lacks the kind: %s", kind, js)
		}
	}
}

func TestSecretForms(t *testing.T) {
	s := NewSecret([]byte("hunter2-hunter2"))
	for _, v := range verbs {
		if o := fmt.Sprintf(v, s); strings.Contains(o, "hunter") || strings.Contains(o, "68756e746572") {
			t.Errorf("%s leaks: %s", v, o)
		}
	}
	if got := fmt.Sprint(s); got != "events.Secret(REDACTED, 15 bytes)" {
		t.Errorf("String = %q", got)
	}
	if got := fmt.Sprint(Secret{}); got != "events.Secret(nil)" {
		t.Errorf("nil String = %q", got)
	}
	txt, _ := s.MarshalText()
	if strings.Contains(string(txt), "hunter") {
		t.Errorf("MarshalText leaks: %s", txt)
	}
}

func TestRootKeyConstruction(t *testing.T) {
	in := bytes.Repeat([]byte{0x5a}, RootKeySize)
	k, err := NewRootKey(in)
	if err != nil {
		t.Fatal(err)
	}
	in[0] = 0
	if k.Bytes()[0] != 0x5a {
		t.Fatal("NewRootKey did not copy its input")
	}
	b := k.Bytes()
	b[1] = 0
	if k.Bytes()[1] != 0x5a {
		t.Fatal("Bytes returned the key's own array")
	}
	k2, _ := NewRootKey(bytes.Repeat([]byte{0x5a}, RootKeySize))
	k3, _ := NewRootKey(bytes.Repeat([]byte{0x5b}, RootKeySize))
	if !k.Equal(k2) || k.Equal(k3) {
		t.Fatal("Equal is wrong")
	}
	for _, n := range []int{0, 16, 31, 33, 64} {
		bad := bytes.Repeat([]byte{0x41}, n) // 'A': would show up if echoed
		_, err := NewRootKey(bad)
		if err == nil {
			t.Fatalf("%d-byte key accepted", n)
		}
		if strings.Contains(err.Error(), "AAAA") || strings.Contains(err.Error(), "4141") || strings.Contains(err.Error(), "65 65") {
			t.Errorf("error echoes the input: %v", err)
		}
	}
	if _, err := NewRootKey(make([]byte, RootKeySize)); err == nil {
		t.Error("all-zero key accepted")
	}
	g1, err := GenerateRootKey()
	if err != nil {
		t.Fatal(err)
	}
	g2, _ := GenerateRootKey()
	if g1.Equal(g2) || g1.Equal(RootKey{}) {
		t.Error("GenerateRootKey returned a repeated or zero key")
	}
}
