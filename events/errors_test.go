package events

import (
	"errors"
	"fmt"
	"strings"
	"testing"
)

// Each failure of Open matches its sentinel by ==-after-unwrap, errors.Is
// (also through a caller's own wrapping) and no other sentinel, and its
// message carries no key or plaintext bytes.
func TestErrorContract(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	e := samples(testInst)[KindApplicationMessageReceived]
	env := mustSeal(t, r, testBinding, e)
	flip := func(off int) []byte {
		m := append([]byte(nil), env...)
		m[off] ^= 1
		return m
	}
	h := eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time}
	future, err := seal(r, testBinding, testInst, e.Body.Kind(), 9, h, e.Body)
	if err != nil {
		t.Fatal(err)
	}
	garbled, err := seal(r, testBinding, testInst, e.Body.Kind(), 1, h, "not a body")
	if err != nil {
		t.Fatal(err)
	}
	sentinels := []error{ErrUnknownKey, ErrWrongKey, ErrTampered, ErrMoved, ErrUnknownVersion, ErrMalformed}
	cases := []struct {
		name string
		ring *Keyring
		b    Binding
		env  []byte
		want error
	}{
		{"unknown key", mustRing(t, 2, 0x11), testBinding, env, ErrUnknownKey},
		{"wrong key", mustRing(t, 1, 0x22), testBinding, env, ErrWrongKey},
		{"tampered", r, testBinding, flip(len(env) - 5), ErrTampered},
		{"moved", r, Binding{"EPOCHLOG", "el.ev.elsewhere"}, env, ErrMoved},
		{"future version", r, testBinding, future, ErrUnknownVersion},
		{"not an envelope", r, testBinding, []byte("hello, this is not an envelope of ours at all, no no no no no no no no"), ErrMalformed},
		{"short", r, testBinding, env[:10], ErrMalformed},
		{"undecodable body", r, testBinding, garbled, ErrMalformed},
	}
	for _, c := range cases {
		_, err := Open(c.ring, testInst, c.b, c.env)
		if err == nil {
			t.Fatalf("%s: opened", c.name)
		}
		wrapped := fmt.Errorf("engine: read seq 42: %w", err)
		for _, s := range sentinels {
			if got := errors.Is(wrapped, s); got != (s == c.want) {
				t.Errorf("%s: errors.Is(%v) = %v (err: %v)", c.name, s, got, err)
			}
		}
		root := err
		for u := errors.Unwrap(root); u != nil; u = errors.Unwrap(root) {
			root = u
		}
		if root != c.want {
			t.Errorf("%s: innermost error is %v, want the sentinel itself", c.name, root)
		}
		if l := leaks(err.Error(), secretMark); l != "" {
			t.Errorf("%s: error leaks plaintext (%s): %v", c.name, l, err)
		}
		if !strings.HasPrefix(err.Error(), "events: ") {
			t.Errorf("%s: error %q lacks the package prefix", c.name, err)
		}
	}
}
