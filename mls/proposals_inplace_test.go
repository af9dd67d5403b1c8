package mls

import (
	"bytes"
	"errors"
	"testing"
)

// A commit's proposals change one copy of the tree in place. A proposal
// list refused part way (here an Add of a key package whose signature
// does not verify, after two Removes were applied) leaves
// the group's own tree exactly as it was, and the group then commits as
// before.
func TestRefusedProposalsLeaveTheTree(t *testing.T) {
	s := scBenchGroup(t, 9)
	g := s.creator
	before, err := g.tree.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	hash, err := g.tree.TreeHash(g.cs)
	if err != nil {
		t.Fatal(err)
	}
	bad := newSCClient(t, "forger").kp
	forged := *bad
	forged.Signature = bytes.Clone(bad.Signature)
	forged.Signature[0] ^= 1
	props := []cachedProposal{
		{sender: Sender{Type: SenderTypeMember, LeafIndex: 0}, proposal: &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: 7}}},
		{sender: Sender{Type: SenderTypeMember, LeafIndex: 0}, proposal: &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: 8}}},
		{sender: Sender{Type: SenderTypeMember, LeafIndex: 0}, proposal: &Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: forged}}},
	}
	if _, err := g.applyProposals(0, props); !errors.Is(err, ErrInvalidKeyPackage) {
		t.Fatalf("a forged key package after two removes: %v, want ErrInvalidKeyPackage", err)
	}
	after, err := g.tree.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(before, after) {
		t.Fatal("a refused proposal list changed the group's tree")
	}
	if h, err := g.tree.TreeHash(g.cs); err != nil || !bytes.Equal(h, hash) {
		t.Fatalf("tree hash after a refused proposal list differs (%v)", err)
	}
	// The same removes without the forged add apply, to a copy.
	eff, err := g.applyProposals(0, props[:2])
	if err != nil {
		t.Fatal(err)
	}
	if eff.tree.Leaf(7) != nil || eff.tree.Leaf(8) != nil || g.tree.Leaf(7) == nil || g.tree.Leaf(8) == nil {
		t.Fatal("removes applied to the group's own tree, or not to the copy")
	}
	if eff.tree.LeafCount() >= g.tree.LeafCount() {
		t.Fatalf("the copy was not truncated: %d leaves, the group has %d", eff.tree.LeafCount(), g.tree.LeafCount())
	}
	if _, _, err := g.Commit(CommitOptions{ForcePath: true}); err != nil {
		t.Fatalf("commit after a refused proposal list: %v", err)
	}
}
