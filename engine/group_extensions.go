package engine

// Group context extensions (RFC 9420 §11.1, §12.1.7): application-defined
// extensions of the group and its required capabilities, changed by
// commit or proposed. What a member supports is in its leaf's
// capabilities: a change to extensions some member does not support, or
// to required capabilities some member lacks, is invalid, and so is adding
// a member that does not support the group's; the mls package refuses
// both (mls.ErrInvalidProposal), before anything is recorded.

import (
	"context"
	"fmt"
	"slices"

	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// capabilities is what this installation's leaves advertise (key
// packages, groups it creates): the defaults, plus the extension and
// proposal types of its options.
func (in *Installation) capabilities() *mls.KeyPackageOptions {
	if len(in.opts.SupportedExtensions) == 0 && len(in.opts.SupportedProposals) == 0 {
		return nil
	}
	return &mls.KeyPackageOptions{Capabilities: &mls.Capabilities{
		Versions:     []mls.ProtocolVersion{mls.ProtocolMLS10},
		CipherSuites: []ciphersuite.Suite{in.cs.ID()},
		Extensions:   slices.Clone(in.opts.SupportedExtensions),
		Proposals:    slices.Clone(in.opts.SupportedProposals),
		Credentials:  []mls.CredentialType{mls.CredentialTypeBasic},
	}}
}

// SetGroupContextExtensions commits new group context extensions (with a
// path update, and the proposals cached in the epoch that fit): exts
// replaces the group's extensions, the required_capabilities extension
// included. A change some member does not support is refused before
// anything is recorded (errors.Is mls.ErrInvalidProposal).
func (in *Installation) SetGroupContextExtensions(ctx context.Context, groupID []byte, exts mls.Extensions) (*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if exts == nil {
		exts = mls.Extensions{}
	}
	return committed(in.commit(ctx, groupID, func(*mls.Group) (mls.CommitOptions, error) {
		return mls.CommitOptions{GroupContextExtensions: &exts}, nil
	}))
}

// ProposeGroupContextExtensions proposes replacing the group context
// extensions with exts, for a commit of this epoch to carry by reference.
// A change some member does not support is refused before anything is
// recorded (errors.Is mls.ErrInvalidProposal).
func (in *Installation) ProposeGroupContextExtensions(ctx context.Context, groupID []byte, exts mls.Extensions) (*ProposalOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.propose(ctx, groupID, "group context extensions", func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) {
		return g.ProposeGroupContextExtensions(exts)
	})
}

// GroupContextExtensions returns the group's context extensions in its
// current epoch (once the read model has caught up).
func (in *Installation) GroupContextExtensions(ctx context.Context, groupID []byte) (mls.Extensions, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.currentGroup(ctx, groupID)
	if err != nil {
		return nil, err
	}
	return gs.g.GroupContext().Extensions, nil
}

// RequiredCapabilities returns the required_capabilities extension
// (RFC 9420 §11.1) naming the extension, proposal and credential types
// every member must support.
func RequiredCapabilities(extensions []mls.ExtensionType, proposals []mls.ProposalType, credentials []mls.CredentialType) (mls.Extension, error) {
	rc := mls.RequiredCapabilities{Extensions: extensions, Proposals: proposals, Credentials: credentials}
	if rc.Extensions == nil {
		rc.Extensions = []mls.ExtensionType{}
	}
	if rc.Proposals == nil {
		rc.Proposals = []mls.ProposalType{}
	}
	if rc.Credentials == nil {
		rc.Credentials = []mls.CredentialType{}
	}
	b, err := rc.Marshal()
	if err != nil {
		return mls.Extension{}, fmt.Errorf("engine: required capabilities: %w", err)
	}
	return mls.Extension{Type: mls.ExtensionTypeRequiredCapabilities, Data: b}, nil
}
