package mls

import (
	"fmt"
	"maps"
	"slices"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

// ratchetKey names one sender ratchet of an epoch.
type ratchetKey struct {
	leaf LeafIndex
	typ  keyschedule.ContentType
}

// ratchetLog mirrors what the secret tree consumed from one ratchet, so
// that the tree can be rebuilt from the epoch's encryption secret when a
// serialized state is loaded.
type ratchetLog struct {
	next    uint32
	skipped []uint32 // sorted; derived, not yet consumed
}

// epochKeys is one epoch's secret tree together with the log of what it
// handed out. It is mutable; a Group clones it before changing it.
type epochKeys struct {
	st *keyschedule.SecretTree
	// root is the epoch's encryption_secret, kept so that MarshalBinary can
	// describe the tree as root plus log. It weakens forward secrecy
	// within an epoch (consumed keys can be re-derived from it) until
	// keyschedule offers an export of the SecretTree itself.
	root       keyschedule.Secret
	leaves     treemath.LeafCount
	maxForward uint32
	log        map[ratchetKey]*ratchetLog
}

func newEpochKeys(cs *ciphersuite.CipherSuite, encryptionSecret keyschedule.Secret, leaves treemath.LeafCount, maxForward uint32) (*epochKeys, error) {
	if maxForward == 0 {
		maxForward = keyschedule.DefaultMaxForwardRatchets
	}
	st, err := keyschedule.NewSecretTree(cs, encryptionSecret, leaves, &keyschedule.SecretTreeOptions{MaxForwardRatchets: maxForward})
	if err != nil {
		return nil, err
	}
	return &epochKeys{st: st, root: encryptionSecret, leaves: leaves, maxForward: maxForward, log: map[ratchetKey]*ratchetLog{}}, nil
}

func (k *epochKeys) clone() *epochKeys {
	c := &epochKeys{st: k.st.Clone(), root: k.root, leaves: k.leaves, maxForward: k.maxForward, log: make(map[ratchetKey]*ratchetLog, len(k.log))}
	for id, l := range k.log {
		c.log[id] = &ratchetLog{next: l.next, skipped: slices.Clone(l.skipped)}
	}
	return c
}

func (k *epochKeys) entry(leaf LeafIndex, typ keyschedule.ContentType) *ratchetLog {
	id := ratchetKey{leaf, typ}
	l := k.log[id]
	if l == nil {
		l = &ratchetLog{}
		k.log[id] = l
	}
	return l
}

// Next implements keySource for a sender.
func (k *epochKeys) Next(leaf LeafIndex, typ keyschedule.ContentType) (keyschedule.KeyNonce, error) {
	kn, err := k.st.Next(leaf, typ)
	if err != nil {
		return kn, err
	}
	k.entry(leaf, typ).next = kn.Generation + 1
	return kn, nil
}

// Get implements keySource for a receiver, mirroring the secret tree's
// bookkeeping of skipped generations.
func (k *epochKeys) Get(leaf LeafIndex, typ keyschedule.ContentType, gen uint32) (keyschedule.KeyNonce, error) {
	kn, err := k.st.Get(leaf, typ, gen)
	if err != nil {
		return kn, err
	}
	l := k.entry(leaf, typ)
	if gen < l.next {
		if i, ok := slices.BinarySearch(l.skipped, gen); ok {
			l.skipped = slices.Delete(l.skipped, i, i+1)
		}
		return kn, nil
	}
	for g := l.next; g < gen; g++ {
		l.skipped = append(l.skipped, g)
	}
	if excess := len(l.skipped) - int(k.maxForward); excess > 0 {
		l.skipped = slices.Delete(l.skipped, 0, excess)
	}
	l.next = gen + 1
	return kn, nil
}

// maxRestoredGeneration bounds the work of rebuilding one ratchet (one
// derivation per generation) when loading a state, so that corrupt input
// cannot stall the loader.
const maxRestoredGeneration = 1 << 20

// restoreEpochKeys rebuilds a secret tree from its root and log by taking,
// in order, every generation that was consumed.
func restoreEpochKeys(cs *ciphersuite.CipherSuite, root keyschedule.Secret, leaves treemath.LeafCount, maxForward uint32, log map[ratchetKey]*ratchetLog) (*epochKeys, error) {
	k, err := newEpochKeys(cs, root, leaves, maxForward)
	if err != nil {
		return nil, err
	}
	for _, id := range slices.SortedFunc(maps.Keys(log), func(a, b ratchetKey) int {
		if a.leaf != b.leaf {
			return int(a.leaf) - int(b.leaf)
		}
		return int(a.typ) - int(b.typ)
	}) {
		l := log[id]
		if uint32(id.leaf) >= uint32(leaves) || len(l.skipped) > int(k.maxForward) || l.next > maxRestoredGeneration {
			return nil, fmt.Errorf("%w: ratchet log of leaf %d does not fit the epoch", ErrDecode, id.leaf)
		}
		skip := make(map[uint32]bool, len(l.skipped))
		for _, g := range l.skipped {
			if g >= l.next {
				return nil, fmt.Errorf("%w: skipped generation %d beyond %d", ErrDecode, g, l.next)
			}
			skip[g] = true
		}
		for g := uint32(0); g < l.next; g++ {
			if skip[g] {
				continue
			}
			if _, err := k.Get(id.leaf, id.typ, g); err != nil {
				return nil, fmt.Errorf("mls: restoring ratchet of leaf %d: %w", id.leaf, err)
			}
		}
		k.log[id] = &ratchetLog{next: l.next, skipped: slices.Clone(l.skipped)}
	}
	return k, nil
}
