package mls

import (
	"fmt"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// Proposals from senders that are not members (RFC 9420 §12.1.8): an
// external sender named in the group's external_senders extension (a
// delivery service removing a member, a server adding one) and a client
// asking to be added (new_member_proposal). Both come as PublicMessage
// with no membership tag, signed without the group context; members
// cache them like members' proposals, and a member commits them by
// reference.

// externalSenderProposals are the proposal types an external sender may
// send (RFC 9420 §17.4, the "External" column).
var externalSenderProposals = map[ProposalType]bool{
	ProposalTypeAdd:                    true,
	ProposalTypeRemove:                 true,
	ProposalTypePSK:                    true,
	ProposalTypeReInit:                 true,
	ProposalTypeGroupContextExtensions: true,
}

// ExternalSenders returns the group's external_senders extension (nil
// when it has none).
func (g *Group) ExternalSenders() (ExternalSenders, error) {
	return externalSenders(&g.ctx)
}

func externalSenders(gc *GroupContext) (ExternalSenders, error) {
	ext, ok := gc.Extensions.Find(ExtensionTypeExternalSenders)
	if !ok {
		return nil, nil
	}
	es, err := UnmarshalExternalSenders(ext.Data)
	if err != nil {
		return nil, fmt.Errorf("mls: external_senders extension of group %x: %w", gc.GroupID, err)
	}
	return es, nil
}

// processNonMember handles a PublicMessage whose sender is not a member:
// a proposal from an external sender or a new member, checked, verified
// and cached in c (a clone of the group, in its current epoch).
func (c *Group) processNonMember(pm *PublicMessage) (*Group, *Received, error) {
	fc := &pm.Content
	if fc.Sender.Type == SenderTypeNewMemberCommit {
		return nil, nil, fmt.Errorf("%w: an external commit goes to ProcessExternalCommit", ErrDecode)
	}
	if fc.ContentType != ContentTypeProposal {
		return nil, nil, fmt.Errorf("%w: %s from %s: a non-member sends only proposals", ErrNotMember, contentName(fc.ContentType), senderString(fc.Sender))
	}
	if len(pm.MembershipTag) != 0 {
		return nil, nil, fmt.Errorf("%w: proposal from %s carries a membership tag", ErrTampered, senderString(fc.Sender))
	}
	p := fc.Proposal
	if p == nil {
		return nil, nil, fmt.Errorf("%w: proposal from %s has no body", ErrDecode, senderString(fc.Sender))
	}
	var key SignaturePublicKey
	var cred Credential
	switch fc.Sender.Type {
	case SenderTypeExternal:
		es, err := externalSenders(&c.ctx)
		if err != nil {
			return nil, nil, err
		}
		if int(fc.Sender.SenderIndex) >= len(es) {
			return nil, nil, fmt.Errorf("%w: %s: group %x has %d external senders", ErrNotMember, senderString(fc.Sender), c.ctx.GroupID, len(es))
		}
		if !externalSenderProposals[p.Type] {
			return nil, nil, fmt.Errorf("%w: proposal type %d from %s: not one an external sender may send", ErrInvalidProposal, p.Type, senderString(fc.Sender))
		}
		key, cred = es[fc.Sender.SenderIndex].SignatureKey, es[fc.Sender.SenderIndex].Credential
	case SenderTypeNewMemberProposal:
		if p.Type != ProposalTypeAdd || p.Add == nil {
			return nil, nil, fmt.Errorf("%w: proposal type %d from a new member: it may propose only its own Add", ErrInvalidProposal, p.Type)
		}
		key, cred = p.Add.KeyPackage.LeafNode.SignatureKey, p.Add.KeyPackage.LeafNode.Credential
	default:
		return nil, nil, fmt.Errorf("%w: sender type %d", ErrDecode, fc.Sender.Type)
	}
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: pm.Content, Auth: pm.Auth}
	if err := verifyFramedContent(c.cs, key, ac, &c.ctx); err != nil {
		return nil, nil, err
	}
	if err := c.checkProposalFrom(fc.Sender, p); err != nil {
		return nil, nil, err
	}
	if err := c.cacheProposal(ac); err != nil {
		return nil, nil, err
	}
	return c, &Received{
		ContentType: ContentTypeProposal, SenderType: fc.Sender.Type, ExternalSenderIndex: fc.Sender.SenderIndex,
		SenderCredential: cloneCredential(cred), Epoch: fc.Epoch, AuthenticatedData: fc.AuthenticatedData, Proposal: p,
	}, nil
}

// ExternalProposal frames a proposal of an external sender (entry index
// of the group's external_senders, signing with priv) for the group and
// epoch given: what a delivery service sends to remove or add a member.
// The message is a PublicMessage, as RFC 9420 §12.1.8 requires.
func ExternalProposal(suite ciphersuite.Suite, priv *ciphersuite.SignaturePrivateKey, index uint32, groupID []byte, epoch uint64, p *Proposal, authData []byte) (*MLSMessage, error) {
	if !externalSenderProposals[p.Type] {
		return nil, fmt.Errorf("%w: proposal type %d: not one an external sender may send", ErrInvalidProposal, p.Type)
	}
	return nonMemberProposal(suite, priv, Sender{Type: SenderTypeExternal, SenderIndex: index}, groupID, epoch, p, authData)
}

// NewMemberProposal frames the Add of kp by the client itself (a
// new_member_proposal), signed with its leaf's signature key priv, for the
// group and epoch given.
func NewMemberProposal(priv *ciphersuite.SignaturePrivateKey, kp *KeyPackage, groupID []byte, epoch uint64, authData []byte) (*MLSMessage, error) {
	return nonMemberProposal(kp.CipherSuite, priv, Sender{Type: SenderTypeNewMemberProposal}, groupID, epoch,
		&Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *kp}}, authData)
}

func nonMemberProposal(suite ciphersuite.Suite, priv *ciphersuite.SignaturePrivateKey, s Sender, groupID []byte, epoch uint64, p *Proposal, authData []byte) (*MLSMessage, error) {
	cs, err := ciphersuite.Lookup(suite)
	if err != nil {
		return nil, err
	}
	if authData == nil {
		authData = []byte{}
	}
	fc := FramedContent{GroupID: groupID, Epoch: epoch, Sender: s, AuthenticatedData: authData, ContentType: ContentTypeProposal, Proposal: p}
	sig, err := signFramedContent(cs, priv, WireFormatPublicMessage, &fc, nil)
	if err != nil {
		return nil, err
	}
	return &MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatPublicMessage,
		PublicMessage: &PublicMessage{Content: fc, Auth: FramedContentAuthData{Signature: sig}}}, nil
}
