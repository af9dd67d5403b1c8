package mls

import (
	"bytes"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/treemath"
)

// treeCache memoises, for one node array of a [RatchetTree], the tree hash
// of every node (RFC 9420 §7.8, for one cipher suite) and the encoding of
// every node, so that a commit rehashes, and the ratchet_tree extension of
// its GroupInfo re-encodes, only the nodes its path changed instead of the
// whole tree.
//
// Invariant: every non-nil hashes[x] equals the tree hash of node x
// computed from scratch, and every non-nil enc[x] the encoding of node x,
// over the nodes of the array the cache belongs to. It holds by
// construction:
//
//   - a cache belongs to exactly one node array: trees that share one
//     (copies of a RatchetTree value) share its cache, and
//     [RatchetTree.clone], the only way to get a tree whose nodes may be
//     changed, gives the copy a cache of its own;
//   - every write to a node goes through [RatchetTree.setNode], which clears
//     the node's entries and the hashes of all its ancestors, the only
//     hashes whose input includes it (a node's tree hash covers its
//     subtree, and a leaf's its index, which no operation moves); the node
//     values themselves are never modified once in a tree (see [Node]);
//   - growing or truncating the array resizes the cache with it: the
//     entries of the nodes kept are unchanged (a subtree's hash does not
//     depend on the width of the tree around it), new entries start empty;
//   - entries are filled only under mu, by [RatchetTree.subtreeHash] and
//     [RatchetTree.encodeNode], each from its node and its children's
//     hashes, so trees read concurrently (a Group is safe for concurrent
//     reads) fill it safely, with the same values whoever gets there
//     first. Filled entries are never written in place, and cached slices
//     never leave the package unless copied.
//
// With verifyTreeCache set (the package's tests set it) every use of a
// cache and every tree operation compares each entry with a computation
// from scratch and panics on a difference.
type treeCache struct {
	mu     sync.Mutex
	cs     *ciphersuite.CipherSuite // the suite of the hashes; nil until first hashed
	hashes [][]byte                 // by node index; nil: not computed
	enc    [][]byte                 // by node index, optional<Node> as in the ratchet_tree extension; nil: not computed
}

// nodeMemo is what hashing and encoding read and fill: tree hashes and
// encodings by node index, nil where not known. A nil enc records no
// encodings.
type nodeMemo struct {
	hashes, enc [][]byte
}

// verifyTreeCache makes every use of a tree cache check it against a
// full recomputation (see [treeCache]); a test mode, costing O(n) hashes
// per tree operation.
var verifyTreeCache atomic.Bool

func newTreeCache(width int) *treeCache {
	return &treeCache{hashes: make([][]byte, width), enc: make([][]byte, width)}
}

// clone returns a cache with the entries of c (nil: none) for a copy of
// its node array of the given width.
func (c *treeCache) clone(width int) *treeCache {
	n := newTreeCache(width)
	if c == nil {
		return n
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n.cs = c.cs
	copy(n.hashes, c.hashes)
	copy(n.enc, c.enc)
	return n
}

// invalidate clears the entries of x and the hashes of its ancestors in a
// tree of n leaves.
func (c *treeCache) invalidate(x NodeIndex, n treemath.LeafCount) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if int(x) < len(c.hashes) {
		c.hashes[x], c.enc[x] = nil, nil
	}
	for p, ok := treemath.Parent(x, n); ok; p, ok = treemath.Parent(p, n) {
		if int(p) < len(c.hashes) {
			c.hashes[p] = nil
		}
	}
}

// resize makes room for width nodes: entries past width are dropped,
// new ones are empty.
func (c *treeCache) resize(width int) {
	if c == nil {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if width <= len(c.hashes) {
		clear(c.hashes[width:])
		clear(c.enc[width:])
		c.hashes, c.enc = c.hashes[:width], c.enc[:width]
		return
	}
	grow := make([][]byte, width-len(c.hashes))
	c.hashes, c.enc = append(c.hashes, grow...), append(c.enc, grow...)
}

// setNode writes node x and clears the cached values it changes. Every
// change to a tree's nodes goes through here, on a tree fresh from
// [RatchetTree.clone].
func (t RatchetTree) setNode(x NodeIndex, n Node) {
	t.nodes[x] = n
	t.cache.invalidate(x, t.LeafCount())
}

// withMemo calls fn with the node hashes (for cs; nil cs: no hashes are
// needed) and encodings of t: the cache, locked, or fresh arrays when t
// has none, or, for the hashes, when it holds another suite's (without a
// cache, m.enc is nil unless cs is). fn fills what it needs with
// [RatchetTree.subtreeHash] and [RatchetTree.encodeNode]. The slices must
// not be modified.
func (t RatchetTree) withMemo(cs *ciphersuite.CipherSuite, fn func(m nodeMemo) error) error {
	c := t.cache
	if c == nil {
		// Nothing to keep: hashing marshals nodes directly.
		m := nodeMemo{hashes: make([][]byte, len(t.nodes))}
		if cs == nil {
			m.enc = make([][]byte, len(t.nodes))
		}
		return fn(m)
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.hashes) != len(t.nodes) || len(c.enc) != len(t.nodes) {
		if verifyTreeCache.Load() {
			panic(fmt.Sprintf("mls: tree cache of %d/%d entries for %d nodes", len(c.hashes), len(c.enc), len(t.nodes)))
		}
		return fn(nodeMemo{hashes: make([][]byte, len(t.nodes)), enc: make([][]byte, len(t.nodes))})
	}
	m := nodeMemo{hashes: c.hashes, enc: c.enc}
	switch {
	case cs == nil:
	case c.cs == nil:
		c.cs = cs
	case c.cs.ID() != cs.ID():
		m.hashes = make([][]byte, len(t.nodes))
	}
	err := fn(m)
	if verifyTreeCache.Load() {
		t.compareCache(c)
	}
	return err
}

// hashOf returns the tree hash of node x, computing what the cache lacks.
// The result must not be modified.
func (t RatchetTree) hashOf(cs *ciphersuite.CipherSuite, x NodeIndex) ([]byte, error) {
	var h []byte
	err := t.withMemo(cs, func(m nodeMemo) error {
		var err error
		h, err = t.subtreeHash(cs, x, nil, m)
		return err
	})
	return h, err
}

// encodeNode returns the encoding of node x (optional<Node>), from enc or
// computed and recorded there.
func (t RatchetTree) encodeNode(x int, enc [][]byte) ([]byte, error) {
	if enc[x] != nil {
		return enc[x], nil
	}
	var w codec.Writer
	writeOptionalNode(&w, t.nodes[x])
	b, err := w.Finish()
	if err != nil {
		return nil, err
	}
	enc[x] = b
	return b, nil
}

// checkCache, with verifyTreeCache set, compares the cache of t with a
// computation from scratch and panics on a difference. Tree operations
// call it on the trees they return.
func (t RatchetTree) checkCache() {
	if !verifyTreeCache.Load() || t.cache == nil {
		return
	}
	c := t.cache
	c.mu.Lock()
	defer c.mu.Unlock()
	t.compareCache(c)
}

// compareCache panics unless every entry of c (locked) is the hash or the
// encoding of its node in t, computed from scratch.
func (t RatchetTree) compareCache(c *treeCache) {
	if len(c.hashes) != len(t.nodes) || len(c.enc) != len(t.nodes) {
		panic(fmt.Sprintf("mls: tree cache of %d/%d entries for %d nodes", len(c.hashes), len(c.enc), len(t.nodes)))
	}
	for x, b := range c.enc {
		if b == nil {
			continue
		}
		var w codec.Writer
		writeOptionalNode(&w, t.nodes[x])
		if fresh, err := w.Finish(); err != nil || !bytes.Equal(b, fresh) {
			panic(fmt.Sprintf("mls: cached encoding of node %d (of %d) is stale", x, len(t.nodes)))
		}
	}
	if c.cs == nil || len(t.nodes) == 0 {
		return
	}
	fresh := nodeMemo{hashes: make([][]byte, len(t.nodes))}
	if _, err := t.subtreeHash(c.cs, treemath.Root(t.LeafCount()), nil, fresh); err != nil {
		panic(fmt.Sprintf("mls: recomputing the tree hash: %v", err))
	}
	for x, h := range c.hashes {
		if h != nil && !bytes.Equal(h, fresh.hashes[x]) {
			panic(fmt.Sprintf("mls: cached tree hash of node %d (of %d) is stale", x, len(t.nodes)))
		}
	}
}
