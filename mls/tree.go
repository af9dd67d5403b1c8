package mls

import (
	"fmt"
	"slices"

	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/treemath"
)

// NodeType distinguishes leaf from parent nodes in encodings.
type NodeType uint8

// Node types (RFC 9420 §7.8).
const (
	NodeTypeLeaf   NodeType = 1
	NodeTypeParent NodeType = 2
)

// Node is one entry of a ratchet tree: a leaf, a parent, or blank (both
// nil). The pointed-to values are shared between trees and must not be
// modified.
type Node struct {
	Leaf   *LeafNode
	Parent *ParentNode
}

// IsBlank reports whether the node is blank.
func (n Node) IsBlank() bool { return n.Leaf == nil && n.Parent == nil }

// encryptionKey returns the HPKE public key of a non-blank node.
func (n Node) encryptionKey() HPKEPublicKey {
	switch {
	case n.Leaf != nil:
		return n.Leaf.EncryptionKey
	case n.Parent != nil:
		return n.Parent.EncryptionKey
	}
	return nil
}

// RatchetTree is the public ratchet tree of a group (RFC 9420 §7) in array
// form. It is a value: methods that change the tree return a new one and
// leave the receiver unchanged. The zero value is an empty tree.
//
// A tree remembers the tree hashes and node encodings it has computed,
// node by node, and a tree derived from it by an operation starts from
// those of the nodes the operation left alone (see treeCache): after a
// commit, the new tree hash costs O(log n) hashes, not n, and encoding the
// tree re-encodes only the changed nodes. Copies of a tree share that
// memory, which is safe for concurrent use.
type RatchetTree struct {
	nodes []Node
	cache *treeCache // tree hashes and encodings of nodes; nil: none kept
}

// NewRatchetTree returns a one-member tree holding leaf.
func NewRatchetTree(leaf *LeafNode) RatchetTree {
	return RatchetTree{nodes: []Node{{Leaf: leaf}}, cache: newTreeCache(1)}
}

// LeafCount returns the number of leaves (a power of two), blank or not.
func (t RatchetTree) LeafCount() treemath.LeafCount {
	return treemath.LeafCount((len(t.nodes) + 1) / 2)
}

// NodeWidth returns the number of nodes in the array.
func (t RatchetTree) NodeWidth() int { return len(t.nodes) }

// Node returns node x (blank if out of range).
func (t RatchetTree) Node(x NodeIndex) Node {
	if int(x) >= len(t.nodes) {
		return Node{}
	}
	return t.nodes[x]
}

// Leaf returns the leaf node at index l, or nil if it is blank or out of
// range.
func (t RatchetTree) Leaf(l LeafIndex) *LeafNode {
	// Checked on the leaf index: l.Node() wraps around for l >= 2^31.
	if uint64(l) >= uint64(t.LeafCount()) {
		return nil
	}
	return t.nodes[l.Node()].Leaf
}

// Parent returns the parent node at x, or nil if it is blank.
func (t RatchetTree) Parent(x NodeIndex) *ParentNode { return t.Node(x).Parent }

// clone returns a tree sharing node values but not the array, with a copy
// of the hash cache of its own: the tree to change, through setNode.
func (t RatchetTree) clone() RatchetTree {
	return RatchetTree{nodes: slices.Clone(t.nodes), cache: t.cache.clone(len(t.nodes))}
}

// UnmarshalRatchetTree decodes the ratchet_tree extension form
// (optional<Node> ratchet_tree<V>, RFC 9420 §12.4.3.3): the last entry must
// be non-blank, leaves must sit at even and parents at odd positions, and
// the tree is extended with blanks to a full width.
func UnmarshalRatchetTree(b []byte) (RatchetTree, error) {
	r := codec.NewReader(b)
	t, err := readRatchetTree(r)
	if err != nil {
		return RatchetTree{}, err
	}
	if err := r.Done(); err != nil {
		return RatchetTree{}, err
	}
	return t, nil
}

func readRatchetTree(r *codec.Reader) (RatchetTree, error) {
	var nodes []Node
	err := r.ForEachV(func(sub *codec.Reader) error {
		x := len(nodes)
		present, err := sub.Optional()
		if err != nil || !present {
			nodes = append(nodes, Node{})
			return err
		}
		t, err := sub.Uint8()
		if err != nil {
			return err
		}
		var n Node
		switch {
		case NodeType(t) == NodeTypeLeaf && x%2 == 0:
			n.Leaf = new(LeafNode)
			err = n.Leaf.unmarshal(sub)
		case NodeType(t) == NodeTypeParent && x%2 == 1:
			n.Parent = new(ParentNode)
			err = n.Parent.unmarshal(sub)
		default:
			return sub.Failf("ratchet tree node %d has node type %d", x, t)
		}
		nodes = append(nodes, n)
		return err
	})
	if err != nil {
		return RatchetTree{}, err
	}
	if len(nodes) == 0 {
		return RatchetTree{}, fmt.Errorf("%w: ratchet tree is empty", ErrDecode)
	}
	if nodes[len(nodes)-1].IsBlank() {
		return RatchetTree{}, fmt.Errorf("%w: ratchet tree ends with a blank node", ErrDecode)
	}
	if len(nodes) > int(treemath.NodeWidth(treemath.MaxLeaves)) {
		return RatchetTree{}, fmt.Errorf("%w: ratchet tree has %d nodes", ErrDecode, len(nodes))
	}
	// The smallest full tree whose width covers every entry.
	width := treemath.NodeWidth(treemath.LeafCountFor(uint32(len(nodes)+2) / 2))
	for len(nodes) < int(width) {
		nodes = append(nodes, Node{})
	}
	return RatchetTree{nodes: nodes, cache: newTreeCache(len(nodes))}, nil
}

// Marshal encodes the tree in ratchet_tree extension form, omitting
// trailing blank nodes.
func (t RatchetTree) Marshal() ([]byte, error) {
	var out []byte
	err := t.encodeNodes(func(total int, enc [][]byte) error {
		var err error
		if out, err = codec.AppendVarint(make([]byte, 0, codec.VarintLen(uint64(total))+total), uint64(total)); err != nil {
			return err
		}
		for _, b := range enc {
			out = append(out, b...)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func (t RatchetTree) marshal(w *codec.Writer) {
	w.Fail(t.encodeNodes(func(total int, enc [][]byte) error {
		// The tree is most of a group's state: room for it and for what
		// usually follows it, so the state is not copied as it grows.
		w.Grow(total + total/16 + 4096)
		w.Varint(uint64(total))
		for _, b := range enc {
			w.Raw(b)
		}
		return nil
	}))
}

// encodeNodes calls fn with the encodings of the nodes up to the last
// non-blank one and their total length, the content of the ratchet_tree
// vector. They come from the encodings the tree keeps: only nodes changed
// since the tree it derives from was encoded or hashed are encoded again.
func (t RatchetTree) encodeNodes(fn func(total int, enc [][]byte) error) error {
	end := len(t.nodes)
	for end > 0 && t.nodes[end-1].IsBlank() {
		end--
	}
	if end == 0 {
		return fmt.Errorf("%w: ratchet tree has no non-blank node", codec.ErrEncode)
	}
	return t.withMemo(nil, func(m nodeMemo) error {
		total := 0
		for x := range end {
			b, err := t.encodeNode(x, m.enc)
			if err != nil {
				return err
			}
			total += len(b)
		}
		if total > codec.MaxVarint {
			return fmt.Errorf("%w: ratchet tree of %d bytes exceeds 2^30-1", codec.ErrEncode, total)
		}
		return fn(total, m.enc[:end])
	})
}

func writeOptionalNode(w *codec.Writer, n Node) {
	switch {
	case n.Leaf != nil:
		w.Optional(true)
		w.Uint8(uint8(NodeTypeLeaf))
		n.Leaf.marshal(w)
	case n.Parent != nil:
		w.Optional(true)
		w.Uint8(uint8(NodeTypeParent))
		n.Parent.marshal(w)
	default:
		w.Optional(false)
	}
}

// Extension returns the ratchet_tree extension carrying the tree.
func (t RatchetTree) Extension() (Extension, error) {
	b, err := t.Marshal()
	return Extension{Type: ExtensionTypeRatchetTree, Data: b}, err
}

// Resolution returns the resolution of node x (RFC 9420 §4.1.1): the
// non-blank nodes covering its subtree, each non-blank parent followed by
// its unmerged leaves.
func (t RatchetTree) Resolution(x NodeIndex) []NodeIndex {
	return t.appendResolution(nil, x)
}

func (t RatchetTree) appendResolution(out []NodeIndex, x NodeIndex) []NodeIndex {
	n := t.Node(x)
	switch {
	case n.Leaf != nil:
		return append(out, x)
	case n.Parent != nil:
		out = append(out, x)
		for _, l := range n.Parent.UnmergedLeaves {
			out = append(out, l.Node())
		}
		return out
	case x.IsLeaf():
		return out
	}
	l, _ := treemath.Left(x)
	r, _ := treemath.Right(x)
	return t.appendResolution(t.appendResolution(out, l), r)
}

// FilteredDirectPath returns the filtered direct path of leaf l (RFC 9420
// §4.1.2): its direct path without the nodes whose copath child has an
// empty resolution, ordered from the leaf upwards.
func (t RatchetTree) FilteredDirectPath(l LeafIndex) []NodeIndex {
	fdp, _ := t.filteredDirectPath(l)
	return fdp
}

// filteredDirectPath also returns, for each node kept, its child on the
// copath of l.
func (t RatchetTree) filteredDirectPath(l LeafIndex) (path, copath []NodeIndex) {
	n := t.LeafCount()
	dp := treemath.DirectPath(l.Node(), n)
	cp := treemath.Copath(l.Node(), n)
	for i, p := range dp {
		if len(t.Resolution(cp[i])) == 0 {
			continue
		}
		path = append(path, p)
		copath = append(copath, cp[i])
	}
	return path, copath
}

// blankDirectPath blanks every parent on the direct path of l (in place).
func (t RatchetTree) blankDirectPath(l LeafIndex) {
	for _, p := range treemath.DirectPath(l.Node(), t.LeafCount()) {
		t.setNode(p, Node{})
	}
}

// AddLeaf places leaf in the leftmost blank leaf, extending the tree if
// none is free, and records it as unmerged in every non-blank parent on its
// direct path (RFC 9420 §12.1.1). It returns the new tree and the index.
func (t RatchetTree) AddLeaf(leaf *LeafNode) (RatchetTree, LeafIndex) {
	nt := t.clone()
	l := nt.addLeafInPlace(leaf, 0)
	nt.checkCache()
	return nt, l
}

// addLeafInPlace is AddLeaf on a tree the caller owns (its own clone),
// changing it: adding n members then costs one copy of the tree, not n.
// The leftmost blank leaf is looked for from leaf from on; every leaf
// before from must be non-blank (after an add at l, l+1 will do). Nodes
// are shared with the tree t was cloned from, so a parent that changes
// is copied, never written through.
func (t *RatchetTree) addLeafInPlace(leaf *LeafNode, from LeafIndex) LeafIndex {
	l := from
	for {
		if int(l.Node()) >= len(t.nodes) {
			// No blank leaf: double the tree with a blank right subtree.
			if len(t.nodes) == 0 {
				t.nodes = make([]Node, 1)
			} else {
				t.nodes = append(t.nodes, make([]Node, len(t.nodes)+1)...)
			}
			t.cache.resize(len(t.nodes))
			break
		}
		if t.nodes[l.Node()].IsBlank() {
			break
		}
		l++
	}
	for _, p := range treemath.DirectPath(l.Node(), t.LeafCount()) {
		pn := t.nodes[p].Parent
		if pn == nil {
			continue
		}
		c := *pn
		c.UnmergedLeaves = append(slices.Clone(pn.UnmergedLeaves), l)
		slices.Sort(c.UnmergedLeaves)
		t.setNode(p, Node{Parent: &c})
	}
	t.setNode(l.Node(), Node{Leaf: leaf})
	return l
}

// UpdateLeaf replaces the leaf at l and blanks its direct path (an Update
// proposal, RFC 9420 §12.1.2).
func (t RatchetTree) UpdateLeaf(l LeafIndex, leaf *LeafNode) (RatchetTree, error) {
	nt := t.clone()
	if err := nt.updateLeafInPlace(l, leaf); err != nil {
		return RatchetTree{}, err
	}
	nt.checkCache()
	return nt, nil
}

// updateLeafInPlace is UpdateLeaf on a tree the caller owns (its own
// clone), changing it.
func (t *RatchetTree) updateLeafInPlace(l LeafIndex, leaf *LeafNode) error {
	if t.Leaf(l) == nil {
		return fmt.Errorf("%w: update of blank or missing leaf %d", ErrInvalidTree, l)
	}
	t.blankDirectPath(l)
	t.setNode(l.Node(), Node{Leaf: leaf})
	return nil
}

// RemoveLeaf blanks the leaf at l and its direct path, then truncates the
// tree while its right half is blank (a Remove proposal, RFC 9420 §12.1.3).
func (t RatchetTree) RemoveLeaf(l LeafIndex) (RatchetTree, error) {
	nt := t.clone()
	if err := nt.removeLeafInPlace(l); err != nil {
		return RatchetTree{}, err
	}
	nt.checkCache()
	return nt, nil
}

// removeLeafInPlace is RemoveLeaf on a tree the caller owns (its own
// clone), changing it: removing n members then costs one copy of the
// tree, not n.
func (t *RatchetTree) removeLeafInPlace(l LeafIndex) error {
	if t.Leaf(l) == nil {
		return fmt.Errorf("%w: removal of blank or missing leaf %d", ErrInvalidTree, l)
	}
	t.blankDirectPath(l)
	t.setNode(l.Node(), Node{})
	t.truncate()
	return nil
}

// truncate halves the tree while the right subtree of the root is blank,
// keeping at least one leaf.
func (t *RatchetTree) truncate() {
	for len(t.nodes) > 1 {
		half := (len(t.nodes) - 1) / 2
		for _, n := range t.nodes[half+1:] {
			if !n.IsBlank() {
				return
			}
		}
		t.nodes = t.nodes[:half]
		t.cache.resize(half)
	}
}

// Leaves calls fn for each non-blank leaf in index order.
func (t RatchetTree) Leaves(fn func(l LeafIndex, leaf *LeafNode)) {
	for x := 0; x < len(t.nodes); x += 2 {
		if ln := t.nodes[x].Leaf; ln != nil {
			fn(LeafIndex(x/2), ln)
		}
	}
}

// FindLeaf returns the index of the first leaf whose encoding equals leaf's.
func (t RatchetTree) FindLeaf(leaf *LeafNode) (LeafIndex, bool) {
	want, err := leaf.Marshal()
	if err != nil {
		return 0, false
	}
	for x := 0; x < len(t.nodes); x += 2 {
		if ln := t.nodes[x].Leaf; ln != nil {
			if got, err := ln.Marshal(); err == nil && string(got) == string(want) {
				return LeafIndex(x / 2), true
			}
		}
	}
	return 0, false
}
