package engine

// External joins (RFC 9420 §12.4.3.2): publishing a GroupInfo others join
// from, joining a group by this installation's own external commit, and
// resynchronising a membership whose state was lost or forked by an
// external commit that removes the old leaf. Other members' external
// commits are received like any commit (group_receive.go).

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/membership"
	"github.com/epochlog/epochlog/mls"
)

// GroupInfoOutput is a signed GroupInfo of a group's current epoch that a
// client joins from by external commit (JoinExternal, or any RFC 9420
// client).
type GroupInfoOutput struct {
	GroupID []byte
	Epoch   uint64
	// GroupInfo is the MLSMessage carrying the GroupInfo, with the
	// external_pub extension (and ratchet_tree when asked for).
	GroupInfo []byte
	// RatchetTree is the ratchet tree (the ratchet_tree extension's
	// payload) when it is not inline: the joiner needs it beside the
	// GroupInfo.
	RatchetTree []byte
}

// GroupInfo returns a signed GroupInfo of the group's current epoch (once
// the read model has caught up) that lets a client join by external
// commit, with the ratchet tree inline or beside it. Publishing it records
// nothing: it describes the epoch, and serves one external join (which
// moves the group to the next epoch). Anyone holding it can join the
// group: hand it only to clients the application lets in.
func (in *Installation) GroupInfo(ctx context.Context, groupID []byte, inlineTree bool) (*GroupInfoOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.currentGroup(ctx, groupID)
	if err != nil {
		return nil, err
	}
	gi, err := gs.g.ExternalGroupInfo(inlineTree)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x epoch %d: group info: %w", in.id, groupID, gs.g.Epoch(), err)
	}
	wire, err := (&mls.MLSMessage{Version: mls.ProtocolMLS10, WireFormat: mls.WireFormatGroupInfo, GroupInfo: gi}).Marshal()
	if err != nil {
		return nil, err
	}
	out := &GroupInfoOutput{GroupID: bytes.Clone(groupID), Epoch: gs.g.Epoch(), GroupInfo: wire}
	if !inlineTree {
		if out.RatchetTree, err = gs.g.Tree().Marshal(); err != nil {
			return nil, err
		}
	}
	return out, nil
}

// JoinExternal joins the group a GroupInfo describes (an MLSMessage, as
// GroupInfo returns it; ratchetTree when the tree is not inline) by
// external commit. The join is recorded (group.external_joined, the
// members) before the commit is returned for the members
// (CommitOutput.Recipients); the group's epoch moves for them when they
// process it. A group this installation left (or was removed from) is
// joined again as a new membership; one it is a member of is refused
// with ErrAlreadyMember (see Resync).
func (in *Installation) JoinExternal(ctx context.Context, groupInfo, ratchetTree []byte) (*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.joinExternal(ctx, nil, groupInfo, ratchetTree, "")
}

// Resync rejoins a group this installation is a member of but whose state
// it can no longer use (RFC 9420 §12.4.3.2, "resync"): lost (it cannot
// process the group's next commit: missing commits, a state that is not
// the group's) or forked (its epoch authenticator differs from the
// group's: CheckEpochAuthenticator, ErrForked). The external commit, made
// from a current GroupInfo of the group, removes this installation's old
// leaf; the read model keeps the abandoned membership's history and
// starts a new one. reason is recorded: "lost" or "forked".
func (in *Installation) Resync(ctx context.Context, groupID, groupInfo, ratchetTree []byte, reason string) (*CommitOutput, error) {
	if reason != ResyncLost && reason != ResyncForked {
		return nil, fmt.Errorf("engine: installation %s: resync group %x: reason %q is neither %q nor %q", in.id, groupID, reason, ResyncLost, ResyncForked)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.joinExternal(ctx, groupID, groupInfo, ratchetTree, reason)
}

// Reasons for a resync.
const (
	ResyncLost   = "lost"
	ResyncForked = "forked"
)

// joinExternal joins by external commit; reason non-empty makes it a
// resync.
// joinExternal joins by external commit the group of groupInfo, which
// must be group want when want is not nil (Resync): it is checked before
// anything else, since the installation may be a member of the group the
// GroupInfo names too, and a resync of that group would be recorded.
func (in *Installation) joinExternal(ctx context.Context, want, groupInfo, ratchetTree []byte, reason string) (*CommitOutput, error) {
	var m mls.MLSMessage
	if err := m.Unmarshal(groupInfo); err != nil {
		return nil, fmt.Errorf("engine: installation %s: group info: %w", in.id, err)
	}
	if m.GroupInfo == nil {
		return nil, fmt.Errorf("engine: installation %s: not a group info (wire format %d): %w", in.id, m.WireFormat, ErrUnsupportedMessage)
	}
	gi := m.GroupInfo
	gid := gi.GroupContext.GroupID
	if want != nil && !bytes.Equal(gid, want) {
		return nil, fmt.Errorf("engine: installation %s: resync group %x: the group info is of group %x: %w", in.id, want, gid, mls.ErrWrongGroup)
	}
	opts := mls.ExternalJoinOptions{Options: in.mlsOptions()}
	if kpo := in.capabilities(); kpo != nil {
		opts.Capabilities = kpo.Capabilities
	}
	tree := ratchetTree
	if tree != nil {
		t, err := mls.UnmarshalRatchetTree(tree)
		if err != nil {
			return nil, fmt.Errorf("engine: installation %s: group %x: ratchet tree: %w", in.id, gid, err)
		}
		opts.RatchetTree = &t
	} else if e, ok := gi.Extensions.Find(mls.ExtensionTypeRatchetTree); ok {
		t, err := mls.UnmarshalRatchetTree(e.Data)
		if err != nil {
			return nil, fmt.Errorf("engine: installation %s: group %x: ratchet tree: %w", in.id, gid, err)
		}
		opts.RatchetTree = &t
	}
	if err := in.project(ctx); err != nil {
		return nil, err
	}
	if err := in.externallyJoinable(ctx, gid, reason); err != nil {
		return nil, err
	}
	if reason != "" && opts.RatchetTree != nil {
		// The old leaf, if the group still has it, goes with the join.
		opts.RatchetTree.Leaves(func(l mls.LeafIndex, leaf *mls.LeafNode) {
			if leaf != nil && string(leaf.Credential.Identity) == string(in.id) {
				opts.Resync, opts.RemoveLeaf = true, l
			}
		})
	}
	g, commit, err := mls.JoinExternal(gi, in.cred, in.sig, &opts)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: join group %x by external commit at epoch %d: %w", in.id, gid, gi.GroupContext.Epoch, err)
	}
	if err := in.checkMembers(ctx, nil, g, nil); err != nil {
		return nil, err
	}
	wire, err := commit.Marshal()
	if err != nil {
		return nil, err
	}
	st, err := g.MarshalBinary()
	if err != nil {
		return nil, err
	}
	joined := events.ExternalJoined{
		GroupID: gid, Epoch: g.Epoch(), GroupInfo: groupInfo, RatchetTree: ratchetTree, Commit: wire,
		Resync: reason != "", RemovedLeaf: uint32(opts.RemoveLeaf), Reason: reason,
		EpochAuthenticator: g.EpochAuthenticator(), State: events.NewSecret(st),
		Members: membership.Members(g), OwnOutput: &events.OwnOutput{},
	}
	out := &CommitOutput{GroupID: bytes.Clone(gid), Epoch: g.Epoch(), Commit: wire}
	for _, id := range membership.Identities(g) {
		if string(id) != string(in.id) {
			out.Recipients = append(out.Recipients, events.InstallationID(id))
		}
	}
	sortIDs(out.Recipients)
	var joinErr error
	var pos uint64
	for attempt := 0; ; attempt++ {
		if pos, err = in.position(ctx, events.AggGroup, groupKey(gid)); err != nil {
			return nil, err
		}
		if attempt == in.opts.MaxAttempts {
			return nil, fmt.Errorf("engine: installation %s: record external join of group %x: %w", in.id, gid, ErrTooManyConflicts)
		}
		joinErr = in.appendAndProject(ctx, in.groupAgg(gid), pos, joined)
		if !errors.Is(joinErr, eventlog.ErrConflict) {
			break
		}
		// Another process of the installation moved the group: decide
		// again whether the join still holds.
		if err := in.project(ctx); err != nil {
			return nil, err
		}
		if err := in.externallyJoinable(ctx, gid, reason); err != nil {
			return nil, err
		}
		decidedAgain(in.log, in.groupAgg(gid), attempt+1, joinErr)
	}
	if joinErr != nil && !errors.Is(joinErr, errNotProjected) {
		// Undecided, the commit comes in the error: recorded, the members
		// must get it (Decide).
		return nil, outcomeUnknown(fmt.Errorf("engine: installation %s: record external join of group %x: %w", in.id, gid, joinErr),
			func(u *OutcomeUnknownError) { u.Commit = out })
	}
	in.group[string(gid)] = &groupState{id: bytes.Clone(gid), pos: pos + 1, g: g, lastUpdate: in.opts.Now().UTC(),
		epochStart: epochStartAfter(events.Secret{}, joined)}
	delete(in.wireFormat, string(gid))
	out.ProjectionErr, _ = lagged(joinErr)
	return out, nil
}

// externallyJoinable checks the read model's view of the group before an
// external join: a plain join of a group this installation is a member
// of is ErrAlreadyMember; a resync needs a group it is a member of.
func (in *Installation) externallyJoinable(ctx context.Context, gid []byte, reason string) error {
	member, err := in.isMember(ctx, gid)
	if err != nil {
		return err
	}
	switch {
	case reason == "" && member:
		return fmt.Errorf("engine: installation %s: join group %x by external commit: %w (resync to rejoin)", in.id, gid, ErrAlreadyMember)
	case reason != "" && !member:
		return fmt.Errorf("engine: installation %s: resync group %x: not a member of it: %w", in.id, gid, ErrUnknownGroup)
	}
	return nil
}

func sortIDs(ids []events.InstallationID) {
	for i := 1; i < len(ids); i++ {
		for j := i; j > 0 && ids[j] < ids[j-1]; j-- {
			ids[j], ids[j-1] = ids[j-1], ids[j]
		}
	}
}
