package treemath

import "math/bits"

// NodeIndex is the index of a node in the array representation of a tree.
type NodeIndex uint32

// LeafIndex is the index of a leaf (the n-th leaf is node 2n).
type LeafIndex uint32

// LeafCount is the number of leaves of a tree.
type LeafCount uint32

// ValidLeafCount reports whether n is a leaf count of a full tree: a power
// of two no larger than [MaxLeaves].
func ValidLeafCount(n LeafCount) bool {
	return n != 0 && n <= MaxLeaves && n&(n-1) == 0
}

// LeafCountFor returns the leaf count of the smallest full tree holding
// leaves leaves (the next power of two, at least 1).
func LeafCountFor(leaves uint32) LeafCount {
	if leaves <= 1 {
		return 1
	}
	return LeafCount(uint64(1) << bits.Len32(leaves-1))
}

// MaxLeaves is the largest leaf count whose nodes fit a uint32 node index.
const MaxLeaves LeafCount = 1 << 31

// Node returns the node index of leaf l.
func (l LeafIndex) Node() NodeIndex { return NodeIndex(2 * uint64(l)) }

// IsLeaf reports whether x is a leaf node.
func (x NodeIndex) IsLeaf() bool { return x&1 == 0 }

// Leaf returns the leaf index of x and whether x is a leaf.
func (x NodeIndex) Leaf() (LeafIndex, bool) {
	if !x.IsLeaf() {
		return 0, false
	}
	return LeafIndex(x / 2), true
}

// log2 returns floor(log2(x)), with log2(0) = 0.
func log2(x uint32) uint32 {
	if x == 0 {
		return 0
	}
	return uint32(bits.Len32(x) - 1)
}

// Level returns the level of x: 0 for leaves, one more than the highest
// child level for parents.
func Level(x NodeIndex) uint32 {
	return uint32(bits.TrailingZeros32(^uint32(x)))
}

// NodeWidth returns the number of nodes of a tree with n leaves.
func NodeWidth(n LeafCount) uint32 {
	if n == 0 {
		return 0
	}
	return 2*(uint32(n)-1) + 1
}

// Root returns the root node of a tree with n leaves (0 for n = 0).
func Root(n LeafCount) NodeIndex {
	w := NodeWidth(n)
	return NodeIndex(uint32(1)<<log2(w) - 1)
}

// Left returns the left child of x; ok is false if x is a leaf.
func Left(x NodeIndex) (NodeIndex, bool) {
	k := Level(x)
	if k == 0 {
		return 0, false
	}
	return x ^ NodeIndex(1)<<(k-1), true
}

// Right returns the right child of x; ok is false if x is a leaf.
func Right(x NodeIndex) (NodeIndex, bool) {
	k := Level(x)
	if k == 0 {
		return 0, false
	}
	return x ^ NodeIndex(3)<<(k-1), true
}

// InTree reports whether x is a node of a tree with n leaves.
func InTree(x NodeIndex, n LeafCount) bool {
	return uint32(x) < NodeWidth(n)
}

// Parent returns the parent of x in a full tree with n leaves; ok is false
// if x is the root or not in the tree.
func Parent(x NodeIndex, n LeafCount) (NodeIndex, bool) {
	if !InTree(x, n) || x == Root(n) {
		return 0, false
	}
	k := Level(x)
	b := (uint32(x) >> (k + 1)) & 1
	return NodeIndex((uint32(x) | 1<<k) ^ (b << (k + 1))), true
}

// Sibling returns the other child of x's parent; ok is false if x is the
// root or not in the tree.
func Sibling(x NodeIndex, n LeafCount) (NodeIndex, bool) {
	p, ok := Parent(x, n)
	if !ok {
		return 0, false
	}
	if x < p {
		return Right(p)
	}
	return Left(p)
}

// DirectPath returns the direct path of x (its ancestors from its parent up
// to the root) in a tree with n leaves; it is empty for the root and for a
// node outside the tree.
func DirectPath(x NodeIndex, n LeafCount) []NodeIndex {
	var d []NodeIndex
	for {
		p, ok := Parent(x, n)
		if !ok {
			return d
		}
		d = append(d, p)
		x = p
	}
}

// Copath returns the siblings of x and of every node of its direct path
// except the root, ordered from leaf to root.
func Copath(x NodeIndex, n LeafCount) []NodeIndex {
	if !InTree(x, n) {
		return nil
	}
	var c []NodeIndex
	for {
		s, ok := Sibling(x, n)
		if !ok {
			return c
		}
		c = append(c, s)
		x, _ = Parent(x, n)
	}
}

// CommonAncestor returns the lowest node that is x or y or an ancestor of
// both (RFC 9420 common_ancestor_direct); it does not depend on the tree
// size.
func CommonAncestor(x, y NodeIndex) NodeIndex {
	lx, ly := Level(x)+1, Level(y)+1
	if lx <= ly && uint64(x)>>ly == uint64(y)>>ly {
		return y
	}
	if ly <= lx && uint64(x)>>lx == uint64(y)>>lx {
		return x
	}
	xn, yn := uint64(x), uint64(y)
	k := uint32(0)
	for xn != yn {
		xn, yn = xn>>1, yn>>1
		k++
	}
	return NodeIndex(xn<<k + 1<<(k-1) - 1)
}

// IsAncestor reports whether a is x or an ancestor of x (in any tree that
// contains both).
func IsAncestor(a, x NodeIndex) bool {
	return CommonAncestor(a, x) == a
}
