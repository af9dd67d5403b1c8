package mls

import (
	"fmt"
	"slices"
	"time"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
)

// CommitOptions selects what a commit carries besides the proposals cached
// in the current epoch, which are committed by reference as far as they
// can be together (see [Group.Commit]).
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
	// ReInit commits a ReInit proposal inline (RFC 9420 §11.2); a commit
	// with it carries nothing else, so every other option must be unset.
	ReInit *ReInit

	// fromReInit marks the first commit of a ReInit's successor, whose
	// GroupContextExtensions are the committed ReInit's: the group agreed
	// on them, so the checks on extensions this member makes (see
	// checkMadeExtensions) do not apply. It stays on a value a caller
	// reuses: Commit honours it only on that first commit
	// (reinitFirstCommit).
	fromReInit bool
}

// reinitFirstCommit reports whether a commit of g with opts is the first
// commit of a ReInit's successor: opts from PrepareReinitialize, and g
// at epoch 0 still holding its predecessor's resumption PSK lent for a
// reinit. The options reused for a later commit of the successor (at
// epoch 1 on, the PSK gone) or for another new group are checked as any,
// or reusing them would skip the checks on made extensions for good.
func (g *Group) reinitFirstCommit(opts CommitOptions) bool {
	return opts.fromReInit && g.ctx.Epoch == 0 && len(g.lent) == 1 && g.lent[0].usage == ResumptionPSKUsageReInit
}

// checkMadeExtensions refuses group context extensions this member is
// about to propose or commit (or a ReInit's, the successor's group
// context's) that the IANA registry assigns to other messages
// (checkGroupContextExtensionTypes). Only what this member makes is
// refused: such extensions received from another member are applied,
// as mls-rs does (OpenMLS refuses them), so that a history recorded
// with them, which replay checks by the same rules, still replays.
func checkMadeExtensions(what string, exts Extensions) error {
	if err := checkGroupContextExtensionTypes(exts); err != nil {
		return fmt.Errorf("%w: %s: %w", ErrInvalidProposal, what, err)
	}
	return nil
}

// committable selects the cached proposals a commit with opts can carry
// together (see [Group.Commit]), in the order they were received.
func (g *Group) committable(opts CommitOptions) []cachedProposal {
	if opts.ReInit != nil {
		return nil // a ReInit goes alone
	}
	// A ReInit goes alone: the first one cached, when the commit adds
	// nothing of its own; otherwise ReInits are left out.
	reinitOnly := opts.ReInit == nil && len(opts.Add)+len(opts.Remove)+len(opts.PSKs) == 0 && opts.GroupContextExtensions == nil
	for _, p := range g.proposals {
		if p.proposal.Type == ProposalTypeReInit && reinitOnly {
			if _, err := g.applyProposals(g.me, []cachedProposal{p}); err == nil {
				return []cachedProposal{p}
			}
		}
	}
	inlineRemoved := map[LeafIndex]bool{}
	for _, l := range opts.Remove {
		inlineRemoved[l] = true
	}
	inlinePSK := map[string]bool{}
	for i := range opts.PSKs {
		if b, err := opts.PSKs[i].Marshal(); err == nil {
			inlinePSK[string(b)] = true
		}
	}
	removed := map[LeafIndex]bool{}
	lastUpdate := map[LeafIndex]int{} // leaf -> index in g.proposals
	lastGCE := -1
	for i, p := range g.proposals {
		switch p.proposal.Type {
		case ProposalTypeRemove:
			removed[p.proposal.Remove.Removed] = true
		case ProposalTypeUpdate:
			lastUpdate[p.sender.LeafIndex] = i
		case ProposalTypeGroupContextExtensions:
			lastGCE = i
		}
	}
	var out []cachedProposal
	var adds []cachedProposal
	removing := map[LeafIndex]bool{}
	psks := map[string]bool{}
	for i, p := range g.proposals {
		switch p.proposal.Type {
		case ProposalTypeRemove:
			l := p.proposal.Remove.Removed
			if l == g.me || removing[l] || inlineRemoved[l] || g.tree.Leaf(l) == nil {
				continue
			}
			removing[l] = true
		case ProposalTypeUpdate:
			l := p.sender.LeafIndex
			if l == g.me || removed[l] || inlineRemoved[l] || lastUpdate[l] != i {
				continue
			}
		case ProposalTypeGroupContextExtensions:
			if opts.GroupContextExtensions != nil || i != lastGCE {
				continue
			}
		case ProposalTypePSK:
			b, err := p.proposal.PreSharedKey.PSK.Marshal()
			if err != nil || psks[string(b)] || inlinePSK[string(b)] {
				continue
			}
			if _, err := g.pskSecretFor([]PreSharedKeyID{p.proposal.PreSharedKey.PSK}); err != nil {
				continue
			}
			psks[string(b)] = true
		case ProposalTypeAdd:
			adds = append(adds, p)
		case ProposalTypeReInit:
			continue
		}
		if p.proposal.Type != ProposalTypeAdd {
			out = append(out, p)
		}
	}
	// Adds last, as applyProposals applies them. That all fit together is
	// the usual case, checked once; otherwise each is kept if it still
	// fits with those kept before it (an Add whose keys are in the group,
	// an extensions proposal some member does not support, is left out).
	all := append(out, adds...)
	if len(all) == 0 {
		return nil
	}
	if _, err := g.applyProposals(g.me, all); err == nil {
		return all
	}
	var kept []cachedProposal
	for _, p := range all {
		if _, err := g.applyProposals(g.me, append(slices.Clone(kept), p)); err == nil {
			kept = append(kept, p)
		}
	}
	return kept
}

// CommitResult holds the messages a commit produces.
type CommitResult struct {
	// Commit goes to the current members.
	Commit *MLSMessage
	// Welcome goes to the added members; nil when none were added.
	Welcome *MLSMessage
	// GroupInfo is the Welcome's: it describes the new epoch (signed,
	// with the ratchet tree unless omitted). nil when no member was added;
	// Group.GroupInfo makes one for the group's epoch when it is wanted
	// (an external join, say).
	GroupInfo *GroupInfo
}

// Commit creates a commit of the cached proposals and those in opts, and
// returns the group in the new epoch with the commit and the Welcome for
// added members (RFC 9420 §12.4.1).
//
// Cached proposals are committed by reference as far as they can be
// together with opts (RFC 9420 §12.2): a Remove is preferred to an Update
// of the same leaf, and the most recent Update of a leaf to earlier ones;
// a leaf removed twice, a PreSharedKey proposed twice or not held, an
// extensions proposal when opts sets the extensions, an Add that cannot
// join the group (its keys already in it), an extensions proposal some
// member does not support, this member's own Updates and its own removal
// are left out. Otherwise one member's proposal, or two
// members proposing the same removal, would stop every receiver from
// committing for the rest of the epoch. Proposals in opts are never left
// out: a conflict among them is an error.
func (g *Group) Commit(opts CommitOptions) (*Group, *CommitResult, error) {
	if err := g.checkActive(); err != nil {
		return nil, nil, err
	}
	if opts.GroupContextExtensions != nil && !g.reinitFirstCommit(opts) {
		if err := checkMadeExtensions("GroupContextExtensions", *opts.GroupContextExtensions); err != nil {
			return nil, nil, err
		}
	}
	if opts.ReInit != nil {
		if err := checkMadeExtensions("ReInit", opts.ReInit.Extensions); err != nil {
			return nil, nil, err
		}
	}
	var list []ProposalOrRef
	var props []cachedProposal
	for _, p := range g.committable(opts) {
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
		props[len(props)-1].kpChecked = true // two signatures, not to check twice
	}
	for i := range opts.PSKs {
		inline(&Proposal{Type: ProposalTypePSK, PreSharedKey: &PreSharedKey{PSK: opts.PSKs[i]}})
	}
	if opts.ReInit != nil {
		ri := *opts.ReInit
		inline(&Proposal{Type: ProposalTypeReInit, ReInit: &ri})
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
		if err := checkPathLeaf(up.Tree, newCtx.Extensions, g.me, &up.Path); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrInvalidUpdatePath, err)
		}
		tree, keys, commitSecret = up.Tree, up.PrivateKeys, up.CommitSecret
		commit.Path = &up.Path
	}
	psk, err := g.pskSecretFor(eff.psks)
	if err != nil {
		return nil, nil, err
	}
	ac, content, err := g.frameOf(ContentTypeCommit, opts.AuthenticatedData, nil, nil, commit)
	if err != nil {
		return nil, nil, err
	}
	if newCtx.TreeHash, err = tree.TreeHash(g.cs); err != nil {
		return nil, nil, err
	}
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHashOf(g.cs, g.interim, ac, content); err != nil {
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
	msg, err := n.protectOf(ac, content)
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
	n.reinit, n.lent = eff.reinit, nil
	res := &CommitResult{Commit: msg}
	// Only a Welcome needs the GroupInfo: it is signed over the whole
	// ratchet tree (two SHA-512 passes over 259 KiB, 1.5 ms, for a group
	// of 1,000 whose parents are all set), which a commit adding no one
	// should not pay for.
	if len(eff.added) > 0 {
		if res.GroupInfo, err = n.groupInfo(!opts.OmitRatchetTree); err != nil {
			return nil, nil, err
		}
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
