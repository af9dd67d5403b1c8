package mls

import (
	"fmt"
	"slices"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/treemath"
)

var scEveryParentCache = map[int]*scBench{}

// scEveryParentGroup returns the group of [scBenchGroup] with every parent
// node set: as if, after the mass add, each even-indexed member had
// committed in turn (leaf 0, 2, 4, ...). Each such commit is played at tree
// level: fresh keys along the member's filtered direct path with the
// parent-hash chain of RFC 9420 §7.9, and its leaf re-signed as a commit
// leaf with its own signature key; the path secrets are not encrypted, as
// nobody decrypts them. Every parent with members on both sides ends up
// set, and the tree is valid (TestEveryParentFixture checks it).
//
// The creator (leaf 0) and member 1 hold the private keys of their leaf
// and direct path. Their epoch secrets are those of the mass add's epoch,
// with the new tree and its tree hash in the group context: enough for
// one to commit and the other to process the commit, as both start from
// the same context.
func scEveryParentGroup(tb testing.TB, n int) *scBench {
	if s, ok := scEveryParentCache[n]; ok {
		return s
	}
	base := scBenchGroup(tb, n)
	cs := base.creator.cs
	// The fixture changes the nodes in place and keeps its own node hashes
	// (nil: to compute), so that it does not depend on how the package
	// caches them; the tree gets a cache of its own once built.
	tree := RatchetTree{nodes: slices.Clone(base.creator.tree.nodes)}
	width := len(tree.nodes)
	hashes := make([][]byte, width)
	root := treemath.Root(tree.LeafCount())
	rehash := func() {
		if _, err := tree.subtreeHash(cs, root, nil, nodeMemo{hashes: hashes}); err != nil {
			tb.Fatal(err)
		}
	}
	rehash()
	privs := map[NodeIndex]*ciphersuite.HPKEPrivateKey{}
	newKey := func(x NodeIndex) HPKEPublicKey {
		k, err := cs.GenerateHPKEKey()
		if err != nil {
			tb.Fatal(err)
		}
		privs[x] = k
		return k.PublicKey()
	}
	set := func(x NodeIndex, nd Node) {
		tree.nodes[x] = nd
		hashes[x] = nil
		for _, p := range treemath.DirectPath(x, tree.LeafCount()) {
			hashes[p] = nil
		}
	}
	groupID := base.creator.ctx.GroupID
	for l := LeafIndex(0); int(l) < n; l += 2 {
		fdp, copath := tree.filteredDirectPath(l)
		for _, p := range treemath.DirectPath(l.Node(), tree.LeafCount()) {
			set(p, Node{})
		}
		ph := []byte{}
		for i := len(fdp) - 1; i >= 0; i-- {
			p := &ParentNode{EncryptionKey: newKey(fdp[i]), ParentHash: ph, UnmergedLeaves: []LeafIndex{}}
			set(fdp[i], Node{Parent: p})
			var err error
			// The copath subtrees are not changed by the merge.
			if ph, err = parentHash(cs, p.EncryptionKey, p.ParentHash, hashes[copath[i]]); err != nil {
				tb.Fatal(err)
			}
		}
		leaf := tree.Leaf(l).Clone()
		leaf.EncryptionKey = newKey(l.Node())
		leaf.Source = LeafNodeSourceCommit
		leaf.Lifetime = Lifetime{}
		leaf.ParentHash = ph
		if err := leaf.Sign(cs, base.clients[l].secrets.SignatureKey, groupID, l); err != nil {
			tb.Fatal(err)
		}
		set(l.Node(), Node{Leaf: leaf})
		rehash()
	}
	keysOf := func(l LeafIndex, leafKey *ciphersuite.HPKEPrivateKey) *TreePrivateKeys {
		k := NewTreePrivateKeys(l, leafKey)
		for _, p := range treemath.DirectPath(l.Node(), tree.LeafCount()) {
			if key, ok := privs[p]; ok && tree.nodes[p].Parent != nil {
				k = k.WithKey(p, key)
			}
		}
		if err := k.CheckAgainst(tree); err != nil {
			tb.Fatal(err)
		}
		return k
	}
	tree.cache = newTreeCache(width)
	creator, member := base.creator.clone(), base.member.clone()
	memberLeafKey, _ := base.member.keys.Key(LeafIndex(1).Node())
	creator.keys = keysOf(0, privs[0])
	member.keys = keysOf(1, memberLeafKey)
	for _, g := range []*Group{creator, member} {
		g.tree = tree
		g.ctx.TreeHash = hashes[root]
	}
	s := &scBench{creator: creator, member: member, clients: base.clients}
	scEveryParentCache[n] = s
	return s
}

// TestEveryParentFixture checks the benchmark fixture: the tree is valid
// as a joiner would check it, every parent with members on both sides is
// set, and a commit with path by the creator is processed by member 1.
func TestEveryParentFixture(t *testing.T) {
	s := scEveryParentGroup(t, 37)
	tree := s.creator.tree
	if err := tree.Validate(s.creator.cs, s.creator.ctx.GroupID, s.creator.ctx.Extensions); err != nil {
		t.Fatal(err)
	}
	for x := 1; x < len(tree.nodes); x += 2 {
		l, _ := treemath.Left(NodeIndex(x))
		r, _ := treemath.Right(NodeIndex(x))
		full := len(tree.Resolution(l)) > 0 && len(tree.Resolution(r)) > 0
		if full != (tree.nodes[x].Parent != nil) {
			t.Fatalf("parent %d: set %v, members on both sides %v", x, tree.nodes[x].Parent != nil, full)
		}
	}
	c, res, err := s.creator.Commit(CommitOptions{ForcePath: true})
	if err != nil {
		t.Fatal(err)
	}
	if got := len(res.Commit.PublicMessage.Content.Commit.Path.Nodes); got != 6 {
		t.Errorf("path of %d nodes", got)
	}
	m, _, err := s.member.ProcessCommit(res.Commit)
	if err != nil {
		t.Fatal(err)
	}
	if string(c.EpochAuthenticator()) != string(m.EpochAuthenticator()) {
		t.Fatal("epoch authenticators differ")
	}
	if err := m.tree.Validate(m.cs, m.ctx.GroupID, m.ctx.Extensions); err != nil {
		t.Fatal(err)
	}
}

// BenchmarkCommitWithPathEveryParent is BenchmarkCommitWithPath in a tree
// whose parent nodes are all set (see scEveryParentGroup): the path is
// O(log n) nodes, each encrypted to one node, so what grows with the group
// is everything else (tree hashing, key checks, the GroupInfo's tree).
func BenchmarkCommitWithPathEveryParent(b *testing.B) {
	noCacheCheck(b)
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			if n > 1000 && testing.Short() {
				b.Skip("10,000 members only without -short")
			}
			s := scEveryParentGroup(b, n)
			_, res, err := s.creator.Commit(CommitOptions{ForcePath: true})
			if err != nil {
				b.Fatal(err)
			}
			if _, _, err := s.member.ProcessCommit(res.Commit); err != nil {
				b.Fatal(err)
			}
			b.Run("commit", func(b *testing.B) {
				for b.Loop() {
					if _, _, err := s.creator.Commit(CommitOptions{ForcePath: true}); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("process", func(b *testing.B) {
				for b.Loop() {
					if _, _, err := s.member.ProcessCommit(res.Commit); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
