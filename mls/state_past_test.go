package mls

import (
	"bytes"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/mls/codec"
)

// pastEpochWorld builds a group of 9 members whose retained past epochs
// differ from one another by an update, an add, and a removal of the
// last leaves (the tree shrinks from 16 leaves to 8): each member holds
// a late message of each past epoch, sealed by leaf 8 or the member
// removed with it, still unopened.
func pastEpochWorld(t *testing.T) (w *scWorld, late map[uint64]*MLSMessage, text map[uint64]string) {
	t.Helper()
	w = newSCWorld(t, Options{MaxPastEpochs: 3})
	w.grow(0, 9) // leaves 0..9: 16 leaves
	late, text = map[uint64]*MLSMessage{}, map[uint64]string{}
	keep := func(from LeafIndex, s string) {
		e := w.members[from].Epoch()
		late[e], text[e] = w.seal(from, s), s
	}
	keep(9, "from 9, before the path update")
	w.commit(2, CommitOptions{ForcePath: true})
	keep(9, "from 9, before the removal")
	w.commit(1, CommitOptions{Remove: []LeafIndex{8, 9}})
	if n := w.members[0].Tree().LeafCount(); n != 8 {
		t.Fatalf("the tree has %d leaves after the removal, want 8", n)
	}
	keep(7, "from 7, before the add")
	w.grow(3, 1)
	return w, late, text
}

// TestStatePastEpochsAsLeafDifferences checks the current layout: a past
// epoch is stored as its leaves' differences from the next epoch's, the
// bytes re-encode unchanged, and a loaded state opens the late messages
// of each past epoch, naming the sender of that epoch, as the state it
// was saved from does.
func TestStatePastEpochsAsLeafDifferences(t *testing.T) {
	w, late, text := pastEpochWorld(t)
	g := w.members[0]
	if len(g.past) != 3 {
		t.Fatalf("%d past epochs kept, want 3", len(g.past))
	}
	b, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if b[0] != stateVersion {
		t.Fatalf("state version %d, want %d", b[0], stateVersion)
	}
	legacy, err := g.marshalState(true)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := g.Tree().Marshal()
	if err != nil {
		t.Fatal(err)
	}
	// Three whole trees fewer, give or take the few leaves listed.
	if len(b) > len(legacy)-2*len(tree) {
		t.Fatalf("state of %d bytes, %d in version 2, trees of %d bytes: past epochs not stored as differences", len(b), len(legacy), len(tree))
	}
	loaded, err := UnmarshalState(b)
	if err != nil {
		t.Fatal(err)
	}
	again, err := loaded.MarshalBinary()
	if err != nil || !bytes.Equal(again, b) {
		t.Fatalf("a loaded state re-encodes to other bytes (%v)", err)
	}
	for i, p := range loaded.past {
		want := g.past[i].leaves
		if len(p.leaves) != len(want) {
			t.Fatalf("past epoch %d: %d leaves, want %d", p.ctx.Epoch, len(p.leaves), len(want))
		}
		for l := range want {
			if !sameLeaf(p.leaves[l], want[l]) {
				t.Fatalf("past epoch %d: leaf %d differs after loading", p.ctx.Epoch, l)
			}
		}
	}
	if n := loaded.past[1].leaves.LeafCount(); n != 16 {
		t.Fatalf("the epoch before the removal has %d leaves after loading, want 16", n)
	}
	for _, h := range []*Group{g, loaded} {
		for e, m := range late {
			_, r, err := h.Process(m)
			if err != nil {
				t.Fatalf("late message of epoch %d: %v", e, err)
			}
			if string(r.ApplicationData) != text[e] || r.Epoch != e {
				t.Fatalf("late message of epoch %d: %q of epoch %d", e, r.ApplicationData, r.Epoch)
			}
			sender := h.past[slicesIndexEpoch(h, e)].leaves.Leaf(r.Sender)
			if sender == nil || !bytes.Equal(r.SenderCredential.Identity, sender.Credential.Identity) {
				t.Fatalf("late message of epoch %d: sender %d not named as in its epoch", e, r.Sender)
			}
		}
	}
}

func slicesIndexEpoch(g *Group, e uint64) int {
	for i, p := range g.past {
		if p.ctx.Epoch == e {
			return i
		}
	}
	return -1
}

// TestStateVersion2Loads checks that a state in version 2's layout (each
// past epoch's tree whole; what the golden stream holds) still loads,
// opens the late messages of its past epochs, and is written again in
// the current layout with the same bytes as the state it came from.
// Version 3 (2 with a ReInit) is covered by the ReInit tests' reload.
func TestStateVersion2Loads(t *testing.T) {
	w, late, text := pastEpochWorld(t)
	for _, l := range []LeafIndex{0, 4} {
		g := w.members[l]
		legacy, err := g.marshalState(true)
		if err != nil {
			t.Fatal(err)
		}
		if legacy[0] != stateVersionV2 {
			t.Fatalf("legacy state version %d", legacy[0])
		}
		loaded, err := UnmarshalState(legacy)
		if err != nil {
			t.Fatalf("leaf %d: version 2 state: %v", l, err)
		}
		want, _ := g.MarshalBinary()
		got, err := loaded.MarshalBinary()
		if err != nil || !bytes.Equal(got, want) {
			t.Fatalf("leaf %d: a version 2 state re-encodes to other bytes than its group (%v)", l, err)
		}
		for e, m := range late {
			if _, data, err := loaded.OpenApplication(m); err != nil || string(data) != text[e] {
				t.Fatalf("leaf %d: late message of epoch %d from a version 2 state: %q, %v", l, e, data, err)
			}
		}
		// The loaded state goes on: the next commit retires an epoch.
		w.members[l] = loaded
	}
	w.commit(4, CommitOptions{ForcePath: true})
	w.open(0, w.seal(4, "next epoch"), "next epoch")
}

// TestStateLeafDifferencesRefused checks that malformed leaf differences
// are refused with ErrDecode: out of order, listed though equal, and a
// leaf count the input cannot back.
func TestStateLeafDifferencesRefused(t *testing.T) {
	w, _, _ := pastEpochWorld(t)
	newer := leavesOf(w.members[0].Tree())
	leaf := newer[0]
	enc := func(n uint32, entries ...func(w *codec.Writer)) []byte {
		var cw codec.Writer
		cw.Uint32(n)
		cw.VectorV(func(w *codec.Writer) {
			for _, e := range entries {
				e(w)
			}
		})
		b, err := cw.Finish()
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	entry := func(i uint32, ln *LeafNode) func(w *codec.Writer) {
		return func(w *codec.Writer) {
			w.Uint32(i)
			w.Optional(ln != nil)
			if ln != nil {
				ln.marshal(w)
			}
		}
	}
	for name, b := range map[string][]byte{
		"not a power of two": enc(6),
		"beyond its leaves":  enc(8, entry(8, nil)),
		"out of order":       enc(8, entry(3, nil), entry(2, nil)),
		"equal to newer's":   enc(8, entry(1, newer[1])),
		"unbacked count":     enc(1<<20, entry(9, leaf)),
	} {
		if _, err := readLeafDiff(codec.NewReader(b), newer); !errors.Is(err, ErrDecode) {
			t.Errorf("%s: err = %v, want ErrDecode", name, err)
		}
	}
	if l, err := readLeafDiff(codec.NewReader(enc(16, entry(9, leaf))), newer); err != nil || len(l) != 16 || !sameLeaf(l[9], leaf) || l[0] != newer[0] {
		t.Fatalf("a valid difference: %d leaves, %v", len(l), err)
	}
}
