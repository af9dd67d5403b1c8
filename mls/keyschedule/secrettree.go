package keyschedule

import (
	"errors"
	"fmt"
	"maps"
	"math"
	"slices"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/treemath"
)

// ErrGenerationReused is returned when the key of a generation that was
// already consumed (used to encrypt or decrypt) or discarded is requested
// again: keys are single-use and deleted once taken.
var ErrGenerationReused = errors.New("mls/keyschedule: generation already consumed")

// ErrTooFarAhead is returned when a generation is further ahead of the
// ratchet than the configured maximum number of forward ratchet steps.
var ErrTooFarAhead = errors.New("mls/keyschedule: generation too far ahead of the ratchet")

// DefaultMaxForwardRatchets is the default limit on how far a receiver
// ratchets forward to reach a message's generation.
const DefaultMaxForwardRatchets = 1000

// ContentType selects one of a sender's two ratchets.
type ContentType uint8

// The two ratchets of each leaf.
const (
	Handshake ContentType = iota + 1
	Application
)

func (c ContentType) String() string {
	switch c {
	case Handshake:
		return "handshake"
	case Application:
		return "application"
	default:
		return fmt.Sprintf("ContentType(%d)", uint8(c))
	}
}

// SecretTreeOptions configures a [SecretTree]. The zero value gives the
// defaults.
type SecretTreeOptions struct {
	// MaxForwardRatchets bounds how many generations a receiver ratchets
	// ahead of the next expected one, and how many skipped keys it keeps for
	// out-of-order messages per ratchet. 0 means
	// [DefaultMaxForwardRatchets].
	MaxForwardRatchets uint32
}

// KeyNonce is the AEAD key and nonce of one generation of a ratchet.
type KeyNonce struct {
	Generation uint32
	Key        Secret
	Nonce      Secret
}

type ratchet struct {
	next    uint32              // generation of secret
	secret  []byte              // ratchet_secret_[next]
	skipped map[uint32]KeyNonce // derived but not yet consumed, generation < next
}

func (r *ratchet) clone() *ratchet {
	c := &ratchet{next: r.next, secret: append([]byte(nil), r.secret...), skipped: make(map[uint32]KeyNonce, len(r.skipped))}
	for g, kn := range r.skipped {
		c.skipped[g] = kn
	}
	return c
}

// SecretTree derives per-sender handshake and application keys from an
// epoch's encryption_secret (RFC 9420 §9). It deletes every secret once it
// is consumed: tree node secrets when their children are derived, ratchet
// secrets when the ratchet moves, keys when they are taken. It is mutable
// and not safe for concurrent use.
type SecretTree struct {
	cs         *ciphersuite.CipherSuite
	leaves     treemath.LeafCount
	maxForward uint32
	*treeSecrets
}

// treeSecrets and treeMaps put a SecretTree's secrets two pointers away
// from it, so that no fmt verb reaches them wherever the tree is held: in
// an unexported field fmt cannot call Format, and under %s or %q it
// prints what a pointer there points to, but from that point every
// further pointer as an address (as internal/hidden does for
// Secret). Embedded, they leave st.nodes and st.ratchets as they were.
type treeSecrets struct{ *treeMaps }

type treeMaps struct {
	nodes    map[treemath.NodeIndex][]byte
	ratchets map[ratchetID]*ratchet
}

// newTreeSecrets returns empty maps, behind their two pointers.
func newTreeSecrets(nodes, ratchets int) *treeSecrets {
	return &treeSecrets{&treeMaps{nodes: make(map[treemath.NodeIndex][]byte, nodes), ratchets: make(map[ratchetID]*ratchet, ratchets)}}
}

type ratchetID struct {
	leaf treemath.LeafIndex
	typ  ContentType
}

// NewSecretTree returns the secret tree of a group whose ratchet tree has
// leaves leaves (a power of two), rooted at encryptionSecret. opts may be
// nil.
func NewSecretTree(cs *ciphersuite.CipherSuite, encryptionSecret Secret, leaves treemath.LeafCount, opts *SecretTreeOptions) (*SecretTree, error) {
	if !treemath.ValidLeafCount(leaves) {
		return nil, fmt.Errorf("mls/keyschedule: secret tree leaf count %d is not a power of two", leaves)
	}
	if encryptionSecret.Len() != cs.Nh() {
		return nil, fmt.Errorf("mls/keyschedule: encryption_secret is %d bytes, %s needs %d", encryptionSecret.Len(), cs.ID(), cs.Nh())
	}
	max := uint32(DefaultMaxForwardRatchets)
	if opts != nil && opts.MaxForwardRatchets != 0 {
		max = opts.MaxForwardRatchets
	}
	st := &SecretTree{cs: cs, leaves: leaves, maxForward: max, treeSecrets: newTreeSecrets(1, 0)}
	st.nodes[treemath.Root(leaves)] = encryptionSecret.Bytes()
	return st, nil
}

// Leaves returns the number of leaves of the tree.
func (st *SecretTree) Leaves() treemath.LeafCount { return st.leaves }

// Clone returns an independent deep copy of the tree's current state.
func (st *SecretTree) Clone() *SecretTree {
	c := &SecretTree{cs: st.cs, leaves: st.leaves, maxForward: st.maxForward, treeSecrets: newTreeSecrets(len(st.nodes), len(st.ratchets))}
	for n, s := range st.nodes {
		c.nodes[n] = append([]byte(nil), s...)
	}
	for id, r := range st.ratchets {
		c.ratchets[id] = r.clone()
	}
	return c
}

// String describes the tree without any secret.
func (st SecretTree) String() string {
	return fmt.Sprintf("SecretTree(%s, %d leaves, %d node secrets, %d ratchets)", st.cs.ID(), st.leaves, len(st.nodes), len(st.ratchets))
}

// GoString returns the same description as String.
func (st SecretTree) GoString() string { return st.String() }

// Format prints the description under every verb, so no verb can reach the
// secrets inside.
func (st SecretTree) Format(f fmt.State, _ rune) { fmt.Fprint(f, st.String()) }

// leafSecret derives (and removes from the tree) the secret of leaf l,
// deriving and keeping the copath secrets on the way down.
func (st *SecretTree) leafSecret(l treemath.LeafIndex) ([]byte, error) {
	target := l.Node()
	// The path from the root to the leaf, top down.
	path := append([]treemath.NodeIndex{target}, treemath.DirectPath(target, st.leaves)...)
	for i, j := 0, len(path)-1; i < j; i, j = i+1, j-1 {
		path[i], path[j] = path[j], path[i]
	}
	start := -1
	for i, n := range path {
		if _, ok := st.nodes[n]; ok {
			start = i
		}
	}
	if start < 0 {
		// Every ancestor secret was consumed and the leaf's ratchets were
		// already created; reaching here means the leaf was derived before.
		return nil, fmt.Errorf("mls/keyschedule: secret of leaf %d already consumed", l)
	}
	for _, n := range path[start : len(path)-1] {
		secret := st.nodes[n]
		left, _ := treemath.Left(n)
		right, _ := treemath.Right(n)
		ls, err := st.cs.ExpandWithLabel(secret, "tree", []byte("left"), st.cs.Nh())
		if err != nil {
			return nil, fmt.Errorf("mls/keyschedule: tree secret of node %d: %w", left, err)
		}
		rs, err := st.cs.ExpandWithLabel(secret, "tree", []byte("right"), st.cs.Nh())
		if err != nil {
			return nil, fmt.Errorf("mls/keyschedule: tree secret of node %d: %w", right, err)
		}
		clear(secret)
		delete(st.nodes, n)
		st.nodes[left] = ls
		st.nodes[right] = rs
	}
	s := st.nodes[target]
	delete(st.nodes, target)
	return s, nil
}

func (st *SecretTree) ratchet(l treemath.LeafIndex, typ ContentType) (*ratchet, error) {
	if typ != Handshake && typ != Application {
		return nil, fmt.Errorf("mls/keyschedule: unknown ratchet type %d", uint8(typ))
	}
	if uint64(l) >= uint64(st.leaves) {
		return nil, fmt.Errorf("mls/keyschedule: leaf %d outside a secret tree of %d leaves", l, st.leaves)
	}
	if r, ok := st.ratchets[ratchetID{l, typ}]; ok {
		return r, nil
	}
	leaf, err := st.leafSecret(l)
	if err != nil {
		return nil, err
	}
	hs, err := st.cs.ExpandWithLabel(leaf, "handshake", nil, st.cs.Nh())
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: handshake ratchet of leaf %d: %w", l, err)
	}
	as, err := st.cs.ExpandWithLabel(leaf, "application", nil, st.cs.Nh())
	if err != nil {
		return nil, fmt.Errorf("mls/keyschedule: application ratchet of leaf %d: %w", l, err)
	}
	clear(leaf)
	st.ratchets[ratchetID{l, Handshake}] = &ratchet{secret: hs, skipped: map[uint32]KeyNonce{}}
	st.ratchets[ratchetID{l, Application}] = &ratchet{secret: as, skipped: map[uint32]KeyNonce{}}
	return st.ratchets[ratchetID{l, typ}], nil
}

// step derives the key and nonce of the ratchet's current generation and
// advances it by one step, deleting the old ratchet secret.
func (st *SecretTree) step(r *ratchet) (KeyNonce, error) {
	g := r.next
	if g == ^uint32(0) {
		return KeyNonce{}, fmt.Errorf("mls/keyschedule: ratchet generation space exhausted")
	}
	key, err := st.cs.DeriveTreeSecret(r.secret, "key", g, st.cs.Nk())
	if err != nil {
		return KeyNonce{}, err
	}
	nonce, err := st.cs.DeriveTreeSecret(r.secret, "nonce", g, st.cs.Nn())
	if err != nil {
		return KeyNonce{}, err
	}
	next, err := st.cs.DeriveTreeSecret(r.secret, "secret", g, st.cs.Nh())
	if err != nil {
		return KeyNonce{}, err
	}
	clear(r.secret)
	r.secret = next
	r.next = g + 1
	return KeyNonce{Generation: g, Key: ciphersuite.NewSecret(key), Nonce: ciphersuite.NewSecret(nonce)}, nil
}

// Next returns the key and nonce of the next unused generation of leaf's
// ratchet, for a sender encrypting a message; they are consumed.
func (st *SecretTree) Next(leaf treemath.LeafIndex, typ ContentType) (KeyNonce, error) {
	r, err := st.ratchet(leaf, typ)
	if err != nil {
		return KeyNonce{}, err
	}
	kn, err := st.step(r)
	if err != nil {
		return KeyNonce{}, fmt.Errorf("mls/keyschedule: %s ratchet of leaf %d: %w", typ, leaf, err)
	}
	return kn, nil
}

// Get returns the key and nonce of generation of leaf's ratchet, for a
// receiver decrypting a message, and deletes them. A generation behind the
// ratchet is served from the keys kept for out-of-order messages, once; a
// generation ahead is reached by ratcheting forward at most
// MaxForwardRatchets steps, keeping the skipped keys. Errors:
// [ErrGenerationReused] for a consumed or discarded generation,
// [ErrTooFarAhead] beyond the limit.
//
// Callers that may fail to decrypt with the returned key and want to keep it
// should Clone the tree first: taking a key deletes it.
func (st *SecretTree) Get(leaf treemath.LeafIndex, typ ContentType, generation uint32) (KeyNonce, error) {
	return st.get(leaf, typ, generation, st.maxForward)
}

// Consume deletes the key of generation of leaf's ratchet as Get does,
// for a member restoring a saved tree to where receiving messages left
// it, but ratchets forward as far as it takes: those messages were
// accepted, each within MaxForwardRatchets of the ratchet then, and the
// record of the ones between may be gone (retention deleted them). The
// steps cost one derivation each; the keys kept for skipped generations
// are bounded as Get bounds them.
func (st *SecretTree) Consume(leaf treemath.LeafIndex, typ ContentType, generation uint32) error {
	_, err := st.get(leaf, typ, generation, math.MaxUint32)
	return err
}

func (st *SecretTree) get(leaf treemath.LeafIndex, typ ContentType, generation, maxForward uint32) (KeyNonce, error) {
	r, err := st.ratchet(leaf, typ)
	if err != nil {
		return KeyNonce{}, err
	}
	if generation < r.next {
		kn, ok := r.skipped[generation]
		if !ok {
			return KeyNonce{}, fmt.Errorf("%w: %s ratchet of leaf %d, generation %d", ErrGenerationReused, typ, leaf, generation)
		}
		delete(r.skipped, generation)
		return kn, nil
	}
	if generation-r.next > maxForward {
		return KeyNonce{}, fmt.Errorf("%w: %s ratchet of leaf %d is at generation %d, message has %d (limit %d)", ErrTooFarAhead, typ, leaf, r.next, generation, maxForward)
	}
	// Keys more than maxForward behind generation would be dropped below
	// anyway: not kept at all (Consume may step far).
	keepFrom := uint32(0)
	if generation > st.maxForward {
		keepFrom = generation - st.maxForward
	}
	for r.next < generation {
		kn, err := st.step(r)
		if err != nil {
			return KeyNonce{}, fmt.Errorf("mls/keyschedule: %s ratchet of leaf %d: %w", typ, leaf, err)
		}
		if kn.Generation >= keepFrom {
			r.skipped[kn.Generation] = kn
		}
	}
	// Keep at most maxForward skipped keys: the oldest are the least likely
	// to arrive and each one kept is a forward-secrecy cost.
	if excess := len(r.skipped) - int(st.maxForward); excess > 0 {
		gens := slices.Sorted(maps.Keys(r.skipped))
		for _, g := range gens[:excess] {
			delete(r.skipped, g)
		}
	}
	kn, err := st.step(r)
	if err != nil {
		return KeyNonce{}, fmt.Errorf("mls/keyschedule: %s ratchet of leaf %d: %w", typ, leaf, err)
	}
	return kn, nil
}

// SenderDataKeyNonce derives the AEAD key and nonce protecting a
// PrivateMessage's sender data from sender_data_secret and the first Nh
// bytes of the content ciphertext (all of it if shorter) (RFC 9420 §6.3.2).
func SenderDataKeyNonce(cs *ciphersuite.CipherSuite, senderDataSecret Secret, ciphertext []byte) (key, nonce Secret, err error) {
	sample := ciphertext[:min(len(ciphertext), cs.Nh())]
	k, err := cs.ExpandWithLabel(senderDataSecret.Bytes(), "key", sample, cs.Nk())
	if err != nil {
		return Secret{}, Secret{}, fmt.Errorf("mls/keyschedule: sender data key: %w", err)
	}
	n, err := cs.ExpandWithLabel(senderDataSecret.Bytes(), "nonce", sample, cs.Nn())
	if err != nil {
		return Secret{}, Secret{}, fmt.Errorf("mls/keyschedule: sender data nonce: %w", err)
	}
	return ciphersuite.NewSecret(k), ciphersuite.NewSecret(n), nil
}

// Suite returns the cipher suite the tree derives keys with.
func (st *SecretTree) Suite() *ciphersuite.CipherSuite { return st.cs }
