package mls

import (
	"bytes"
	"fmt"
	"maps"
	"slices"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

// stateVersion is the leading byte of a serialized Group. Bump it when the
// layout changes. Version 1 stored each epoch's encryption_secret and its
// joiner_secret, from which consumed message keys could be re-derived; it
// is refused rather than upgraded, because loading it would carry that
// forward-secrecy gap on (see docs/mls.md). Version 2 stored each
// retained past epoch with its whole ratchet tree; version 3 is version 2
// with the committed ReInit after it, for a group that a ReInit closed.
// Both still load. Version 4, written now, stores a past epoch's leaves
// only (what a late message needs of its tree), as their differences
// from the next newer epoch's leaves: a commit changes a few leaves, so
// each past epoch costs a few leaf nodes instead of a whole tree. Version
// 5 is version 4 with the committed ReInit after it, written only for a
// group that a ReInit closed, as 3 was for 2.
const (
	stateVersionV2       = 2
	stateVersionV2ReInit = 3
	stateVersion         = 4
	stateVersionReInit   = 5
)

// MarshalBinary serializes the full client state, secrets included, as
// stable versioned bytes: a version byte, then the fields in MLS
// presentation-language encoding. The bytes are as sensitive as the keys:
// store them encrypted. The current and retained past epochs are stored as
// the current state of their secret trees ([keyschedule.SecretTree.MarshalBinary])
// and the current epoch's secrets without its joiner, epoch and encryption
// secrets ([keyschedule.EpochSecrets.MarshalBinary]), so the bytes hold no
// secret from which an already-consumed message key can be re-derived.
// A retained past epoch keeps its group context, its leaves and its keys
// (see stateVersion).
func (g *Group) MarshalBinary() ([]byte, error) {
	return g.marshalState(false)
}

// marshalState serializes g in the current layout, or with legacy in
// version 2's (3's for a closed group), which stores each past epoch's
// tree whole; the one kept to test that such states still load. A past
// epoch loaded from a current state has no parent nodes: in the legacy
// layout its tree holds its leaves only.
func (g *Group) marshalState(legacy bool) ([]byte, error) {
	var w codec.Writer
	switch {
	case legacy && g.reinit != nil:
		w.Uint8(stateVersionV2ReInit)
	case legacy:
		w.Uint8(stateVersionV2)
	case g.reinit != nil:
		w.Uint8(stateVersionReInit)
	default:
		w.Uint8(stateVersion)
	}
	w.Uint16(uint16(g.ctx.CipherSuite))
	w.Uint32(uint32(int32(g.opts.MaxPastEpochs)))
	w.Uint32(g.opts.MaxForwardRatchets)
	w.Optional(g.opts.EncryptHandshake)
	w.Uint16(g.opts.Padding)
	g.ctx.marshal(&w)
	g.tree.marshal(&w)
	w.Uint32(uint32(g.me))
	w.OpaqueV(g.sig.Bytes())
	w.Optional(g.keys != nil)
	if g.keys != nil {
		nodes := append([]NodeIndex{g.me.Node()}, treemath.DirectPath(g.me.Node(), g.tree.LeafCount())...)
		w.VectorV(func(w *codec.Writer) {
			for _, x := range nodes {
				if k, ok := g.keys.Key(x); ok {
					w.Uint32(uint32(x))
					w.OpaqueV(k.Bytes())
				}
			}
		})
	}
	es, err := g.secrets.MarshalBinary()
	if err != nil {
		return nil, err
	}
	w.OpaqueV(es)
	w.OpaqueV(g.confirmationTag)
	w.OpaqueV(g.interim)
	st, err := g.epochKeys.st.MarshalBinary()
	if err != nil {
		return nil, err
	}
	w.OpaqueV(st)
	w.VectorV(func(w *codec.Writer) {
		for _, p := range g.proposals {
			w.OpaqueV(p.ref)
			p.sender.marshal(w)
			p.proposal.marshal(w)
		}
	})
	for _, m := range []map[string]keyschedule.Secret{hpkeSecrets(g.pendingUpdates), g.psks} {
		w.VectorV(func(w *codec.Writer) {
			for _, k := range slices.Sorted(maps.Keys(m)) {
				w.OpaqueV([]byte(k))
				w.OpaqueV(m[k].Bytes())
			}
		})
	}
	w.VectorV(func(w *codec.Writer) {
		newer := leavesOf(g.tree)
		for _, p := range g.past {
			p.ctx.marshal(w)
			if legacy {
				treeOfLeaves(p.leaves).marshal(w)
			} else {
				writeLeafDiff(w, p.leaves, newer)
				newer = p.leaves
			}
			w.OpaqueV(p.senderDataSecret.Bytes())
			w.OpaqueV(p.resumptionPSK.Bytes())
			st, err := p.keys.st.MarshalBinary()
			if err != nil {
				w.Fail(err)
				return
			}
			w.OpaqueV(st)
		}
	})
	if g.reinit != nil {
		g.reinit.marshal(&w)
	}
	return w.Finish()
}

func hpkeSecrets(m map[string]*ciphersuite.HPKEPrivateKey) map[string]keyschedule.Secret {
	out := make(map[string]keyschedule.Secret, len(m))
	for k, v := range m {
		out[k] = ciphersuite.NewSecret(v.Bytes())
	}
	return out
}

// UnmarshalState restores a Group serialized by [Group.MarshalBinary].
// Errors wrap [ErrStateVersion] for an unknown version and [ErrDecode] for
// malformed input; they never include secret bytes.
func UnmarshalState(b []byte) (*Group, error) {
	r := codec.NewReader(b)
	v, err := r.Uint8()
	if err != nil {
		return nil, err
	}
	if v < stateVersionV2 || v > stateVersionReInit {
		return nil, fmt.Errorf("%w: %d (this build reads %d to %d)", ErrStateVersion, v, stateVersionV2, stateVersionReInit)
	}
	legacy := v == stateVersionV2 || v == stateVersionV2ReInit
	suite, _ := r.Uint16()
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(suite))
	if err != nil {
		return nil, err
	}
	g := &Group{cs: cs, pendingUpdates: map[string]*ciphersuite.HPKEPrivateKey{}, psks: map[string]keyschedule.Secret{}}
	mp, _ := r.Uint32()
	g.opts.MaxPastEpochs = int(int32(mp))
	g.opts.MaxForwardRatchets, _ = r.Uint32()
	g.opts.EncryptHandshake, _ = r.Optional()
	g.opts.Padding, _ = r.Uint16()
	if err := g.ctx.unmarshal(r); err != nil {
		return nil, err
	}
	if g.ctx.CipherSuite != cs.ID() {
		return nil, fmt.Errorf("%w: state suite %d, group context suite %d", ErrDecode, suite, g.ctx.CipherSuite)
	}
	if g.tree, err = readRatchetTree(r); err != nil {
		return nil, err
	}
	me, _ := r.Uint32()
	g.me = LeafIndex(me)
	sigBytes, err := r.OpaqueV()
	if err != nil {
		return nil, err
	}
	if g.sig, err = cs.ParseSignaturePrivateKey(sigBytes); err != nil {
		return nil, fmt.Errorf("%w: signature key: %w", ErrDecode, err)
	}
	active, err := r.Optional()
	if err != nil {
		return nil, err
	}
	if active {
		keys := map[NodeIndex]*ciphersuite.HPKEPrivateKey{}
		err := r.ForEachV(func(sub *codec.Reader) error {
			x, _ := sub.Uint32()
			kb, err := sub.OpaqueV()
			if err != nil {
				return err
			}
			k, err := cs.ParseHPKEPrivateKey(kb)
			if err != nil {
				return sub.Failf("private key of node %d", x)
			}
			keys[NodeIndex(x)] = k
			return nil
		})
		if err != nil {
			return nil, err
		}
		leafKey, ok := keys[g.me.Node()]
		if !ok {
			return nil, fmt.Errorf("%w: no private key for leaf %d", ErrDecode, g.me)
		}
		g.keys = NewTreePrivateKeys(g.me, leafKey)
		for x, k := range keys {
			g.keys = g.keys.WithKey(x, k)
		}
		if err := g.keys.CheckAgainst(g.tree); err != nil {
			return nil, err
		}
	}
	esBytes, err := r.OpaqueV()
	if err != nil {
		return nil, err
	}
	if g.secrets, err = keyschedule.UnmarshalEpochSecrets(esBytes); err != nil {
		return nil, fmt.Errorf("%w: epoch secrets: %w", ErrDecode, err)
	}
	if g.secrets.Suite().ID() != cs.ID() {
		return nil, fmt.Errorf("%w: epoch secrets of suite %d in a state of suite %d", ErrDecode, g.secrets.Suite().ID(), suite)
	}
	g.confirmationTag, _ = r.OpaqueV()
	g.interim, _ = r.OpaqueV()
	stBytes, err := r.OpaqueV()
	if err != nil {
		return nil, err
	}
	if g.epochKeys, err = readEpochKeys(cs, stBytes, g.tree.LeafCount(), g.ctx.Epoch); err != nil {
		return nil, err
	}
	_ = r.ForEachV(func(sub *codec.Reader) error {
		var p cachedProposal
		p.ref, _ = sub.OpaqueV()
		if err := p.sender.unmarshal(sub); err != nil {
			return err
		}
		p.proposal = new(Proposal)
		if err := p.proposal.unmarshal(sub); err != nil {
			return err
		}
		g.proposals = append(g.proposals, p)
		return nil
	})
	var updates map[string]keyschedule.Secret
	for _, dst := range []*map[string]keyschedule.Secret{&updates, &g.psks} {
		m := map[string]keyschedule.Secret{}
		_ = r.ForEachV(func(sub *codec.Reader) error {
			k, _ := sub.OpaqueV()
			v, err := sub.OpaqueV()
			m[string(k)] = ciphersuite.NewSecret(v)
			return err
		})
		*dst = m
	}
	for ref, s := range updates {
		k, err := cs.ParseHPKEPrivateKey(s.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%w: private key of a pending update", ErrDecode)
		}
		g.pendingUpdates[ref] = k
	}
	newer := leavesOf(g.tree)
	err = r.ForEachV(func(sub *codec.Reader) error {
		var p pastEpoch
		if err := p.ctx.unmarshal(sub); err != nil {
			return err
		}
		if legacy {
			t, err := readRatchetTree(sub)
			if err != nil {
				return err
			}
			p.leaves = leavesOf(t)
			shareLeaves(p.leaves, newer)
		} else {
			var err error
			if p.leaves, err = readLeafDiff(sub, newer); err != nil {
				return err
			}
		}
		newer = p.leaves
		sds, _ := sub.OpaqueV()
		res, _ := sub.OpaqueV()
		stb, _ := sub.OpaqueV()
		if err := sub.Err(); err != nil {
			return err
		}
		p.senderDataSecret, p.resumptionPSK = ciphersuite.NewSecret(sds), ciphersuite.NewSecret(res)
		var err error
		if p.keys, err = readEpochKeys(cs, stb, p.leaves.LeafCount(), p.ctx.Epoch); err != nil {
			return err
		}
		g.past = append(g.past, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if v == stateVersionReInit || v == stateVersionV2ReInit {
		g.reinit = new(ReInit)
		if err := g.reinit.unmarshal(r); err != nil {
			return nil, err
		}
	}
	if err := r.Done(); err != nil {
		return nil, err
	}
	return g, nil
}

// readEpochKeys decodes the secret tree of one epoch and checks that it
// belongs to a ratchet tree of leaves leaves in suite cs.
func readEpochKeys(cs *ciphersuite.CipherSuite, b []byte, leaves treemath.LeafCount, epoch uint64) (*epochKeys, error) {
	st, err := keyschedule.UnmarshalSecretTree(b)
	if err != nil {
		return nil, fmt.Errorf("%w: secret tree of epoch %d: %w", ErrDecode, epoch, err)
	}
	if st.Suite().ID() != cs.ID() || st.Leaves() != leaves {
		return nil, fmt.Errorf("%w: secret tree of epoch %d has suite %d and %d leaves, the group has suite %d and %d leaves",
			ErrDecode, epoch, st.Suite().ID(), st.Leaves(), cs.ID(), leaves)
	}
	return &epochKeys{st: st}, nil
}

// writeLeafDiff writes the leaves of a past epoch as their differences
// from newer, the leaves of the epoch after it: the leaf count, then each
// leaf that differs (index, then the leaf node or blank), in index order.
// A leaf beyond newer's count differs unless it is blank. Leaves shared
// with newer (the same node) are equal without being encoded.
func writeLeafDiff(w *codec.Writer, leaves, newer epochLeaves) {
	w.Uint32(uint32(len(leaves)))
	last := -1
	w.VectorV(func(w *codec.Writer) {
		for i, ln := range leaves {
			if sameLeaf(ln, newer.Leaf(LeafIndex(i))) {
				continue
			}
			w.Uint32(uint32(i))
			w.Optional(ln != nil)
			if ln != nil {
				ln.marshal(w)
			}
			last = i
		}
	})
	if !leafCountBacked(len(leaves), len(newer), last) {
		w.Fail(fmt.Errorf("%w: past epoch of %d leaves whose right half is blank", codec.ErrEncode, len(leaves)))
	}
}

// leafCountBacked reports whether a past epoch of n leaves may follow an
// epoch of newer leaves when the last leaf it lists is last (-1: none).
// A ratchet tree is truncated while the right half of its leaves is
// blank, so its last non-blank leaf k has n < 2(k+1), and k is either
// one of newer's or listed. The bound keeps a decoder from allocating
// leaves that the input cannot back.
func leafCountBacked(n, newer, last int) bool {
	return n <= 2*max(newer, last+1, 1)
}

// readLeafDiff reads what writeLeafDiff wrote against newer. The leaves
// it does not list are newer's, shared.
func readLeafDiff(r *codec.Reader, newer epochLeaves) (epochLeaves, error) {
	n, err := r.Uint32()
	if err != nil {
		return nil, err
	}
	if !treemath.ValidLeafCount(treemath.LeafCount(n)) {
		return nil, fmt.Errorf("%w: past epoch of %d leaves", ErrDecode, n)
	}
	type listed struct {
		i  uint32
		ln *LeafNode
	}
	var diff []listed
	next := uint64(0)
	err = r.ForEachV(func(sub *codec.Reader) error {
		i, err := sub.Uint32()
		if err != nil {
			return err
		}
		if uint64(i) < next || i >= n {
			return sub.Failf("past epoch's leaf %d out of order or beyond its %d leaves", i, n)
		}
		next = uint64(i) + 1
		present, err := sub.Optional()
		if err != nil {
			return err
		}
		var ln *LeafNode
		if present {
			ln = new(LeafNode)
			if err := ln.unmarshal(sub); err != nil {
				return err
			}
		}
		if sameLeaf(ln, newer.Leaf(LeafIndex(i))) {
			return sub.Failf("past epoch's leaf %d listed but equal to the next epoch's", i)
		}
		diff = append(diff, listed{i, ln})
		return nil
	})
	if err != nil {
		return nil, err
	}
	if !leafCountBacked(int(n), len(newer), int(next)-1) {
		return nil, fmt.Errorf("%w: past epoch of %d leaves whose right half is blank", ErrDecode, n)
	}
	leaves := make(epochLeaves, n)
	copy(leaves, newer)
	for _, d := range diff {
		leaves[d.i] = d.ln
	}
	return leaves, nil
}

// shareLeaves replaces each leaf of leaves equal to newer's at the same
// index by newer's node, so that equal leaves are one node, as they are
// in trees derived from one another: a legacy state's past trees are
// decoded apart.
func shareLeaves(leaves, newer epochLeaves) {
	for i, ln := range leaves {
		if nl := newer.Leaf(LeafIndex(i)); ln != nl && sameLeaf(ln, nl) {
			leaves[i] = nl
		}
	}
}

// sameLeaf reports whether a and b are the same leaf: both blank, the
// same node, or nodes of equal encodings.
func sameLeaf(a, b *LeafNode) bool {
	switch {
	case a == b:
		return true
	case a == nil || b == nil:
		return false
	}
	ea, err := a.Marshal()
	if err != nil {
		return false
	}
	eb, err := b.Marshal()
	return err == nil && bytes.Equal(ea, eb)
}

// treeOfLeaves returns a tree holding leaves and blank parents: the
// legacy layout's form of a past epoch.
func treeOfLeaves(leaves epochLeaves) RatchetTree {
	nodes := make([]Node, treemath.NodeWidth(leaves.LeafCount()))
	for i, ln := range leaves {
		nodes[LeafIndex(i).Node()].Leaf = ln
	}
	return RatchetTree{nodes: nodes}
}
