package mls

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/treemath"
)

// uncached is t without its cache: hashing and encoding it starts from
// scratch.
func uncached(t RatchetTree) RatchetTree { return RatchetTree{nodes: t.nodes} }

// checkAgainstScratch compares the tree hash and encoding of tr, through
// its cache, with a computation from scratch, and with those of the tree
// decoded from that encoding (a fresh cache).
func checkAgainstScratch(t *testing.T, cs *ciphersuite.CipherSuite, what string, tr RatchetTree) []byte {
	t.Helper()
	got, err := tr.TreeHash(cs)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	want, err := uncached(tr).TreeHash(cs)
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s: cached tree hash %x, from scratch %x", what, got, want)
	}
	enc, err := tr.Marshal()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	wantEnc, err := uncached(tr).Marshal()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	if !bytes.Equal(enc, wantEnc) {
		t.Fatalf("%s: cached encoding differs from scratch", what)
	}
	back, err := UnmarshalRatchetTree(enc)
	if err != nil {
		t.Fatalf("%s: decoding: %v", what, err)
	}
	if h, err := back.TreeHash(cs); err != nil || !bytes.Equal(h, want) {
		t.Fatalf("%s: decoded tree hashes to %x (%v), want %x", what, h, err, want)
	}
	if err := tr.VerifyParentHashes(cs); err != nil {
		t.Fatalf("%s: %v", what, err)
	}
	return got
}

// TestTreeCacheOperations applies a seeded random run of Adds (into holes
// and growing the tree), Removes (truncating it), Updates and commits with
// path (created, and applied by a receiver) to one tree, and after each
// compares the cached tree hash and encoding with a computation from
// scratch and with a decoded copy. Every tree of the run must still hash
// as it did when it was made (trees are values; derived trees have caches
// of their own). The package's test mode checks every cache entry besides.
func TestTreeCacheOperations(t *testing.T) {
	for _, id := range []ciphersuite.Suite{ciphersuite.Default, ciphersuite.MLS256DHKEMP384AES256GCMSHA384P384} {
		t.Run(fmt.Sprint("suite", uint16(id)), func(t *testing.T) {
			cs := mustSuite(t, id)
			rng := rand.New(rand.NewPCG(9420, uint64(id)))
			gc := GroupContext{Version: ProtocolMLS10, CipherSuite: cs.ID(), GroupID: []byte("g"), ConfirmedTranscriptHash: []byte{}, Extensions: Extensions{}}
			members := map[LeafIndex]*testMember{0: newTestMember(t, cs, "m0")}
			tree := NewRatchetTree(members[0].leaf)
			type made struct {
				tree RatchetTree
				hash []byte
			}
			var history []made
			steps := 60
			if id != ciphersuite.Default {
				steps = 25 // P-384 keys are slower
			}
			for step := range steps {
				leaves := slices.Sorted(func(yield func(LeafIndex) bool) {
					for l := range members {
						if !yield(l) {
							return
						}
					}
				})
				pick := leaves[rng.IntN(len(leaves))]
				var what string
				switch op := rng.IntN(8); {
				case op < 3 || len(leaves) < 3:
					m := newTestMember(t, cs, fmt.Sprint("m", step))
					var l LeafIndex
					tree, l = tree.AddLeaf(m.leaf)
					members[l] = m
					what = fmt.Sprintf("add at %d", l)
				case op < 5:
					var err error
					if tree, err = tree.RemoveLeaf(pick); err != nil {
						t.Fatal(err)
					}
					delete(members, pick)
					what = fmt.Sprintf("remove %d", pick)
				case op < 6:
					m := newTestMember(t, cs, fmt.Sprint("u", step))
					var err error
					if tree, err = tree.UpdateLeaf(pick, m.leaf); err != nil {
						t.Fatal(err)
					}
					members[pick] = m
					what = fmt.Sprintf("update %d", pick)
				default:
					up, err := tree.CreateUpdatePath(cs, gc, pick, tree.Leaf(pick), members[pick].sig, nil, nil)
					if err != nil {
						t.Fatal(err)
					}
					recv, err := tree.ApplyUpdatePath(cs, gc, pick, &up.Path, nil, nil)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(recv.GroupContext.TreeHash, up.GroupContext.TreeHash) {
						t.Fatalf("step %d: receiver's tree hash differs from the committer's", step)
					}
					checkAgainstScratch(t, cs, fmt.Sprintf("step %d: receiver of commit by %d", step, pick), recv.Tree)
					tree = up.Tree
					what = fmt.Sprintf("commit by %d", pick)
				}
				h := checkAgainstScratch(t, cs, fmt.Sprintf("step %d: %s", step, what), tree)
				history = append(history, made{tree, h})
			}
			for i, m := range history {
				if h, err := m.tree.TreeHash(cs); err != nil || !bytes.Equal(h, m.hash) {
					t.Fatalf("tree of step %d now hashes to %x (%v), was %x", i, h, err, m.hash)
				}
			}
		})
	}
}

// sameEntries checks that after's cache holds, for every node outside
// changed, the very entries (same backing arrays, not recomputed) that
// before's held (every hash; the encodings that were computed), and for
// the nodes in changed either nothing or, with recomputed set, a new
// value.
func sameEntries(t *testing.T, what string, before, after RatchetTree, changed map[NodeIndex]bool, recomputed bool) {
	t.Helper()
	same := func(a, b []byte) bool { return len(a) > 0 && len(b) > 0 && &a[0] == &b[0] }
	for x := range after.nodes {
		for _, e := range []struct {
			name   string
			b, a   []byte
			needed bool
		}{
			{"hash", before.cache.hashes[x], after.cache.hashes[x], true},
			// Trailing blank nodes are not encoded.
			{"encoding", before.cache.enc[x], after.cache.enc[x], false},
		} {
			switch {
			case !changed[NodeIndex(x)] && !same(e.b, e.a) && (e.b != nil || e.a != nil || e.needed):
				t.Errorf("%s: %s of node %d, untouched, was not carried over", what, e.name, x)
			case changed[NodeIndex(x)] && !recomputed && e.a != nil:
				t.Errorf("%s: %s of changed node %d was kept", what, e.name, x)
			case changed[NodeIndex(x)] && recomputed && (e.a == nil || same(e.b, e.a)):
				t.Errorf("%s: %s of changed node %d was not recomputed", what, e.name, x)
			}
		}
	}
}

// pathOf is leaf l and its direct path in a tree of n leaves.
func pathOf(l LeafIndex, n treemath.LeafCount) map[NodeIndex]bool {
	m := map[NodeIndex]bool{l.Node(): true}
	for _, p := range treemath.DirectPath(l.Node(), n) {
		m[p] = true
	}
	return m
}

// TestTreeCacheRecomputesOnlyThePath checks that each operation clears
// exactly the entries of the nodes whose hash input it changes (the nodes
// it writes and their ancestors), and that a commit with path then
// recomputes only those: the leaf and its direct path.
func TestTreeCacheRecomputesOnlyThePath(t *testing.T) {
	s := scEveryParentGroup(t, 37)
	cs := s.creator.cs
	tree := s.creator.tree
	warm := func(tr RatchetTree) {
		t.Helper()
		if _, err := tr.TreeHash(cs); err != nil {
			t.Fatal(err)
		}
		if _, err := tr.Marshal(); err != nil {
			t.Fatal(err)
		}
	}
	warm(tree)
	n := tree.LeafCount()

	const sender = LeafIndex(5)
	up, err := tree.CreateUpdatePath(cs, s.creator.ctx, sender, tree.Leaf(sender), s.clients[sender].secrets.SignatureKey, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := up.Tree.Marshal(); err != nil {
		t.Fatal(err)
	}
	sameEntries(t, "commit with path", tree, up.Tree, pathOf(sender, n), true)
	recv, err := tree.ApplyUpdatePath(cs, s.creator.ctx, sender, &up.Path, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := recv.Tree.Marshal(); err != nil {
		t.Fatal(err)
	}
	sameEntries(t, "commit with path, received", tree, recv.Tree, pathOf(sender, n), true)

	upd, err := tree.UpdateLeaf(sender, newTestMember(t, cs, "new").leaf)
	if err != nil {
		t.Fatal(err)
	}
	sameEntries(t, "update", tree, upd, pathOf(sender, n), false)

	added, l := tree.AddLeaf(newTestMember(t, cs, "added").leaf)
	if l != 37 {
		t.Fatalf("added at %d", l)
	}
	sameEntries(t, "add", tree, added, pathOf(l, n), false)

	removed, err := tree.RemoveLeaf(3)
	if err != nil {
		t.Fatal(err)
	}
	sameEntries(t, "remove", tree, removed, pathOf(3, n), false)

	// Removing the members of the right half truncates the tree: the left
	// half keeps every entry but those of the removed leaf's path.
	small := tree
	for l := LeafIndex(36); l >= 32; l-- {
		if small, err = small.RemoveLeaf(l); err != nil {
			t.Fatal(err)
		}
	}
	if small.LeafCount() != 32 || len(small.cache.hashes) != len(small.nodes) {
		t.Fatalf("after truncation: %d leaves, %d cache entries for %d nodes", small.LeafCount(), len(small.cache.hashes), len(small.nodes))
	}
	sameEntries(t, "remove with truncation", tree, small, pathOf(32, n), false)
	checkAgainstScratch(t, cs, "truncated", small)

	// Growing it again starts the new half empty.
	grown, l := small.AddLeaf(newTestMember(t, cs, "again").leaf)
	if l != 32 || grown.LeafCount() != 64 {
		t.Fatalf("grown: leaf %d of %d", l, grown.LeafCount())
	}
	for x := len(small.nodes); x < len(grown.nodes); x++ {
		if grown.cache.hashes[x] != nil || grown.cache.enc[x] != nil {
			t.Fatalf("grown tree: entry %d of the new half is set", x)
		}
	}
	checkAgainstScratch(t, cs, "grown", grown)
}

// TestTreeCacheOtherSuite hashes one tree in two suites: the cache keeps
// the first suite's hashes, the second is computed apart, both right.
func TestTreeCacheOtherSuite(t *testing.T) {
	cs := mustSuite(t, ciphersuite.Default)
	other := mustSuite(t, ciphersuite.MLS256DHKEMX448AES256GCMSHA512Ed448)
	tree := NewRatchetTree(newTestMember(t, cs, "a").leaf)
	tree, _ = tree.AddLeaf(newTestMember(t, cs, "b").leaf)
	tree, _ = tree.AddLeaf(newTestMember(t, cs, "c").leaf)
	for range 2 {
		for _, s := range []*ciphersuite.CipherSuite{cs, other} {
			got, err := tree.TreeHash(s)
			if err != nil {
				t.Fatal(err)
			}
			want, _ := uncached(tree).TreeHash(s)
			if !bytes.Equal(got, want) {
				t.Fatalf("suite %d: cached %x, from scratch %x", s.ID(), got, want)
			}
		}
	}
	if tree.cache.cs.ID() != cs.ID() {
		t.Fatalf("cache holds suite %d", tree.cache.cs.ID())
	}
}

// TestTreeCacheConcurrentReads has goroutines hash, encode, verify and
// commit from one tree with an empty cache, and from one Group, at once:
// the cache is filled under its lock (run with -race), and every reader
// gets the same answers.
func TestTreeCacheConcurrentReads(t *testing.T) {
	s := scEveryParentGroup(t, 37)
	cs := s.creator.cs
	cold := RatchetTree{nodes: s.creator.tree.nodes, cache: newTreeCache(len(s.creator.tree.nodes))}
	g := s.creator.clone()
	g.tree = RatchetTree{nodes: s.creator.tree.nodes, cache: newTreeCache(len(s.creator.tree.nodes))}
	want, _ := uncached(cold).TreeHash(cs)
	wantEnc, _ := uncached(cold).Marshal()
	var wg sync.WaitGroup
	errs := make(chan error, 64)
	for i := range 8 {
		wg.Go(func() {
			switch i % 4 {
			case 0:
				if h, err := cold.TreeHash(cs); err != nil || !bytes.Equal(h, want) {
					errs <- fmt.Errorf("tree hash %x (%v)", h, err)
				}
			case 1:
				if b, err := cold.Marshal(); err != nil || !bytes.Equal(b, wantEnc) {
					errs <- fmt.Errorf("encoding differs (%v)", err)
				}
			case 2:
				if err := cold.VerifyParentHashes(cs); err != nil {
					errs <- err
				}
			case 3:
				if _, err := cold.CreateUpdatePath(cs, s.creator.ctx, 0, cold.Leaf(0), s.clients[0].secrets.SignatureKey, nil, nil); err != nil {
					errs <- err
				}
			}
			if _, _, err := g.Commit(CommitOptions{ForcePath: true}); err != nil {
				errs <- err
			}
			if _, err := g.MarshalBinary(); err != nil {
				errs <- err
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestStateLoadHasItsOwnCache checks that a Group loaded from saved state
// hashes and commits like the one saved, with a tree cache of its own.
func TestStateLoadHasItsOwnCache(t *testing.T) {
	s := scEveryParentGroup(t, 37)
	b, err := s.member.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	loaded, err := UnmarshalState(b)
	if err != nil {
		t.Fatal(err)
	}
	if loaded.tree.cache == nil || loaded.tree.cache == s.member.tree.cache {
		t.Fatal("a loaded tree shares its cache, or has none")
	}
	_, res, err := s.creator.Commit(CommitOptions{ForcePath: true})
	if err != nil {
		t.Fatal(err)
	}
	a, _, err := s.member.ProcessCommit(res.Commit)
	if err != nil {
		t.Fatal(err)
	}
	c, _, err := loaded.ProcessCommit(res.Commit)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a.EpochAuthenticator(), c.EpochAuthenticator()) {
		t.Fatal("the loaded state reaches another epoch")
	}
	checkAgainstScratch(t, s.creator.cs, "after load and commit", c.tree)
}
