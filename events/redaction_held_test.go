package events

import (
	"testing"

	"github.com/epochlog/epochlog/internal/redacttest"
)

// The key types print nothing of their keys however they are held: in an
// unexported field too, where fmt cannot call their Format and, under %s
// and %q, follows one pointer (internal/redacttest).
func TestKeysPrintNothingWhereverHeld(t *testing.T) {
	root := []byte("ROOTKEY-held-0123456789abcdef-!!")
	k, err := NewRootKey(root)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewKeyring(3, k)
	if err != nil {
		t.Fatal(err)
	}
	dkRaw := []byte("DATAKEY-held-0123456789abcdef-!!")
	dk, err := NewDataKey(dkRaw)
	if err != nil {
		t.Fatal(err)
	}
	derived := map[string][]byte{
		"root key":      root,
		"pseudonym key": r.st.pseudoKey[:],
		"binding key":   r.st.keys[3].bindingKey[:],
	}
	redacttest.Check(t, k, map[string][]byte{"root key": root})
	redacttest.Check(t, r, derived)
	redacttest.Check(t, dk, map[string][]byte{
		"data key":         dkRaw,
		"data binding key": dk.state().bindingKey[:],
	})
}
