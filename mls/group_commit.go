package mls

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

// proposalEffect is the result of applying a commit's proposal list.
type proposalEffect struct {
	tree       RatchetTree
	extensions Extensions
	added      []LeafIndex
	addedKPs   []KeyPackage
	psks       []PreSharedKeyID
	needPath   bool
	selfUpdate []byte // ref of this member's committed Update
	removed    bool   // this member was removed
}

// resolveProposals turns a commit's proposal list into (sender, proposal)
// pairs, resolving references against the cache.
func (g *Group) resolveProposals(committer LeafIndex, list []ProposalOrRef) ([]cachedProposal, error) {
	out := make([]cachedProposal, 0, len(list))
	for i, por := range list {
		switch por.Type {
		case ProposalOrRefProposal:
			out = append(out, cachedProposal{sender: Sender{Type: SenderTypeMember, LeafIndex: committer}, proposal: por.Proposal})
		case ProposalOrRefReference:
			j := slices.IndexFunc(g.proposals, func(c cachedProposal) bool { return bytes.Equal(c.ref, por.Reference) })
			if j < 0 {
				return nil, fmt.Errorf("%w: proposal %d references unknown proposal %x", ErrInvalidProposal, i, por.Reference)
			}
			out = append(out, g.proposals[j])
		}
	}
	return out, nil
}

// applyProposals validates and applies a proposal list (RFC 9420 §12.2,
// §12.3) to the tree and extensions of g.
func (g *Group) applyProposals(committer LeafIndex, props []cachedProposal) (*proposalEffect, error) {
	eff := &proposalEffect{tree: g.tree, extensions: g.ctx.Extensions, needPath: len(props) == 0}
	touched := map[LeafIndex]bool{}
	var updates, removes, adds []cachedProposal
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
			updates = append(updates, p)
			eff.needPath = true
		case ProposalTypeRemove:
			removes = append(removes, p)
			eff.needPath = true
		case ProposalTypeAdd:
			adds = append(adds, p)
		case ProposalTypePSK:
			id := p.proposal.PreSharedKey.PSK
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
	var err error
	for _, p := range updates {
		l := p.sender.LeafIndex
		if touched[l] {
			return nil, fmt.Errorf("%w: leaf %d updated or removed twice", ErrInvalidProposal, l)
		}
		touched[l] = true
		ln := p.proposal.Update.LeafNode
		if err := ln.Validate(g.cs, LeafNodeSourceUpdate, g.ctx.GroupID, l); err != nil {
			return nil, fmt.Errorf("%w: update of leaf %d: %w", ErrInvalidProposal, l, err)
		}
		if eff.tree, err = eff.tree.UpdateLeaf(l, ln.Clone()); err != nil {
			return nil, err
		}
		if l == g.me {
			eff.selfUpdate = p.ref
		}
	}
	for _, p := range removes {
		l := p.proposal.Remove.Removed
		if touched[l] {
			return nil, fmt.Errorf("%w: leaf %d updated or removed twice", ErrInvalidProposal, l)
		}
		touched[l] = true
		if l == committer {
			return nil, fmt.Errorf("%w: committer removes itself", ErrInvalidProposal)
		}
		if eff.tree, err = eff.tree.RemoveLeaf(l); err != nil {
			return nil, fmt.Errorf("%w: remove: %w", ErrInvalidProposal, err)
		}
		if l == g.me {
			eff.removed = true
		}
	}
	sigKeys := map[string]bool{}
	eff.tree.Leaves(func(_ LeafIndex, ln *LeafNode) { sigKeys[string(ln.SignatureKey)] = true })
	for _, p := range adds {
		kp := p.proposal.Add.KeyPackage
		if kp.CipherSuite != g.ctx.CipherSuite || kp.Version != g.ctx.Version {
			return nil, fmt.Errorf("%w: key package of suite %d, version %d", ErrInvalidKeyPackage, kp.CipherSuite, kp.Version)
		}
		if err := kp.Validate(); err != nil {
			return nil, err
		}
		if sigKeys[string(kp.LeafNode.SignatureKey)] {
			return nil, fmt.Errorf("%w: signature key already in the group", ErrInvalidKeyPackage)
		}
		sigKeys[string(kp.LeafNode.SignatureKey)] = true
		var l LeafIndex
		eff.tree, l = eff.tree.AddLeaf(kp.LeafNode.Clone())
		eff.added = append(eff.added, l)
		eff.addedKPs = append(eff.addedKPs, kp)
	}
	if err := checkExtensionSupport(eff.tree, eff.extensions); err != nil {
		return nil, err
	}
	return eff, nil
}

// checkExtensionSupport reports a member of tree that does not support a
// group context extension or the group's required capabilities (RFC 9420
// §11.1, §12.1.7): new members are checked when added, and every member
// when the extensions change.
func checkExtensionSupport(tree RatchetTree, exts Extensions) error {
	if len(exts) == 0 {
		return nil
	}
	if err := exts.checkUnique(); err != nil {
		return fmt.Errorf("%w: group context extensions: %s", ErrInvalidProposal, err)
	}
	var required *RequiredCapabilities
	if e, ok := exts.Find(ExtensionTypeRequiredCapabilities); ok {
		required = new(RequiredCapabilities)
		if err := required.Unmarshal(e.Data); err != nil {
			return fmt.Errorf("%w: required_capabilities: %w", ErrInvalidProposal, err)
		}
	}
	var err error
	tree.Leaves(func(l LeafIndex, ln *LeafNode) {
		if err != nil {
			return
		}
		for _, e := range exts {
			if !ln.Capabilities.SupportsExtension(e.Type) {
				err = fmt.Errorf("%w: leaf %d does not support group context extension %d", ErrInvalidProposal, l, e.Type)
				return
			}
		}
		if rerr := required.checkLeaf(ln); rerr != nil {
			err = fmt.Errorf("%w: leaf %d: %s", ErrInvalidProposal, l, rerr)
		}
	})
	return err
}

// pskSecretFor computes psk_secret for the PSKs of a commit or Welcome.
func (g *Group) pskSecretFor(ids []PreSharedKeyID) (keyschedule.Secret, error) {
	if len(ids) == 0 {
		return keyschedule.Secret{}, nil
	}
	psks := make([]keyschedule.PSK, len(ids))
	for i := range ids {
		id := &ids[i]
		b, err := id.Marshal()
		if err != nil {
			return keyschedule.Secret{}, err
		}
		var s keyschedule.Secret
		var ok bool
		switch id.Type {
		case PSKTypeExternal:
			s, ok = g.psks[string(id.PSKID)]
		case PSKTypeResumption:
			if id.Usage == ResumptionPSKUsageApplication && bytes.Equal(id.PSKGroupID, g.ctx.GroupID) {
				s, ok = g.resumptionPSK(id.PSKEpoch)
			}
		}
		if !ok {
			return keyschedule.Secret{}, fmt.Errorf("%w: psk %d (type %d, id %x, epoch %d)", ErrUnknownPSK, i, id.Type, id.PSKID, id.PSKEpoch)
		}
		psks[i] = keyschedule.PSK{ID: b, Secret: s}
	}
	return keyschedule.PSKSecret(g.cs, psks)
}

func (g *Group) resumptionPSK(epoch uint64) (keyschedule.Secret, bool) {
	if epoch == g.ctx.Epoch && !g.secrets.ResumptionPSK.IsZero() {
		return g.secrets.ResumptionPSK, true
	}
	for _, p := range g.past {
		if p.ctx.Epoch == epoch {
			return p.resumptionPSK, true
		}
	}
	return keyschedule.Secret{}, false
}

// privateKeysFor keeps the private keys of g that still match tree, with
// leafKey (when set) as the new leaf key.
func (g *Group) privateKeysFor(tree RatchetTree, leafKey *ciphersuite.HPKEPrivateKey) *TreePrivateKeys {
	lk, _ := g.keys.Key(g.me.Node())
	if leafKey != nil {
		lk = leafKey
	}
	k := NewTreePrivateKeys(g.me, lk)
	for _, x := range treemath.DirectPath(g.me.Node(), tree.LeafCount()) {
		key, ok := g.keys.Key(x)
		if ok && bytes.Equal(tree.Node(x).encryptionKey(), key.PublicKey()) {
			k = k.WithKey(x, key)
		}
	}
	return k
}

// applyCommit moves a clone of the group to the epoch of a commit by
// another member (RFC 9420 §12.4.2). It returns whether this member was
// removed.
func (g *Group) applyCommit(ac *AuthenticatedContent) (*Group, bool, error) {
	committer := ac.Content.Sender.LeafIndex
	commit := ac.Content.Commit
	props, err := g.resolveProposals(committer, commit.Proposals)
	if err != nil {
		return nil, false, err
	}
	eff, err := g.applyProposals(committer, props)
	if err != nil {
		return nil, false, err
	}
	if eff.needPath && commit.Path == nil {
		return nil, false, fmt.Errorf("%w: commit from leaf %d lacks a required path", ErrInvalidProposal, committer)
	}
	newCtx := g.ctx
	newCtx.Epoch++
	newCtx.Extensions = eff.extensions
	tree := eff.tree
	var leafKey *ciphersuite.HPKEPrivateKey
	if eff.selfUpdate != nil {
		if leafKey = g.pendingUpdates[string(eff.selfUpdate)]; leafKey == nil {
			return nil, false, fmt.Errorf("%w: committed Update of leaf %d has no private key", ErrInvalidProposal, g.me)
		}
	}
	var keys *TreePrivateKeys
	if !eff.removed {
		keys = g.privateKeysFor(tree, leafKey)
	}
	commitSecret := keyschedule.Secret{}
	if commit.Path != nil {
		up, err := tree.ApplyUpdatePath(g.cs, newCtx, committer, commit.Path, keys, eff.added)
		if err != nil {
			return nil, false, err
		}
		tree = up.Tree
		if !eff.removed {
			keys, commitSecret = up.PrivateKeys, up.CommitSecret
		}
	}
	if eff.removed {
		return g.removedState(), true, nil
	}
	psk, err := g.pskSecretFor(eff.psks)
	if err != nil {
		return nil, false, err
	}
	if newCtx.TreeHash, err = tree.TreeHash(g.cs); err != nil {
		return nil, false, err
	}
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHash(g.cs, g.interim, ac); err != nil {
		return nil, false, err
	}
	gcBytes, err := newCtx.Marshal()
	if err != nil {
		return nil, false, err
	}
	joiner, err := keyschedule.JoinerSecret(g.cs, g.secrets.InitSecret, commitSecret, gcBytes)
	if err != nil {
		return nil, false, err
	}
	n := g.clone()
	n.retireEpoch()
	n.ctx, n.tree, n.keys = newCtx, tree, keys
	if err := n.enterEpoch(joiner, psk, gcBytes); err != nil {
		return nil, false, err
	}
	tag, err := n.secrets.ConfirmationTag(newCtx.ConfirmedTranscriptHash)
	if err != nil {
		return nil, false, err
	}
	if !g.cs.VerifyMAC(n.secrets.ConfirmationKey.Bytes(), newCtx.ConfirmedTranscriptHash, ac.Auth.ConfirmationTag) {
		return nil, false, fmt.Errorf("%w: confirmation tag of the commit from leaf %d for epoch %d", ErrTampered, committer, newCtx.Epoch)
	}
	n.confirmationTag = tag
	if n.interim, err = interimTranscriptHash(g.cs, newCtx.ConfirmedTranscriptHash, tag); err != nil {
		return nil, false, err
	}
	n.proposals, n.pendingUpdates = nil, map[string]*ciphersuite.HPKEPrivateKey{}
	return n, false, nil
}

// removedState is what is left of a member removed by a commit: it can no
// longer send or follow the group, but still opens late application
// messages of the epoch it was removed in and of the retained past ones.
func (g *Group) removedState() *Group {
	n := g.clone()
	n.keys = nil
	n.proposals, n.pendingUpdates = nil, map[string]*ciphersuite.HPKEPrivateKey{}
	return n
}

// Active reports whether this client is still a member able to send.
func (g *Group) Active() bool { return g.keys != nil }

func (g *Group) checkActive() error {
	if g.keys == nil {
		return fmt.Errorf("%w: leaf %d was removed from group %x", ErrNotMember, g.me, g.ctx.GroupID)
	}
	return nil
}

// propose frames, protects and caches a proposal of this member.
func (g *Group) propose(p *Proposal) (*Group, *MLSMessage, []byte, error) {
	if err := g.checkActive(); err != nil {
		return nil, nil, nil, err
	}
	ac, err := g.frame(ContentTypeProposal, nil, nil, p, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	c := g.clone()
	m, err := c.protect(ac)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := c.cacheProposal(ac); err != nil {
		return nil, nil, nil, err
	}
	return c, m, c.proposals[len(c.proposals)-1].ref, nil
}

// ProposeAdd proposes adding the client of kp, which must be valid now.
func (g *Group) ProposeAdd(kp *KeyPackage) (*Group, *MLSMessage, error) {
	if err := ValidateKeyPackage(kp, g.ctx.CipherSuite, time.Now()); err != nil {
		return nil, nil, err
	}
	ng, m, _, err := g.propose(&Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *kp}})
	return ng, m, err
}

// ProposeRemove proposes removing the member at leaf.
func (g *Group) ProposeRemove(leaf LeafIndex) (*Group, *MLSMessage, error) {
	if g.tree.Leaf(leaf) == nil {
		return nil, nil, fmt.Errorf("%w: leaf %d is blank", ErrInvalidProposal, leaf)
	}
	ng, m, _, err := g.propose(&Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: leaf}})
	return ng, m, err
}

// ProposeUpdate proposes replacing this member's leaf with one holding a
// fresh encryption key; the private key is kept until another member
// commits the proposal.
func (g *Group) ProposeUpdate() (*Group, *MLSMessage, error) {
	if err := g.checkActive(); err != nil {
		return nil, nil, err
	}
	key, err := g.cs.GenerateHPKEKey()
	if err != nil {
		return nil, nil, err
	}
	ln := g.tree.Leaf(g.me).Clone()
	ln.EncryptionKey = key.PublicKey()
	ln.Source = LeafNodeSourceUpdate
	ln.Lifetime, ln.ParentHash = Lifetime{}, nil
	if err := ln.Sign(g.cs, g.sig, g.ctx.GroupID, g.me); err != nil {
		return nil, nil, err
	}
	ng, m, ref, err := g.propose(&Proposal{Type: ProposalTypeUpdate, Update: &Update{LeafNode: *ln}})
	if err != nil {
		return nil, nil, err
	}
	ng.pendingUpdates[string(ref)] = key
	return ng, m, nil
}

// CommitOptions selects what a commit carries besides the proposals cached
// in the current epoch, which are always committed by reference (except
// this member's own Updates, which a committer may not commit).
type CommitOptions struct {
	// Add, Remove and PSKs are proposed inline.
	Add    []*KeyPackage
	Remove []LeafIndex
	PSKs   []PreSharedKeyID
	// GroupContextExtensions, when set, replaces the group context
	// extensions.
	GroupContextExtensions *Extensions
	// ForcePath includes an UpdatePath even when no proposal requires one
	// (an empty commit always has one).
	ForcePath bool
	// AuthenticatedData is sent with the commit.
	AuthenticatedData []byte
	// OmitRatchetTree leaves the ratchet_tree extension out of the
	// Welcome's GroupInfo; joiners then need the tree from elsewhere.
	OmitRatchetTree bool
}

// CommitResult holds the messages a commit produces.
type CommitResult struct {
	// Commit goes to the current members.
	Commit *MLSMessage
	// Welcome goes to the added members; nil when none were added.
	Welcome *MLSMessage
	// GroupInfo describes the new epoch (signed, with the ratchet tree
	// unless omitted).
	GroupInfo *GroupInfo
}

// Commit creates a commit of the cached proposals and those in opts, and
// returns the group in the new epoch with the commit and the Welcome for
// added members (RFC 9420 §12.4.1).
func (g *Group) Commit(opts CommitOptions) (*Group, *CommitResult, error) {
	if err := g.checkActive(); err != nil {
		return nil, nil, err
	}
	var list []ProposalOrRef
	var props []cachedProposal
	for _, p := range g.proposals {
		// A committer may not commit its own Update nor its own removal.
		if p.sender.LeafIndex == g.me && p.proposal.Type == ProposalTypeUpdate ||
			p.proposal.Type == ProposalTypeRemove && p.proposal.Remove.Removed == g.me {
			continue
		}
		list = append(list, ProposalOrRef{Type: ProposalOrRefReference, Reference: p.ref})
		props = append(props, p)
	}
	inline := func(p *Proposal) {
		list = append(list, ProposalOrRef{Type: ProposalOrRefProposal, Proposal: p})
		props = append(props, cachedProposal{sender: Sender{Type: SenderTypeMember, LeafIndex: g.me}, proposal: p})
	}
	if opts.GroupContextExtensions != nil {
		inline(&Proposal{Type: ProposalTypeGroupContextExtensions, GroupContextExtensions: &GroupContextExtensions{Extensions: *opts.GroupContextExtensions}})
	}
	for _, l := range opts.Remove {
		inline(&Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: l}})
	}
	for _, kp := range opts.Add {
		if err := ValidateKeyPackage(kp, g.ctx.CipherSuite, time.Now()); err != nil {
			return nil, nil, err
		}
		inline(&Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *kp}})
	}
	for i := range opts.PSKs {
		inline(&Proposal{Type: ProposalTypePSK, PreSharedKey: &PreSharedKey{PSK: opts.PSKs[i]}})
	}
	eff, err := g.applyProposals(g.me, props)
	if err != nil {
		return nil, nil, err
	}
	if eff.removed {
		return nil, nil, fmt.Errorf("%w: a commit cannot remove its committer", ErrInvalidProposal)
	}
	newCtx := g.ctx
	newCtx.Epoch++
	newCtx.Extensions = eff.extensions
	tree := eff.tree
	keys := g.privateKeysFor(tree, nil)
	commit := &Commit{Proposals: list}
	if list == nil {
		commit.Proposals = []ProposalOrRef{}
	}
	commitSecret := keyschedule.Secret{}
	var up *PathUpdate
	if eff.needPath || opts.ForcePath {
		if up, err = tree.CreateUpdatePath(g.cs, newCtx, g.me, tree.Leaf(g.me), g.sig, eff.added, g.rand()); err != nil {
			return nil, nil, err
		}
		tree, keys, commitSecret = up.Tree, up.PrivateKeys, up.CommitSecret
		commit.Path = &up.Path
	}
	psk, err := g.pskSecretFor(eff.psks)
	if err != nil {
		return nil, nil, err
	}
	ac, err := g.frame(ContentTypeCommit, opts.AuthenticatedData, nil, nil, commit)
	if err != nil {
		return nil, nil, err
	}
	if newCtx.TreeHash, err = tree.TreeHash(g.cs); err != nil {
		return nil, nil, err
	}
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHash(g.cs, g.interim, ac); err != nil {
		return nil, nil, err
	}
	gcBytes, err := newCtx.Marshal()
	if err != nil {
		return nil, nil, err
	}
	joiner, err := keyschedule.JoinerSecret(g.cs, g.secrets.InitSecret, commitSecret, gcBytes)
	if err != nil {
		return nil, nil, err
	}
	n := g.clone()
	// The commit is protected with the old epoch's keys.
	if ac.Auth.ConfirmationTag, err = confirmationTagFor(g.cs, joiner, psk, gcBytes, newCtx.ConfirmedTranscriptHash); err != nil {
		return nil, nil, err
	}
	msg, err := n.protect(ac)
	if err != nil {
		return nil, nil, err
	}
	n.retireEpoch()
	n.ctx, n.tree, n.keys = newCtx, tree, keys
	if err := n.enterEpoch(joiner, psk, gcBytes); err != nil {
		return nil, nil, err
	}
	n.confirmationTag = ac.Auth.ConfirmationTag
	if n.interim, err = interimTranscriptHash(g.cs, newCtx.ConfirmedTranscriptHash, n.confirmationTag); err != nil {
		return nil, nil, err
	}
	n.proposals, n.pendingUpdates = nil, map[string]*ciphersuite.HPKEPrivateKey{}
	res := &CommitResult{Commit: msg}
	if res.GroupInfo, err = n.groupInfo(!opts.OmitRatchetTree); err != nil {
		return nil, nil, err
	}
	if len(eff.added) > 0 {
		if res.Welcome, err = n.welcome(res.GroupInfo, eff, up, psk); err != nil {
			return nil, nil, err
		}
	}
	return n, res, nil
}

// confirmationTagFor derives the new epoch's confirmation tag.
func confirmationTagFor(cs *ciphersuite.CipherSuite, joiner, psk keyschedule.Secret, gcBytes, confirmed []byte) ([]byte, error) {
	s, err := keyschedule.FromJoinerSecret(cs, joiner, psk, gcBytes)
	if err != nil {
		return nil, err
	}
	return s.ConfirmationTag(confirmed)
}

// GroupInfo returns a signed GroupInfo of the current epoch, with the
// ratchet_tree extension when withTree is set.
func (g *Group) GroupInfo(withTree bool) (*GroupInfo, error) {
	if err := g.checkActive(); err != nil {
		return nil, err
	}
	return g.groupInfo(withTree)
}

func (g *Group) groupInfo(withTree bool) (*GroupInfo, error) {
	gi := &GroupInfo{GroupContext: g.GroupContext(), Extensions: Extensions{}, ConfirmationTag: bytes.Clone(g.confirmationTag), Signer: g.me}
	if withTree {
		e, err := g.tree.Extension()
		if err != nil {
			return nil, err
		}
		gi.Extensions = append(gi.Extensions, e)
	}
	if err := gi.Sign(g.cs, g.sig); err != nil {
		return nil, err
	}
	return gi, nil
}
