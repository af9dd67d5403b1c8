package mls

import (
	"bytes"
	"fmt"
	"slices"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/treemath"
)

// TreeHash returns the tree hash of the root (RFC 9420 §7.8). Node hashes
// already computed for this tree, or inherited from the tree it was
// derived from, are reused.
func (t RatchetTree) TreeHash(cs *ciphersuite.CipherSuite) ([]byte, error) {
	if len(t.nodes) == 0 {
		return nil, fmt.Errorf("%w: tree hash of an empty tree", ErrInvalidTree)
	}
	h, err := t.hashOf(cs, treemath.Root(t.LeafCount()))
	if err != nil {
		return nil, err
	}
	return bytes.Clone(h), nil
}

// TreeHashes returns the tree hash of every node, indexed by node index.
func (t RatchetTree) TreeHashes(cs *ciphersuite.CipherSuite) ([][]byte, error) {
	out := make([][]byte, len(t.nodes))
	if len(t.nodes) == 0 {
		return out, nil
	}
	err := t.withMemo(cs, func(m nodeMemo) error {
		if _, err := t.subtreeHash(cs, treemath.Root(t.LeafCount()), nil, m); err != nil {
			return err
		}
		for x, h := range m.hashes {
			out[x] = bytes.Clone(h)
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// subtreeHash computes the tree hash of x with the leaves in exclude
// blanked and removed from unmerged lists. It reuses the hashes in
// m.hashes (for subtrees without excluded leaves) and, with exclude empty,
// records every hash it computes there; node encodings come from m.enc,
// and are recorded there, when it is set. m must hold only values of t's
// nodes: fresh arrays, or the tree's cache from [RatchetTree.withMemo].
func (t RatchetTree) subtreeHash(cs *ciphersuite.CipherSuite, x NodeIndex, exclude []LeafIndex, m nodeMemo) ([]byte, error) {
	if m.hashes[x] != nil && (len(exclude) == 0 || !subtreeHasLeaf(x, exclude)) {
		return m.hashes[x], nil
	}
	var w codec.Writer
	n := t.nodes[x]
	if l, ok := x.Leaf(); ok {
		w.Uint8(uint8(NodeTypeLeaf))
		w.Uint32(uint32(l))
		if n.Leaf != nil && !contains(exclude, l) {
			w.Optional(true)
			if err := t.writeNodeContent(&w, x, m.enc); err != nil {
				return nil, err
			}
		} else {
			w.Optional(false)
		}
	} else {
		left, _ := treemath.Left(x)
		right, _ := treemath.Right(x)
		lh, err := t.subtreeHash(cs, left, exclude, m)
		if err != nil {
			return nil, err
		}
		rh, err := t.subtreeHash(cs, right, exclude, m)
		if err != nil {
			return nil, err
		}
		w.Uint8(uint8(NodeTypeParent))
		if p := n.Parent; p != nil {
			w.Optional(true)
			if slices.ContainsFunc(p.UnmergedLeaves, func(u LeafIndex) bool { return contains(exclude, u) }) {
				c := *p
				c.UnmergedLeaves = nil
				for _, u := range p.UnmergedLeaves {
					if !contains(exclude, u) {
						c.UnmergedLeaves = append(c.UnmergedLeaves, u)
					}
				}
				c.marshal(&w)
			} else if err := t.writeNodeContent(&w, x, m.enc); err != nil {
				return nil, err
			}
		} else {
			w.Optional(false)
		}
		w.OpaqueV(lh)
		w.OpaqueV(rh)
	}
	in, err := w.Finish()
	if err != nil {
		return nil, err
	}
	h := cs.Hash(in)
	if len(exclude) == 0 {
		m.hashes[x] = h
	}
	return h, nil
}

// writeNodeContent writes the LeafNode or ParentNode at x (non-blank),
// from its encoding in enc when enc is set (recording it there first if
// needed).
func (t RatchetTree) writeNodeContent(w *codec.Writer, x NodeIndex, enc [][]byte) error {
	if enc == nil {
		if n := t.nodes[x]; n.Leaf != nil {
			n.Leaf.marshal(w)
		} else {
			n.Parent.marshal(w)
		}
		return nil
	}
	b, err := t.encodeNode(int(x), enc)
	if err != nil {
		return err
	}
	// optional<Node>: the presence octet and the node type, then the node.
	w.Raw(b[2:])
	return nil
}

// subtreeHasLeaf reports whether any of leaves lies under x.
func subtreeHasLeaf(x NodeIndex, leaves []LeafIndex) bool {
	for _, l := range leaves {
		if treemath.IsAncestor(x, l.Node()) {
			return true
		}
	}
	return false
}

// parentHash computes the parent hash of a parent node with the given key
// and parent_hash field over the sibling tree hash (RFC 9420 §7.9).
func parentHash(cs *ciphersuite.CipherSuite, key HPKEPublicKey, ph, siblingHash []byte) ([]byte, error) {
	var w codec.Writer
	w.OpaqueV(key)
	w.OpaqueV(ph)
	w.OpaqueV(siblingHash)
	b, err := w.Finish()
	if err != nil {
		return nil, err
	}
	return cs.Hash(b), nil
}

// VerifyParentHashes checks that every non-blank parent node is parent-hash
// valid (RFC 9420 §7.9.2), top down: exactly one node below each parent
// links to it.
func (t RatchetTree) VerifyParentHashes(cs *ciphersuite.CipherSuite) error {
	if len(t.nodes) == 0 {
		return nil
	}
	return t.withMemo(cs, func(m nodeMemo) error {
		if _, err := t.subtreeHash(cs, treemath.Root(t.LeafCount()), nil, m); err != nil {
			return err
		}
		return t.verifyParentHashes(cs, m)
	})
}

// verifyParentHashes is VerifyParentHashes with the tree hash of every
// node in m.
func (t RatchetTree) verifyParentHashes(cs *ciphersuite.CipherSuite, m nodeMemo) error {
	for x := 1; x < len(t.nodes); x += 2 {
		p := t.nodes[x].Parent
		if p == nil {
			continue
		}
		px := NodeIndex(x)
		left, _ := treemath.Left(px)
		right, _ := treemath.Right(px)
		links := 0
		for _, pair := range [2][2]NodeIndex{{left, right}, {right, left}} {
			c, s := pair[0], pair[1]
			sh, err := t.subtreeHash(cs, s, p.UnmergedLeaves, m)
			if err != nil {
				return err
			}
			ph, err := parentHash(cs, p.EncryptionKey, p.ParentHash, sh)
			if err != nil {
				return err
			}
			if t.linksTo(p, c, ph) {
				links++
			}
		}
		if links != 1 {
			return fmt.Errorf("%w: parent node %d is not parent-hash valid (%d links)", ErrInvalidTree, x, links)
		}
	}
	return nil
}

// linksTo reports whether some node D in the resolution of child c carries
// parent hash ph, with P's unmerged leaves under c being exactly the rest of
// that resolution.
func (t RatchetTree) linksTo(p *ParentNode, c NodeIndex, ph []byte) bool {
	res := t.Resolution(c)
	var unmerged []NodeIndex
	for _, u := range p.UnmergedLeaves {
		if treemath.IsAncestor(c, u.Node()) {
			unmerged = append(unmerged, u.Node())
		}
	}
	for i, d := range res {
		var dph []byte
		switch n := t.Node(d); {
		case n.Parent != nil:
			dph = n.Parent.ParentHash
		case n.Leaf != nil && n.Leaf.Source == LeafNodeSourceCommit:
			dph = n.Leaf.ParentHash
		default:
			continue
		}
		if !bytes.Equal(dph, ph) {
			continue
		}
		rest := append(append([]NodeIndex{}, res[:i]...), res[i+1:]...)
		if sameSet(rest, unmerged) {
			return true
		}
	}
	return false
}

func sameSet(a, b []NodeIndex) bool {
	if len(a) != len(b) {
		return false
	}
	for _, x := range a {
		if !contains(b, x) {
			return false
		}
	}
	return true
}

// Validate checks the tree as a joiner must (RFC 9420 §12.4.3.1): parent
// hashes, every leaf (signature bound to groupID and its index, credential
// and extension support, the group's required capabilities from
// groupExtensions), credential types supported by every member, unmerged
// leaves (non-blank descendants, listed at every non-blank node in
// between), parent keys that are keys of the suite's KEM, and unique
// encryption and signature keys. The caller compares
// [RatchetTree.TreeHash] with the GroupContext. Lifetimes are not checked
// (RFC 9420 §7.3 only recommends it for received trees). Errors wrap
// [ErrInvalidTree].
func (t RatchetTree) Validate(cs *ciphersuite.CipherSuite, groupID []byte, groupExtensions Extensions) error {
	if len(t.nodes) == 0 || !treemath.ValidLeafCount(t.LeafCount()) || len(t.nodes) != int(treemath.NodeWidth(t.LeafCount())) {
		return fmt.Errorf("%w: %d nodes is not a full tree", ErrInvalidTree, len(t.nodes))
	}
	required, err := requiredCapabilities(groupExtensions)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTree, err)
	}
	encKeys := make(map[string]NodeIndex)
	sigKeys := make(map[string]LeafIndex)
	var leafErr error
	t.Leaves(func(l LeafIndex, ln *LeafNode) {
		if leafErr != nil {
			return
		}
		if err := ln.Validate(cs, ln.Source, groupID, l); err != nil {
			leafErr = fmt.Errorf("%w: leaf %d: %w", ErrInvalidTree, l, err)
			return
		}
		if err := required.checkLeaf(ln); err != nil {
			leafErr = fmt.Errorf("%w: leaf %d: %w", ErrInvalidTree, l, err)
			return
		}
		if prev, dup := sigKeys[string(ln.SignatureKey)]; dup {
			leafErr = fmt.Errorf("%w: leaves %d and %d share a signature key", ErrInvalidTree, prev, l)
			return
		}
		sigKeys[string(ln.SignatureKey)] = l
	})
	if leafErr != nil {
		return leafErr
	}
	if err := t.checkCredentialSupport(); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidTree, err)
	}
	n := t.LeafCount()
	for x, node := range t.nodes {
		if node.IsBlank() {
			continue
		}
		key := string(node.encryptionKey())
		if prev, dup := encKeys[key]; dup {
			return fmt.Errorf("%w: nodes %d and %d share an encryption key", ErrInvalidTree, prev, x)
		}
		encKeys[key] = NodeIndex(x)
		if node.Parent == nil {
			continue
		}
		if err := cs.ValidateHPKEPublicKey(node.Parent.EncryptionKey); err != nil {
			return fmt.Errorf("%w: parent node %d: %w", ErrInvalidTree, x, err)
		}
		px := NodeIndex(x)
		for i, u := range node.Parent.UnmergedLeaves {
			if i > 0 && node.Parent.UnmergedLeaves[i-1] >= u {
				return fmt.Errorf("%w: unmerged leaves of node %d are not sorted", ErrInvalidTree, x)
			}
			if uint64(u) >= uint64(n) || !treemath.IsAncestor(px, u.Node()) || t.Leaf(u) == nil {
				return fmt.Errorf("%w: unmerged leaf %d of node %d is blank or not a descendant", ErrInvalidTree, u, x)
			}
			for _, mid := range treemath.DirectPath(u.Node(), n) {
				if mid == px {
					break
				}
				if mp := t.nodes[mid].Parent; mp != nil && !contains(mp.UnmergedLeaves, u) {
					return fmt.Errorf("%w: unmerged leaf %d of node %d missing at node %d", ErrInvalidTree, u, x, mid)
				}
			}
		}
	}
	return t.VerifyParentHashes(cs)
}

// checkCredentialSupport reports a leaf that does not support the
// credential type of another leaf (RFC 9420 §7.3: every member supports
// the credential type of each new leaf, and each new leaf every credential
// type in use). The error names both leaves and wraps no sentinel.
func (t RatchetTree) checkCredentialSupport() error {
	var types []CredentialType
	var users []LeafIndex // users[i] is the first leaf of types[i]
	t.Leaves(func(l LeafIndex, ln *LeafNode) {
		if !contains(types, ln.Credential.Type) {
			types = append(types, ln.Credential.Type)
			users = append(users, l)
		}
	})
	if len(types) < 2 {
		// A leaf's own credential type is in its capabilities
		// ([LeafNode.Validate]).
		return nil
	}
	var err error
	t.Leaves(func(l LeafIndex, ln *LeafNode) {
		for i, ct := range types {
			if err == nil && !ln.Capabilities.SupportsCredential(ct) {
				err = fmt.Errorf("leaf %d does not support credential type %d used by leaf %d", l, ct, users[i])
			}
		}
	})
	return err
}

// checkLeaf reports a leaf that lacks a required capability; a nil
// receiver requires nothing.
func (rc *RequiredCapabilities) checkLeaf(ln *LeafNode) error {
	if rc == nil {
		return nil
	}
	for _, e := range rc.Extensions {
		if !ln.Capabilities.SupportsExtension(e) {
			return fmt.Errorf("required extension type %d not supported", e)
		}
	}
	for _, p := range rc.Proposals {
		if !ln.Capabilities.SupportsProposal(p) {
			return fmt.Errorf("required proposal type %d not supported", p)
		}
	}
	for _, c := range rc.Credentials {
		if !ln.Capabilities.SupportsCredential(c) {
			return fmt.Errorf("required credential type %d not supported", c)
		}
	}
	return nil
}
