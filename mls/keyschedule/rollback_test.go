package keyschedule

import (
	"bytes"
	"errors"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/treemath"
)

// CheckFollows refuses a tree whose node secrets or ratchets derive from a
// secret the tree before it had consumed, as a forged state could hold
// them (no use of a tree brings one back), and takes what use derives
// from a secret the tree before still held.
func TestCheckFollowsRefusesConsumedSecretsBack(t *testing.T) {
	cs, err := ciphersuite.Lookup(ciphersuite.Default)
	if err != nil {
		t.Fatal(err)
	}
	prev, err := NewSecretTree(cs, ciphersuite.NewSecret(bytes.Repeat([]byte{0x42}, cs.Nh())), 4, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := prev.Next(0, Application); err != nil { // consumes the root and node 1
		t.Fatal(err)
	}
	root := treemath.Root(4)

	used := prev.Clone()
	if _, err := used.Next(2, Handshake); err != nil { // from node 5, which prev holds
		t.Fatal(err)
	}
	if err := used.CheckFollows(prev); err != nil {
		t.Fatalf("a tree used further: %v", err)
	}

	nodeBack := prev.Clone()
	nodeBack.nodes[root] = bytes.Repeat([]byte{0x42}, cs.Nh())
	if err := nodeBack.CheckFollows(prev); !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "tree node 3") {
		t.Fatalf("the root's secret back: %v, want ErrRolledBack naming node 3", err)
	}

	// Leaf 1's secret derived from node 1, which prev had consumed (it
	// kept leaf 1's, node 2, which this tree dropped).
	ratchetBack := used.Clone()
	delete(ratchetBack.nodes, treemath.LeafIndex(1).Node())
	ratchetBack.ratchets[ratchetID{1, Application}] = &ratchet{secret: bytes.Repeat([]byte{1}, cs.Nh()), skipped: map[uint32]KeyNonce{}}
	if err := ratchetBack.CheckFollows(prev); err != nil {
		t.Fatalf("leaf 1's ratchet, from the secret prev held: %v", err)
	}
	withoutLeaf1 := prev.Clone()
	delete(withoutLeaf1.nodes, treemath.LeafIndex(1).Node())
	if err := ratchetBack.CheckFollows(withoutLeaf1); !errors.Is(err, ErrRolledBack) || !strings.Contains(err.Error(), "leaf 1") {
		t.Fatalf("leaf 1's ratchet after a tree that held nothing it derives from: %v, want ErrRolledBack naming leaf 1", err)
	}

	other, err := NewSecretTree(cs, ciphersuite.NewSecret(bytes.Repeat([]byte{0x42}, cs.Nh())), 8, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := other.CheckFollows(prev); !errors.Is(err, ErrRolledBack) {
		t.Fatalf("a tree of another size: %v", err)
	}
}
