package mls

import (
	"bytes"
	"fmt"
	"io"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
)

// External joins (RFC 9420 §12.4.3.2): a client that is not a member joins
// from a GroupInfo carrying the group's external public key (external_pub,
// §8.3) with an external commit: a commit sent as a PublicMessage by a
// new_member_commit sender, with exactly one ExternalInit proposal (the
// KEM output from which every member derives the next epoch's init
// secret), at most one Remove (a resync: the joiner removes an old leaf of
// its own) and PreSharedKey proposals, all inline, and a path from the
// joiner's new leaf, the leftmost free one. ProcessExternalCommit is the
// members' side.

const labelExternalInit = "MLS 1.0 external init secret"

// noLeaf is a leaf index no tree holds: the committer of an external
// commit before it has a leaf.
const noLeaf = LeafIndex(1<<32 - 1)

// ExternalGroupInfo returns a signed GroupInfo of the current epoch that
// lets a client join by external commit: it carries the external_pub
// extension (the public key of the epoch's external key pair), and the
// ratchet_tree extension when withTree is set (otherwise the joiner needs
// the tree from elsewhere). Each such GroupInfo serves one external join:
// the join moves the group to the next epoch.
func (g *Group) ExternalGroupInfo(withTree bool) (*GroupInfo, error) {
	if err := g.checkActive(); err != nil {
		return nil, err
	}
	kp, err := g.secrets.ExternalKeyPair()
	if err != nil {
		return nil, err
	}
	ep := ExternalPub{ExternalPub: kp.PublicKey()}
	epb, err := ep.Marshal()
	if err != nil {
		return nil, err
	}
	gi := &GroupInfo{GroupContext: g.GroupContext(), Extensions: Extensions{{Type: ExtensionTypeExternalPub, Data: epb}},
		ConfirmationTag: bytes.Clone(g.confirmationTag), Signer: g.me}
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

// ExternalJoinOptions configures JoinExternal. The zero value gives
// defaults.
type ExternalJoinOptions struct {
	Options
	// RatchetTree is the group's tree when the GroupInfo does not carry
	// the ratchet_tree extension.
	RatchetTree *RatchetTree
	// Resync removes the leaf at RemoveLeaf, an old appearance of the
	// joiner (same credential identity), in the same commit.
	Resync     bool
	RemoveLeaf LeafIndex
	// Capabilities of the joiner's leaf (nil: the defaults of
	// NewKeyPackage).
	Capabilities *Capabilities
	// AuthenticatedData is sent with the commit.
	AuthenticatedData []byte
	// Random is the source of the path secrets (crypto/rand when nil).
	Random io.Reader
}

// JoinExternal joins the group a GroupInfo describes by external commit
// (RFC 9420 §12.4.3.2), as the client of credential with signature key
// sig. It checks the GroupInfo (signature by its signer, ratchet tree
// valid and matching the tree hash) and returns the joiner's state in the
// new epoch, and the commit (a PublicMessage) to send to the members.
func JoinExternal(gi *GroupInfo, credential Credential, sig *ciphersuite.SignaturePrivateKey, opts *ExternalJoinOptions) (*Group, *MLSMessage, error) {
	if opts == nil {
		opts = &ExternalJoinOptions{}
	}
	if err := gi.checkExtensionLists(); err != nil {
		return nil, nil, err
	}
	gc := gi.GroupContext
	cs, err := ciphersuite.Lookup(gc.CipherSuite)
	if err != nil {
		return nil, nil, err
	}
	if gc.Version != ProtocolMLS10 {
		return nil, nil, fmt.Errorf("%w: group info of version %d", ErrWrongGroup, gc.Version)
	}
	if sig.Suite() != gc.CipherSuite {
		return nil, nil, fmt.Errorf("%w: group info of suite %d for a signature key of suite %d", ErrWrongGroup, gc.CipherSuite, sig.Suite())
	}
	var tree RatchetTree
	if e, ok := gi.Extensions.Find(ExtensionTypeRatchetTree); ok {
		if tree, err = UnmarshalRatchetTree(e.Data); err != nil {
			return nil, nil, fmt.Errorf("%w: ratchet_tree extension: %w", ErrInvalidTree, err)
		}
	} else if opts.RatchetTree != nil {
		tree = *opts.RatchetTree
	} else {
		return nil, nil, fmt.Errorf("%w: the GroupInfo carries no ratchet tree and none was given", ErrInvalidTree)
	}
	signer := tree.Leaf(gi.Signer)
	if signer == nil {
		return nil, nil, fmt.Errorf("%w: group info signer %d is a blank leaf", ErrInvalidTree, gi.Signer)
	}
	if err := gi.VerifySignature(cs, signer.SignatureKey); err != nil {
		return nil, nil, fmt.Errorf("mls: group info of group %x epoch %d: %w", gc.GroupID, gc.Epoch, err)
	}
	th, err := tree.TreeHash(cs)
	if err != nil {
		return nil, nil, err
	}
	if !bytes.Equal(th, gc.TreeHash) {
		return nil, nil, fmt.Errorf("%w: tree hash does not match the group context of group %x epoch %d", ErrInvalidTree, gc.GroupID, gc.Epoch)
	}
	if err := tree.Validate(cs, gc.GroupID, gc.Extensions); err != nil {
		return nil, nil, err
	}
	e, ok := gi.Extensions.Find(ExtensionTypeExternalPub)
	if !ok {
		return nil, nil, fmt.Errorf("%w: the GroupInfo of group %x epoch %d has no external_pub extension", ErrInvalidProposal, gc.GroupID, gc.Epoch)
	}
	var pub ExternalPub
	if err := pub.Unmarshal(e.Data); err != nil {
		return nil, nil, fmt.Errorf("mls: external_pub extension: %w", err)
	}
	// A key of the suite's KEM, of no small order: the KEM would refuse
	// it too, with an error of its own, not ours.
	if err := cs.ValidateHPKEPublicKey(pub.ExternalPub); err != nil {
		return nil, nil, fmt.Errorf("%w: external_pub of the GroupInfo of group %x epoch %d: %w", ErrInvalidProposal, gc.GroupID, gc.Epoch, err)
	}
	kemOutput, initSecret, err := cs.ExportSend(pub.ExternalPub, labelExternalInit, cs.Nh())
	if err != nil {
		return nil, nil, err
	}
	// The joiner's leaf: a fresh key package's, which the path replaces
	// by a commit-source leaf with a key derived from the path.
	kp, _, err := NewKeyPackage(gc.CipherSuite, credential, sig, &KeyPackageOptions{Capabilities: opts.Capabilities})
	if err != nil {
		return nil, nil, err
	}
	g := &Group{cs: cs, opts: opts.Options, ctx: gc, tree: tree, me: noLeaf, sig: sig,
		pendingUpdates: map[string]*ciphersuite.HPKEPrivateKey{}, psks: map[string]keyschedule.Secret{}, random: opts.Random}
	list := []ProposalOrRef{{Type: ProposalOrRefProposal, Proposal: &Proposal{Type: ProposalTypeExternalInit, ExternalInit: &ExternalInit{KEMOutput: kemOutput}}}}
	var props []cachedProposal
	if opts.Resync {
		old := tree.Leaf(opts.RemoveLeaf)
		if old == nil {
			return nil, nil, fmt.Errorf("%w: resync removes blank leaf %d", ErrInvalidProposal, opts.RemoveLeaf)
		}
		if !sameIdentity(old.Credential, credential) {
			return nil, nil, fmt.Errorf("%w: resync removes leaf %d, which holds another identity", ErrInvalidProposal, opts.RemoveLeaf)
		}
		p := &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: opts.RemoveLeaf}}
		list = append(list, ProposalOrRef{Type: ProposalOrRefProposal, Proposal: p})
		props = append(props, cachedProposal{sender: Sender{Type: SenderTypeNewMemberCommit}, proposal: p})
	}
	eff, err := g.applyProposals(noLeaf, props)
	if err != nil {
		return nil, nil, err
	}
	newCtx := gc
	newCtx.Epoch++
	newCtx.Extensions = eff.extensions
	tree, me := eff.tree.AddLeaf(kp.LeafNode.Clone())
	up, err := tree.CreateUpdatePath(cs, newCtx, me, tree.Leaf(me), sig, nil, g.rand())
	if err != nil {
		return nil, nil, err
	}
	if err := checkPathLeaf(up.Tree, newCtx.Extensions, me, &up.Path); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidUpdatePath, err)
	}
	authData := opts.AuthenticatedData
	if authData == nil {
		authData = []byte{}
	}
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: FramedContent{
		GroupID: gc.GroupID, Epoch: gc.Epoch, Sender: Sender{Type: SenderTypeNewMemberCommit},
		AuthenticatedData: authData, ContentType: ContentTypeCommit, Commit: &Commit{Proposals: list, Path: &up.Path},
	}}
	if ac.Auth.Signature, err = signFramedContent(cs, sig, ac.WireFormat, &ac.Content, &gc); err != nil {
		return nil, nil, err
	}
	interim, err := interimTranscriptHash(cs, gc.ConfirmedTranscriptHash, gi.ConfirmationTag)
	if err != nil {
		return nil, nil, err
	}
	if newCtx.TreeHash, err = up.Tree.TreeHash(cs); err != nil {
		return nil, nil, err
	}
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHash(cs, interim, ac); err != nil {
		return nil, nil, err
	}
	gcBytes, err := newCtx.Marshal()
	if err != nil {
		return nil, nil, err
	}
	joiner, err := keyschedule.JoinerSecret(cs, ciphersuite.NewSecret(initSecret), up.CommitSecret, gcBytes)
	if err != nil {
		return nil, nil, err
	}
	psk := keyschedule.Secret{}
	if ac.Auth.ConfirmationTag, err = confirmationTagFor(cs, joiner, psk, gcBytes, newCtx.ConfirmedTranscriptHash); err != nil {
		return nil, nil, err
	}
	pm, err := protectPublic(cs, ac, &gc, keyschedule.Secret{})
	if err != nil {
		return nil, nil, err
	}
	g.ctx, g.tree, g.me, g.keys = newCtx, up.Tree, me, up.PrivateKeys
	if err := g.enterEpoch(joiner, psk, gcBytes); err != nil {
		return nil, nil, err
	}
	g.confirmationTag = ac.Auth.ConfirmationTag
	if g.interim, err = interimTranscriptHash(cs, newCtx.ConfirmedTranscriptHash, g.confirmationTag); err != nil {
		return nil, nil, err
	}
	return g, &MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm}, nil
}

// sameIdentity reports whether two credentials name the same client.
func sameIdentity(a, b Credential) bool {
	if a.Type != b.Type || !bytes.Equal(a.Identity, b.Identity) || len(a.Certificates) != len(b.Certificates) {
		return false
	}
	for i := range a.Certificates {
		if !bytes.Equal(a.Certificates[i], b.Certificates[i]) {
			return false
		}
	}
	return true
}

// IsExternalCommit reports whether m is an external commit (a
// PublicMessage commit of a new_member_commit sender).
func IsExternalCommit(m *MLSMessage) bool {
	return m.WireFormat == WireFormatPublicMessage && m.PublicMessage != nil &&
		m.PublicMessage.Content.ContentType == ContentTypeCommit && m.PublicMessage.Content.Sender.Type == SenderTypeNewMemberCommit
}

// ProcessExternalCommit applies an external commit (RFC 9420 §12.4.3.2):
// a new member's join, or an existing member's resync that removes its old
// leaf. The proposals must be inline: exactly one ExternalInit, at most
// one Remove of a leaf with the joiner's identity, PreSharedKeys; the path
// is required, signed by the joiner's new leaf, which is the leftmost free
// one. The next epoch's init secret comes from the ExternalInit and this
// epoch's external key pair. Received.Sender is the joiner's new leaf;
// Removed is set when the resync removed this member's own leaf.
func (g *Group) ProcessExternalCommit(m *MLSMessage) (*Group, *Received, error) {
	if !IsExternalCommit(m) {
		return nil, nil, fmt.Errorf("%w: not an external commit", ErrDecode)
	}
	if err := g.checkActive(); err != nil {
		return nil, nil, err
	}
	pm := m.PublicMessage
	fc := pm.Content
	if !bytes.Equal(fc.GroupID, g.ctx.GroupID) {
		return nil, nil, fmt.Errorf("%w: external commit for group %x in group %x", ErrWrongGroup, fc.GroupID, g.ctx.GroupID)
	}
	if fc.Epoch != g.ctx.Epoch {
		return nil, nil, fmt.Errorf("%w: external commit for epoch %d, group %x is in epoch %d", ErrWrongEpoch, fc.Epoch, g.ctx.GroupID, g.ctx.Epoch)
	}
	c := g.clone()
	ac, err := unprotectPublic(c.cs, pm, &c.ctx, keyschedule.Secret{})
	if err != nil {
		return nil, nil, err
	}
	commit := ac.Content.Commit
	if commit.Path == nil {
		return nil, nil, fmt.Errorf("%w: external commit without a path", ErrInvalidProposal)
	}
	var init *ExternalInit
	var props []cachedProposal
	removes := 0
	for i, por := range commit.Proposals {
		if por.Type != ProposalOrRefProposal {
			return nil, nil, fmt.Errorf("%w: external commit references proposal %d", ErrInvalidProposal, i)
		}
		p := por.Proposal
		switch p.Type {
		case ProposalTypeExternalInit:
			if init != nil {
				return nil, nil, fmt.Errorf("%w: external commit with two ExternalInit proposals", ErrInvalidProposal)
			}
			init = p.ExternalInit
			continue
		case ProposalTypeRemove:
			if removes++; removes > 1 {
				return nil, nil, fmt.Errorf("%w: external commit with two Remove proposals", ErrInvalidProposal)
			}
			old := c.tree.Leaf(p.Remove.Removed)
			if old == nil || !sameIdentity(old.Credential, commit.Path.LeafNode.Credential) {
				return nil, nil, fmt.Errorf("%w: external commit removes leaf %d, not an old leaf of the joiner", ErrInvalidProposal, p.Remove.Removed)
			}
		case ProposalTypePSK:
		default:
			return nil, nil, fmt.Errorf("%w: external commit carries a proposal of type %d", ErrInvalidProposal, p.Type)
		}
		props = append(props, cachedProposal{sender: Sender{Type: SenderTypeNewMemberCommit}, proposal: p})
	}
	if init == nil {
		return nil, nil, fmt.Errorf("%w: external commit without an ExternalInit proposal", ErrInvalidProposal)
	}
	// The signature is the joiner's new leaf's.
	if err := verifyFramedContent(c.cs, commit.Path.LeafNode.SignatureKey, ac, &c.ctx); err != nil {
		return nil, nil, err
	}
	eff, err := c.applyProposals(noLeaf, props)
	if err != nil {
		return nil, nil, err
	}
	newCtx := c.ctx
	newCtx.Epoch++
	newCtx.Extensions = eff.extensions
	// The joiner takes the leftmost free leaf, as if added; its path
	// replaces the placeholder there.
	placeholder := commit.Path.LeafNode.Clone()
	placeholder.EncryptionKey = nil
	tree, joiner := eff.tree.AddLeaf(placeholder)
	r := &Received{ContentType: ContentTypeCommit, SenderType: SenderTypeNewMemberCommit, Sender: joiner, SenderCredential: cloneCredential(commit.Path.LeafNode.Credential),
		Epoch: c.ctx.Epoch, AuthenticatedData: ac.Content.AuthenticatedData}
	var keys *TreePrivateKeys
	if !eff.removed {
		keys = c.privateKeysFor(tree, nil)
	}
	up, err := tree.ApplyUpdatePath(c.cs, newCtx, joiner, commit.Path, keys, nil)
	if err != nil {
		return nil, nil, err
	}
	if err := checkPathLeaf(up.Tree, newCtx.Extensions, joiner, commit.Path); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidUpdatePath, err)
	}
	if eff.removed {
		r.Removed = true
		return c.removedState(), r, nil
	}
	ext, err := c.secrets.ExternalKeyPair()
	if err != nil {
		return nil, nil, err
	}
	initSecret, err := c.cs.ExportReceive(ext, init.KEMOutput, labelExternalInit, c.cs.Nh())
	if err != nil {
		return nil, nil, fmt.Errorf("%w: external init of the commit for epoch %d", ErrTampered, newCtx.Epoch)
	}
	psk, err := c.pskSecretFor(eff.psks)
	if err != nil {
		return nil, nil, err
	}
	if newCtx.TreeHash, err = up.Tree.TreeHash(c.cs); err != nil {
		return nil, nil, err
	}
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHash(c.cs, c.interim, ac); err != nil {
		return nil, nil, err
	}
	gcBytes, err := newCtx.Marshal()
	if err != nil {
		return nil, nil, err
	}
	js, err := keyschedule.JoinerSecret(c.cs, ciphersuite.NewSecret(initSecret), up.CommitSecret, gcBytes)
	if err != nil {
		return nil, nil, err
	}
	n := c.clone()
	n.retireEpoch()
	n.ctx, n.tree, n.keys = newCtx, up.Tree, up.PrivateKeys
	if err := n.enterEpoch(js, psk, gcBytes); err != nil {
		return nil, nil, err
	}
	if !c.cs.VerifyMAC(n.secrets.ConfirmationKey.Bytes(), newCtx.ConfirmedTranscriptHash, ac.Auth.ConfirmationTag) {
		return nil, nil, fmt.Errorf("%w: confirmation tag of the external commit for epoch %d", ErrTampered, newCtx.Epoch)
	}
	n.confirmationTag = bytes.Clone(ac.Auth.ConfirmationTag)
	if n.interim, err = interimTranscriptHash(c.cs, newCtx.ConfirmedTranscriptHash, n.confirmationTag); err != nil {
		return nil, nil, err
	}
	n.proposals, n.pendingUpdates = nil, map[string]*ciphersuite.HPKEPrivateKey{}
	return n, r, nil
}
