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
// application's Authentication Service knows for it.
func (in *Installation) checkMembers(ctx context.Context, g *mls.Group, added []events.Member) error {
	tree := g.Tree()
	refuse := func(leaf uint32, id []byte, why string, err error) error {
		if err != nil {
			return fmt.Errorf("engine: installation %s: group %x: member at leaf %d (%q): %s: %w: %w", in.id, g.GroupID(), leaf, id, why, ErrMemberRefused, err)
		}
		return fmt.Errorf("engine: installation %s: group %x: member at leaf %d (%q): %s: %w", in.id, g.GroupID(), leaf, id, why, ErrMemberRefused)
	}
	check := func(leaf uint32, node *mls.LeafNode) error {
		id := node.Credential.Identity
		if err := events.InstallationID(id).Validate(); err != nil {
			return refuse(leaf, id, "not an installation id", err)
		}
		if in.opts.CheckMember != nil {
			err := in.opts.CheckMember(ctx, events.InstallationID(id), bytes.Clone(node.SignatureKey))
			switch {
			case errors.Is(err, ErrMemberRefused):
				return fmt.Errorf("engine: installation %s: group %x: member at leaf %d (%q): refused by CheckMember: %w", in.id, g.GroupID(), leaf, id, err)
			case err != nil:
				// Not a refusal: the Authentication Service could not
				// decide (down, slow). Nothing is recorded, and the same
				// transition is tried again later (Host.Deliver stops).
				return fmt.Errorf("engine: installation %s: group %x: member at leaf %d (%q): CheckMember could not decide: %w", in.id, g.GroupID(), leaf, id, err)
			}
		}
		return nil
	}
	if added == nil {
		seen := map[string]uint32{}
		var err error
		tree.Leaves(func(l mls.LeafIndex, node *mls.LeafNode) {
			if node == nil || err != nil {
				return
			}
			id := string(node.Credential.Identity)
			if other, dup := seen[id]; dup {
				err = refuse(uint32(l), node.Credential.Identity, fmt.Sprintf("leaf %d holds the same installation", other), nil)
				return
			}
			seen[id] = uint32(l)
			err = check(uint32(l), node)
		})
		return err
	}
	for _, a := range added {
		node := tree.Leaf(mls.LeafIndex(a.Leaf))
		if node == nil {
			continue
		}
		if err := check(a.Leaf, node); err != nil {
			return err
		}
		var dupErr error
		tree.Leaves(func(l mls.LeafIndex, other *mls.LeafNode) {
			if dupErr == nil && other != nil && uint32(l) != a.Leaf && bytes.Equal(other.Credential.Identity, a.Identity) {
				dupErr = refuse(a.Leaf, a.Identity, fmt.Sprintf("leaf %d holds the same installation", l), nil)
			}
		})
		if dupErr != nil {
			return dupErr
		}
	}
	return nil
}
