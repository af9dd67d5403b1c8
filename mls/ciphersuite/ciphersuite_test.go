package ciphersuite_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

func supported(t testing.TB) []*ciphersuite.CipherSuite {
	t.Helper()
	return lookupAll(t, ciphersuite.SupportedSuites()...)
}

// lookupAll looks up every suite of ids, failing the test on an error.
func lookupAll(t testing.TB, ids ...ciphersuite.Suite) []*ciphersuite.CipherSuite {
	t.Helper()
	var out []*ciphersuite.CipherSuite
	for _, id := range ids {
		cs, err := ciphersuite.Lookup(id)
		if err != nil {
			t.Fatalf("Lookup(%d): %v", id, err)
		}
		out = append(out, cs)
	}
	return out
}

func TestLookup(t *testing.T) {
	for _, id := range []ciphersuite.Suite{0, 8, 0xf000, 0xffff} {
		_, err := ciphersuite.Lookup(id)
		if !errors.Is(err, ciphersuite.ErrUnsupportedSuite) {
			t.Errorf("Lookup(%d) err = %v, want ErrUnsupportedSuite", id, err)
		}
		if id.Supported() {
			t.Errorf("Suite(%d).Supported() = true", id)
		}
	}
	if got := ciphersuite.SupportedSuites(); !slices.Equal(got, []ciphersuite.Suite{1, 2, 3, 4, 5, 6, 7}) {
		t.Errorf("SupportedSuites() = %d, want every registered suite, 1 to 7", got)
	}
	want := map[ciphersuite.Suite][3]int{1: {32, 16, 12}, 2: {32, 16, 12}, 3: {32, 32, 12}, 4: {64, 32, 12},
		5: {64, 32, 12}, 6: {64, 32, 12}, 7: {48, 32, 12}}
	for _, cs := range supported(t) {
		got := [3]int{cs.Nh(), cs.Nk(), cs.Nn()}
		if got != want[cs.ID()] || !cs.ID().Supported() {
			t.Errorf("%s: Nh/Nk/Nn = %v, want %v", cs, got, want[cs.ID()])
		}
	}
	if ciphersuite.Default.String() != "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519" {
		t.Errorf("Default = %s", ciphersuite.Default)
	}
}

func TestAEAD(t *testing.T) {
	for _, cs := range supported(t) {
		t.Run(fmt.Sprint(uint16(cs.ID())), func(t *testing.T) {
			key := bytes.Repeat([]byte{7}, cs.Nk())
			nonce := bytes.Repeat([]byte{9}, cs.Nn())
			ct, err := cs.Seal(key, nonce, []byte("aad"), []byte("plaintext"))
			if err != nil {
				t.Fatal(err)
			}
			pt, err := cs.Open(key, nonce, []byte("aad"), ct)
			if err != nil || string(pt) != "plaintext" {
				t.Fatalf("Open = %q, %v", pt, err)
			}
			if _, err := cs.Open(key, nonce, []byte("other"), ct); !errors.Is(err, ciphersuite.ErrDecrypt) {
				t.Fatalf("Open with other aad err = %v, want ErrDecrypt", err)
			}
			ct[0] ^= 1
			if _, err := cs.Open(key, nonce, []byte("aad"), ct); err != ciphersuite.ErrDecrypt {
				t.Fatalf("Open of tampered ciphertext err = %v, want exactly ErrDecrypt", err)
			}
			if _, err := cs.Seal(key[1:], nonce, nil, nil); !errors.Is(err, ciphersuite.ErrInvalidKey) {
				t.Fatalf("Seal with short key err = %v, want ErrInvalidKey", err)
			}
			if _, err := cs.Seal(key, nonce[1:], nil, nil); !errors.Is(err, ciphersuite.ErrInvalidKey) {
				t.Fatalf("Seal with short nonce err = %v, want ErrInvalidKey", err)
			}
		})
	}
}

func TestGeneratedKeys(t *testing.T) {
	for _, cs := range supported(t) {
		t.Run(fmt.Sprint(uint16(cs.ID())), func(t *testing.T) {
			sk, err := cs.GenerateSignatureKey()
			if err != nil {
				t.Fatal(err)
			}
			if err := cs.ValidateSignaturePublicKey(sk.PublicKey()); err != nil {
				t.Fatal(err)
			}
			parsed, err := cs.ParseSignaturePrivateKey(sk.Bytes())
			if err != nil || !parsed.Equal(sk) || !bytes.Equal(parsed.PublicKey(), sk.PublicKey()) {
				t.Fatalf("signature key does not round-trip through Bytes: %v", err)
			}
			other, _ := cs.GenerateSignatureKey()
			if other.Equal(sk) {
				t.Fatal("two generated signature keys are Equal")
			}
			sig, err := cs.SignWithLabel(sk, "Test", []byte("content"))
			if err != nil {
				t.Fatal(err)
			}
			if err := cs.VerifyWithLabel(sk.PublicKey(), "Test", []byte("content"), sig); err != nil {
				t.Fatal(err)
			}
			if err := cs.VerifyWithLabel(other.PublicKey(), "Test", []byte("content"), sig); err != ciphersuite.ErrBadSignature {
				t.Fatalf("verify under another key err = %v, want ErrBadSignature", err)
			}
			if err := cs.VerifyWithLabel([]byte{1, 2, 3}, "Test", []byte("content"), sig); err != ciphersuite.ErrBadSignature {
				t.Fatalf("verify with malformed key err = %v, want ErrBadSignature", err)
			}
			if err := cs.ValidateSignaturePublicKey([]byte{1, 2, 3}); !errors.Is(err, ciphersuite.ErrInvalidKey) {
				t.Fatalf("ValidateSignaturePublicKey(garbage) err = %v", err)
			}

			hk, err := cs.GenerateHPKEKey()
			if err != nil {
				t.Fatal(err)
			}
			if err := cs.ValidateHPKEPublicKey(hk.PublicKey()); err != nil {
				t.Fatal(err)
			}
			hp, err := cs.ParseHPKEPrivateKey(hk.Bytes())
			if err != nil || !hp.Equal(hk) || !bytes.Equal(hp.PublicKey(), hk.PublicKey()) {
				t.Fatalf("HPKE key does not round-trip through Bytes: %v", err)
			}
			kem, ct, err := cs.EncryptWithLabel(hk.PublicKey(), "Test", []byte("ctx"), []byte("msg"))
			if err != nil {
				t.Fatal(err)
			}
			hk2, _ := cs.GenerateHPKEKey()
			if _, err := cs.DecryptWithLabel(hk2, "Test", []byte("ctx"), kem, ct); err != ciphersuite.ErrDecrypt {
				t.Fatalf("decrypt with another key err = %v, want ErrDecrypt", err)
			}
			if _, err := cs.DecryptWithLabel(hk, "Test", []byte("ctx"), kem[:len(kem)-1], ct); err != ciphersuite.ErrDecrypt {
				t.Fatalf("decrypt with truncated kem output err = %v, want ErrDecrypt", err)
			}

			a, err := cs.DeriveKeyPair([]byte("ikm"))
			if err != nil {
				t.Fatal(err)
			}
			b, _ := cs.DeriveKeyPair([]byte("ikm"))
			if !a.Equal(b) || !bytes.Equal(a.PublicKey(), b.PublicKey()) {
				t.Fatal("DeriveKeyPair is not deterministic")
			}
		})
	}
}

func TestKeysFromOtherSuiteRejected(t *testing.T) {
	cs1, _ := ciphersuite.Lookup(1)
	cs3, _ := ciphersuite.Lookup(3)
	sk, _ := cs1.GenerateSignatureKey()
	if _, err := cs3.SignWithLabel(sk, "x", nil); !errors.Is(err, ciphersuite.ErrInvalidKey) {
		t.Fatalf("signing with a suite-1 key under suite 3: err = %v", err)
	}
	hk, _ := cs1.GenerateHPKEKey()
	if _, err := cs3.DecryptWithLabel(hk, "x", nil, nil, nil); !errors.Is(err, ciphersuite.ErrInvalidKey) {
		t.Fatalf("decrypting with a suite-1 key under suite 3: err = %v", err)
	}
}

// TestSecretsNeverPrint checks that secret-holding types show no key bytes
// under any fmt verb, inside structs, or in JSON.
func TestSecretsNeverPrint(t *testing.T) {
	cs, _ := ciphersuite.Lookup(ciphersuite.Default)
	raw := bytes.Repeat([]byte{0xab}, 32)
	sec := ciphersuite.NewSecret(raw)
	sk, _ := cs.ParseSignaturePrivateKey(raw)
	hk, _ := cs.ParseHPKEPrivateKey(raw)
	type holder struct {
		S  ciphersuite.Secret
		SK *ciphersuite.SignaturePrivateKey
		HK *ciphersuite.HPKEPrivateKey
	}
	h := holder{sec, sk, hk}
	forbidden := []string{"abab", "171, 171", "ABAB", "\xab\xab"}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		for _, v := range []any{sec, sk, hk, h, &h} {
			out := fmt.Sprintf(verb, v)
			for _, f := range forbidden {
				if strings.Contains(out, f) {
					t.Errorf("fmt %s of %T leaks key bytes: %s", verb, v, out)
				}
			}
		}
	}
	for _, v := range []any{sec, sk, hk, h} {
		if _, err := json.Marshal(v); !errors.Is(err, ciphersuite.ErrSecretMarshal) {
			t.Errorf("json.Marshal(%T) err = %v, want ErrSecretMarshal", v, err)
		}
	}
	if _, err := cs.ParseSignaturePrivateKey(raw[:5]); err == nil || strings.Contains(err.Error(), "abab") {
		t.Errorf("parse error of a short key: %v", err)
	}
}

func TestSecretCopies(t *testing.T) {
	raw := []byte{1, 2, 3}
	s := ciphersuite.NewSecret(raw)
	raw[0] = 9
	b := s.Bytes()
	b[1] = 9
	if !s.Equal(ciphersuite.NewSecret([]byte{1, 2, 3})) || s.Len() != 3 || s.IsZero() {
		t.Fatal("Secret does not copy its bytes in and out")
	}
	if s.Equal(ciphersuite.NewSecret([]byte{1, 2})) || !(ciphersuite.Secret{}).IsZero() {
		t.Fatal("Secret.Equal/IsZero wrong")
	}
}

func TestMAC(t *testing.T) {
	for _, cs := range supported(t) {
		tag := cs.MAC([]byte("key"), []byte("data"))
		if len(tag) != cs.Nh() || !cs.VerifyMAC([]byte("key"), []byte("data"), tag) || cs.VerifyMAC([]byte("kez"), []byte("data"), tag) {
			t.Errorf("%s: MAC/VerifyMAC inconsistent", cs)
		}
	}
}

func TestExpandWithLabelLimits(t *testing.T) {
	cs, _ := ciphersuite.Lookup(1)
	if _, err := cs.ExpandWithLabel(make([]byte, 32), "x", nil, 1<<16); err == nil {
		t.Fatal("ExpandWithLabel with length 2^16 succeeded")
	}
	if _, err := cs.ExpandWithLabel(make([]byte, 32), "x", nil, 255*32+1); err == nil {
		t.Fatal("ExpandWithLabel beyond 255*Nh succeeded")
	}
}

func BenchmarkExpandWithLabel(b *testing.B) {
	for _, cs := range supported(b) {
		b.Run(fmt.Sprint(uint16(cs.ID())), func(b *testing.B) {
			secret := make([]byte, cs.Nh())
			for b.Loop() {
				if _, err := cs.ExpandWithLabel(secret, "key", []byte("context"), cs.Nk()); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSignWithLabel(b *testing.B) {
	for _, cs := range supported(b) {
		b.Run(fmt.Sprint(uint16(cs.ID())), func(b *testing.B) {
			sk, _ := cs.GenerateSignatureKey()
			content := make([]byte, 256)
			for b.Loop() {
				if _, err := cs.SignWithLabel(sk, "FramedContentTBS", content); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkEncryptWithLabel and BenchmarkDecryptWithLabel time the HPKE
// step a commit repeats per path recipient: an Nh-byte path secret
// sealed to (opened with) a leaf's key.
func BenchmarkEncryptWithLabel(b *testing.B) {
	for _, cs := range supported(b) {
		b.Run(fmt.Sprint(uint16(cs.ID())), func(b *testing.B) {
			k, err := cs.GenerateHPKEKey()
			if err != nil {
				b.Fatal(err)
			}
			pub, secret, context := k.PublicKey(), make([]byte, cs.Nh()), make([]byte, 64)
			for b.Loop() {
				if _, _, err := cs.EncryptWithLabel(pub, "UpdatePathNode", context, secret); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkDecryptWithLabel(b *testing.B) {
	for _, cs := range supported(b) {
		b.Run(fmt.Sprint(uint16(cs.ID())), func(b *testing.B) {
			k, err := cs.GenerateHPKEKey()
			if err != nil {
				b.Fatal(err)
			}
			secret, context := make([]byte, cs.Nh()), make([]byte, 64)
			kem, ct, err := cs.EncryptWithLabel(k.PublicKey(), "UpdatePathNode", context, secret)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, err := cs.DecryptWithLabel(k, "UpdatePathNode", context, kem, ct); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkVerifyWithLabel(b *testing.B) {
	for _, cs := range supported(b) {
		b.Run(fmt.Sprint(uint16(cs.ID())), func(b *testing.B) {
			sk, _ := cs.GenerateSignatureKey()
			content := make([]byte, 256)
			sig, _ := cs.SignWithLabel(sk, "FramedContentTBS", content)
			pub := sk.PublicKey()
			for b.Loop() {
				if err := cs.VerifyWithLabel(pub, "FramedContentTBS", content, sig); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// TestShortScalarsLeftPadded: a P-521 private key whose leading byte is
// zero, serialized without it (as the official vectors do for one key),
// parses to the same key; a key longer than the curve's size is refused.
func TestShortScalarsLeftPadded(t *testing.T) {
	cs, err := ciphersuite.Lookup(ciphersuite.MLS256DHKEMP521AES256GCMSHA512P521)
	if err != nil {
		t.Fatal(err)
	}
	// The top byte of a P-521 scalar is 0 or 1, so about half of the keys
	// start with a zero byte; 64 tries miss with probability 2^-64.
	var sig *ciphersuite.SignaturePrivateKey
	var hk *ciphersuite.HPKEPrivateKey
	for i := 0; i < 64 && (sig == nil || hk == nil); i++ {
		if k, err := cs.GenerateSignatureKey(); err == nil && k.Bytes()[0] == 0 && sig == nil {
			sig = k
		}
		if k, err := cs.GenerateHPKEKey(); err == nil && k.Bytes()[0] == 0 && hk == nil {
			hk = k
		}
	}
	if sig == nil || hk == nil {
		t.Fatal("no P-521 key with a leading zero byte in 64 tries")
	}
	short := sig.Bytes()[1:]
	got, err := cs.ParseSignaturePrivateKey(short)
	if err != nil {
		t.Fatalf("65-byte P-521 signature key: %v", err)
	}
	if !got.Equal(sig) || !bytes.Equal(got.PublicKey(), sig.PublicKey()) {
		t.Error("65-byte P-521 signature key parsed to another key")
	}
	gotH, err := cs.ParseHPKEPrivateKey(hk.Bytes()[1:])
	if err != nil {
		t.Fatalf("65-byte P-521 HPKE key: %v", err)
	}
	if !gotH.Equal(hk) || !bytes.Equal(gotH.PublicKey(), hk.PublicKey()) {
		t.Error("65-byte P-521 HPKE key parsed to another key")
	}
	long := append([]byte{0}, sig.Bytes()...)
	if _, err := cs.ParseSignaturePrivateKey(long); !errors.Is(err, ciphersuite.ErrInvalidKey) {
		t.Errorf("67-byte P-521 key: err = %v, want ErrInvalidKey", err)
	}
	if _, err := cs.ParseHPKEPrivateKey(append([]byte{0}, hk.Bytes()...)); !errors.Is(err, ciphersuite.ErrInvalidKey) {
		t.Errorf("67-byte P-521 HPKE key: err = %v, want ErrInvalidKey", err)
	}
	// The padding never turns an all-zero (invalid) scalar into a key.
	if _, err := cs.ParseSignaturePrivateKey([]byte{0}); !errors.Is(err, ciphersuite.ErrInvalidKey) {
		t.Errorf("zero scalar: err = %v, want ErrInvalidKey", err)
	}
}

// A low-order X25519 or X448 point has the right length but no HPKE
// encryption to it succeeds (the DH output is all zeros, RFC 7748 §6,
// which RFC 9180 §7.1.4 has senders refuse). ValidateHPKEPublicKey
// refuses it, so that a tree node or a key package carrying one is
// refused when it arrives, not when a member next tries to encrypt to it.
func TestValidateHPKEPublicKeyRefusesLowOrderPoints(t *testing.T) {
	for _, c := range []struct {
		suite ciphersuite.Suite
		size  int
	}{
		{ciphersuite.MLS128DHKEMX25519AES128GCMSHA256Ed25519, 32},
		{ciphersuite.MLS128DHKEMX25519ChaCha20Poly1305SHA256Ed25519, 32},
		{ciphersuite.MLS256DHKEMX448AES256GCMSHA512Ed448, 56},
		{ciphersuite.MLS256DHKEMX448ChaCha20Poly1305SHA512Ed448, 56},
	} {
		cs, err := ciphersuite.Lookup(c.suite)
		if err != nil {
			t.Fatal(err)
		}
		one := make([]byte, c.size)
		one[0] = 1
		for name, pub := range map[string][]byte{"zero": make([]byte, c.size), "one": one} {
			if err := cs.ValidateHPKEPublicKey(pub); !errors.Is(err, ciphersuite.ErrInvalidKey) {
				t.Errorf("suite %d, the point %s: %v, want ErrInvalidKey", c.suite, name, err)
			}
			if _, _, err := cs.EncryptWithLabel(pub, "test", nil, []byte("x")); err == nil {
				t.Errorf("suite %d: encrypting to the point %s succeeded; the test's premise is wrong", c.suite, name)
			}
		}
		k, err := cs.GenerateHPKEKey()
		if err != nil {
			t.Fatal(err)
		}
		if err := cs.ValidateHPKEPublicKey(k.PublicKey()); err != nil {
			t.Errorf("suite %d: a generated key: %v", c.suite, err)
		}
	}
}
