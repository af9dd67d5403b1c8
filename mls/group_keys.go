package mls

import (
	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

// epochKeys is one epoch's secret tree. It is mutable (taking a key deletes
// it); a Group clones it before changing it. Only the tree's current state
// is kept, in memory and in saved state: not the epoch's encryption_secret,
// from which already-consumed keys could be re-derived (RFC 9420 §9.2).
type epochKeys struct {
	st *keyschedule.SecretTree
}

func newEpochKeys(cs *ciphersuite.CipherSuite, encryptionSecret keyschedule.Secret, leaves treemath.LeafCount, maxForward uint32) (*epochKeys, error) {
	if maxForward == 0 {
		maxForward = keyschedule.DefaultMaxForwardRatchets
	}
	st, err := keyschedule.NewSecretTree(cs, encryptionSecret, leaves, &keyschedule.SecretTreeOptions{MaxForwardRatchets: maxForward})
	if err != nil {
		return nil, err
	}
	return &epochKeys{st: st}, nil
}

func (k *epochKeys) clone() *epochKeys { return &epochKeys{st: k.st.Clone()} }

// Next implements keySource for a sender.
func (k *epochKeys) Next(leaf LeafIndex, typ keyschedule.ContentType) (keyschedule.KeyNonce, error) {
	return k.st.Next(leaf, typ)
}

// Consume takes gen's key as Get does, however far ahead (restoring a
// saved state: keyschedule.SecretTree.Consume).
func (k *epochKeys) Consume(leaf LeafIndex, typ keyschedule.ContentType, gen uint32) error {
	return k.st.Consume(leaf, typ, gen)
}

// Get implements keySource for a receiver.
func (k *epochKeys) Get(leaf LeafIndex, typ keyschedule.ContentType, gen uint32) (keyschedule.KeyNonce, error) {
	return k.st.Get(leaf, typ, gen)
}
