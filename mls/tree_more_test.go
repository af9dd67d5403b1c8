package mls

import (
	"encoding/hex"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
)

// largestValidationTree returns the biggest suite-3 tree of
// tree-validation.json with its group id.
func largestValidationTree(t *testing.T) (RatchetTree, []byte) {
	var cases []treeValidationCase
	vectortest.Load(t, "tree-validation.json", &cases)
	var best *treeValidationCase
	for i := range cases {
		if cases[i].CipherSuite == uint16(ciphersuite.Default) && (best == nil || len(cases[i].Tree) > len(best.Tree)) {
			best = &cases[i]
		}
	}
	tree, err := UnmarshalRatchetTree(best.Tree)
	if err != nil {
		t.Fatal(err)
	}
	return tree, best.GroupID
}

// TestValidateRejects tampers with a valid tree in the ways §12.4.3.1
// names and checks that Validate refuses each with ErrInvalidTree.
func TestValidateRejects(t *testing.T) {
	cs := mustSuite(t, ciphersuite.Default)
	tree, groupID := largestValidationTree(t)
	if err := tree.Validate(cs, groupID, nil); err != nil {
		t.Fatalf("untampered tree: %v", err)
	}
	firstParent := func(tr RatchetTree) NodeIndex {
		for x := 1; x < len(tr.nodes); x += 2 {
			if tr.nodes[x].Parent != nil {
				return NodeIndex(x)
			}
		}
		t.Fatal("tree has no parent node")
		return 0
	}
	editParent := func(tr RatchetTree, fn func(p *ParentNode)) RatchetTree {
		nt := tr.clone()
		x := firstParent(nt)
		c := *nt.nodes[x].Parent
		c.ParentHash = append([]byte{}, c.ParentHash...)
		fn(&c)
		nt.setNode(x, Node{Parent: &c})
		return nt
	}
	editLeaf := func(tr RatchetTree, l LeafIndex, fn func(ln *LeafNode)) RatchetTree {
		nt := tr.clone()
		c := nt.nodes[l.Node()].Leaf.Clone()
		fn(c)
		nt.setNode(l.Node(), Node{Leaf: c})
		return nt
	}
	cases := map[string]struct {
		tree    RatchetTree
		groupID []byte
		also    error
	}{
		"parent hash flipped": {editParent(tree, func(p *ParentNode) { p.ParentHash[0] ^= 1 }), groupID, nil},
		"leaf signature":      {editLeaf(tree, 0, func(ln *LeafNode) { ln.Signature[0] ^= 1 }), groupID, ErrBadSignature},
		"other group id":      {tree, []byte("another group"), ErrBadSignature},
		"unmerged blank leaf": {editParent(tree, func(p *ParentNode) { p.UnmergedLeaves = append(p.UnmergedLeaves, LeafIndex(tree.LeafCount()-1)+1) }), groupID, nil},
		"duplicate enc key": {editParent(tree, func(p *ParentNode) {
			p.EncryptionKey = tree.Leaf(0).EncryptionKey
		}), groupID, nil},
		"credential unsupported": {editLeaf(tree, 0, func(ln *LeafNode) { ln.Capabilities.Credentials = []CredentialType{CredentialTypeX509} }), groupID, nil},
	}
	for name, c := range cases {
		err := c.tree.Validate(cs, c.groupID, nil)
		if !errors.Is(err, ErrInvalidTree) {
			t.Errorf("%s: got %v, want ErrInvalidTree", name, err)
		}
		if c.also != nil && !errors.Is(err, c.also) {
			t.Errorf("%s: got %v, want it to wrap %v too", name, err, c.also)
		}
	}
	// A required capability that no member lists is refused.
	rc := RequiredCapabilities{Extensions: []ExtensionType{0x0a0a}}
	data, err := rc.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := tree.Validate(cs, groupID, Extensions{{Type: ExtensionTypeRequiredCapabilities, Data: data}}); !errors.Is(err, ErrInvalidTree) {
		t.Errorf("unsupported required extension: got %v, want ErrInvalidTree", err)
	}
}

// TestTreeGrowAndShrink builds a tree by adds, removes the right half and
// checks extension, unmerged leaves, truncation and value semantics.
func TestTreeGrowAndShrink(t *testing.T) {
	cs := mustSuite(t, ciphersuite.Default)
	members := make([]*testMember, 5)
	for i := range members {
		members[i] = newTestMember(t, cs, fmt.Sprintf("member-%d", i))
	}
	tree := NewRatchetTree(members[0].leaf)
	for i := 1; i < 5; i++ {
		var l LeafIndex
		tree, l = tree.AddLeaf(members[i].leaf)
		if l != LeafIndex(i) {
			t.Fatalf("member %d added at leaf %d", i, l)
		}
	}
	if tree.LeafCount() != 8 || tree.NodeWidth() != 15 {
		t.Fatalf("5 members: %d leaves, %d nodes; want 8 and 15", tree.LeafCount(), tree.NodeWidth())
	}
	// Member 0 commits: its path covers the root, so later adds are
	// recorded as unmerged there.
	gc := GroupContext{Version: ProtocolMLS10, CipherSuite: cs.ID(), GroupID: []byte("g"), Extensions: Extensions{}}
	up, err := tree.CreateUpdatePath(cs, gc, 0, tree.Leaf(0), members[0].sig, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	tree = up.Tree
	if err := tree.Validate(cs, []byte("g"), nil); err != nil {
		t.Fatalf("tree after commit: %v", err)
	}
	late := newTestMember(t, cs, "late")
	before := tree
	tree, l := tree.AddLeaf(late.leaf)
	if l != 5 {
		t.Fatalf("late member at leaf %d, want 5", l)
	}
	if root := tree.Parent(7); root == nil || len(root.UnmergedLeaves) != 1 || root.UnmergedLeaves[0] != 5 {
		t.Fatalf("root after add: %+v, want unmerged [5]", root)
	}
	if before.Parent(7) != nil && len(before.Parent(7).UnmergedLeaves) != 0 {
		t.Fatal("AddLeaf changed the tree it was called on")
	}
	if err := tree.Validate(cs, []byte("g"), nil); err != nil {
		t.Fatalf("tree with unmerged leaf: %v", err)
	}
	res := tree.Resolution(7)
	if len(res) != 2 || res[0] != 7 || res[1] != 10 {
		t.Fatalf("resolution of root: %v, want [7 10]", res)
	}
	for _, r := range []LeafIndex{5, 4} {
		if tree, err = tree.RemoveLeaf(r); err != nil {
			t.Fatal(err)
		}
	}
	if tree.LeafCount() != 4 {
		t.Fatalf("after removing leaves 4 and 5: %d leaves, want 4", tree.LeafCount())
	}
	if _, err := tree.RemoveLeaf(9); !errors.Is(err, ErrInvalidTree) {
		t.Fatalf("removing a missing leaf: %v", err)
	}
	// A blank leaf is reused before the tree grows.
	tree, _ = tree.RemoveLeaf(1)
	if _, l := tree.AddLeaf(late.leaf); l != 1 {
		t.Fatalf("add after removal went to leaf %d, want 1", l)
	}
}

// TestImplantPathSecret checks the Welcome-side derivation: a new member
// given the path secret of its common ancestor with the committer derives
// the keys of every node above it.
func TestImplantPathSecret(t *testing.T) {
	cs := mustSuite(t, ciphersuite.Default)
	members := make([]*testMember, 6)
	tree := RatchetTree{}
	for i := range members {
		members[i] = newTestMember(t, cs, fmt.Sprintf("m%d", i))
		tree, _ = tree.AddLeaf(members[i].leaf)
	}
	gc := GroupContext{Version: ProtocolMLS10, CipherSuite: cs.ID(), GroupID: []byte("g"), Extensions: Extensions{}}
	// Leaf 5 is "new": excluded from encryption, it gets the secret out of band.
	up, err := tree.CreateUpdatePath(cs, gc, 0, tree.Leaf(0), members[0].sig, []LeafIndex{5}, nil)
	if err != nil {
		t.Fatal(err)
	}
	lca := NodeIndex(7)
	ps, ok := up.PathSecret(lca)
	if !ok {
		t.Fatal("committer lacks the path secret of the root")
	}
	k := NewTreePrivateKeys(5, members[5].hpke)
	if _, err := tree.ApplyUpdatePath(cs, gc, 0, &up.Path, k, []LeafIndex{5}); !errors.Is(err, ErrInvalidUpdatePath) {
		t.Fatalf("excluded member decrypting: %v, want ErrInvalidUpdatePath", err)
	}
	k, err = k.ImplantPathSecret(cs, up.Tree, 0, lca, ps.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	if err := k.CheckAgainst(up.Tree); err != nil {
		t.Fatal(err)
	}
	if _, ok := k.Key(lca); !ok {
		t.Fatal("no key for the common ancestor")
	}
	if _, err := k.ImplantPathSecret(cs, up.Tree, 0, lca, []byte("wrong secret, wrong keys.......")); !errors.Is(err, ErrInvalidTree) {
		t.Fatalf("wrong path secret: %v, want ErrInvalidTree", err)
	}
	if s := fmt.Sprintf("%v %+v %#v %x", k, k, k, k); len(s) == 0 || containsKeyBytes(s, members[5].hpke.Bytes()) {
		t.Fatalf("TreePrivateKeys formatting leaks key bytes: %s", s)
	}
}

func containsKeyBytes(s string, key []byte) bool {
	return strings.Contains(s, string(key)) || strings.Contains(s, hex.EncodeToString(key)) || strings.Contains(s, fmt.Sprint(key))
}
