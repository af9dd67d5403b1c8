package engine

import (
	"bytes"
	"cmp"
	"container/list"
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/nats-io/nats.go/jetstream"

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

// DefaultMaxQueues is how many queues a Deliveries holds in memory when
// its MaxQueues is 0.
const DefaultMaxQueues = 4096

// DefaultOutcomeTimeout is how long a Deliveries tries to decide an append
// whose answer was lost when its OutcomeTimeout is 0: eventlog's default
// ProgressTimeout, which outlasts a stream-leader failover.
const DefaultOutcomeTimeout = eventlog.DefaultProgressTimeout

// Deliveries is the service side of the delivery queues: per (recipient
// installation, channel) a queue with contiguous sequence numbers, kept as
// delivery events on the recipient's log (so the recipient's read model
// projects its queue too). Every event it reads or appends goes through
// the queue's rules ([events.QueueState], shared with the read model): an
// event the read model would refuse is never appended, and one found on
// the log stops the queue's loading with an error naming its stream
// sequence. Several processes may serve the same queues: every change is
// an append with optimistic concurrency, retried after reloading on
// eventlog.ErrConflict, and Fetch (and an acknowledgement beyond the last
// sequence this process knows) first reads what other processes appended
// since. It is safe for concurrent use.
//
// Its calls carry on across a stream-leader failover. An append whose
// answer is lost (a timeout, a reconnect, a stream without a leader for
// the moment) is decided before the call returns: the same events are
// appended again (same message ids, which eventlog.Log.Append never
// stores twice) until the server answers, for at most OutcomeTimeout and
// while ctx lasts; then the call fails with ErrOutcomeUnknown and the
// queue is read again from the log at its next use. Reads go through
// eventlog.Log.ReadN, which asks again for up to the Log's
// ProgressTimeout.
//
// A queue's state (its pending messages and idempotency keys) is loaded
// from the log on first use and kept in memory, for at most MaxQueues
// queues between calls: beyond that the least recently used ones are
// dropped, those with nothing pending (every message acknowledged or
// expired) first, and loaded again from the log when next used.
type Deliveries struct {
	// MaxQueues caps the queues held in memory (0: DefaultMaxQueues).
	// Set it before the first call.
	MaxQueues int
	// OutcomeTimeout bounds how long an append whose answer was lost is
	// tried again before the call fails with ErrOutcomeUnknown (0:
	// DefaultOutcomeTimeout). Set it before the first call.
	OutcomeTimeout time.Duration

	log *eventlog.Log
	now func() time.Time
	mu  sync.Mutex
	q   map[queueKey]*queue
	// The held queues, most recently used first, by whether they have
	// messages pending: the idle ones are dropped first.
	idle, busy list.List
}

type queueKey struct {
	recipient events.InstallationID
	channel   string
}

// queue is one delivery queue as this process last read it from the log.
type queue struct {
	key   queueKey
	rules events.QueueState // the counters the queue's rules step
	pos   uint64            // aggregate position of the last event
	seq   uint64            // its stream sequence
	// pending are the messages enqueued, neither acknowledged nor expired;
	// idem the sequence of each idempotency key's enqueue.
	pending map[uint64]Delivery
	idem    map[string]uint64
	elem    *list.Element // in Deliveries.idle or .busy
	in      *list.List
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

// used marks q as the most recently used queue, filed by whether it has
// messages pending.
func (d *Deliveries) used(q *queue) {
	l := &d.idle
	if len(q.pending) > 0 {
		l = &d.busy
	}
	if q.elem != nil {
		q.in.Remove(q.elem)
	}
	q.elem, q.in = l.PushFront(q), l
}

// drop forgets q: the next use of its queue loads it again.
func (d *Deliveries) drop(q *queue) {
	if d.q[q.key] == q {
		delete(d.q, q.key)
	}
	if q.elem != nil {
		q.in.Remove(q.elem)
		q.elem, q.in = nil, nil
	}
}

// trim drops the least recently used queues beyond MaxQueues, idle ones
// first. Every call ends with it.
func (d *Deliveries) trim() {
	limit := d.MaxQueues
	if limit <= 0 {
		limit = DefaultMaxQueues
	}
	for len(d.q) > limit {
		e := d.idle.Back()
		if e == nil {
			e = d.busy.Back()
		}
		d.drop(e.Value.(*queue))
	}
}

// appendQueue checks evs against the queue's rules, appends them at the
// queue's position (decided: see decide) and records them in q. A refusal
// by the rules wraps events.ErrQueueRule and leaves q as it was. On any
// failure of the append q is dropped, so the next attempt reloads it; a
// conflict (another writer moved the queue) is reported apart, for a
// retry.
func (d *Deliveries) appendQueue(ctx context.Context, q *queue, evs ...events.Event) (conflict bool, err error) {
	s := q.rules
	for i, ev := range evs {
		if s, err = q.next(s, ev.Body, evs[:i]); err != nil {
			return false, err
		}
	}
	res, err := d.decide(ctx, q.pos, evs)
	if err != nil {
		d.drop(q)
		if errors.Is(err, eventlog.ErrConflict) {
			return true, nil
		}
		return false, err
	}
	d.recordAppended(q, evs, res)
	d.log.Logger().Debug("engine: delivery queue appended", append(aggAttrs(d.log, evs), "seq", res[len(res)-1].Seq)...)
	return false, nil
}

// decide appends evs at expected and returns once the outcome is known
// (decideAppend), trying for at most d's OutcomeTimeout.
func (d *Deliveries) decide(ctx context.Context, expected uint64, evs []events.Event) ([]eventlog.Appended, error) {
	return decideAppend(ctx, d.log, expected, evs, cmp.Or(d.OutcomeTimeout, DefaultOutcomeTimeout))
}

// appendBulkOnce is appendOnce for AppendBulk.
func appendBulkOnce(ctx context.Context, l *eventlog.Log, ts []eventlog.Transition) ([][]eventlog.Appended, error) {
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	return l.AppendBulk(actx, ts)
}

// JetStream API error codes of a stream without a leader for the moment,
// besides those with status 503 (nats-server errors.json).
const (
	codeClusterNotLeader jetstream.ErrorCode = 10009 // JSClusterNotLeaderErr
	codeStreamOffline    jetstream.ErrorCode = 10118 // JSStreamOfflineErr
)

// recordAppended records in q the events just appended to its queue (res
// says where they landed).
func (d *Deliveries) recordAppended(q *queue, evs []events.Event, res []eventlog.Appended) {
	for i, a := range res {
		ev := evs[i]
		ev.Position = a.Position
		if err := q.record(eventlog.Record{Seq: a.Seq, Subject: a.Subject, Event: ev}); err != nil {
			// Checked before the append, so this does not happen; should
			// it, the queue is read again from the log at its next use.
			d.drop(q)
			return
		}
	}
	d.used(q)
}

// load returns the queue as this process last saw it, reading its events
// from the recipient's log the first time (or after it was dropped).
func (d *Deliveries) load(ctx context.Context, k queueKey) (*queue, error) {
	if q, ok := d.q[k]; ok {
		d.used(q)
		return q, nil
	}
	if err := deliveryAgg(k).Validate(); err != nil {
		return nil, err
	}
	q := &queue{key: k, pending: map[uint64]Delivery{}, idem: map[string]uint64{}}
	if err := d.readQueue(ctx, q); err != nil {
		return nil, err
	}
	d.q[k] = q
	d.used(q)
	return q, nil
}

// refresh returns the queue with every event appended to it so far,
// including other processes' since this one last looked.
func (d *Deliveries) refresh(ctx context.Context, k queueKey) (*queue, error) {
	q, ok := d.q[k]
	if !ok {
		return d.load(ctx, k)
	}
	if err := d.readQueue(ctx, q); err != nil {
		d.drop(q)
		return nil, err
	}
	d.used(q)
	return q, nil
}

// readQueue records the queue's events after the last one q holds, in
// stream order. The queue's own subject holds only its events: they are
// read with message gets (no consumer per queue), checking positions, since
// a queue has one writer history like any aggregate.
func (d *Deliveries) readQueue(ctx context.Context, q *queue) error {
	k := q.key
	subject, err := d.log.Subject(deliveryAgg(k))
	if err != nil {
		return err
	}
	from := q.seq + 1
	for {
		n, next, err := d.log.ReadN(ctx, k.recipient, subject, from, 1024, q.record)
		if err != nil {
			return fmt.Errorf("engine: load delivery queue %s/%s: %w", k.recipient, k.channel, err)
		}
		if n < 1024 {
			return nil
		}
		from = next
	}
}

// next checks b as the queue's next event, after q's and those in ahead
// (checked before it for the same append, not yet recorded in q), by the
// rules the read model applies: events.QueueState's, and the two it
// leaves to the stores, which the read model keeps too: a message expires
// once, and an idempotency key is used once (the service never appends a
// repeated key: it returns the first enqueue's sequence instead). s is the
// counters before b; next returns them after it. A refusal wraps
// events.ErrQueueRule.
func (q *queue) next(s events.QueueState, b events.Body, ahead []events.Event) (events.QueueState, error) {
	after, err := s.Next(b)
	if err != nil {
		return s, err
	}
	switch b := deliveryBody(b).(type) {
	case events.DeliveryEnqueued:
		if b.IdempotencyKey == "" {
			break
		}
		if first, ok := q.idem[b.IdempotencyKey]; ok {
			return s, fmt.Errorf("%w: enqueue sequence %d: idempotency key used before, by sequence %d", events.ErrQueueRule, b.Sequence, first)
		}
		for _, ev := range ahead {
			if e, ok := deliveryBody(ev.Body).(events.DeliveryEnqueued); ok && e.IdempotencyKey == b.IdempotencyKey {
				return s, fmt.Errorf("%w: enqueue sequence %d: idempotency key used before, by sequence %d", events.ErrQueueRule, b.Sequence, e.Sequence)
			}
		}
	case events.DeliveryExpired:
		// The rules saw it enqueued and not acknowledged: it is pending
		// unless it expired before.
		_, held := q.pending[b.Sequence]
		expired := !held && b.Sequence <= q.rules.LastSeq
		for _, ev := range ahead {
			if e, ok := deliveryBody(ev.Body).(events.DeliveryExpired); ok && e.Sequence == b.Sequence {
				expired = true
			}
		}
		if expired {
			return s, fmt.Errorf("%w: expire sequence %d: already expired", events.ErrQueueRule, b.Sequence)
		}
	}
	return after, nil
}

// deliveryBody returns a pointer to a delivery event body as the value.
func deliveryBody(b events.Body) events.Body {
	switch p := b.(type) {
	case *events.DeliveryEnqueued:
		if p != nil {
			return *p
		}
	case *events.DeliveryAcknowledged:
		if p != nil {
			return *p
		}
	case *events.DeliveryExpired:
		if p != nil {
			return *p
		}
	}
	return b
}

// record adds one of the queue's events to q, read from its subject or
// just appended, after checking its place and its queue's rules (see
// next).
func (q *queue) record(r eventlog.Record) error {
	k := q.key
	a := r.Event.Aggregate
	if a.Type != events.AggDelivery || a.ID != k.channel {
		return fmt.Errorf("%w: %s event on the queue's subject", events.ErrMoved, a.Type)
	}
	if r.Event.Position != q.pos+1 {
		return fmt.Errorf("%w: position %d after position %d", eventlog.ErrOutOfOrder, r.Event.Position, q.pos)
	}
	b := deliveryBody(r.Event.Body)
	after, err := q.next(q.rules, b, nil)
	if err != nil {
		return err
	}
	switch b := b.(type) {
	case events.DeliveryEnqueued:
		q.pending[b.Sequence] = Delivery{Recipient: k.recipient, Channel: k.channel, Seq: b.Sequence, Payload: b.Payload, ExpiresAt: b.ExpiresAt, IdempotencyKey: b.IdempotencyKey}
		if b.IdempotencyKey != "" {
			q.idem[b.IdempotencyKey] = b.Sequence
		}
	case events.DeliveryAcknowledged:
		for s := q.rules.AckedUpTo + 1; s <= after.AckedUpTo; s++ {
			delete(q.pending, s)
		}
	case events.DeliveryExpired:
		delete(q.pending, b.Sequence)
	}
	q.rules, q.pos, q.seq = after, r.Event.Position, r.Seq
	return nil
}

// Enqueue queues a message for its recipient and returns its sequence.
// dup is true when the idempotency key was seen before on the queue: then
// nothing is appended and the first enqueue's sequence is returned.
func (d *Deliveries) Enqueue(ctx context.Context, e Enqueue) (seq uint64, dup bool, err error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.trim()
	return d.enqueue(ctx, e)
}

func (d *Deliveries) enqueue(ctx context.Context, e Enqueue) (seq uint64, dup bool, err error) {
	k := queueKey{e.Recipient, e.Channel}
	for attempt := 0; attempt < DefaultMaxAttempts; attempt++ {
		q, err := d.load(ctx, k)
		if err != nil {
			return 0, false, err
		}
		if s, ok := q.idem[e.IdempotencyKey]; ok && e.IdempotencyKey != "" {
			return s, true, nil
		}
		ev := d.enqueueEvent(q, e)
		conflict, err := d.appendQueue(ctx, q, ev)
		if conflict {
			if attempt+1 < DefaultMaxAttempts {
				decidedAgain(d.log, deliveryAgg(k), attempt+1, eventlog.ErrConflict)
			}
			continue
		}
		if err != nil {
			return 0, false, fmt.Errorf("engine: enqueue on %s/%s: %w", k.recipient, k.channel, err)
		}
		return ev.Body.(events.DeliveryEnqueued).Sequence, false, nil
	}
	return 0, false, fmt.Errorf("engine: enqueue on %s/%s: %w", k.recipient, k.channel, ErrTooManyConflicts)
}

func (d *Deliveries) enqueueEvent(q *queue, e Enqueue) events.Event {
	var exp time.Time
	if !e.ExpiresAt.IsZero() {
		exp = e.ExpiresAt.UTC()
	}
	return events.Event{Aggregate: deliveryAgg(q.key), Position: q.pos + 1, Time: d.now().UTC(), Body: events.DeliveryEnqueued{
		Recipient: q.key.recipient, Channel: q.key.channel, Sequence: q.rules.LastSeq + 1, Payload: bytes.Clone(e.Payload),
		ExpiresAt: exp, IdempotencyKey: e.IdempotencyKey,
	}}
}

// FanOut queues payload for every recipient on channel, pipelined (one
// append per recipient queue, in flight together). Each recipient's
// enqueue is idempotent under idempotencyKey. It returns the sequences by
// recipient. A group's commit goes to CommitOutput.Recipients, its Welcome
// to CommitOutput.Added, an application message to SendOutput.Recipients.
func (d *Deliveries) FanOut(ctx context.Context, recipients []events.InstallationID, channel string, payload []byte, expiresAt time.Time, idempotencyKey string) (map[events.InstallationID]uint64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	defer d.trim()
	out := make(map[events.InstallationID]uint64, len(recipients))
	var ts []eventlog.Transition
	var qs []*queue
	for _, r := range recipients {
		k := queueKey{r, channel}
		q, err := d.load(ctx, k)
		if err != nil {
			return nil, err
		}
		if s, ok := q.idem[idempotencyKey]; ok && idempotencyKey != "" {
			out[r] = s
			continue
		}
		ev := d.enqueueEvent(q, Enqueue{Recipient: r, Channel: channel, Payload: payload, ExpiresAt: expiresAt, IdempotencyKey: idempotencyKey})
		if _, err := q.next(q.rules, ev.Body, nil); err != nil {
			return nil, fmt.Errorf("engine: fan-out on %s: enqueue on %s/%s: %w", channel, r, channel, err)
		}
		ts = append(ts, eventlog.Transition{Expected: q.pos, Events: []events.Event{ev}})
		qs = append(qs, q)
	}
	// The bulk stops at its first failure. Each transition it did not
	// store, or whose answer it lost, is decided on its own: the same
	// event at the same position (idempotent by message id, with or
	// without an idempotency key); if another writer moved the queue
	// meanwhile, the queue is reloaded and the message enqueued there.
	res, _ := appendBulkOnce(ctx, d.log, ts)
	var undecided []int
	for i, q := range qs {
		if i < len(res) && res[i] != nil {
			d.recordAppended(q, ts[i].Events, res[i])
			out[q.key.recipient] = ts[i].Events[0].Body.(events.DeliveryEnqueued).Sequence
			continue
		}
		undecided = append(undecided, i)
	}
	for _, i := range undecided {
		q, evs := qs[i], ts[i].Events
		r, seq := q.key.recipient, evs[0].Body.(events.DeliveryEnqueued).Sequence
		got, err := d.decide(ctx, ts[i].Expected, evs)
		if err == nil {
			d.recordAppended(q, evs, got)
			out[r] = seq
			continue
		}
		d.drop(q)
		if !errors.Is(err, eventlog.ErrConflict) {
			return out, fmt.Errorf("engine: fan-out on %s: enqueue on %s/%s: %w", channel, r, channel, err)
		}
		decidedAgain(d.log, deliveryAgg(q.key), 1, err)
		s, _, err := d.enqueue(ctx, Enqueue{Recipient: r, Channel: channel, Payload: payload, ExpiresAt: expiresAt, IdempotencyKey: idempotencyKey})
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
	defer d.trim()
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
	defer d.trim()
	k := queueKey{recipient, channel}
	for attempt := 0; attempt < DefaultMaxAttempts; attempt++ {
		q, err := d.load(ctx, k)
		if err != nil {
			return err
		}
		if upTo > q.rules.LastSeq {
			// Perhaps enqueued by another process: look before refusing.
			if q, err = d.refresh(ctx, k); err != nil {
				return err
			}
		}
		if upTo <= q.rules.AckedUpTo {
			// Nothing to record (this includes 0 on a queue where nothing
			// was enqueued, which the rules refuse as an event).
			return nil
		}
		ev := events.Event{Aggregate: deliveryAgg(k), Time: d.now().UTC(), Body: events.DeliveryAcknowledged{Recipient: recipient, Channel: channel, UpTo: upTo}}
		conflict, err := d.appendQueue(ctx, q, ev)
		if conflict {
			if attempt+1 < DefaultMaxAttempts {
				decidedAgain(d.log, deliveryAgg(k), attempt+1, eventlog.ErrConflict)
			}
			continue
		}
		if errors.Is(err, events.ErrQueueRule) {
			return fmt.Errorf("engine: acknowledge %s/%s up to %d, last enqueued %d: %w", recipient, channel, upTo, q.rules.LastSeq, ErrInvalidAck)
		}
		if err != nil {
			return fmt.Errorf("engine: acknowledge %s/%s: %w", recipient, channel, err)
		}
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
	defer d.trim()
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
		conflict, err := d.appendQueue(ctx, q, evs...)
		if conflict {
			if attempt+1 < DefaultMaxAttempts {
				decidedAgain(d.log, deliveryAgg(k), attempt+1, eventlog.ErrConflict)
			}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("engine: expire on %s/%s: %w", recipient, channel, err)
		}
		return seqs, nil
	}
	return nil, fmt.Errorf("engine: expire on %s/%s: %w", recipient, channel, ErrTooManyConflicts)
}
