package mls

import (
	"bytes"
	"fmt"
)

// Additions for an embedder that records every transition (the engine):
// choosing the handshake wire format per operation, listing the proposals
// cached in the epoch with their references, proposing a PreSharedKey or
// new group context extensions, and dropping an external PSK again. Each
// leaves the receiver untouched, like every other operation.

// WithHandshakeEncryption returns a copy of the group that sends its
// proposals and commits as PrivateMessage when encrypt is set and as
// PublicMessage otherwise (Options.EncryptHandshake). Receiving accepts
// both either way.
func (g *Group) WithHandshakeEncryption(encrypt bool) *Group {
	c := g.clone()
	c.opts.EncryptHandshake = encrypt
	return c
}

// WithoutExternalPSK returns a copy of the group that no longer holds the
// external PSK id (see [Group.WithExternalPSK]), so that its saved state
// does not carry the secret.
func (g *Group) WithoutExternalPSK(id []byte) *Group {
	c := g.clone()
	delete(c.psks, string(id))
	return c
}

// PendingProposal is a proposal cached in the current epoch, committable
// by reference: received from another member, or proposed by this one.
type PendingProposal struct {
	// Ref is the ProposalRef (RFC 9420 §5.2) commits name it by.
	Ref      []byte
	Sender   Sender
	Proposal *Proposal
}

// PendingProposals lists the proposals cached in the current epoch, in
// the order they were cached (copies: changing them changes nothing).
func (g *Group) PendingProposals() []PendingProposal {
	out := make([]PendingProposal, len(g.proposals))
	for i, p := range g.proposals {
		var cp Proposal
		if b, err := p.proposal.Marshal(); err == nil && cp.Unmarshal(b) == nil {
			out[i] = PendingProposal{Ref: bytes.Clone(p.ref), Sender: p.sender, Proposal: &cp}
		} else {
			out[i] = PendingProposal{Ref: bytes.Clone(p.ref), Sender: p.sender, Proposal: p.proposal}
		}
	}
	return out
}

// ProposePreSharedKey proposes injecting the PSK id into the next epoch's
// key schedule. Its psk_nonce must be KDF.Nh bytes (RFC 9420 §8.4); the
// committer must hold the PSK, or it leaves the proposal out.
func (g *Group) ProposePreSharedKey(id PreSharedKeyID) (*Group, *MLSMessage, error) {
	if err := checkPSKNonce(g.cs, &id); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidProposal, err)
	}
	ng, m, _, err := g.propose(&Proposal{Type: ProposalTypePSK, PreSharedKey: &PreSharedKey{PSK: id}})
	return ng, m, err
}

// ProposeGroupContextExtensions proposes replacing the group context
// extensions with exts. A commit carries it only if every member supports
// the extensions (and the required capabilities they name, RFC 9420
// §12.1.7). An extension the registry assigns to other messages
// (application_id, ratchet_tree, external_pub, GREASE; §17.3) is refused
// with ErrInvalidProposal.
func (g *Group) ProposeGroupContextExtensions(exts Extensions) (*Group, *MLSMessage, error) {
	if exts == nil {
		exts = Extensions{}
	}
	if err := checkMadeExtensions("GroupContextExtensions", exts); err != nil {
		return nil, nil, err
	}
	if _, err := g.applyProposals(g.me, []cachedProposal{{sender: Sender{Type: SenderTypeMember, LeafIndex: g.me},
		proposal: &Proposal{Type: ProposalTypeGroupContextExtensions, GroupContextExtensions: &GroupContextExtensions{Extensions: exts}}}}); err != nil {
		return nil, nil, err
	}
	ng, m, _, err := g.propose(&Proposal{Type: ProposalTypeGroupContextExtensions, GroupContextExtensions: &GroupContextExtensions{Extensions: exts}})
	return ng, m, err
}
