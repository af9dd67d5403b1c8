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
		"pseudonym key": r.st.pseudoKey.Get(),
		"binding key":   r.st.keys[3].bindingKey[:],
	}
	redacttest.Check(t, k, map[string][]byte{"root key": root})
	redacttest.Check(t, r, derived)
	redacttest.Check(t, dk, map[string][]byte{
		"data key":         dkRaw,
		"data binding key": dk.state().bindingKey[:],
	})
}

// A Secret prints nothing of its bytes however it is held: in an Event in
// an unexported field of a caller's struct, behind a pointer, in a slice
// or a map, at any depth (fmt prints an unexported field by reflection,
// without calling its Format, and slog's handlers print such a struct
// with fmt). Every sample event too, each holding secretMark in a Secret.
func TestSecretsPrintNothingWhereverHeld(t *testing.T) {
	plaintext := []byte("PLAINTEXT-held-0123456789abcdef")
	state := []byte("GROUPSTATE-held-0123456789abcdef")
	msg := Event{
		Aggregate: Aggregate{Installation: testInst, Type: AggGroup, ID: "deadbeef"},
		Position:  7,
		Time:      testTime,
		Body: ApplicationMessageReceived{GroupID: []byte{0xde, 0xad}, Epoch: 3, SenderLeaf: 1, Sender: "bob",
			MessageID: []byte("m-1"), Content: NewSecret(plaintext)},
	}
	commit := CommitApplied{GroupID: []byte{0xde, 0xad}, Epoch: 4, State: NewSecret(state)}
	type inner struct {
		ev     Event
		evs    []Event
		byID   map[string]*Event
		commit *CommitApplied
		raw    Secret
	}
	type handler struct {
		last  inner
		inner *inner
		all   []inner
	}
	in := inner{ev: msg, evs: []Event{msg}, byID: map[string]*Event{"m-1": &msg}, commit: &commit, raw: NewSecret(plaintext)}
	secrets := map[string][]byte{"plaintext": plaintext, "group state": state}
	redacttest.Check(t, handler{last: in, inner: &in, all: []inner{in}}, secrets)
	redacttest.Check(t, msg, secrets)

	type pending struct{ evs []Event }
	var all pending
	for _, e := range samples(testInst) {
		all.evs = append(all.evs, e)
	}
	redacttest.Check(t, all, map[string][]byte{"sample secret": secretMark})
}

// ringHolder is a caller's struct holding a Keyring by value, as the zero
// Keyring allows.
type ringHolder struct {
	name string
	ring Keyring
}

// A Keyring held by value in a caller's struct prints none of its keys
// either: fmt's bad-verb path (%s, %q on the struct's pointer) prints
// what the Keyring's state pointer points to, so no key may be held
// inline there.
func TestKeyringHeldByValuePrintsNoKey(t *testing.T) {
	root := []byte("ROOTKEY-byvalue-0123456789abcde!")
	k, err := NewRootKey(root)
	if err != nil {
		t.Fatal(err)
	}
	h := &ringHolder{name: "svc"}
	if err := h.ring.Add(2, k); err != nil {
		t.Fatal(err)
	}
	if h.ring.Pseudonym("x") == "" {
		t.Fatal("a zero Keyring given a key derives no pseudonyms")
	}
	secrets := map[string][]byte{
		"root key":      root,
		"pseudonym key": h.ring.st.pseudoKey.Get(),
		"binding key":   h.ring.st.keys[2].bindingKey[:],
	}
	redacttest.Check(t, h, secrets)
	redacttest.Check(t, []*ringHolder{h}, secrets)
	redacttest.Check(t, map[string]*ringHolder{"svc": h}, secrets)
}
