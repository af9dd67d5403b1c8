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
// version 5 on, group.external_joined version 3 on) and projected into a
// read model of schema 9 on, retired epochs included (an output holds no
// secret). Commits recorded before, and the commits of an ended
// membership, are not handed back. A group the installation never held
// is ErrUnknownGroup; one it was removed from still hands back the own
// commits of that membership.
func (in *Installation) OwnCommits(ctx context.Context, groupID []byte, fromEpoch uint64) ([]*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.project(ctx); err != nil {
		return nil, err
	}
	pos, err := in.position(ctx, events.AggGroup, groupKey(groupID))
	if err != nil {
		return nil, err
	}
	if pos == 0 {
		return nil, fmt.Errorf("engine: installation %s: own commits of group %x: %w", in.id, groupID, ErrUnknownGroup)
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

// installationIDs converts identities (nil for none, as the live outputs
// have it).
func installationIDs(ids [][]byte) []events.InstallationID {
	var out []events.InstallationID
	for _, id := range ids {
		out = append(out, events.InstallationID(id))
	}
	return out
}
