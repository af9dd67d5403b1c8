package keyschedule

import (
	"cmp"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/treemath"
)

// ErrStateVersion is returned by [UnmarshalSecretTree] and
// [UnmarshalEpochSecrets] for an encoding version this build does not read.
var ErrStateVersion = errors.New("mls/keyschedule: unsupported state encoding version")

// Encoding versions of the serialized forms; bump on any layout change.
const (
	secretTreeVersion   = 1
	epochSecretsVersion = 1
)

// MarshalBinary serializes the tree's current state: the tree node secrets
// not yet split, and per derived leaf and content type the next generation,
// the current ratchet secret and the keys kept for skipped generations. It
// never writes the encryption_secret the tree was built from (unless no key
// was ever taken, when the root is still the only node) nor any consumed
// secret, so the bytes cannot re-derive a key that was already used (RFC
// 9420 §9.2). The encoding is versioned and canonical: entries are sorted,
// so equal states give equal bytes. The bytes are as sensitive as the keys.
func (st *SecretTree) MarshalBinary() ([]byte, error) {
	var w codec.Writer
	w.Uint8(secretTreeVersion)
	w.Uint16(uint16(st.cs.ID()))
	w.Uint32(uint32(st.leaves))
	w.Uint32(st.maxForward)
	w.VectorV(func(w *codec.Writer) {
		for _, n := range slices.Sorted(maps.Keys(st.nodes)) {
			w.Uint32(uint32(n))
			w.OpaqueV(st.nodes[n])
		}
	})
	ids := slices.SortedFunc(maps.Keys(st.ratchets), compareRatchetID)
	w.VectorV(func(w *codec.Writer) {
		for _, id := range ids {
			r := st.ratchets[id]
			w.Uint32(uint32(id.leaf))
			w.Uint8(uint8(id.typ))
			w.Uint32(r.next)
			w.OpaqueV(r.secret)
			w.VectorV(func(w *codec.Writer) {
				for _, g := range slices.Sorted(maps.Keys(r.skipped)) {
					kn := r.skipped[g]
					w.Uint32(g)
					w.OpaqueV(kn.Key.Bytes())
					w.OpaqueV(kn.Nonce.Bytes())
				}
			})
		}
	})
	return w.Finish()
}

func compareRatchetID(a, b ratchetID) int {
	if c := cmp.Compare(a.leaf, b.leaf); c != 0 {
		return c
	}
	return cmp.Compare(a.typ, b.typ)
}

// UnmarshalSecretTree restores a tree serialized by
// [SecretTree.MarshalBinary]. Decoding is strict: besides malformed bytes
// and trailing data it refuses entries out of order or duplicated, secrets
// of the wrong length, skipped generations at or beyond the ratchet or more
// of them than the forward-ratchet limit, a leaf with only one of its two
// ratchets, and node secrets that overlap one another or a derived leaf or
// leave a leaf unreachable. Errors wrap [codec.ErrDecode],
// [ErrStateVersion] or [ciphersuite.ErrUnsupportedSuite] and never contain
// secret bytes.
func UnmarshalSecretTree(b []byte) (*SecretTree, error) {
	r := codec.NewReader(b)
	v, err := r.Uint8()
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: secret tree: %w", err)
	}
	if v != secretTreeVersion {
		return nil, fmt.Errorf("mls/keyschedule: %w: secret tree version %d (this build reads %d)", ErrStateVersion, v, secretTreeVersion)
	}
	suite, _ := r.Uint16()
	leaves, _ := r.Uint32()
	maxForward, err := r.Uint32()
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: secret tree header: %w", err)
	}
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(suite))
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: secret tree: %w", err)
	}
	n := treemath.LeafCount(leaves)
	if !treemath.ValidLeafCount(n) {
		return nil, fmt.Errorf("mls/keyschedule: %w: secret tree leaf count %d is not a power of two", codec.ErrDecode, leaves)
	}
	if maxForward == 0 {
		return nil, fmt.Errorf("mls/keyschedule: %w: secret tree forward-ratchet limit is 0", codec.ErrDecode)
	}
	st := &SecretTree{cs: cs, leaves: n, maxForward: maxForward, treeSecrets: newTreeSecrets(0, 0)}
	secret := func(sub *codec.Reader, size int, what string) ([]byte, error) {
		s, err := sub.OpaqueV()
		if err != nil {
			return nil, err
		}
		if len(s) != size {
			return nil, sub.Failf("%s is %d bytes, %s needs %d", what, len(s), cs.ID(), size)
		}
		return append([]byte(nil), s...), nil
	}
	var prevNode int64 = -1
	err = r.ForEachV(func(sub *codec.Reader) error {
		x, err := sub.Uint32()
		if err != nil {
			return err
		}
		if int64(x) <= prevNode || !treemath.InTree(treemath.NodeIndex(x), n) {
			return sub.Failf("tree node %d out of order or outside a tree of %d leaves", x, leaves)
		}
		prevNode = int64(x)
		s, err := secret(sub, cs.Nh(), fmt.Sprintf("secret of tree node %d", x))
		if err != nil {
			return err
		}
		st.nodes[treemath.NodeIndex(x)] = s
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: secret tree nodes: %w", err)
	}
	var prev *ratchetID
	err = r.ForEachV(func(sub *codec.Reader) error {
		leaf, _ := sub.Uint32()
		typ, _ := sub.Uint8()
		next, err := sub.Uint32()
		if err != nil {
			return err
		}
		id := ratchetID{treemath.LeafIndex(leaf), ContentType(typ)}
		if id.typ != Handshake && id.typ != Application {
			return sub.Failf("ratchet type %d of leaf %d", typ, leaf)
		}
		if uint64(leaf) >= uint64(leaves) || (prev != nil && compareRatchetID(*prev, id) >= 0) {
			return sub.Failf("%s ratchet of leaf %d out of order or outside a tree of %d leaves", id.typ, leaf, leaves)
		}
		prev = &id
		what := fmt.Sprintf("%s ratchet of leaf %d", id.typ, leaf)
		rs, err := secret(sub, cs.Nh(), what+" secret")
		if err != nil {
			return err
		}
		rt := &ratchet{next: next, secret: rs, skipped: map[uint32]KeyNonce{}}
		var prevGen int64 = -1
		err = sub.ForEachV(func(e *codec.Reader) error {
			g, err := e.Uint32()
			if err != nil {
				return err
			}
			if int64(g) <= prevGen || g >= next {
				return e.Failf("%s: skipped generation %d out of order or not behind generation %d", what, g, next)
			}
			prevGen = int64(g)
			if len(rt.skipped) >= int(maxForward) {
				return e.Failf("%s: more than %d skipped generations", what, maxForward)
			}
			k, err := secret(e, cs.Nk(), fmt.Sprintf("%s generation %d key", what, g))
			if err != nil {
				return err
			}
			nonce, err := secret(e, cs.Nn(), fmt.Sprintf("%s generation %d nonce", what, g))
			if err != nil {
				return err
			}
			rt.skipped[g] = KeyNonce{Generation: g, Key: ciphersuite.NewSecret(k), Nonce: ciphersuite.NewSecret(nonce)}
			clear(k)
			clear(nonce)
			return nil
		})
		if err != nil {
			return err
		}
		st.ratchets[id] = rt
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: secret tree ratchets: %w", err)
	}
	if err := r.Done(); err != nil {
		return nil, fmt.Errorf("mls/keyschedule: secret tree: %w", err)
	}
	if err := st.checkCover(); err != nil {
		return nil, err
	}
	return st, nil
}

// checkCover verifies the invariant every reachable tree keeps: the node
// secrets and the derived leaves tile the leaves exactly once, each leaf
// under one node secret or owning both its ratchets. Anything else could
// not have come from this package and would let a leaf's keys be derived
// twice or not at all.
func (st *SecretTree) checkCover() error {
	type span struct{ lo, hi uint64 }
	spans := make([]span, 0, len(st.nodes)+len(st.ratchets)/2)
	for x := range st.nodes {
		half := uint64(1)<<treemath.Level(x) - 1
		spans = append(spans, span{uint64(x) - half, uint64(x) + half})
	}
	for id := range st.ratchets {
		other := Handshake
		if id.typ == Handshake {
			other = Application
		}
		if _, ok := st.ratchets[ratchetID{id.leaf, other}]; !ok {
			return fmt.Errorf("mls/keyschedule: %w: leaf %d has a %s ratchet but no %s ratchet", codec.ErrDecode, id.leaf, id.typ, other)
		}
		if id.typ == Handshake {
			x := uint64(id.leaf.Node())
			spans = append(spans, span{x, x})
		}
	}
	slices.SortFunc(spans, func(a, b span) int { return cmp.Compare(a.lo, b.lo) })
	want := uint64(0)
	for _, s := range spans {
		if s.lo != want {
			return fmt.Errorf("mls/keyschedule: %w: secret tree entries overlap or miss the leaves around node %d", codec.ErrDecode, want)
		}
		want = s.hi + 2
	}
	if want != 2*uint64(st.leaves) {
		return fmt.Errorf("mls/keyschedule: %w: secret tree entries do not reach the last leaf", codec.ErrDecode)
	}
	return nil
}

// MarshalBinary serializes the secrets a member still needs once the epoch
// has begun: sender data, exporter, external, confirmation, membership,
// resumption, epoch authenticator and init secret. It omits on purpose the
// joiner, welcome and epoch secrets and the encryption secret, from any of
// which every message key of the epoch could be re-derived; the epoch's
// message keys are saved with [SecretTree.MarshalBinary] instead.
func (e EpochSecrets) MarshalBinary() ([]byte, error) {
	if e.cs == nil {
		return nil, fmt.Errorf("mls/keyschedule: MarshalBinary on zero EpochSecrets")
	}
	var w codec.Writer
	w.Uint8(epochSecretsVersion)
	w.Uint16(uint16(e.cs.ID()))
	for _, s := range e.retained() {
		w.OpaqueV(s.Bytes())
	}
	return w.Finish()
}

func (e *EpochSecrets) retained() []*Secret {
	return []*Secret{&e.SenderDataSecret, &e.ExporterSecret, &e.ExternalSecret, &e.ConfirmationKey,
		&e.MembershipKey, &e.ResumptionPSK, &e.EpochAuthenticator, &e.InitSecret}
}

// UnmarshalEpochSecrets restores secrets serialized by
// [EpochSecrets.MarshalBinary]; JoinerSecret, WelcomeSecret, EpochSecret
// and EncryptionSecret are zero in the result. Every secret must be Nh
// bytes. Errors wrap [codec.ErrDecode], [ErrStateVersion] or
// [ciphersuite.ErrUnsupportedSuite].
func UnmarshalEpochSecrets(b []byte) (EpochSecrets, error) {
	r := codec.NewReader(b)
	v, err := r.Uint8()
	if err != nil {
		return EpochSecrets{}, fmt.Errorf("mls/keyschedule: epoch secrets: %w", err)
	}
	if v != epochSecretsVersion {
		return EpochSecrets{}, fmt.Errorf("%w: epoch secrets version %d (this build reads %d)", ErrStateVersion, v, epochSecretsVersion)
	}
	suite, err := r.Uint16()
	if err != nil {
		return EpochSecrets{}, fmt.Errorf("mls/keyschedule: epoch secrets: %w", err)
	}
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(suite))
	if err != nil {
		return EpochSecrets{}, fmt.Errorf("mls/keyschedule: epoch secrets: %w", err)
	}
	e := EpochSecrets{cs: cs}
	for i, dst := range e.retained() {
		s, err := r.OpaqueV()
		if err != nil {
			return EpochSecrets{}, fmt.Errorf("mls/keyschedule: epoch secrets: %w", err)
		}
		if len(s) != cs.Nh() {
			return EpochSecrets{}, fmt.Errorf("mls/keyschedule: %w: epoch secret %d of 8 is %d bytes, %s needs %d", codec.ErrDecode, i+1, len(s), cs.ID(), cs.Nh())
		}
		*dst = ciphersuite.NewSecret(s)
	}
	if err := r.Done(); err != nil {
		return EpochSecrets{}, fmt.Errorf("mls/keyschedule: epoch secrets: %w", err)
	}
	return e, nil
}
