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

// DeleteMessagesBefore deletes the application messages whose time
// (sent_at, the event's time) is before t, in one transaction on the
// writer, and returns how many it deleted. The checkpoint does not move:
// the deletion is not an event, and the read model's digest reflects it
// like any other content. Everything else about the groups (epochs,
// members, the time of the last message) is kept, but whom the deleted
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
		if _, err := tx.ExecContext(ctx, `UPDATE groups SET sent_deleted = sent_deleted + (SELECT count(*) FROM messages m
			WHERE m.group_id = groups.group_id AND m.direction = 'sent' AND m.epoch = groups.epoch AND m.membership = groups.membership
				AND m.ordinal > groups.state_ordinal AND m.sent_at < ?1)
			WHERE EXISTS (SELECT 1 FROM messages m WHERE m.group_id = groups.group_id AND m.direction = 'sent' AND m.epoch = groups.epoch
				AND m.membership = groups.membership AND m.ordinal > groups.state_ordinal AND m.sent_at < ?1)`, t.UnixNano()); err != nil {
			return 0, &FileError{Path: db.path, Op: "delete messages", Err: err}
		}
	}
	res, err := tx.ExecContext(ctx, `DELETE FROM messages WHERE sent_at < ?`, t.UnixNano())
	if err != nil {
		return 0, &FileError{Path: db.path, Op: "delete messages", Err: err}
	}
	n, err := res.RowsAffected()
	if err != nil {
		return 0, &FileError{Path: db.path, Op: "delete messages", Err: err}
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
// than t (what DeleteMessagesBefore would delete).
func (db *DB) CountMessagesBefore(ctx context.Context, t time.Time) (int64, error) {
	var n int64
	if err := db.sql.QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE sent_at < ?`, t.UnixNano()).Scan(&n); err != nil {
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
