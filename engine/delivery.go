package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// Delivery is one queued message for a recipient installation.
type Delivery struct {
	Recipient      events.InstallationID
	Channel        string
	Seq            uint64
	Payload        []byte
	ExpiresAt      time.Time // zero: never
	IdempotencyKey string
}

// Enqueue is one message to queue (see Deliveries.Enqueue).
type Enqueue struct {
	Recipient events.InstallationID
	Channel   string
	Payload   []byte
	// ExpiresAt is when the message expires unacknowledged; zero: never.
	ExpiresAt time.Time
	// IdempotencyKey makes a retried enqueue a no-op (it returns the
	// sequence of the first). Empty: no deduplication.
	IdempotencyKey string
}

// Deliveries is the service side of the delivery queues: per (recipient
// installation, channel) a queue with contiguous sequence numbers, kept as
// delivery events on the recipient's log (so the recipient's read model
// projects its queue too). A queue's state is loaded from the log on first
// use and kept. Several processes may serve the same queues: every change
// is an append with optimistic concurrency, retried after reloading on
// eventlog.ErrConflict, and Fetch (and an acknowledgement beyond the last sequence
// this process knows) first reads what other processes appended since. It
// is safe for concurrent use.
type Deliveries struct {
	log *eventlog.Log
	now func() time.Time
	mu  sync.Mutex
	q   map[queueKey]*queue
}

type queueKey struct {
	recipient events.InstallationID
	channel   string
}

type queue struct {
	pos     uint64 // aggregate position of the last event
	seq     uint64 // its stream sequence
	last    uint64 // last enqueued sequence
	acked   uint64
	pending map[uint64]Delivery // enqueued, neither acknowledged nor expired
	idem    map[string]uint64
}

// NewDeliveries returns the delivery service on l. now is the clock for
// expiry (nil: time.Now).
func NewDeliveries(l *eventlog.Log, now func() time.Time) *Deliveries {
	if now == nil {
		now = time.Now
	}
	return &Deliveries{log: l, now: now, q: map[queueKey]*queue{}}
}

func deliveryAgg(k queueKey) events.Aggregate {
	return events.Aggregate{Installation: k.recipient, Type: events.AggDelivery, ID: k.channel}
}

// appendQueue appends evs at the queue's position and records where the
// last one landed. On any failure the cached queue is dropped, so the next
// attempt reloads it; a conflict (another writer moved the queue) is
// reported apart, for a retry.
func (d *Deliveries) appendQueue(ctx context.Context, k queueKey, q *queue, evs ...events.Event) (conflict bool, err error) {
	res, err := d.log.Append(ctx, q.pos, evs...)
	if err != nil {
		delete(d.q, k)
	}
	if errors.Is(err, eventlog.ErrConflict) {
		return true, nil
	}
	if err == nil {
		q.seq = res[len(res)-1].Seq
	}
	return false, err
}

// load returns the queue as this process last saw it, reading its events
// from the recipient's log the first time (or after a failure dropped it).
func (d *Deliveries) load(ctx context.Context, k queueKey) (*queue, error) {
	if q, ok := d.q[k]; ok {
		return q, nil
	}
	if err := deliveryAgg(k).Validate(); err != nil {
		return nil, err
	}
	q := &queue{pending: map[uint64]Delivery{}, idem: map[string]uint64{}}
	if err := d.readQueue(ctx, k, q); err != nil {
		return nil, err
	}
	d.q[k] = q
	return q, nil
}

// refresh returns the queue with every event appended to it so far,
// including other processes' since this one last looked.
func (d *Deliveries) refresh(ctx context.Context, k queueKey) (*queue, error) {
	q, ok := d.q[k]
	if !ok {
		return d.load(ctx, k)
	}
	if err := d.readQueue(ctx, k, q); err != nil {
		delete(d.q, k)
		return nil, err
	}
	return q, nil
}

// readQueue applies the queue's events after the last one q holds, in
// stream order. The queue's own subject holds only its events: they are
// read with message gets (no consumer per queue), checking positions, since
// a queue has one writer history like any aggregate.
func (d *Deliveries) readQueue(ctx context.Context, k queueKey, q *queue) error {
	subject, err := d.log.Subject(deliveryAgg(k))
	if err != nil {
		return err
	}
	from := q.seq + 1
	for {
		n, next, err := d.log.ReadN(ctx, k.recipient, subject, from, 1024, func(r eventlog.Record) error { return q.apply(k, r) })
		if err != nil {
			return fmt.Errorf("engine: load delivery queue %s/%s: %w", k.recipient, k.channel, err)
		}
		if n < 1024 {
			return nil
		}
		from = next
	}
}

// apply adds one of the queue's events, read from its subject, to q.
func (q *queue) apply(k queueKey, r eventlog.Record) error {
	a := r.Event.Aggregate
	if a.Type != events.AggDelivery || a.ID != k.channel {
		return fmt.Errorf("%w: %s event on the queue's subject", events.ErrMoved, a.Type)
	}
	if r.Event.Position != q.pos+1 {
		return fmt.Errorf("%w: position %d after position %d", eventlog.ErrOutOfOrder, r.Event.Position, q.pos)
	}
	q.pos, q.seq = r.Event.Position, r.Seq
	switch b := r.Event.Body.(type) {
	case events.DeliveryEnqueued:
		q.last = b.Sequence
		q.pending[b.Sequence] = Delivery{Recipient: k.recipient, Channel: k.channel, Seq: b.Sequence, Payload: b.Payload, ExpiresAt: b.ExpiresAt, IdempotencyKey: b.IdempotencyKey}
		if b.IdempotencyKey != "" {
			q.idem[b.IdempotencyKey] = b.Sequence
		}
	case events.DeliveryAcknowledged:
		for s := q.acked + 1; s <= b.UpTo; s++ {
			delete(q.pending, s)
		}
		q.acked = max(q.acked, b.UpTo)
	case events.DeliveryExpired:
		delete(q.pending, b.Sequence)
	}
	return nil
}

// Enqueue queues a message for its recipient and returns its sequence.
// dup is true when the idempotency key was seen before on the queue: then
// nothing is appended and the first enqueue's sequence is returned.
func (d *Deliveries) Enqueue(ctx context.Context, e Enqueue) (seq uint64, dup bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := queueKey{e.Recipient, e.Channel}
	for attempt := 0; attempt < DefaultMaxAttempts; attempt++ {
		q, err := d.load(ctx, k)
		if err != nil {
			return 0, false, err
		}
		if s, ok := q.idem[e.IdempotencyKey]; ok && e.IdempotencyKey != "" {
			return s, true, nil
		}
		ev := d.enqueueEvent(k, q, e)
		conflict, err := d.appendQueue(ctx, k, q, ev)
		if conflict {
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("engine: enqueue on %s/%s: %w", k.recipient, k.channel, err)
		}
		d.applyEnqueued(k, q, ev)
		return ev.Body.(events.DeliveryEnqueued).Sequence, false, nil
	}
	return 0, false, fmt.Errorf("engine: enqueue on %s/%s: %w", k.recipient, k.channel, ErrTooManyConflicts)
}

func (d *Deliveries) enqueueEvent(k queueKey, q *queue, e Enqueue) events.Event {
	var exp time.Time
	if !e.ExpiresAt.IsZero() {
		exp = e.ExpiresAt.UTC()
	}
	return events.Event{Aggregate: deliveryAgg(k), Position: q.pos + 1, Time: d.now().UTC(), Body: events.DeliveryEnqueued{
		Recipient: k.recipient, Channel: k.channel, Sequence: q.last + 1, Payload: bytes.Clone(e.Payload),
		ExpiresAt: exp, IdempotencyKey: e.IdempotencyKey,
	}}
}

func (d *Deliveries) applyEnqueued(k queueKey, q *queue, ev events.Event) {
	b := ev.Body.(events.DeliveryEnqueued)
	q.pos = ev.Position
	q.last = b.Sequence
	q.pending[b.Sequence] = Delivery{Recipient: k.recipient, Channel: k.channel, Seq: b.Sequence, Payload: b.Payload, ExpiresAt: b.ExpiresAt, IdempotencyKey: b.IdempotencyKey}
	if b.IdempotencyKey != "" {
		q.idem[b.IdempotencyKey] = b.Sequence
	}
}

// FanOut queues payload for every recipient on channel, pipelined (one
// append per recipient queue, in flight together). Each recipient's
// enqueue is idempotent under idempotencyKey. It returns the sequences by
// recipient. A group's commit goes to CommitOutput.Recipients, its Welcome
// to CommitOutput.Added, an application message to SendOutput.Recipients.
func (d *Deliveries) FanOut(ctx context.Context, recipients []events.InstallationID, channel string, payload []byte, expiresAt time.Time, idempotencyKey string) (map[events.InstallationID]uint64, error) {
	d.mu.Lock()
	out := make(map[events.InstallationID]uint64, len(recipients))
	var ts []eventlog.Transition
	var keys []queueKey
	var qs []*queue
	for _, r := range recipients {
		k := queueKey{r, channel}
		q, err := d.load(ctx, k)
		if err != nil {
			d.mu.Unlock()
			return nil, err
		}
		if s, ok := q.idem[idempotencyKey]; ok && idempotencyKey != "" {
			out[r] = s
			continue
		}
		ev := d.enqueueEvent(k, q, Enqueue{Recipient: r, Channel: channel, Payload: payload, ExpiresAt: expiresAt, IdempotencyKey: idempotencyKey})
		ts = append(ts, eventlog.Transition{Expected: q.pos, Events: []events.Event{ev}})
		keys = append(keys, k)
		qs = append(qs, q)
	}
	res, err := d.log.AppendBulk(ctx, ts)
	var retry []events.InstallationID
	for i := range ts {
		if i < len(res) && res[i] != nil {
			d.applyEnqueued(keys[i], qs[i], ts[i].Events[0])
			qs[i].seq = res[i][0].Seq
			out[keys[i].recipient] = ts[i].Events[0].Body.(events.DeliveryEnqueued).Sequence
			continue
		}
		delete(d.q, keys[i])
		retry = append(retry, keys[i].recipient)
	}
	d.mu.Unlock()
	if err != nil && !errors.Is(err, eventlog.ErrConflict) {
		return out, fmt.Errorf("engine: fan-out on %s: %w", channel, err)
	}
	// Queues another writer moved meanwhile: reload and enqueue one by one.
	for _, r := range retry {
		s, _, err := d.Enqueue(ctx, Enqueue{Recipient: r, Channel: channel, Payload: payload, ExpiresAt: expiresAt, IdempotencyKey: idempotencyKey})
		if err != nil {
			return out, err
		}
		out[r] = s
	}
	return out, nil
}

// Fetch returns up to limit (0: all) messages of the queue after its last
// acknowledged sequence, in sequence order, leaving out expired ones. It
// reads the queue's new events first, so it shows what other processes
// enqueued and acknowledged too.
func (d *Deliveries) Fetch(ctx context.Context, recipient events.InstallationID, channel string, limit int) ([]Delivery, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	q, err := d.refresh(ctx, queueKey{recipient, channel})
	if err != nil {
		return nil, err
	}
	now := d.now()
	out := make([]Delivery, 0, len(q.pending))
	for _, m := range q.pending {
		if m.ExpiresAt.IsZero() || now.Before(m.ExpiresAt) {
			out = append(out, m)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Seq < out[j].Seq })
	if limit > 0 && len(out) > limit {
		out = out[:limit]
	}
	for i := range out {
		out[i].Payload = bytes.Clone(out[i].Payload)
	}
	return out, nil
}

// Acknowledge records that the recipient processed every message of the
// channel up to and including upTo. An older acknowledgement is a no-op;
// one beyond the last enqueued sequence is ErrInvalidAck.
func (d *Deliveries) Acknowledge(ctx context.Context, recipient events.InstallationID, channel string, upTo uint64) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := queueKey{recipient, channel}
	for attempt := 0; attempt < DefaultMaxAttempts; attempt++ {
		q, err := d.load(ctx, k)
		if err != nil {
			return err
		}
		if upTo > q.last {
			// Perhaps enqueued by another process: look before refusing.
			if q, err = d.refresh(ctx, k); err != nil {
				return err
			}
		}
		if upTo > q.last {
			return fmt.Errorf("engine: acknowledge %s/%s up to %d, last enqueued %d: %w", recipient, channel, upTo, q.last, ErrInvalidAck)
		}
		if upTo <= q.acked {
			return nil
		}
		ev := events.Event{Aggregate: deliveryAgg(k), Time: d.now().UTC(), Body: events.DeliveryAcknowledged{Recipient: recipient, Channel: channel, UpTo: upTo}}
		conflict, err := d.appendQueue(ctx, k, q, ev)
		if conflict {
			continue
		}
		if err != nil {
			return fmt.Errorf("engine: acknowledge %s/%s: %w", recipient, channel, err)
		}
		q.pos++
		for s := q.acked + 1; s <= upTo; s++ {
			delete(q.pending, s)
		}
		q.acked = upTo
		return nil
	}
	return fmt.Errorf("engine: acknowledge %s/%s: %w", recipient, channel, ErrTooManyConflicts)
}

// Expire records delivery.expired for every pending message of the queue
// whose expiry has passed, in one atomic append, and returns their
// sequences.
func (d *Deliveries) Expire(ctx context.Context, recipient events.InstallationID, channel string) ([]uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	k := queueKey{recipient, channel}
	for attempt := 0; attempt < DefaultMaxAttempts; attempt++ {
		q, err := d.load(ctx, k)
		if err != nil {
			return nil, err
		}
		now := d.now()
		var seqs []uint64
		for s, m := range q.pending {
			if !m.ExpiresAt.IsZero() && !now.Before(m.ExpiresAt) {
				seqs = append(seqs, s)
			}
		}
		if len(seqs) == 0 {
			return nil, nil
		}
		sort.Slice(seqs, func(i, j int) bool { return seqs[i] < seqs[j] })
		evs := make([]events.Event, len(seqs))
		for i, s := range seqs {
			evs[i] = events.Event{Aggregate: deliveryAgg(k), Time: now.UTC(), Body: events.DeliveryExpired{
				Recipient: recipient, Channel: channel, Sequence: s, ExpiresAt: q.pending[s].ExpiresAt}}
		}
		conflict, err := d.appendQueue(ctx, k, q, evs...)
		if conflict {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("engine: expire on %s/%s: %w", recipient, channel, err)
		}
		q.pos += uint64(len(evs))
		for _, s := range seqs {
			delete(q.pending, s)
		}
		return seqs, nil
	}
	return nil, fmt.Errorf("engine: expire on %s/%s: %w", recipient, channel, ErrTooManyConflicts)
}
