package projections

import (
	"context"
	"fmt"
	"time"
)

// Retention (docs/forward-secrecy.md, Retention, shredding and
// compaction): message history older than the installation's policy is
// deleted from the read model before its periods' data keys are
// destroyed, so that the snapshot made in between, which replaces the
// destroyed history, no longer holds it. secure_delete is on, so the
// deleted rows' bytes are overwritten in the database file.

// reloadMember is the condition on a groups row g that this
// installation is still one of its members.
const reloadMember = `EXISTS (SELECT 1 FROM members mb WHERE mb.group_id = g.group_id AND mb.removed_epoch IS NULL
		AND mb.identity = (SELECT CAST(installation_id AS BLOB) FROM installation))`

// markedSinceState is the condition (schema 11) on a message row m that
// a reload of its group still needs it: of the group's current
// membership, this installation still a member, recorded since the
// group's state (state_ordinal), and in its current epoch an own message
// (mls.Group.MarkSent) or a received one with its generation, or in a
// past epoch it holds a received one with its generation
// (mls.Group.MarkReceived). Deleted, a reload would not mark it: a
// replay of a received one would be accepted again.
const markedSinceState = `EXISTS (SELECT 1 FROM groups g WHERE g.group_id = m.group_id AND m.membership = g.membership AND m.ordinal > g.state_ordinal
	AND ` + reloadMember + `
	AND (m.epoch = g.epoch AND (m.direction = 'sent' OR m.generation IS NOT NULL)
		OR m.generation IS NOT NULL AND m.epoch < g.epoch
			AND m.epoch IN (SELECT e.epoch FROM epochs e WHERE e.group_id = g.group_id AND e.retired = 0)))`

// markedSinceRecordedState is markedSinceState from schema 12, where
// the received messages are judged by the states recorded
// (epochs.recorded_ordinal, group.state_recorded), not by the group's
// state_ordinal: a received message of the group's current epoch, or of
// a past one it holds, with its generation, is needed until a state
// recorded in its epoch or a later one (which carries the epoch's
// ratchets on, past commits too) has an ordinal at or above its own.
// The group's state_ordinal, which a commit resets to 0 and a proposal
// moves, is no measure that holds across the epoch's end: a message
// deleted behind it while its epoch was current was needed again once a
// commit ended the epoch, so retention's snapshot check, replaying the
// commit before the deletion, kept rows the live read model had deleted
// and failed every time. Own messages of the current epoch are judged
// by state_ordinal as before (SentSinceState counts from it; a past
// epoch's are never needed).
const markedSinceRecordedState = `EXISTS (SELECT 1 FROM groups g WHERE g.group_id = m.group_id AND m.membership = g.membership
	AND ` + reloadMember + `
	AND (m.epoch = g.epoch AND m.direction = 'sent' AND m.ordinal > g.state_ordinal
		OR m.generation IS NOT NULL AND m.epoch <= g.epoch
			AND m.epoch IN (SELECT e.epoch FROM epochs e WHERE e.group_id = g.group_id AND e.retired = 0)
			AND m.ordinal > (SELECT coalesce(max(e.recorded_ordinal), 0) FROM epochs e WHERE e.group_id = g.group_id AND e.epoch >= m.epoch)))`

// sentSinceState is markedSinceState before schema 11 (from 3), which
// keeps no generation and no count of deleted own messages
// (groups.sent_deleted): an own message of the group's current epoch
// recorded since its state. Deleted, a reloaded sender would seal under
// its generation again (SentSinceState counts the rows).
const sentSinceState = `EXISTS (SELECT 1 FROM groups g WHERE g.group_id = m.group_id AND m.membership = g.membership AND m.ordinal > g.state_ordinal
	AND ` + reloadMember + ` AND m.epoch = g.epoch AND m.direction = 'sent')`

// sentInEpoch is the same before schema 3, which has no state ordinal:
// a reloaded sender counts the own messages of the current epoch
// (MessagesSentInEpoch), and no state recorded since changes that.
const sentInEpoch = `EXISTS (SELECT 1 FROM groups g WHERE g.group_id = m.group_id AND m.epoch = g.epoch AND m.direction = 'sent')`

// neededByReload is the condition on a message row m that a reload of
// its group still needs it, at the read model's schema.
func (db *DB) neededByReload() string {
	switch {
	case db.schema >= 12:
		return markedSinceRecordedState
	case db.schema >= 11:
		return markedSinceState
	case db.schema >= 3:
		return sentSinceState
	}
	return sentInEpoch
}

// deletableBefore is the condition on a message row m that
// DeleteMessagesBefore deletes it (?1: the time).
func (db *DB) deletableBefore() string {
	return `m.sent_at < ?1 AND NOT ` + db.neededByReload()
}

// GroupsToRecordBefore lists the groups holding messages older than t
// that a reload of the group still needs (neededByReload; before
// schema 11 own messages of the current epoch only; before schema 3,
// which keeps no recorded state, none), which DeleteMessagesBefore
// therefore keeps: those recorded since the group's state, in an epoch
// it holds, while this installation is a member (from schema 12 a
// received one since the latest state recorded in its epoch or a later
// one: markedSinceRecordedState). Once the group's state is recorded as it stands
// (events.StateRecorded, which the engine's retention records first),
// they are behind it and deleted.
func (db *DB) GroupsToRecordBefore(ctx context.Context, t time.Time) ([][]byte, error) {
	if db.schema < 3 {
		return nil, nil // a recorded state is not kept (applyStateRecorded)
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT DISTINCT m.group_id FROM messages m WHERE m.sent_at < ?1 AND `+db.neededByReload()+` ORDER BY m.group_id`, t.UnixNano())
	if err != nil {
		return nil, &FileError{Path: db.path, Op: "groups to record", Err: err}
	}
	defer rows.Close()
	var out [][]byte
	for rows.Next() {
		var id []byte
		if err := rows.Scan(&id); err != nil {
			return nil, &FileError{Path: db.path, Op: "groups to record", Err: err}
		}
		out = append(out, id)
	}
	if err := rows.Err(); err != nil {
		return nil, &FileError{Path: db.path, Op: "groups to record", Err: err}
	}
	return out, nil
}

// DeleteMessagesBefore deletes the application messages whose time
// (sent_at, the event's time) is before t, in one transaction on the
// writer, and returns how many it deleted. From schema 11 it keeps those
// a reload of their group still needs (GroupsToRecordBefore lists their
// groups): deleted, a received message's generation would no longer be
// refused as a replay after a reload. The checkpoint does not move:
// the deletion is not an event, and the read model's digest reflects it
// like any other content. Everything else about the groups (epochs,
// members, the time of the last message, from schema 12 the highest
// ordinal handed out, so that none is handed out again) is kept, but whom the deleted
// own messages were for (message_recipients) where none of an epoch's
// own messages is left.
func (db *DB) DeleteMessagesBefore(ctx context.Context, t time.Time) (int64, error) {
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, &FileError{Path: db.path, Op: "delete messages", Err: err}
	}
	defer func() { _ = tx.Rollback() }() // after a commit, a no-op
	if db.schema >= 11 {
		// A reloaded sender moves its ratchet past the own messages sent
		// since the group's state (SentSinceState): those deleted here
		// are counted, or it would seal under their generations again.
		// (Those of a group it is a member of are kept, deletableBefore.)
		if _, err := tx.ExecContext(ctx, `UPDATE groups SET sent_deleted = sent_deleted + (SELECT count(*) FROM messages m
			WHERE m.group_id = groups.group_id AND m.direction = 'sent' AND m.epoch = groups.epoch AND m.membership = groups.membership
				AND m.ordinal > groups.state_ordinal AND `+db.deletableBefore()+`)
			WHERE EXISTS (SELECT 1 FROM messages m WHERE m.group_id = groups.group_id AND m.direction = 'sent' AND m.epoch = groups.epoch
				AND m.membership = groups.membership AND m.ordinal > groups.state_ordinal AND `+db.deletableBefore()+`)`, t.UnixNano()); err != nil {
			return 0, &FileError{Path: db.path, Op: "delete messages", Err: err}
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM messages AS m WHERE `+db.deletableBefore(), t.UnixNano())
	if err != nil {
		return 0, &FileError{Path: db.path, Op: "delete messages", Err: err}
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, &FileError{Path: db.path, Op: "delete messages", Err: err}
	}
	if db.schema >= 3 && db.schema < 12 && n > 0 {
		// Before schema 12 a group's next message takes the ordinal after
		// its last row left: one the state's ordinal must stay below, or
		// a message recorded after the state would count as before it (a
		// reloaded sender would reuse its generation). The rows left keep
		// their side of it. From 12 the next ordinal follows the highest
		// handed out (groups.last_ordinal, not lowered here), which the
		// state's ordinal never exceeds.
		if _, err := tx.ExecContext(ctx, `UPDATE groups SET state_ordinal = (SELECT coalesce(max(m.ordinal), 0) FROM messages m WHERE m.group_id = groups.group_id)
			WHERE state_ordinal > (SELECT coalesce(max(m.ordinal), 0) FROM messages m WHERE m.group_id = groups.group_id)`); err != nil {
			return 0, &FileError{Path: db.path, Op: "delete messages", Err: err}
		}
	}
	if db.schema >= 10 {
		// Whom an epoch's own messages were for goes with the last of
		// them (a later own message of the epoch records it again).
		if _, err := tx.ExecContext(ctx, `DELETE FROM message_recipients WHERE NOT EXISTS (SELECT 1 FROM messages m
			WHERE m.group_id = message_recipients.group_id AND m.epoch = message_recipients.epoch AND m.message IS NOT NULL)`); err != nil {
			return 0, &FileError{Path: db.path, Op: "delete messages", Err: err}
		}
	}
	if err := tx.Commit(); err != nil {
		return 0, &FileError{Path: db.path, Op: "delete messages", Err: fmt.Errorf("commit: %w", err)}
	}
	return n, nil
}

// CountMessagesBefore returns how many application messages are older
// than t that DeleteMessagesBefore would delete.
func (db *DB) CountMessagesBefore(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	if err := db.sql.QueryRowContext(ctx, `SELECT count(*) FROM messages AS m WHERE `+db.deletableBefore(), t.UnixNano()).Scan(&n); err != nil {
		return 0, &FileError{Path: db.path, Op: "count messages", Err: err}
	}
	return n, nil
}

// DeleteDeliveriesBefore deletes the deliveries enqueued before t that
// are no longer pending (acknowledged or expired: their payloads are
// already dropped; the rows keep their idempotency keys and states), in
// one transaction, and returns how many. Pending deliveries are kept
// whatever their age, and every queue's counters are kept. As with
// DeleteMessagesBefore, the checkpoint does not move.
func (db *DB) DeleteDeliveriesBefore(ctx context.Context, t time.Time) (int64, error) {
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return 0, &FileError{Path: db.path, Op: "delete deliveries", Err: err}
	}
	defer func() { _ = tx.Rollback() }() // after a commit, a no-op
	res, err := tx.ExecContext(ctx, `DELETE FROM deliveries WHERE enqueued_at < ? AND state <> 'pending'`, t.UnixNano())
	if err != nil {
		return 0, &FileError{Path: db.path, Op: "delete deliveries", Err: err}
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, &FileError{Path: db.path, Op: "delete deliveries", Err: err}
	}
	if err := tx.Commit(); err != nil {
		return 0, &FileError{Path: db.path, Op: "delete deliveries", Err: fmt.Errorf("commit: %w", err)}
	}
	return n, nil
}

// CountDeliveriesBefore returns how many deliveries DeleteDeliveriesBefore
// would delete.
func (db *DB) CountDeliveriesBefore(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	if err := db.sql.QueryRowContext(ctx, `SELECT count(*) FROM deliveries WHERE enqueued_at < ? AND state <> 'pending'`, t.UnixNano()).Scan(&n); err != nil {
		return 0, &FileError{Path: db.path, Op: "count deliveries", Err: err}
	}
	return n, nil
}

// DeliveryChannels returns the channels of the installation's delivery
// queues (the delivery aggregates' ids).
func (db *DB) DeliveryChannels(ctx context.Context) ([]string, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT DISTINCT channel FROM delivery_queues ORDER BY channel`)
	if err != nil {
		return nil, &FileError{Path: db.path, Op: "delivery channels", Err: err}
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var c string
		if err := rows.Scan(&c); err != nil {
			return nil, &FileError{Path: db.path, Op: "delivery channels", Err: err}
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, &FileError{Path: db.path, Op: "delivery channels", Err: err}
	}
	return out, nil
}
