package mls

import (
	"bytes"
	"fmt"

	"github.com/epochlog/epochlog/mls/treemath"
)

// proposalEffect is the result of applying a commit's proposal list.
type proposalEffect struct {
	tree       RatchetTree
	extensions Extensions
	reinit     *ReInit // the commit's ReInit, alone in it
	added      []LeafIndex
	addedKPs   []KeyPackage
	psks       []PreSharedKeyID
	needPath   bool
	selfUpdate []byte // ref of this member's committed Update
	removed    bool   // this member was removed
}

// applyProposals validates and applies a proposal list (RFC 9420 §12.2,
// §12.3) to the tree and extensions of g. The committer's UpdatePath is
// checked separately, by [checkPathLeaf] once the path is merged.
func (g *Group) applyProposals(committer LeafIndex, props []cachedProposal) (*proposalEffect, error) {
	eff := &proposalEffect{tree: g.tree, extensions: g.ctx.Extensions, needPath: len(props) == 0}
	touched := map[LeafIndex]bool{}
	var updates, removes, adds []int // indices into props
	pskSeen := map[string]bool{}
	gce := 0
	for i, p := range props {
		switch p.proposal.Type {
		case ProposalTypeGroupContextExtensions:
			gce++
			eff.extensions = p.proposal.GroupContextExtensions.Extensions
			eff.needPath = true
		case ProposalTypeUpdate:
			if p.sender.LeafIndex == committer {
				return nil, fmt.Errorf("%w: proposal %d is an Update from the committer", ErrInvalidProposal, i)
			}
			updates = append(updates, i)
			eff.needPath = true
		case ProposalTypeRemove:
			removes = append(removes, i)
			eff.needPath = true
		case ProposalTypeAdd:
			adds = append(adds, i)
		case ProposalTypeReInit:
			if len(props) != 1 {
				return nil, fmt.Errorf("%w: proposal %d is a ReInit among %d proposals; a ReInit goes alone", ErrInvalidProposal, i, len(props))
			}
			if err := checkReInit(&g.ctx, p.proposal.ReInit); err != nil {
				return nil, fmt.Errorf("%w: proposal %d: %w", ErrInvalidProposal, i, err)
			}
			ri := cloneReInit(p.proposal.ReInit)
			eff.reinit = &ri
		case ProposalTypePSK:
			id := p.proposal.PreSharedKey.PSK
			if err := checkPSKNonce(g.cs, &id); err != nil {
				return nil, fmt.Errorf("%w: proposal %d: %w", ErrInvalidProposal, i, err)
			}
			if startsGroup(&id) && g.ctx.Epoch != 0 {
				return nil, fmt.Errorf("%w: proposal %d: a resumption PSK of usage %d belongs only in the first commit of a new group", ErrInvalidProposal, i, id.Usage)
			}
			enc, err := id.Marshal()
			if err != nil {
				return nil, err
			}
			if pskSeen[string(enc)] {
				return nil, fmt.Errorf("%w: proposal %d repeats a PSK", ErrInvalidProposal, i)
			}
			pskSeen[string(enc)] = true
			eff.psks = append(eff.psks, id)
		default:
			return nil, fmt.Errorf("%w: proposal %d of type %d is not supported in commits", ErrInvalidProposal, i, p.proposal.Type)
		}
	}
	if gce > 1 {
		return nil, fmt.Errorf("%w: %d GroupContextExtensions proposals", ErrInvalidProposal, gce)
	}
	if len(updates)+len(removes)+len(adds) > 0 {
		// The proposals change eff.tree in place: one copy of g's tree
		// for all of them, not one each (a commit removing or adding
		// thousands of members).
		eff.tree = eff.tree.clone()
	}
	updated := map[LeafIndex]bool{}
	for _, i := range updates {
		p := props[i]
		l := p.sender.LeafIndex
		if touched[l] {
			return nil, fmt.Errorf("%w: leaf %d updated or removed twice", ErrInvalidProposal, l)
		}
		touched[l], updated[l] = true, true
		ln := p.proposal.Update.LeafNode
		if err := ln.Validate(g.cs, LeafNodeSourceUpdate, g.ctx.GroupID, l); err != nil {
			return nil, fmt.Errorf("%w: update of leaf %d: %w", ErrInvalidProposal, l, err)
		}
		if old := eff.tree.Leaf(l); old != nil && bytes.Equal(old.EncryptionKey, ln.EncryptionKey) {
			return nil, fmt.Errorf("%w: proposal %d: update of leaf %d keeps the encryption key it replaces", ErrInvalidProposal, i, l)
		}
		if err := eff.tree.updateLeafInPlace(l, ln.Clone()); err != nil {
			return nil, err
		}
		if l == g.me {
			eff.selfUpdate = p.ref
		}
	}
	for _, i := range removes {
		l := props[i].proposal.Remove.Removed
		if touched[l] {
			return nil, fmt.Errorf("%w: leaf %d updated or removed twice", ErrInvalidProposal, l)
		}
		touched[l] = true
		if l == committer {
			return nil, fmt.Errorf("%w: committer removes itself", ErrInvalidProposal)
		}
		if err := eff.tree.removeLeafInPlace(l); err != nil {
			return nil, fmt.Errorf("%w: remove: %w", ErrInvalidProposal, err)
		}
		if l == g.me {
			eff.removed = true
		}
	}
	eff.tree.checkCache()
	if len(updates)+len(adds) == 0 {
		// The leaves are those of the last epoch, less removed ones: only
		// new group context extensions can break a rule of the group.
		if err := checkExtensionSupport(eff.tree, eff.extensions); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidProposal, err)
		}
		return eff, nil
	}
	// Keys are unique among the members once Updates and Removes are
	// applied (RFC 9420 §7.3); the updated leaves are checked against the
	// rest, then each added leaf against everything before it.
	keys := newKeyIndex(eff.tree, updated)
	for _, i := range updates {
		l := props[i].sender.LeafIndex
		if err := keys.add(l, eff.tree.Leaf(l)); err != nil {
			return nil, fmt.Errorf("%w: proposal %d: update of leaf %d: %w", ErrInvalidProposal, i, l, err)
		}
	}
	var next LeafIndex // every leaf before it is taken
	for _, i := range adds {
		kp := props[i].proposal.Add.KeyPackage
		if kp.CipherSuite != g.ctx.CipherSuite || kp.Version != g.ctx.Version {
			return nil, fmt.Errorf("%w: proposal %d: key package of suite %d, version %d", ErrInvalidKeyPackage, i, kp.CipherSuite, kp.Version)
		}
		if !props[i].kpChecked {
			if err := kp.Validate(); err != nil {
				return nil, fmt.Errorf("mls: proposal %d: %w", i, err)
			}
		}
		l := eff.tree.addLeafInPlace(kp.LeafNode.Clone(), next)
		next = l + 1
		if err := keys.add(l, eff.tree.Leaf(l)); err != nil {
			return nil, fmt.Errorf("%w: proposal %d: add at leaf %d: %w", ErrInvalidKeyPackage, i, l, err)
		}
		eff.added = append(eff.added, l)
		eff.addedKPs = append(eff.addedKPs, kp)
	}
	eff.tree.checkCache()
	if err := checkGroupLeaves(eff.tree, eff.extensions); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidProposal, err)
	}
	return eff, nil
}

// checkProposal validates a received proposal of the member at leaf
// sender on its own, so that a bad one is refused when it arrives rather
// than when it is committed.
func (g *Group) checkProposal(sender LeafIndex, p *Proposal) error {
	return g.checkProposalFrom(Sender{Type: SenderTypeMember, LeafIndex: sender}, p)
}

// checkProposalFrom validates a received proposal of s (a member, or a
// non-member whose proposal type the caller has checked) on its own.
func (g *Group) checkProposalFrom(s Sender, p *Proposal) error {
	from := senderString(s)
	sender := s.LeafIndex
	switch p.Type {
	case ProposalTypeAdd:
		kp := &p.Add.KeyPackage
		if kp.CipherSuite != g.ctx.CipherSuite {
			return fmt.Errorf("%w: key package of suite %d proposed by %s", ErrInvalidKeyPackage, kp.CipherSuite, from)
		}
		return kp.Validate()
	case ProposalTypeUpdate:
		if s.Type != SenderTypeMember {
			return fmt.Errorf("%w: update from %s", ErrInvalidProposal, from)
		}
		ln := &p.Update.LeafNode
		if err := ln.Validate(g.cs, LeafNodeSourceUpdate, g.ctx.GroupID, sender); err != nil {
			return fmt.Errorf("%w: update from leaf %d: %w", ErrInvalidProposal, sender, err)
		}
		if old := g.tree.Leaf(sender); old != nil && bytes.Equal(old.EncryptionKey, ln.EncryptionKey) {
			return fmt.Errorf("%w: update from leaf %d keeps the encryption key it replaces", ErrInvalidProposal, sender)
		}
		// The Update blanks the sender's leaf and direct path; its keys
		// must be new to the rest of the tree (RFC 9420 §7.3).
		keys := newKeyIndex(g.tree, map[LeafIndex]bool{sender: true})
		for _, x := range treemath.DirectPath(sender.Node(), g.tree.LeafCount()) {
			if n := g.tree.Node(x); !n.IsBlank() {
				delete(keys.enc, string(n.encryptionKey()))
			}
		}
		if err := keys.add(sender, ln); err != nil {
			return fmt.Errorf("%w: update from leaf %d: %w", ErrInvalidProposal, sender, err)
		}
	case ProposalTypeRemove:
		if g.tree.Leaf(p.Remove.Removed) == nil {
			return fmt.Errorf("%w: %s proposes removing blank leaf %d", ErrInvalidProposal, from, p.Remove.Removed)
		}
	case ProposalTypePSK:
		if err := checkPSKNonce(g.cs, &p.PreSharedKey.PSK); err != nil {
			return fmt.Errorf("%w: PreSharedKey proposal from %s: %w", ErrInvalidProposal, from, err)
		}
		if startsGroup(&p.PreSharedKey.PSK) {
			return fmt.Errorf("%w: PreSharedKey proposal from %s: a resumption PSK of usage %d is never proposed", ErrInvalidProposal, from, p.PreSharedKey.PSK.Usage)
		}
	case ProposalTypeReInit:
		if err := checkReInit(&g.ctx, p.ReInit); err != nil {
			return fmt.Errorf("%w: ReInit from %s: %w", ErrInvalidProposal, from, err)
		}
	case ProposalTypeGroupContextExtensions:
	default:
		return fmt.Errorf("%w: proposal type %d from %s is not supported", ErrInvalidProposal, p.Type, from)
	}
	return nil
}

// keyIndex maps the encryption keys of a tree's non-blank nodes to their
// node and the signature keys of its leaves to their leaf, to find keys
// used twice (RFC 9420 §7.3).
type keyIndex struct {
	enc map[string]NodeIndex
	sig map[string]LeafIndex
}

// newKeyIndex indexes the keys of t, leaving out the leaves in skip.
func newKeyIndex(t RatchetTree, skip map[LeafIndex]bool) keyIndex {
	k := keyIndex{enc: make(map[string]NodeIndex, len(t.nodes)), sig: make(map[string]LeafIndex, len(t.nodes)/2+1)}
	for x, n := range t.nodes {
		if n.IsBlank() {
			continue
		}
		if l, ok := NodeIndex(x).Leaf(); ok {
			if skip[l] {
				continue
			}
			k.sig[string(n.Leaf.SignatureKey)] = l
		}
		k.enc[string(n.encryptionKey())] = NodeIndex(x)
	}
	return k
}

// add indexes the keys of ln, the leaf at l, or reports the node or leaf
// that already holds one of them.
func (k keyIndex) add(l LeafIndex, ln *LeafNode) error {
	if x, dup := k.enc[string(ln.EncryptionKey)]; dup {
		return fmt.Errorf("encryption key already used by node %d", x)
	}
	if m, dup := k.sig[string(ln.SignatureKey)]; dup {
		return fmt.Errorf("signature key already used by leaf %d", m)
	}
	k.enc[string(ln.EncryptionKey)] = l.Node()
	k.sig[string(ln.SignatureKey)] = l
	return nil
}

// checkGroupLeaves reports a leaf of tree that breaks a rule of the group
// rather than of the leaf alone (RFC 9420 §7.3, §11.1, §12.1.7): every
// leaf supports every group context extension, the group's required
// capabilities and every credential type used in the tree. Commits run it
// on the tree their proposals produce when these added or updated leaves
// (keys are checked by keyIndex as they go). The error names the leaf and
// wraps no sentinel; callers add theirs.
func checkGroupLeaves(tree RatchetTree, exts Extensions) error {
	if err := checkExtensionSupport(tree, exts); err != nil {
		return err
	}
	return tree.checkCredentialSupport()
}

// checkPathLeaf reports how the committer's new leaf, merged into tree,
// breaks a rule of the group (RFC 9420 §7.3): it must support the group
// context extensions, the required capabilities and every credential type
// in use, every member must support its credential type, and its
// signature key must be no other leaf's. (Its encryption keys are checked
// against the tree by ApplyUpdatePath.) The other leaves passed these
// checks already, so one pass over the leaves suffices: a commit with a
// path is the common case, in groups of thousands. The error wraps no
// sentinel.
func checkPathLeaf(tree RatchetTree, exts Extensions, committer LeafIndex, path *UpdatePath) error {
	ln := &path.LeafNode
	if err := checkLeafExtensions(ln, exts); err != nil {
		return fmt.Errorf("leaf %d: %w", committer, err)
	}
	var err error
	tree.Leaves(func(l LeafIndex, other *LeafNode) {
		switch {
		case err != nil || l == committer:
		case bytes.Equal(other.SignatureKey, ln.SignatureKey):
			err = fmt.Errorf("leaf %d uses the signature key of leaf %d", committer, l)
		case !other.Capabilities.SupportsCredential(ln.Credential.Type):
			err = fmt.Errorf("leaf %d does not support credential type %d of leaf %d", l, ln.Credential.Type, committer)
		case !ln.Capabilities.SupportsCredential(other.Credential.Type):
			err = fmt.Errorf("leaf %d does not support credential type %d used by leaf %d", committer, other.Credential.Type, l)
		}
	})
	return err
}

// checkExtensionSupport reports a member of tree that does not support a
// group context extension or the group's required capabilities (RFC 9420
// §11.1, §12.1.7). The error wraps no sentinel.
func checkExtensionSupport(tree RatchetTree, exts Extensions) error {
	if len(exts) == 0 {
		return nil
	}
	if err := exts.checkUnique(); err != nil {
		return fmt.Errorf("group context extensions: %s", err)
	}
	required, err := requiredCapabilities(exts)
	if err != nil {
		return err
	}
	tree.Leaves(func(l LeafIndex, ln *LeafNode) {
		if err == nil {
			if lerr := leafSupports(ln, exts, required); lerr != nil {
				err = fmt.Errorf("leaf %d: %w", l, lerr)
			}
		}
	})
	return err
}

// checkLeafExtensions is checkExtensionSupport for one leaf.
func checkLeafExtensions(ln *LeafNode, exts Extensions) error {
	if len(exts) == 0 {
		return nil
	}
	required, err := requiredCapabilities(exts)
	if err != nil {
		return err
	}
	return leafSupports(ln, exts, required)
}

// checkGroupContextExtensionTypes reports an extension of exts whose type
// the IANA "MLS Extension Types" registry (RFC 9420 §17.3, column
// "Message(s)": the messages in which the extension may appear) does not
// allow in a GroupContext: application_id (LeafNode), ratchet_tree and
// external_pub (GroupInfo), the GREASE values (KeyPackage, GroupInfo,
// LeafNode; §13.5 also forbids them in GroupContextExtensions.extensions)
// and the reserved 0x0000. Types the registry does not list are the
// application's and pass (every member must still support them). The
// error names the type and wraps no sentinel.
func checkGroupContextExtensionTypes(exts Extensions) error {
	for _, e := range exts {
		var what string
		switch {
		case e.Type == 0:
			what = "reserved"
		case e.Type == ExtensionTypeApplicationID:
			what = "application_id, a LeafNode extension"
		case e.Type == ExtensionTypeRatchetTree:
			what = "ratchet_tree, a GroupInfo extension"
		case e.Type == ExtensionTypeExternalPub:
			what = "external_pub, a GroupInfo extension"
		case isGreaseExtension(e.Type):
			what = "GREASE, for KeyPackages, GroupInfos and LeafNodes"
		default:
			continue
		}
		return fmt.Errorf("extension type 0x%04x (%s) may not appear in a group context", uint16(e.Type), what)
	}
	return nil
}

// isGreaseExtension reports the extension types RFC 9420 §13.5 reserves
// for GREASE: 0x0A0A, 0x1A1A, ..., 0xEAEA (0xFAFA is private use).
func isGreaseExtension(t ExtensionType) bool {
	return t&0x0F0F == 0x0A0A && t>>12 == (t>>4)&0xF && t != 0xFAFA
}

// requiredCapabilities decodes the required_capabilities extension of
// exts; nil if there is none.
func requiredCapabilities(exts Extensions) (*RequiredCapabilities, error) {
	e, ok := exts.Find(ExtensionTypeRequiredCapabilities)
	if !ok {
		return nil, nil
	}
	rc := new(RequiredCapabilities)
	if err := rc.Unmarshal(e.Data); err != nil {
		return nil, fmt.Errorf("required_capabilities: %w", err)
	}
	return rc, nil
}

// leafSupports reports a group context extension or required capability
// ln does not support.
func leafSupports(ln *LeafNode, exts Extensions, required *RequiredCapabilities) error {
	for _, e := range exts {
		if !ln.Capabilities.SupportsExtension(e.Type) {
			return fmt.Errorf("does not support group context extension %d", e.Type)
		}
	}
	return required.checkLeaf(ln)
}
