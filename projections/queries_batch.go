package projections

// Queries that answer for many items at once, for callers that decide
// several operations together (the engine's Host): one statement instead
// of one per item.

import (
	"context"
	"strings"

	"github.com/epochlog/epochlog/events"
)

// maxBatchArgs bounds the ids one statement asks about (SQLite's limit on
// host parameters is 32766; this keeps statements small).
const maxBatchArgs = 500

// KnownMessages returns which of ids the group holds as messages (sent or
// received), as a set of string(id): HasMessage for many ids at once. It
// asks on the writer's connection (between two Apply calls), whose page
// cache holds what the projector last wrote: a reader would decrypt again
// the index pages the last transaction rewrote, which are the ones a new
// message id is looked up in.
func (db *DB) KnownMessages(ctx context.Context, groupID []byte, ids [][]byte) (map[string]bool, error) {
	if err := ctx.Err(); err != nil {
		return nil, db.wrapErr("known messages", err)
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	// Without cancellation, as Apply's statements (the driver watches a
	// cancellable context with a goroutine per statement).
	ctx = context.WithoutCancel(ctx)
	out := map[string]bool{}
	for start := 0; start < len(ids); start += maxBatchArgs {
		chunk := ids[start:min(start+maxBatchArgs, len(ids))]
		args := make([]any, 0, len(chunk)+1)
		args = append(args, groupID)
		for _, id := range chunk {
			args = append(args, id)
		}
		rows, err := db.w.QueryContext(ctx, `SELECT message_id FROM messages WHERE group_id = ? AND message_id IN (`+
			strings.TrimSuffix(strings.Repeat("?,", len(chunk)), ",")+`)`, args...)
		if err != nil {
			return nil, db.wrapErr("known messages", err)
		}
		for rows.Next() {
			var id []byte
			if err := rows.Scan(&id); err != nil {
				rows.Close()
				return nil, db.wrapErr("known messages", err)
			}
			out[string(id)] = true
		}
		err = rows.Err()
		rows.Close()
		if err != nil {
			return nil, db.wrapErr("known messages", err)
		}
	}
	return out, nil
}

// Projected is where the read model stands: its checkpoint and the
// position of every aggregate it holds events of, read together on the
// writer's connection between two Apply calls (which write both in one
// transaction). A
// caller that knows which events came after can tell, against the
// stream's own count of each aggregate's events, whether they are all of
// them.
func (db *DB) Projected(ctx context.Context) (checkpoint uint64, positions map[events.Aggregate]uint64, err error) {
	if err := ctx.Err(); err != nil {
		return 0, nil, db.wrapErr("projected", err)
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	ctx = context.WithoutCancel(ctx)
	if err := db.w.QueryRowContext(ctx, `SELECT seq FROM checkpoint WHERE id = 1`).Scan(&checkpoint); err != nil {
		return 0, nil, db.wrapErr("projected", err)
	}
	rows, err := db.w.QueryContext(ctx, `SELECT installation, agg_type, agg_id, position FROM aggregate_positions`)
	if err != nil {
		return 0, nil, db.wrapErr("projected", err)
	}
	defer rows.Close()
	positions = map[events.Aggregate]uint64{}
	for rows.Next() {
		var a events.Aggregate
		var inst, typ string
		var pos uint64
		if err := rows.Scan(&inst, &typ, &a.ID, &pos); err != nil {
			return 0, nil, db.wrapErr("projected", err)
		}
		a.Installation, a.Type = events.InstallationID(inst), events.AggregateType(typ)
		positions[a] = pos
	}
	return checkpoint, positions, db.wrapErr("projected", rows.Err())
}
