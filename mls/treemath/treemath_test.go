package treemath_test

import (
	"fmt"
	"slices"
	"testing"

	"github.com/epochlog/epochlog/mls/internal/vectortest"
	"github.com/epochlog/epochlog/mls/treemath"
)

type treeMathCase struct {
	NLeaves uint32    `json:"n_leaves"`
	NNodes  uint32    `json:"n_nodes"`
	Root    uint32    `json:"root"`
	Left    []*uint32 `json:"left"`
	Right   []*uint32 `json:"right"`
	Parent  []*uint32 `json:"parent"`
	Sibling []*uint32 `json:"sibling"`
}

func check(t *testing.T, what string, i int, got treemath.NodeIndex, ok bool, want *uint32) {
	t.Helper()
	switch {
	case want == nil && ok:
		t.Errorf("%s(%d) = %d, want none", what, i, got)
	case want != nil && !ok:
		t.Errorf("%s(%d) = none, want %d", what, i, *want)
	case want != nil && uint32(got) != *want:
		t.Errorf("%s(%d) = %d, want %d", what, i, got, *want)
	}
}

func TestTreeMathVectors(t *testing.T) {
	var cases []treeMathCase
	vectortest.Load(t, "tree-math.json", &cases)
	tally := vectortest.NewTally(t, "tree-math.json")
	for _, tc := range cases {
		tally.Run(t, fmt.Sprintf("n%d", tc.NLeaves), 0, func(t *testing.T) {
			n := treemath.LeafCount(tc.NLeaves)
			if w := treemath.NodeWidth(n); w != tc.NNodes {
				t.Fatalf("NodeWidth(%d) = %d, want %d", n, w, tc.NNodes)
			}
			if r := treemath.Root(n); uint32(r) != tc.Root {
				t.Fatalf("Root(%d) = %d, want %d", n, r, tc.Root)
			}
			if len(tc.Left) != int(tc.NNodes) || len(tc.Right) != int(tc.NNodes) || len(tc.Parent) != int(tc.NNodes) || len(tc.Sibling) != int(tc.NNodes) {
				t.Fatalf("vector arrays do not have n_nodes entries")
			}
			for i := range int(tc.NNodes) {
				x := treemath.NodeIndex(i)
				l, ok := treemath.Left(x)
				check(t, "Left", i, l, ok, tc.Left[i])
				r, ok := treemath.Right(x)
				check(t, "Right", i, r, ok, tc.Right[i])
				p, ok := treemath.Parent(x, n)
				check(t, "Parent", i, p, ok, tc.Parent[i])
				s, ok := treemath.Sibling(x, n)
				check(t, "Sibling", i, s, ok, tc.Sibling[i])
			}
		})
	}
}

// semanticCommonAncestor is RFC 9420's common_ancestor_semantic, used as the
// reference for the bit-twiddling CommonAncestor.
func semanticCommonAncestor(x, y treemath.NodeIndex, n treemath.LeafCount) treemath.NodeIndex {
	dx := append([]treemath.NodeIndex{x}, treemath.DirectPath(x, n)...)
	dy := append([]treemath.NodeIndex{y}, treemath.DirectPath(y, n)...)
	best, found := treemath.NodeIndex(0), false
	for _, a := range dx {
		if slices.Contains(dy, a) && (!found || treemath.Level(a) < treemath.Level(best)) {
			best, found = a, true
		}
	}
	return best
}

func TestPathsAndAncestors(t *testing.T) {
	for n := treemath.LeafCount(1); n <= 64; n *= 2 {
		root := treemath.Root(n)
		for x := treemath.NodeIndex(0); uint32(x) < treemath.NodeWidth(n); x++ {
			dp := treemath.DirectPath(x, n)
			cp := treemath.Copath(x, n)
			if x == root {
				if len(dp) != 0 || len(cp) != 0 {
					t.Fatalf("n=%d root %d has direct path %v copath %v", n, x, dp, cp)
				}
				continue
			}
			if len(dp) == 0 || dp[len(dp)-1] != root || len(cp) != len(dp) {
				t.Fatalf("n=%d x=%d: direct path %v copath %v", n, x, dp, cp)
			}
			// Each copath node is the sibling of x or of a direct path node.
			prev := x
			for i, c := range cp {
				if s, _ := treemath.Sibling(prev, n); s != c {
					t.Fatalf("n=%d x=%d: copath[%d] = %d, want sibling of %d = %d", n, x, i, c, prev, s)
				}
				if p, _ := treemath.Parent(c, n); p != dp[i] {
					t.Fatalf("n=%d x=%d: copath[%d]=%d is not a child of direct path node %d", n, x, i, c, dp[i])
				}
				prev = dp[i]
			}
		}
		for x := treemath.NodeIndex(0); uint32(x) < treemath.NodeWidth(n); x++ {
			for y := treemath.NodeIndex(0); uint32(y) < treemath.NodeWidth(n); y++ {
				if got, want := treemath.CommonAncestor(x, y), semanticCommonAncestor(x, y, n); got != want {
					t.Fatalf("n=%d CommonAncestor(%d, %d) = %d, want %d", n, x, y, got, want)
				}
			}
		}
	}
	if _, ok := treemath.Parent(99, 4); ok {
		t.Fatal("Parent of a node outside the tree reported ok")
	}
	if cp := treemath.Copath(99, 4); cp != nil {
		t.Fatalf("Copath of a node outside the tree = %v", cp)
	}
	if !treemath.IsAncestor(3, 0) || treemath.IsAncestor(3, 8) || !treemath.IsAncestor(5, 5) {
		t.Fatal("IsAncestor wrong")
	}
	if l, ok := treemath.NodeIndex(6).Leaf(); !ok || l != 3 || treemath.LeafIndex(3).Node() != 6 {
		t.Fatal("leaf/node index conversion wrong")
	}
	if _, ok := treemath.NodeIndex(5).Leaf(); ok {
		t.Fatal("parent node reported as a leaf")
	}
}

func TestLeafCounts(t *testing.T) {
	for n, want := range map[treemath.LeafCount]bool{0: false, 1: true, 2: true, 3: false, 4: true, 6: false, 1 << 31: true, 1<<31 + 1: false} {
		if treemath.ValidLeafCount(n) != want {
			t.Errorf("ValidLeafCount(%d) = %v", n, !want)
		}
	}
	for in, want := range map[uint32]treemath.LeafCount{0: 1, 1: 1, 2: 2, 3: 4, 4: 4, 5: 8, 1000: 1024, 1 << 31: 1 << 31} {
		if got := treemath.LeafCountFor(in); got != want {
			t.Errorf("LeafCountFor(%d) = %d, want %d", in, got, want)
		}
	}
}

func TestLargeTree(t *testing.T) {
	n := treemath.MaxLeaves
	if treemath.NodeWidth(n) != 1<<32-1 || treemath.Root(n) != 1<<31-1 {
		t.Fatalf("NodeWidth/Root for 2^31 leaves: %d %d", treemath.NodeWidth(n), treemath.Root(n))
	}
	last := treemath.NodeIndex(1<<32 - 2)
	dp := treemath.DirectPath(last, n)
	if len(dp) != 31 || dp[30] != treemath.Root(n) {
		t.Fatalf("direct path of the last leaf in the largest tree has %d nodes", len(dp))
	}
}
