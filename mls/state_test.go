package mls

import (
	"bytes"
	"testing"
)

// FuzzUnmarshalState checks that loading arbitrary bytes never panics and
// that every state that loads re-encodes to the same bytes.
func FuzzUnmarshalState(f *testing.F) {
	w := newSCWorld(f, Options{MaxPastEpochs: 1})
	w.grow(0, 2)
	w.open(1, w.seal(0, "x"), "x")
	w.commit(1, CommitOptions{ForcePath: true})
	for _, g := range w.members {
		b, err := g.MarshalBinary()
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		g, err := UnmarshalState(b)
		if err != nil {
			return
		}
		again, err := g.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(again, b) {
			t.Fatal("state does not re-encode to its input")
		}
	})
}
