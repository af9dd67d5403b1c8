package engine

// Proposals by reference (RFC 9420 §12.1, §12.2): this installation's own
// standalone proposals, and what a received one is recorded as. Every
// proposal cached in an epoch is recorded with the group state that holds
// it (group.proposal_staged), which is what a reload starts from: the
// cache, the proposer's handshake ratchet and an own Update's private key
// are in it. A commit of the epoch, this installation's or another
// member's, carries the cached proposals by reference.

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/membership"
	"github.com/epochlog/epochlog/mls"
)

// newProposal returns the proposal ng caches that g did not: the one just
// proposed or received. false when there is none (a replay, cached once).
func newProposal(g, ng *mls.Group) (mls.PendingProposal, bool) {
	before, after := g.PendingProposals(), ng.PendingProposals()
	if len(after) <= len(before) {
		return mls.PendingProposal{}, false
	}
	return after[len(after)-1], true
}

// proposalEvent is group.proposal_staged for proposal p, carried by the
// message wire (id its digest), of sender, in ng, the state that caches
// it, recorded as a delta from base (the state the epoch started with,
// groupState.epochStart) when known.
func proposalEvent(ng *mls.Group, p mls.PendingProposal, base, wire, id, sender []byte, own bool) (events.ProposalStaged, error) {
	enc, err := p.Proposal.Marshal()
	if err != nil {
		return events.ProposalStaged{}, fmt.Errorf("engine: encode proposal: %w", err)
	}
	st, err := ng.MarshalBinary()
	if err != nil {
		return events.ProposalStaged{}, fmt.Errorf("engine: encode group state: %w", err)
	}
	b := events.ProposalStaged{
		GroupID: ng.GroupID(), Epoch: ng.Epoch(), ProposalRef: p.Ref, ProposalType: uint16(p.Proposal.Type),
		SenderLeaf: uint32(p.Sender.LeafIndex), Sender: bytes.Clone(sender), Own: own, Proposal: enc,
		Message: wire, MessageID: id,
	}.WithStateFrom(base, st)
	switch p.Sender.Type {
	case mls.SenderTypeExternal:
		b.SenderType, b.SenderLeaf = uint8(p.Sender.Type), p.Sender.SenderIndex
	case mls.SenderTypeNewMemberProposal:
		b.SenderType = uint8(p.Sender.Type)
	}
	return b, nil
}

// proposalTypeName names an RFC 9420 proposal type.
func proposalTypeName(t mls.ProposalType) string {
	switch t {
	case mls.ProposalTypeAdd:
		return "add"
	case mls.ProposalTypeUpdate:
		return "update"
	case mls.ProposalTypeRemove:
		return "remove"
	case mls.ProposalTypePSK:
		return "psk"
	case mls.ProposalTypeReInit:
		return "reinit"
	case mls.ProposalTypeExternalInit:
		return "external_init"
	case mls.ProposalTypeGroupContextExtensions:
		return "group_context_extensions"
	}
	return fmt.Sprintf("proposal_type(%d)", uint16(t))
}

// propose makes and records an own proposal: build makes it on the
// group's state (set to the group's handshake wire format).
func (in *Installation) propose(ctx context.Context, groupID []byte, what string, build func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error)) (*ProposalOutput, error) {
	var out *ProposalOutput
	_, err := in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, events.Body, error) {
		g, err := in.handshaking(ctx, gs.g)
		if err != nil {
			return nil, nil, err
		}
		ng, msg, err := build(g)
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: propose %s in group %x epoch %d: %w", in.id, what, groupID, gs.g.Epoch(), err)
		}
		wire, err := msg.Marshal()
		if err != nil {
			return nil, nil, err
		}
		p, ok := newProposal(gs.g, ng)
		if !ok {
			return nil, nil, fmt.Errorf("engine: installation %s: propose %s in group %x: the proposal is cached already", in.id, what, groupID)
		}
		if err := in.checkProposal(ctx, gs.g, p.Proposal); err != nil {
			return nil, nil, err
		}
		id := messageID(wire)
		body, err := proposalEvent(ng, p, gs.epochStart.Bytes(), wire, id, []byte(in.id), true)
		if err != nil {
			return nil, nil, err
		}
		out = &ProposalOutput{GroupID: bytes.Clone(groupID), Epoch: ng.Epoch(), Proposal: wire, Ref: p.Ref, MessageID: id, Recipients: otherMembers(gs.g)}
		return ng, body, nil
	})
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, err
	}
	out.ProjectionErr, err = lagged(err)
	return out, err
}

// ProposeAdd proposes adding the client of the TLS-encoded key package,
// for a commit of this epoch (any member's) to carry by reference.
func (in *Installation) ProposeAdd(ctx context.Context, groupID, keyPackage []byte) (*ProposalOutput, error) {
	kp := new(mls.KeyPackage)
	if err := kp.Unmarshal(keyPackage); err != nil {
		return nil, fmt.Errorf("engine: installation %s: propose add to group %x: key package: %w", in.id, groupID, err)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.propose(ctx, groupID, "add", func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeAdd(kp) })
}

// ProposeRemove proposes removing the installation inst from the group.
// An installation that is not a member is an error naming it (errors.Is
// mls.ErrNotMember), refused before anything is recorded. To leave the
// group, use Leave.
func (in *Installation) ProposeRemove(ctx context.Context, groupID []byte, inst events.InstallationID) (*ProposalOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.propose(ctx, groupID, "remove", func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) {
		for l, id := range membership.Identities(g) {
			if string(id) == string(inst) {
				return g.ProposeRemove(l)
			}
		}
		return nil, nil, fmt.Errorf("remove %s: %w", inst, mls.ErrNotMember)
	})
}

// ProposeUpdate proposes replacing this installation's leaf with one
// holding a fresh encryption key; another member's commit carries it
// (this member's own commits refresh its path anyway, and leave its own
// Update out).
func (in *Installation) ProposeUpdate(ctx context.Context, groupID []byte) (*ProposalOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.propose(ctx, groupID, "update", func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeUpdate() })
}

// Leave proposes this installation's removal from the group (RFC 9420
// §12.1.3: a member cannot commit its own removal). Deliver the proposal
// to the members; when one of them commits it and the commit arrives,
// Receive records this installation's departure (Received.Removed and
// Left set). Until then it is still a member.
func (in *Installation) Leave(ctx context.Context, groupID []byte) (*ProposalOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.propose(ctx, groupID, "leave", func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeRemove(g.LeafIndex()) })
}

// CommitProposals commits the proposals cached in the group's current
// epoch by reference (RFC 9420 §12.2), with a path update: those that fit
// together, as mls.Group.Commit selects them (never this member's own
// Updates or removal). With none cached it is Update.
func (in *Installation) CommitProposals(ctx context.Context, groupID []byte) (*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return committed(in.commit(ctx, groupID, func(*mls.Group) (mls.CommitOptions, error) { return mls.CommitOptions{}, nil }))
}
