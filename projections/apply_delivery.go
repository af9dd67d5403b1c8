package projections

// The delivery queue aggregates: one per (recipient, channel). Their rules
// are events.QueueState's, shared with the delivery service; the queue's
// counters live in delivery_queues, each message in deliveries.

import (
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/events"
)

type queueID struct{ recipient, channel string }

// queueState is a delivery queue's row as the batch sees it: its counters
// (last_seq, acked_seq), which events.QueueState steps. Dirty rows are
// written back once, in flush.
type queueState struct {
	events.QueueState
	exists, dirty bool
}

// queue loads (once per batch) the state of a delivery queue.
func (a *applier) queue(recipient events.InstallationID, channel string) (*queueState, error) {
	id := queueID{string(recipient), channel}
	if q, ok := a.queues[id]; ok {
		return q, nil
	}
	q := &queueState{exists: true}
	err := a.query1(`SELECT last_seq, acked_seq FROM delivery_queues WHERE recipient = ? AND channel = ?`, []any{id.recipient, id.channel}, &q.LastSeq, &q.AckedUpTo)
	if errors.Is(err, errNoRow) {
		q.exists = false
	} else if err != nil {
		return nil, err
	}
	a.queues[id] = q
	return q, nil
}

// refused is the cause for a delivery event the queue's rules refuse.
func refused(recipient events.InstallationID, channel string, err error) error {
	return cannot("delivery queue %s/%s: %w", recipient, channel, err)
}

func applyDeliveryEnqueued(a *applier, ev events.Event) error {
	b, err := body[events.DeliveryEnqueued](ev)
	if err != nil {
		return err
	}
	q, err := a.queue(b.Recipient, b.Channel)
	if err != nil {
		return err
	}
	next, err := q.Next(b)
	if err != nil {
		return refused(b.Recipient, b.Channel, err)
	}
	if !q.exists {
		// The row must exist before its deliveries reference it.
		if _, err := a.exec(`INSERT INTO delivery_queues(recipient, channel, last_seq, acked_seq) VALUES (?, ?, 0, 0)`, string(b.Recipient), b.Channel); err != nil {
			return err
		}
		q.exists = true
	}
	var idem any
	if b.IdempotencyKey != "" {
		idem = b.IdempotencyKey
	}
	var exp any
	if !b.ExpiresAt.IsZero() {
		exp = b.ExpiresAt.UnixNano()
	}
	payload := b.Payload
	if payload == nil {
		payload = []byte{}
	}
	if _, err := a.exec(`INSERT INTO deliveries(recipient, channel, seq, payload, expires_at, idempotency_key, enqueued_at, state)
		VALUES (?, ?, ?, ?, ?, ?, ?, 'pending')`, string(b.Recipient), b.Channel, b.Sequence, payload, exp, idem, nanos(ev.Time)); err != nil {
		return err
	}
	q.QueueState, q.dirty = next, true
	return nil
}

func applyDeliveryAcknowledged(a *applier, ev events.Event) error {
	b, err := body[events.DeliveryAcknowledged](ev)
	if err != nil {
		return err
	}
	q, err := a.queue(b.Recipient, b.Channel)
	if err != nil {
		return err
	}
	next, err := q.Next(b)
	if err != nil {
		return refused(b.Recipient, b.Channel, err)
	}
	if next == q.QueueState {
		return nil // acks are cumulative; an older one changes nothing
	}
	// Payloads are dropped once acknowledged; the row keeps the
	// idempotency key and the state.
	if _, err := a.exec(`UPDATE deliveries SET state = 'acked', payload = NULL
		WHERE recipient = ? AND channel = ? AND seq > ? AND seq <= ? AND state = 'pending'`, string(b.Recipient), b.Channel, q.AckedUpTo, next.AckedUpTo); err != nil {
		return err
	}
	q.QueueState, q.dirty = next, true
	return nil
}

func applyDeliveryExpired(a *applier, ev events.Event) error {
	b, err := body[events.DeliveryExpired](ev)
	if err != nil {
		return err
	}
	q, err := a.queue(b.Recipient, b.Channel)
	if err != nil {
		return err
	}
	// The counters do not move; the message's own row does.
	if _, err := q.Next(b); err != nil {
		return refused(b.Recipient, b.Channel, err)
	}
	var state string
	err = a.query1(`SELECT state FROM deliveries WHERE recipient = ? AND channel = ? AND seq = ?`, []any{string(b.Recipient), b.Channel, b.Sequence}, &state)
	if errors.Is(err, errNoRow) {
		return refused(b.Recipient, b.Channel, fmt.Errorf("%w: expire sequence %d: no such message", events.ErrQueueRule, b.Sequence))
	}
	if err != nil {
		return err
	}
	if state != "pending" {
		// Expired before: a message expires once (QueueState leaves this
		// rule to the store that keeps each message's state).
		return refused(b.Recipient, b.Channel, fmt.Errorf("%w: expire sequence %d: already %s", events.ErrQueueRule, b.Sequence, state))
	}
	_, err = a.exec(`UPDATE deliveries SET state = 'expired', payload = NULL WHERE recipient = ? AND channel = ? AND seq = ?`,
		string(b.Recipient), b.Channel, b.Sequence)
	return err
}
