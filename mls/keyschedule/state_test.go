package keyschedule_test

import (
	"bytes"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

func roundTrip(t *testing.T, st *keyschedule.SecretTree) *keyschedule.SecretTree {
	t.Helper()
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	got, err := keyschedule.UnmarshalSecretTree(b)
	if err != nil {
		t.Fatalf("UnmarshalSecretTree: %v", err)
	}
	again, err := got.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(again, b) {
		t.Fatal("secret tree does not re-encode to the same bytes")
	}
	return got
}

// TestSecretTreeStateForwardSecrecy takes keys from a tree, saves it and
// checks that the bytes hold no consumed secret: neither the root nor any
// taken key or nonce nor the tree node secrets on the way to used leaves,
// while the kept skipped key is there (which shows the search can find
// what is present).
func TestSecretTreeStateForwardSecrecy(t *testing.T) {
	cs, _ := ciphersuite.Lookup(ciphersuite.Default)
	root := bytes.Repeat([]byte{0x42}, cs.Nh())
	st := newTree(t, 8, nil)
	ref := newTree(t, 8, nil) // an independent derivation from the same root
	var consumed, kept []keyschedule.KeyNonce
	for _, g := range []uint32{0, 1, 2, 4, 6} {
		kn, err := st.Get(5, keyschedule.Application, g)
		if err != nil {
			t.Fatal(err)
		}
		consumed = append(consumed, kn)
	}
	for range 3 {
		kn, err := st.Next(2, keyschedule.Handshake)
		if err != nil {
			t.Fatal(err)
		}
		consumed = append(consumed, kn)
	}
	for g := range uint32(7) {
		kn, err := ref.Get(5, keyschedule.Application, g)
		if err != nil {
			t.Fatal(err)
		}
		if g == 3 || g == 5 {
			kept = append(kept, kn)
		}
	}
	b, err := st.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(b, root) {
		t.Fatal("saved secret tree contains the encryption secret")
	}
	for _, kn := range consumed {
		if bytes.Contains(b, kn.Key.Bytes()) || bytes.Contains(b, kn.Nonce.Bytes()) {
			t.Fatalf("saved secret tree contains the consumed key or nonce of generation %d", kn.Generation)
		}
	}
	for _, kn := range kept {
		if !bytes.Contains(b, kn.Key.Bytes()) || !bytes.Contains(b, kn.Nonce.Bytes()) {
			t.Fatalf("saved secret tree lacks the skipped key of generation %d", kn.Generation)
		}
	}
	// The secrets of the split nodes above leaf 5 are gone too.
	for _, label := range []string{"left", "right"} {
		s, _ := cs.ExpandWithLabel(root, "tree", []byte(label), cs.Nh())
		if bytes.Contains(b, s) {
			t.Fatalf("saved secret tree contains the consumed %s child of the root", label)
		}
	}

	loaded := roundTrip(t, st)
	for _, kn := range kept {
		got, err := loaded.Get(5, keyschedule.Application, kn.Generation)
		if err != nil || !sameKey(got, kn) {
			t.Fatalf("skipped generation %d after load: %v", kn.Generation, err)
		}
	}
	for _, g := range []uint32{0, 4, 6} {
		if _, err := loaded.Get(5, keyschedule.Application, g); !errors.Is(err, keyschedule.ErrGenerationReused) {
			t.Fatalf("consumed generation %d after load: err = %v, want ErrGenerationReused", g, err)
		}
	}
	// Ratchets and untouched leaves continue where they were.
	next, err := loaded.Next(2, keyschedule.Handshake)
	if err != nil || next.Generation != 3 {
		t.Fatalf("Next after load = generation %d, %v; want 3", next.Generation, err)
	}
	a, _ := ref.Get(2, keyschedule.Handshake, 3)
	if !sameKey(a, next) {
		t.Fatal("loaded tree derives another key for leaf 2 generation 3")
	}
	for _, l := range []treemath.LeafIndex{0, 7} {
		x, err1 := loaded.Get(l, keyschedule.Application, 4)
		y, err2 := ref.Get(l, keyschedule.Application, 4)
		if err1 != nil || err2 != nil || !sameKey(x, y) {
			t.Fatalf("leaf %d after load: %v %v, same=%v", l, err1, err2, sameKey(x, y))
		}
	}
}

func TestSecretTreeStateFreshAndOptions(t *testing.T) {
	st := newTree(t, 1, &keyschedule.SecretTreeOptions{MaxForwardRatchets: 3})
	loaded := roundTrip(t, st)
	if loaded.Leaves() != 1 {
		t.Fatalf("leaves = %d", loaded.Leaves())
	}
	// The forward-ratchet limit travels with the tree.
	if _, err := loaded.Get(0, keyschedule.Application, 4); !errors.Is(err, keyschedule.ErrTooFarAhead) {
		t.Fatalf("generation 4 with limit 3: err = %v, want ErrTooFarAhead", err)
	}
	if _, err := loaded.Get(0, keyschedule.Application, 3); err != nil {
		t.Fatal(err)
	}
	roundTrip(t, loaded)
}

// encodeTree writes a secret tree encoding by hand, for the strictness
// cases.
type rawRatchet struct {
	leaf    uint32
	typ     uint8
	next    uint32
	secret  []byte
	skipped []uint32
}

func encodeTree(version uint8, suite uint16, leaves, maxForward uint32, nodes []uint32, rs []rawRatchet, nh, nk int) []byte {
	var w codec.Writer
	w.Uint8(version)
	w.Uint16(suite)
	w.Uint32(leaves)
	w.Uint32(maxForward)
	w.VectorV(func(w *codec.Writer) {
		for _, n := range nodes {
			w.Uint32(n)
			w.OpaqueV(make([]byte, nh))
		}
	})
	w.VectorV(func(w *codec.Writer) {
		for _, r := range rs {
			w.Uint32(r.leaf)
			w.Uint8(r.typ)
			w.Uint32(r.next)
			w.OpaqueV(r.secret)
			w.VectorV(func(w *codec.Writer) {
				for _, g := range r.skipped {
					w.Uint32(g)
					w.OpaqueV(make([]byte, nk))
					w.OpaqueV(make([]byte, 12))
				}
			})
		}
	})
	return w.Bytes()
}

func TestUnmarshalSecretTreeStrict(t *testing.T) {
	cs, _ := ciphersuite.Lookup(ciphersuite.Default)
	nh, nk := cs.Nh(), cs.Nk()
	suite := uint16(cs.ID())
	sec := make([]byte, nh)
	pair := func(leaf, next uint32, skipped ...uint32) []rawRatchet {
		return []rawRatchet{{leaf, 1, next, sec, skipped}, {leaf, 2, 0, sec, nil}}
	}
	good := encodeTree(1, suite, 4, 10, []uint32{2, 5}, pair(0, 3, 1), nh, nk)
	if _, err := keyschedule.UnmarshalSecretTree(good); err != nil {
		t.Fatalf("hand-built valid tree refused: %v", err)
	}
	for _, c := range []struct {
		name string
		b    []byte
		want error
	}{
		{"empty", nil, codec.ErrDecode},
		{"truncated", good[:len(good)-1], codec.ErrDecode},
		{"trailing byte", append(bytes.Clone(good), 0), codec.ErrDecode},
		{"version 2", encodeTree(2, suite, 4, 10, []uint32{2, 5}, pair(0, 3), nh, nk), keyschedule.ErrStateVersion},
		{"unknown suite", encodeTree(1, 0xfff0, 4, 10, []uint32{2, 5}, pair(0, 3), nh, nk), ciphersuite.ErrUnsupportedSuite},
		{"3 leaves", encodeTree(1, suite, 3, 10, []uint32{2, 5}, pair(0, 3), nh, nk), codec.ErrDecode},
		{"limit 0", encodeTree(1, suite, 4, 0, []uint32{2, 5}, pair(0, 3), nh, nk), codec.ErrDecode},
		{"node outside", encodeTree(1, suite, 4, 10, []uint32{2, 5, 7}, pair(0, 3), nh, nk), codec.ErrDecode},
		{"nodes unsorted", encodeTree(1, suite, 4, 10, []uint32{5, 2}, pair(0, 3), nh, nk), codec.ErrDecode},
		{"node overlaps leaf", encodeTree(1, suite, 4, 10, []uint32{1, 5}, pair(0, 3), nh, nk), codec.ErrDecode},
		{"leaf missing", encodeTree(1, suite, 4, 10, []uint32{5}, pair(0, 3), nh, nk), codec.ErrDecode},
		{"root and leaf", encodeTree(1, suite, 4, 10, []uint32{3}, pair(0, 3), nh, nk), codec.ErrDecode},
		{"one ratchet of a pair", encodeTree(1, suite, 4, 10, []uint32{2, 5}, pair(0, 3)[:1], nh, nk), codec.ErrDecode},
		{"ratchet type 3", encodeTree(1, suite, 4, 10, []uint32{2, 5}, append(pair(0, 3), rawRatchet{0, 3, 0, sec, nil}), nh, nk), codec.ErrDecode},
		{"ratchet leaf outside", encodeTree(1, suite, 4, 10, []uint32{2, 5}, append(pair(0, 3), pair(4, 0)...), nh, nk), codec.ErrDecode},
		{"ratchets unsorted", encodeTree(1, suite, 4, 10, []uint32{5}, append(pair(1, 0), pair(0, 0)...), nh, nk), codec.ErrDecode},
		{"short ratchet secret", encodeTree(1, suite, 4, 10, []uint32{2, 5}, []rawRatchet{{0, 1, 0, sec[1:], nil}, {0, 2, 0, sec, nil}}, nh, nk), codec.ErrDecode},
		{"skipped not behind", encodeTree(1, suite, 4, 10, []uint32{2, 5}, pair(0, 3, 3), nh, nk), codec.ErrDecode},
		{"skipped unsorted", encodeTree(1, suite, 4, 10, []uint32{2, 5}, pair(0, 5, 2, 1), nh, nk), codec.ErrDecode},
		{"skipped over limit", encodeTree(1, suite, 4, 2, []uint32{2, 5}, pair(0, 5, 1, 2, 3), nh, nk), codec.ErrDecode},
		{"short node secret", encodeTree(1, suite, 4, 10, []uint32{2, 5}, pair(0, 3), nh-1, nk), codec.ErrDecode},
	} {
		_, err := keyschedule.UnmarshalSecretTree(c.b)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: err = %v, want %v", c.name, err, c.want)
		}
	}
}

func TestEpochSecretsState(t *testing.T) {
	cs, _ := ciphersuite.Lookup(ciphersuite.Default)
	e, err := keyschedule.Derive(cs, ciphersuite.NewSecret(bytes.Repeat([]byte{9}, cs.Nh())), ciphersuite.Secret{}, ciphersuite.Secret{}, []byte("gc"))
	if err != nil {
		t.Fatal(err)
	}
	b, err := e.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]ciphersuite.Secret{"joiner": e.JoinerSecret, "welcome": e.WelcomeSecret, "epoch": e.EpochSecret, "encryption": e.EncryptionSecret} {
		if bytes.Contains(b, s.Bytes()) {
			t.Errorf("saved epoch secrets contain the %s secret", name)
		}
	}
	got, err := keyschedule.UnmarshalEpochSecrets(b)
	if err != nil {
		t.Fatal(err)
	}
	if !got.InitSecret.Equal(e.InitSecret) || !got.EpochAuthenticator.Equal(e.EpochAuthenticator) || !got.SenderDataSecret.Equal(e.SenderDataSecret) ||
		!got.MembershipKey.Equal(e.MembershipKey) || !got.ResumptionPSK.Equal(e.ResumptionPSK) || !got.EncryptionSecret.IsZero() || !got.JoinerSecret.IsZero() {
		t.Fatal("epoch secrets differ after the round trip")
	}
	x, _ := e.Export("l", []byte("c"), 16)
	y, err := got.Export("l", []byte("c"), 16)
	if err != nil || !bytes.Equal(x, y) {
		t.Fatalf("exporter differs after the round trip: %v", err)
	}
	if _, err := keyschedule.UnmarshalEpochSecrets(b[:len(b)-1]); !errors.Is(err, codec.ErrDecode) {
		t.Errorf("truncated: err = %v", err)
	}
	bad := bytes.Clone(b)
	bad[0] = 7
	if _, err := keyschedule.UnmarshalEpochSecrets(bad); !errors.Is(err, keyschedule.ErrStateVersion) {
		t.Errorf("version 7: err = %v", err)
	}
	if _, err := (keyschedule.EpochSecrets{}).MarshalBinary(); err == nil {
		t.Error("MarshalBinary of zero EpochSecrets succeeded")
	}
}
