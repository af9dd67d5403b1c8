// Package redacttest checks, for the tests of the packages that hold
// secrets, that a value prints none of them however it is printed: under
// every fmt verb, as a value and as a pointer, nested in an exported and in
// an unexported field (where fmt cannot call the field's methods), and
// through slog's text and JSON handlers.
package redacttest

import (
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"log/slog"
	"reflect"
	"strconv"
	"strings"
	"testing"
)

// Verbs are the fmt verbs every value is printed with.
var Verbs = []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d"}

// minSecret is the shortest secret Check accepts: shorter ones could match
// by chance, or be empty and match nothing.
const minSecret = 8

// Leak reports which rendering of secret ("raw", "hex", ...) appears in
// out, or "" if none does. It looks for the first minSecret bytes in each
// form fmt, strconv, encoding/json and slog write bytes in.
func Leak(out string, secret []byte) string {
	s := secret[:min(len(secret), minSecret)]
	var dec, goHex strings.Builder
	for i, b := range s {
		if i > 0 {
			dec.WriteString(" ")
			goHex.WriteString(", ")
		}
		fmt.Fprintf(&dec, "%d", b)
		fmt.Fprintf(&goHex, "%#x", b)
	}
	quoted := strconv.Quote(string(s))
	forms := []struct{ name, form string }{
		{"raw", string(s)},
		{"hex", hex.EncodeToString(s)},
		{"HEX", strings.ToUpper(hex.EncodeToString(s))},
		{"spaced hex", fmt.Sprintf("% x", s)},
		{"decimal", dec.String()},
		{"Go hex", goHex.String()},
		{"quoted", quoted[1 : len(quoted)-1]},
		// The first 6 bytes are the first 8 characters of the encodings
		// of the whole secret, wherever their padding falls.
		{"base64", base64.StdEncoding.EncodeToString(secret)[:8]},
		{"base64url", base64.URLEncoding.EncodeToString(secret)[:8]},
	}
	for _, f := range forms {
		if strings.Contains(out, f.form) {
			return f.name
		}
	}
	return ""
}

// Renderings returns v printed every way Check looks at, keyed by how.
func Renderings[T any](v T) map[string]string {
	outs := map[string]string{}
	p := &v
	shapes := map[string]any{
		"value":              v,
		"pointer":            p,
		"exported field":     struct{ V T }{v},
		"unexported field":   struct{ v T }{v},
		"exported pointer":   struct{ P *T }{p},
		"unexported pointer": struct{ p *T }{p},
	}
	// A pointer is printed as what it points to too: a caller may
	// dereference, unless the value holds a lock (go vet's copylocks
	// refuses the copy that printing it would make).
	if rv := reflect.ValueOf(v); rv.Kind() == reflect.Pointer && !rv.IsNil() && !holdsLock(rv.Type().Elem()) {
		e := rv.Elem().Interface()
		shapes["pointee"] = e
		shapes["pointee in exported field"] = struct{ V any }{e}
		shapes["pointee in unexported field"] = struct{ v any }{e}
	}
	for shape, x := range shapes {
		for _, verb := range Verbs {
			outs[shape+" "+verb] = fmt.Sprintf(verb, x)
		}
		var text, js bytes.Buffer
		slog.New(slog.NewTextHandler(&text, nil)).Info("m", slog.Any("v", x))
		slog.New(slog.NewJSONHandler(&js, nil)).Info("m", slog.Any("v", x))
		outs[shape+" slog text"] = text.String()
		outs[shape+" slog JSON"] = js.String()
	}
	return outs
}

// holdsLock reports whether a value of type t holds, not behind a
// pointer, something with a Lock method (a sync.Mutex, ...), as go vet's
// copylocks check does.
func holdsLock(t reflect.Type) bool {
	if _, ok := reflect.PointerTo(t).MethodByName("Lock"); ok {
		return true
	}
	switch t.Kind() {
	case reflect.Struct:
		for i := range t.NumField() {
			if holdsLock(t.Field(i).Type) {
				return true
			}
		}
	case reflect.Array:
		return holdsLock(t.Elem())
	}
	return false
}

// Check fails t for every rendering of v (see [Renderings]) that shows any
// of secrets, named by the keys of the map. A secret shorter than 8 bytes
// fails the test, so that a check cannot pass because the value held no
// secret.
func Check[T any](t testing.TB, v T, secrets map[string][]byte) {
	t.Helper()
	if len(secrets) == 0 {
		t.Fatal("redacttest: no secrets to look for")
	}
	for name, s := range secrets {
		if len(s) < minSecret {
			t.Fatalf("redacttest: secret %s is %d bytes, want at least %d: the check would be vacuous", name, len(s), minSecret)
		}
	}
	for how, out := range Renderings(v) {
		for name, s := range secrets {
			if form := Leak(out, s); form != "" {
				t.Errorf("%T printed as %s shows %s (%s):\n%s", v, how, name, form, out)
			}
		}
	}
}
