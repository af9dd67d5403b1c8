package projections

// Queries about delivery queues.

import (
	"context"
	"database/sql"
	"time"

	"github.com/epochlog/epochlog/events"
)

// Delivery is a queued message for a recipient on a channel.
type Delivery struct {
	Recipient      events.InstallationID
	Channel        string
	Seq            uint64
	Payload        []byte
	ExpiresAt      time.Time // zero: never
	IdempotencyKey string
	EnqueuedAt     time.Time
}

// PendingDeliveries returns up to limit unacknowledged, unexpired messages
// of (recipient, channel) with a sequence above afterSeq, in sequence order.
// Messages whose expiry has passed are not returned even before their
// expiry event is applied.
func (db *DB) PendingDeliveries(ctx context.Context, recipient events.InstallationID, channel string, afterSeq uint64, limit int) ([]Delivery, error) {
	if limit <= 0 || limit > 10000 {
		limit = 100
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT seq, payload, expires_at, coalesce(idempotency_key, ''), enqueued_at FROM deliveries
		WHERE recipient = ? AND channel = ? AND seq > ? AND state = 'pending' AND (expires_at IS NULL OR expires_at > ?)
		ORDER BY seq LIMIT ?`, string(recipient), channel, afterSeq, time.Now().UnixNano(), limit)
	if err != nil {
		return nil, db.wrapErr("pending deliveries", err)
	}
	defer rows.Close()
	var out []Delivery
	for rows.Next() {
		d := Delivery{Recipient: recipient, Channel: channel}
		var exp, at sql.NullInt64
		if err := rows.Scan(&d.Seq, &d.Payload, &exp, &d.IdempotencyKey, &at); err != nil {
			return nil, db.wrapErr("pending deliveries", err)
		}
		d.ExpiresAt, d.EnqueuedAt = fromNanos(exp), fromNanos(at)
		out = append(out, d)
	}
	return out, db.wrapErr("pending deliveries", rows.Err())
}
