package engine

import (
	"bytes"
	"context"
	"fmt"

	"github.com/epochlog/epochlog/events"
)

// OwnCommits hands back the outputs of this installation's own commits of
// the group that started an epoch from fromEpoch on, in epoch order, as
// the operations returned them (ProjectionErr nil): what a process
// restarted after a crash fans out again, with the same idempotency keys
// as the live path, so that an output the crash lost before it was
// queued reaches the members (docs/engine.md, "After a crash"). The read
// model is caught up first.
//
// It holds the outputs of every own commit of the installation's current
// membership of the group (a join by external commit, JoinExternal or
// Resync, included) recorded with its output (group.commit_applied
// version 5 on, group.external_joined version 3 on, a successor's first
// commit in its group.created) and projected into a
// read model of schema 9 on, retired epochs included (an output holds no
// secret). Commits recorded before, and the commits of an ended
// membership, are not handed back. A group the installation never held
// is ErrUnknownGroup; one it was removed from still hands back the own
// commits of that membership.
func (in *Installation) OwnCommits(ctx context.Context, groupID []byte, fromEpoch uint64) ([]*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.projectHeld(ctx, groupID, "own commits"); err != nil {
		return nil, err
	}
	rows, err := in.db.OwnCommitOutputs(ctx, groupID, fromEpoch)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: own commits of group %x from epoch %d: %w", in.id, groupID, fromEpoch, err)
	}
	out := make([]*CommitOutput, len(rows))
	for i, r := range rows {
		out[i] = &CommitOutput{GroupID: bytes.Clone(groupID), Epoch: r.Epoch, Commit: r.Commit,
			Recipients: installationIDs(r.Recipients), Welcome: r.Welcome, Added: installationIDs(r.Added)}
	}
	return out, nil
}

// OwnMessages hands back the outputs of this installation's own
// application messages of the group, as Send (or Host.Send) returned
// them (Update nil: a path update Send made first is an own commit,
// which OwnCommits hands back; ProjectionErr nil), oldest first: what a
// process restarted after a crash fans out again, with the live path's
// idempotency key (msg-%x of MessageID), so that a message whose output
// the crash lost before it was queued reaches the members, and one
// queued before is not queued twice (docs/engine.md, "After a crash").
// The read model is caught up first.
//
// It is bounded by what a crash can have lost: the outputs in flight
// when it happened, which are the newest own messages. It hands back the
// newest limit of the messages of epochs from fromEpoch on (all of them
// when limit is 0): limit at least the number of messages the service
// sends to the group at once, and fromEpoch the one given to OwnCommits,
// so that each epoch's messages go out after the own commit that started
// it, as they did live.
//
// It holds the messages of the installation's current membership of the
// group recorded with their message (application.message_sent version 2
// on) and projected into a read model of schema 10 on. Messages recorded
// before, those of an ended membership, and those of an epoch whose
// secrets this installation has retired (MaxPastEpochs commits later)
// are not handed back: a member with the same window has retired that
// epoch too and could not decrypt them (its Receive says
// ErrEpochRetired). A group the installation never held is
// ErrUnknownGroup; a negative limit is refused.
func (in *Installation) OwnMessages(ctx context.Context, groupID []byte, fromEpoch uint64, limit int) ([]*SendOutput, error) {
	if limit < 0 {
		return nil, fmt.Errorf("engine: installation %s: own messages of group %x: limit %d is negative", in.id, groupID, limit)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.projectHeld(ctx, groupID, "own messages"); err != nil {
		return nil, err
	}
	rows, err := in.db.OwnMessageOutputs(ctx, groupID, fromEpoch, limit)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: own messages of group %x from epoch %d: %w", in.id, groupID, fromEpoch, err)
	}
	out := make([]*SendOutput, len(rows))
	for i, r := range rows {
		out[i] = &SendOutput{GroupID: bytes.Clone(groupID), Epoch: r.Epoch, MessageID: r.MessageID, Message: r.Message,
			Recipients: installationIDs(r.Recipients)}
	}
	return out, nil
}

// projectHeld catches the read model up and reports a group the
// installation never held as ErrUnknownGroup (what names the asking
// operation). The caller holds in.mu.
func (in *Installation) projectHeld(ctx context.Context, groupID []byte, what string) error {
	if err := in.project(ctx); err != nil {
		return err
	}
	pos, err := in.position(ctx, events.AggGroup, groupKey(groupID))
	if err != nil {
		return err
	}
	if pos == 0 {
		return fmt.Errorf("engine: installation %s: %s of group %x: %w", in.id, what, groupID, ErrUnknownGroup)
	}
	return nil
}

// installationIDs converts identities (nil for none, as the live outputs
// have it).
func installationIDs(ids [][]byte) []events.InstallationID {
	var out []events.InstallationID
	for _, id := range ids {
		out = append(out, events.InstallationID(id))
	}
	return out
}
