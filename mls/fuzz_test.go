package mls

import (
	"bytes"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

// seedMessages adds one field of every messages.json case to f's corpus;
// strip drops the MLSMessage header (version, wire format) to seed the
// inner structure.
func seedMessages(f *testing.F, field func(c *messagesCase) []byte, strip int) {
	var cases []messagesCase
	vectortest.Load(f, "messages.json", &cases)
	for i := range cases {
		b := field(&cases[i])
		if len(b) >= strip {
			f.Add(b[strip:])
		}
	}
}

// fuzzRoundTrip requires that decoding never panics and that every
// successful decode re-encodes to exactly the input.
func fuzzRoundTrip(t *testing.T, in []byte, decode func([]byte) error, encode func() ([]byte, error)) {
	if err := decode(in); err != nil {
		return
	}
	out, err := encode()
	if err != nil {
		t.Fatalf("decoded input does not re-encode: %v", err)
	}
	if !bytes.Equal(out, in) {
		t.Fatalf("round trip changed the bytes:\n in  %x\n out %x", in, out)
	}
}

func FuzzMLSMessage(f *testing.F) {
	for _, field := range []func(c *messagesCase) []byte{
		func(c *messagesCase) []byte { return c.MLSWelcome },
		func(c *messagesCase) []byte { return c.MLSGroupInfo },
		func(c *messagesCase) []byte { return c.MLSKeyPackage },
		func(c *messagesCase) []byte { return c.PublicMessageApplication },
		func(c *messagesCase) []byte { return c.PublicMessageProposal },
		func(c *messagesCase) []byte { return c.PublicMessageCommit },
		func(c *messagesCase) []byte { return c.PrivateMessage },
	} {
		seedMessages(f, field, 0)
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var m MLSMessage
		fuzzRoundTrip(t, in, m.Unmarshal, m.Marshal)
	})
}

func FuzzKeyPackage(f *testing.F) {
	seedMessages(f, func(c *messagesCase) []byte { return c.MLSKeyPackage }, 4)
	f.Fuzz(func(t *testing.T, in []byte) {
		var kp KeyPackage
		fuzzRoundTrip(t, in, kp.Unmarshal, kp.Marshal)
	})
}

func FuzzWelcome(f *testing.F) {
	seedMessages(f, func(c *messagesCase) []byte { return c.MLSWelcome }, 4)
	f.Fuzz(func(t *testing.T, in []byte) {
		var w Welcome
		fuzzRoundTrip(t, in, w.Unmarshal, w.Marshal)
	})
}

func FuzzGroupInfo(f *testing.F) {
	seedMessages(f, func(c *messagesCase) []byte { return c.MLSGroupInfo }, 4)
	f.Fuzz(func(t *testing.T, in []byte) {
		var gi GroupInfo
		fuzzRoundTrip(t, in, gi.Unmarshal, gi.Marshal)
	})
}

func FuzzRatchetTree(f *testing.F) {
	seedMessages(f, func(c *messagesCase) []byte { return c.RatchetTree }, 0)
	var tv []treeValidationCase
	vectortest.Load(f, "tree-validation.json", &tv)
	for _, c := range tv {
		f.Add([]byte(c.Tree))
	}
	cs := mustSuite(f, ciphersuite.Default)
	f.Fuzz(func(t *testing.T, in []byte) {
		var tv treeValue
		fuzzRoundTrip(t, in, tv.Unmarshal, tv.Marshal)
		if tv.t.NodeWidth() == 0 || len(in) > 4096 {
			return
		}
		// Whatever decodes must be safe to hash, resolve, validate and
		// edit: errors are fine, panics are not.
		_, _ = tv.t.TreeHash(cs)
		_ = tv.t.Validate(cs, []byte("fuzz"), nil)
		for x := 0; x < tv.t.NodeWidth(); x++ {
			_ = tv.t.Resolution(NodeIndex(x))
		}
		_, _ = tv.t.RemoveLeaf(LeafIndex(tv.t.LeafCount() - 1))
		_, _ = tv.t.RemoveLeaf(1 << 31)
		if leaf := tv.t.Leaf(0); leaf != nil {
			_, _ = tv.t.AddLeaf(leaf)
			_ = tv.t.FilteredDirectPath(0)
		}
	})
}

// FuzzUnmarshalSecretTree feeds saved secret trees (as a Group stores them
// for its current and past epochs) to the strict decoder: no panic, and
// whatever decodes re-encodes to the input and hands out keys without
// panicking.
func FuzzUnmarshalSecretTree(f *testing.F) {
	w := newSCWorld(f, Options{MaxForwardRatchets: 4})
	w.grow(0, 2)
	for i := range 3 {
		m := w.seal(0, "x")
		if i != 1 {
			w.open(1, m, "x")
		}
	}
	w.commit(1, CommitOptions{ForcePath: true})
	for _, g := range w.members {
		keys := []*epochKeys{g.epochKeys}
		for _, p := range g.past {
			keys = append(keys, p.keys)
		}
		for _, k := range keys {
			b, err := k.st.MarshalBinary()
			if err != nil {
				f.Fatal(err)
			}
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, in []byte) {
		var st *keyschedule.SecretTree
		fuzzRoundTrip(t, in, func(b []byte) error {
			var err error
			st, err = keyschedule.UnmarshalSecretTree(b)
			return err
		}, func() ([]byte, error) { return st.MarshalBinary() })
		if st == nil || st.Leaves() > 64 {
			return
		}
		for l := range treemath.LeafIndex(st.Leaves()) {
			_, _ = st.Get(l, keyschedule.Application, 2)
			_, _ = st.Next(l, keyschedule.Handshake)
		}
	})
}
