package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// checkMembers refuses a transition whose new state g would hold a member
// this installation does not accept (ErrMemberRefused): added are the
// leaves the transition gives a member (membership.Diff); nil checks every
// member of g (a join). Every member's identity names the installation the
// engine reports it as (Received.Sender, Members, CommitOutput.Recipients),
// so it must be a valid installation id, held by one leaf only, and,
// with InstallationOptions.CheckMember, have the signature key the
// application's Authentication Service knows for it: with old (the state
// before), a member that keeps its identity under a new signature key is
// asked about too.
func (in *Installation) checkMembers(ctx context.Context, old, g *mls.Group, added []events.Member) error {
	tree := g.Tree()
	if added == nil && old == nil {
		seen := map[string]uint32{}
		var err error
		tree.Leaves(func(l mls.LeafIndex, node *mls.LeafNode) {
			if node == nil || err != nil {
				return
			}
			id := string(node.Credential.Identity)
			if other, dup := seen[id]; dup {
				err = in.refuseMember(g.GroupID(), uint32(l), node.Credential.Identity, fmt.Sprintf("leaf %d holds the same installation", other), nil)
				return
			}
			seen[id] = uint32(l)
			err = in.checkLeaf(ctx, g.GroupID(), uint32(l), node)
		})
		return err
	}
	for _, a := range added {
		node := tree.Leaf(mls.LeafIndex(a.Leaf))
		if node == nil {
			continue
		}
		if err := in.checkLeaf(ctx, g.GroupID(), a.Leaf, node); err != nil {
			return err
		}
		if err := in.checkUnique(g, a.Leaf, node); err != nil {
			return err
		}
	}
	if old != nil && in.opts.CheckMember != nil {
		// Same identity, new key (an Update, a commit's path): the
		// Authentication Service decides whether the key is still the
		// installation's.
		var err error
		tree.Leaves(func(l mls.LeafIndex, node *mls.LeafNode) {
			if node == nil || err != nil {
				return
			}
			prev := old.Tree().Leaf(l)
			if prev != nil && bytes.Equal(prev.Credential.Identity, node.Credential.Identity) && !bytes.Equal(prev.SignatureKey, node.SignatureKey) {
				err = in.checkLeaf(ctx, g.GroupID(), uint32(l), node)
			}
		})
		return err
	}
	return nil
}

// checkProposal refuses, before it is cached, a proposal whose commit
// checkMembers would refuse: an Add of a member this installation does
// not accept, an Update to a leaf it does not. Cached, it would make
// every commit of the epoch that takes the cache refused.
func (in *Installation) checkProposal(ctx context.Context, g *mls.Group, p *mls.Proposal) error {
	if p == nil {
		return nil
	}
	switch {
	case p.Type == mls.ProposalTypeAdd && p.Add != nil:
		node := &p.Add.KeyPackage.LeafNode
		const newLeaf = ^uint32(0)
		if err := in.checkLeaf(ctx, g.GroupID(), newLeaf, node); err != nil {
			return err
		}
		return in.checkUnique(g, newLeaf, node)
	case p.Type == mls.ProposalTypeUpdate && p.Update != nil:
		return in.checkLeaf(ctx, g.GroupID(), ^uint32(0), &p.Update.LeafNode)
	}
	return nil
}

// checkUnique refuses node at leaf when another leaf of g holds its
// identity.
func (in *Installation) checkUnique(g *mls.Group, leaf uint32, node *mls.LeafNode) error {
	var err error
	g.Tree().Leaves(func(l mls.LeafIndex, other *mls.LeafNode) {
		if err == nil && other != nil && uint32(l) != leaf && bytes.Equal(other.Credential.Identity, node.Credential.Identity) {
			err = in.refuseMember(g.GroupID(), leaf, node.Credential.Identity, fmt.Sprintf("leaf %d holds the same installation", l), nil)
		}
	})
	return err
}

// checkLeaf checks one member's leaf: a valid installation id, and what
// CheckMember says of its key.
func (in *Installation) checkLeaf(ctx context.Context, gid []byte, leaf uint32, node *mls.LeafNode) error {
	id := node.Credential.Identity
	if err := events.InstallationID(id).Validate(); err != nil {
		return in.refuseMember(gid, leaf, id, "not an installation id", err)
	}
	if in.opts.CheckMember == nil {
		return nil
	}
	err := in.opts.CheckMember(ctx, events.InstallationID(id), bytes.Clone(node.SignatureKey))
	switch {
	case errors.Is(err, ErrMemberRefused):
		return fmt.Errorf("engine: installation %s: group %x: member %s (%q): refused by CheckMember: %w", in.id, gid, leafName(leaf), id, err)
	case err != nil:
		// Not a refusal: the Authentication Service could not decide
		// (down, slow). Nothing is recorded, and the same transition is
		// tried again later (Host.Deliver stops).
		return fmt.Errorf("engine: installation %s: group %x: member %s (%q): CheckMember could not decide: %w", in.id, gid, leafName(leaf), id, err)
	}
	return nil
}

func (in *Installation) refuseMember(gid []byte, leaf uint32, id []byte, why string, err error) error {
	if err != nil {
		return fmt.Errorf("engine: installation %s: group %x: member %s (%q): %s: %w: %w", in.id, gid, leafName(leaf), id, why, ErrMemberRefused, err)
	}
	return fmt.Errorf("engine: installation %s: group %x: member %s (%q): %s: %w", in.id, gid, leafName(leaf), id, why, ErrMemberRefused)
}

// leafName names a leaf in an error; ^0 is a proposed member's.
func leafName(leaf uint32) string {
	if leaf == ^uint32(0) {
		return "proposed"
	}
	return fmt.Sprintf("at leaf %d", leaf)
}
