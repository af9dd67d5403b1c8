package engine

import (
	"bytes"
	"cmp"
	"container/list"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"slices"
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
	// EnqueuedAt is when it was queued (its enqueue event's time, by
	// the clock of the Deliveries that queued it).
	EnqueuedAt time.Time
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

// DefaultMaxQueueBytes is about how much memory the queues a Deliveries
// holds take when its MaxQueueBytes is 0.
const DefaultMaxQueueBytes = 256 << 20

// DefaultOutcomeTimeout is how long an operation (of an Installation, a
// Host or a Deliveries) tries to decide an append whose answer was lost
// when its OutcomeTimeout is 0: eventlog's default ProgressTimeout, which
// outlasts a stream-leader failover.
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
// since. It is safe for concurrent use: calls on different queues run
// side by side (a queue being loaded from a long history holds up only
// the calls on that queue), calls on one queue one after the other, in
// the order they got to it; a call waiting for a queue gives up when its
// context ends.
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
// queues taking about MaxQueueBytes between calls (calls in progress hold
// theirs beyond it): beyond that the least recently used ones are
// dropped, those with nothing pending (every message acknowledged or
// expired) first, and loaded again from the log when next used.
type Deliveries struct {
	// MaxQueues caps the queues held in memory (0: DefaultMaxQueues).
	// Set it before the first call.
	MaxQueues int
	// MaxQueueBytes caps about how much memory they take (0:
	// DefaultMaxQueueBytes): a queue keeps every idempotency key it ever
	// saw, so a long history weighs more than a short one. The estimate
	// is on the high side; the queues of calls in progress, and those a
	// call has just used, are kept beyond it. Set it before the first
	// call.
	MaxQueueBytes int64
	// OutcomeTimeout bounds how long an append whose answer was lost is
	// tried again before the call fails with ErrOutcomeUnknown (0:
	// DefaultOutcomeTimeout). Set it before the first call.
	OutcomeTimeout time.Duration

	log *eventlog.Log
	now func() time.Time
	// clockMu guards clockOK, when (by now) the clock was last found not
	// ahead of the server's (checkClock).
	clockMu sync.Mutex
	clockOK time.Time
	// mu guards q, the two lists and each queue's refs and place in
	// them; it is never held across a network call (a queue's own lock
	// is).
	mu    sync.Mutex
	q     map[queueKey]*queue
	bytes int64 // the held queues' estimated memory, as last accounted
	// The held queues, most recently used first, by whether they had
	// messages pending when last used: the idle ones are dropped first.
	idle, busy list.List
}

type queueKey struct {
	recipient events.InstallationID
	channel   string
}

// compare orders queue keys: queues are locked in this order.
func (k queueKey) compare(o queueKey) int {
	return cmp.Or(cmp.Compare(k.recipient, o.recipient), cmp.Compare(k.channel, o.channel))
}

// queue is one delivery queue as this process last read it from the log.
type queue struct {
	key queueKey
	// lock is held by the call using the queue, across its reads and
	// appends; a channel, so that a call waiting for it can give up
	// when its context ends.
	lock chan struct{}

	// Guarded by Deliveries.mu: the calls holding or waiting for lock (a
	// queue they hold is never dropped), and its place in idle or busy.
	refs      int
	elem      *list.Element
	in        *list.List
	accounted int64 // its bytes in Deliveries.bytes
	justUsed  bool  // released by the call trimming: kept beyond MaxQueueBytes

	// The rest is guarded by lock.
	loaded bool              // read from the log (false: read it before use)
	rules  events.QueueState // the counters the queue's rules step
	pos    uint64            // aggregate position of the last event
	seq    uint64            // its stream sequence
	// pending are the messages enqueued, neither acknowledged nor expired;
	// idem the enqueue of each idempotency key.
	pending map[uint64]Delivery
	idem    map[idemKey]idemEntry
	// recent are the queue's last events, their positions contiguous up
	// to pos: what a Host projecting the recipient's read model takes
	// from here instead of the log. They go back to the acknowledgement
	// before the last (a read model projected by the Host lags by about
	// one batch), and at most maxRecent.
	recent  []eventlog.Record
	lastAck uint64 // position of the last acknowledgement
	bytes   int64  // the memory all this takes, estimated (see idemBytes)
}

// maxRecent bounds queue.recent.
const maxRecent = 1024

// recentEvents returns the events of queue k after position after, if
// this process holds every one of them (ok false: it does not, or
// another call holds the queue). It does not wait for a queue in use:
// its caller, a Host's batch, holds the lock of every installation of
// the batch, and the call on the queue may take up to OutcomeTimeout
// (deciding a lost answer) or a long history's read; the log has the
// events.
func (d *Deliveries) recentEvents(k queueKey, after uint64) (recs []eventlog.Record, ok bool) {
	d.mu.Lock()
	q := d.q[k]
	if q == nil {
		d.mu.Unlock()
		return nil, false
	}
	q.refs++
	d.mu.Unlock()
	select {
	case q.lock <- struct{}{}:
	default:
		d.unref(q)
		return nil, false
	}
	defer d.release(q)
	if !q.loaded || after > q.pos {
		return nil, false
	}
	if after == q.pos {
		return nil, true
	}
	if len(q.recent) == 0 || q.recent[0].Event.Position > after+1 {
		return nil, false
	}
	i := len(q.recent) - int(q.pos-after)
	return append([]eventlog.Record(nil), q.recent[i:]...), true
}

// clockRecheck is how long a clock check that passed answers for
// (checkClock).
const clockRecheck = 10 * time.Second

// checkClock is eventlog.Log.CheckClock at now, answered from the last
// check that passed for clockRecheck after it (on the same clock: a
// step either way asks again). Expiry is judged on this clock, so a
// clock far ahead would expire, or leave out of a fetch, messages that
// are not due.
func (d *Deliveries) checkClock(ctx context.Context, now time.Time) error {
	d.clockMu.Lock()
	since := now.Sub(d.clockOK)
	fresh := !d.clockOK.IsZero() && since >= 0 && since < clockRecheck
	d.clockMu.Unlock()
	if fresh {
		return nil
	}
	if err := d.log.CheckClock(ctx, now); err != nil {
		return err
	}
	d.clockMu.Lock()
	d.clockOK = now
	d.clockMu.Unlock()
	return nil
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

// acquire returns the queues of keys (each once), locked for the caller,
// which releases them with release. They are locked in key order, so
// that calls sharing queues never wait for each other in a cycle. A queue not held yet is held from now on, not read
// from the log yet (see load). It fails, holding nothing, with a key that
// names no valid queue, or when ctx ends while another call holds one of
// them.
func (d *Deliveries) acquire(ctx context.Context, keys ...queueKey) ([]*queue, error) {
	keys = slices.Clone(keys)
	slices.SortFunc(keys, queueKey.compare)
	keys = slices.Compact(keys)
	for _, k := range keys {
		if err := deliveryAgg(k).Validate(); err != nil {
			return nil, err
		}
	}
	qs := make([]*queue, len(keys))
	d.mu.Lock()
	for i, k := range keys {
		q := d.q[k]
		if q == nil {
			q = &queue{key: k, lock: make(chan struct{}, 1)}
			q.reset()
			d.q[k] = q
			d.file(q, false)
		}
		q.refs++
		qs[i] = q
	}
	d.mu.Unlock()
	for i, q := range qs {
		if !q.take(ctx) {
			d.release(qs[:i]...)
			d.unref(qs[i:]...)
			return nil, fmt.Errorf("engine: delivery queue %s/%s: waiting for another call on it: %w", q.key.recipient, q.key.channel, ctx.Err())
		}
	}
	return qs, nil
}

// acquire1 is acquire for one queue.
func (d *Deliveries) acquire1(ctx context.Context, k queueKey) (*queue, error) {
	qs, err := d.acquire(ctx, k)
	if err != nil {
		return nil, err
	}
	return qs[0], nil
}

// take waits for q's lock, for as long as ctx lasts (false: it ended).
func (q *queue) take(ctx context.Context) bool {
	select {
	case q.lock <- struct{}{}:
		return true
	default:
	}
	select {
	case q.lock <- struct{}{}:
		return true
	case <-ctx.Done():
		return false
	}
}

// release unlocks the queues a call acquired, files them as the most
// recently used, and drops the least recently used queues beyond
// MaxQueues, and beyond MaxQueueBytes but those: a queue larger than the
// budget is kept until another call's queues push it out, rather than
// read again at every call.
func (d *Deliveries) release(qs ...*queue) {
	// The queues are accounted before they are unlocked, so that a call
	// that takes one next and releases it first is not undone by this
	// one's older figures. (d.mu is taken with queue locks held, never
	// the other way round: acquire waits for a queue without d.mu.)
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range qs {
		d.file(q, len(q.pending) > 0)
		d.bytes += q.bytes - q.accounted
		q.accounted, q.justUsed = q.bytes, true
		q.refs--
		<-q.lock
	}
	d.trim()
	for _, q := range qs {
		q.justUsed = false
	}
}

// unref lets go of queues a call counted itself in but did not lock.
func (d *Deliveries) unref(qs ...*queue) {
	d.mu.Lock()
	defer d.mu.Unlock()
	for _, q := range qs {
		q.refs--
	}
	d.trim()
}

// file puts q first in the list for whether it has messages pending.
// d.mu is held.
func (d *Deliveries) file(q *queue, pending bool) {
	l := &d.idle
	if pending {
		l = &d.busy
	}
	if q.elem != nil {
		q.in.Remove(q.elem)
	}
	q.elem, q.in = l.PushFront(q), l
}

// trim drops the least recently used queues beyond MaxQueues and
// MaxQueueBytes, idle ones first, passing over those a call holds (and,
// for MaxQueueBytes, those just released). d.mu is held.
func (d *Deliveries) trim() {
	limit := cmp.Or(max(d.MaxQueues, 0), DefaultMaxQueues)
	byteLimit := cmp.Or(max(d.MaxQueueBytes, 0), DefaultMaxQueueBytes)
	for _, l := range []*list.List{&d.idle, &d.busy} {
		for e := l.Back(); e != nil && (len(d.q) > limit || d.bytes > byteLimit); {
			q, prev := e.Value.(*queue), e.Prev()
			if q.refs == 0 && (len(d.q) > limit || !q.justUsed) {
				delete(d.q, q.key)
				l.Remove(e)
				q.elem, q.in = nil, nil
				d.bytes -= q.accounted
			}
			e = prev
		}
	}
}

// reset forgets what q read from the log: its next use reads it again.
// q's lock is held.
func (q *queue) reset() {
	q.loaded = false
	q.rules, q.pos, q.seq, q.lastAck = events.QueueState{}, 0, 0, 0
	q.pending, q.idem, q.recent, q.bytes = map[uint64]Delivery{}, map[idemKey]idemEntry{}, nil, 0
}

// appendQueue checks evs against the queue's rules, appends them at the
// queue's position (decided: see decide) and records them in q. A refusal
// by the rules wraps events.ErrQueueRule and leaves q as it was. On any
// failure of the append q is reset, so the next attempt reloads it; a
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
		q.reset()
		if errors.Is(err, eventlog.ErrConflict) {
			return true, nil
		}
		return false, err
	}
	recordAppended(q, evs, res)
	d.log.Logger().Debug("engine: delivery queue appended", append(aggAttrs(d.log, evs), "seq", res[len(res)-1].Seq)...)
	return false, nil
}

// decide appends evs at expected and returns once the outcome is known
// (decideAppend), trying for at most d's OutcomeTimeout.
func (d *Deliveries) decide(ctx context.Context, expected uint64, evs []events.Event) ([]eventlog.Appended, error) {
	return d.decideAfter(ctx, expected, evs, false)
}

// decideAfter is decide for events a bulk may have sent already (sent).
func (d *Deliveries) decideAfter(ctx context.Context, expected uint64, evs []events.Event, sent bool) ([]eventlog.Appended, error) {
	return decideAppendFrom(ctx, d.log, expected, evs, cmp.Or(d.OutcomeTimeout, DefaultOutcomeTimeout), sent)
}

// appendBulkOnce is appendOnce for AppendBulk.
func appendBulkOnce(ctx context.Context, l *eventlog.Log, ts []eventlog.Transition) ([][]eventlog.Appended, error) {
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("%w: %w", errNotSent, err) // see appendOnce
	}
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
func recordAppended(q *queue, evs []events.Event, res []eventlog.Appended) {
	for i, a := range res {
		ev := evs[i]
		ev.Position = a.Position
		if err := q.record(eventlog.Record{Seq: a.Seq, Subject: a.Subject, Event: ev}); err != nil {
			// Checked before the append, so this does not happen; should
			// it, the queue is read again from the log at its next use.
			q.reset()
			return
		}
	}
}

// load reads the queue's events from the recipient's log if this process
// does not hold them all (its first use, after a failure reset it, or
// after a read its context cut short).
func (d *Deliveries) load(ctx context.Context, q *queue) error {
	if q.loaded {
		return nil
	}
	return d.refresh(ctx, q)
}

// refresh reads the queue's events appended since this process last
// looked, other processes' included (all of them if it holds none).
//
// A read its context ended keeps what it read: every event passed its
// checks, so q holds a prefix of the queue and the next read goes on
// after it. A long history then loads across calls whose deadlines are
// each too short for all of it. Any other failure resets q.
func (d *Deliveries) refresh(ctx context.Context, q *queue) error {
	if err := d.readQueue(ctx, q); err != nil {
		if ctx.Err() == nil {
			q.reset()
		}
		return err
	}
	q.loaded = true
	return nil
}

// readQueue records the queue's events after the last one q holds, in
// stream order. The queue's own subject holds only its events: the first
// queueGets are read with message gets (no consumer for the few events a
// queue in use gains between calls), the rest, a long history read
// cold, through one consumer. Positions are checked either way, since a
// queue has one writer history like any aggregate.
func (d *Deliveries) readQueue(ctx context.Context, q *queue) error {
	k := q.key
	subject, err := d.log.Subject(deliveryAgg(k))
	if err != nil {
		return err
	}
	record := q.record
	if queueRecordHook != nil {
		record = func(r eventlog.Record) error { queueRecordHook(r); return q.record(r) }
	}
	n, next, err := d.log.ReadN(ctx, k.recipient, subject, q.seq+1, queueGets, record)
	if err == nil && n == queueGets {
		err = d.log.ReadSubject(ctx, k.recipient, subject, next, record)
	}
	if err != nil {
		return fmt.Errorf("engine: load delivery queue %s/%s: %w", k.recipient, k.channel, err)
	}
	return nil
}

// queueRecordHook, when set (by tests only), sees each event a queue
// reads from the log before it is recorded. A test that sets it must not
// call t.Parallel.
var queueRecordHook func(eventlog.Record)

// queueGets is how many new events of a queue are read with message gets
// before a consumer reads the rest (about the round trips a consumer's
// set-up costs, times a few).
const queueGets = 64

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
		if first, ok := q.idem[keyOf(b.IdempotencyKey)]; ok {
			return s, fmt.Errorf("%w: enqueue sequence %d: idempotency key used before, by sequence %d", events.ErrQueueRule, b.Sequence, first.seq)
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
		m := Delivery{Recipient: k.recipient, Channel: k.channel, Seq: b.Sequence, Payload: b.Payload, ExpiresAt: b.ExpiresAt, IdempotencyKey: b.IdempotencyKey, EnqueuedAt: r.Event.Time}
		q.pending[b.Sequence] = m
		q.bytes += pendingBytes(m)
		if b.IdempotencyKey != "" {
			q.idem[keyOf(b.IdempotencyKey)] = newIdemEntry(b.Sequence, b.Payload)
			q.bytes += idemBytes
		}
	case events.DeliveryAcknowledged:
		for s := q.rules.AckedUpTo + 1; s <= after.AckedUpTo; s++ {
			q.unpend(s)
		}
	case events.DeliveryExpired:
		q.unpend(b.Sequence)
	}
	q.rules, q.pos, q.seq = after, r.Event.Position, r.Seq
	q.recent = append(q.recent, r)
	q.bytes += recordBytes(r)
	if _, ack := b.(events.DeliveryAcknowledged); ack {
		if q.lastAck > 0 {
			q.dropBefore(q.lastAck)
		}
		q.lastAck = r.Event.Position
	}
	if len(q.recent) > maxRecent {
		q.dropBefore(q.recent[len(q.recent)-maxRecent/2].Event.Position)
	}
	return nil
}

// dropBefore forgets the recent events before position pos.
func (q *queue) dropBefore(pos uint64) {
	if len(q.recent) == 0 || pos <= q.recent[0].Event.Position {
		return
	}
	i := min(int(pos-q.recent[0].Event.Position), len(q.recent))
	for _, r := range q.recent[:i] {
		q.bytes -= recordBytes(r)
	}
	q.recent = append(q.recent[:0:0], q.recent[i:]...)
}

// unpend forgets pending message seq (acknowledged or expired).
func (q *queue) unpend(seq uint64) {
	if m, ok := q.pending[seq]; ok {
		q.bytes -= pendingBytes(m)
		delete(q.pending, seq)
	}
}

// What a queue's state takes in memory, estimated on the high side from
// BenchmarkDeliveryColdQueue's heap-B/acked (Go's map overhead
// included): an idempotency key, a pending message beyond its payload,
// and a recent event beyond its payload (which the pending message may
// share: counted twice).
const (
	idemBytes     = 96
	pendingBytes0 = 160
	recordBytes0  = 320
)

func pendingBytes(m Delivery) int64 {
	return pendingBytes0 + int64(len(m.Payload)+len(m.IdempotencyKey))
}

func recordBytes(r eventlog.Record) int64 {
	if e, ok := deliveryBody(r.Event.Body).(events.DeliveryEnqueued); ok {
		return recordBytes0 + int64(len(e.Payload)+len(e.IdempotencyKey))
	}
	return recordBytes0
}

// Enqueue queues a message for its recipient and returns its sequence.
// dup is true when the idempotency key was seen before on the queue with
// the same payload: then nothing is appended and the first enqueue's
// sequence is returned. The key seen with another payload is
// ErrIdempotencyKeyReused, and nothing is appended.
func (d *Deliveries) Enqueue(ctx context.Context, e Enqueue) (seq uint64, dup bool, err error) {
	q, err := d.acquire1(ctx, queueKey{e.Recipient, e.Channel})
	if err != nil {
		return 0, false, err
	}
	defer d.release(q)
	return d.enqueue(ctx, q, e)
}

// enqueue is Enqueue on q, whose lock the caller holds.
func (d *Deliveries) enqueue(ctx context.Context, q *queue, e Enqueue) (seq uint64, dup bool, err error) {
	k := q.key
	for attempt := 0; attempt < DefaultMaxAttempts; attempt++ {
		if err := d.load(ctx, q); err != nil {
			return 0, false, err
		}
		if first, ok := q.idem[keyOf(e.IdempotencyKey)]; ok && e.IdempotencyKey != "" {
			if err := first.check(k, e.IdempotencyKey, e.Payload); err != nil {
				return 0, false, err
			}
			return first.seq, true, nil
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
	return d.enqueueEventAt(q.key, q.pos, q.rules.LastSeq, e)
}

// enqueueEventAt is the event enqueuing e on queue k after the event at
// position pos, as queue sequence lastSeq + 1.
func (d *Deliveries) enqueueEventAt(k queueKey, pos, lastSeq uint64, e Enqueue) events.Event {
	var exp time.Time
	if !e.ExpiresAt.IsZero() {
		exp = e.ExpiresAt.UTC()
	}
	return events.Event{Aggregate: deliveryAgg(k), Position: pos + 1, Time: d.now().UTC(), Body: events.DeliveryEnqueued{
		Recipient: k.recipient, Channel: k.channel, Sequence: lastSeq + 1, Payload: bytes.Clone(e.Payload),
		ExpiresAt: exp, IdempotencyKey: e.IdempotencyKey,
	}}
}

// FanOut queues payload for every recipient on channel, pipelined (one
// append per recipient queue, in flight together). Each recipient's
// enqueue is idempotent under idempotencyKey; a key a queue has seen with
// another payload is ErrIdempotencyKeyReused, and nothing of the call is
// enqueued. It returns the sequences by
// recipient. A group's commit goes to CommitOutput.Recipients, its Welcome
// to CommitOutput.Added, an application message to SendOutput.Recipients.
func (d *Deliveries) FanOut(ctx context.Context, recipients []events.InstallationID, channel string, payload []byte, expiresAt time.Time, idempotencyKey string) (map[events.InstallationID]uint64, error) {
	out, err := d.FanOutMany(ctx, []FanOutItem{{Recipients: recipients, Channel: channel, Payload: payload, ExpiresAt: expiresAt, IdempotencyKey: idempotencyKey}})
	return out[0], err
}

// FanOutItem is one message of FanOutMany: FanOut's arguments.
type FanOutItem struct {
	Recipients     []events.InstallationID
	Channel        string
	Payload        []byte
	ExpiresAt      time.Time // zero: never
	IdempotencyKey string    // empty: no deduplication
}

// FanOutMany is FanOut for several messages at once: every enqueue of
// every item goes into one pipelined bulk append (eventlog.Log.AppendBulk),
// so a batch of messages to many queues costs about one round trip per
// message a queue receives, not one per enqueue. A queue that gets several
// of the items gets them in item order, each one transition of its own;
// when every enqueue of the call goes to one queue, the run is appended
// as atomic batches (appendEnqueues), which a call to one queue would
// otherwise wait for one round trip at a time.
// It returns, per item, the sequences by recipient (as FanOut); on an
// error, the items' maps hold the enqueues made so far. A recipient named
// twice in an item is enqueued once.
func (d *Deliveries) FanOutMany(ctx context.Context, items []FanOutItem) ([]map[events.InstallationID]uint64, error) {
	out := make([]map[events.InstallationID]uint64, len(items))
	var keys []queueKey
	for i, it := range items {
		out[i] = make(map[events.InstallationID]uint64, len(it.Recipients))
		for _, r := range it.Recipients {
			keys = append(keys, queueKey{r, it.Channel})
		}
	}
	qs, err := d.acquire(ctx, keys...)
	if err != nil {
		return out, err
	}
	defer d.release(qs...)
	if err := cmp.Or(d.readAll(ctx, qs, d.load)...); err != nil {
		return out, err
	}
	held := make(map[queueKey]*queue, len(qs))
	for _, q := range qs {
		held[q.key] = q
	}
	// The queues' state as this call's enqueues move them, ahead of what
	// is appended.
	type ahead struct {
		rules events.QueueState
		pos   uint64
		evs   []events.Event
	}
	type planned struct {
		item int
		q    *queue
		t    eventlog.Transition
	}
	var plan []planned
	next := map[*queue]*ahead{}
	for i, it := range items {
		named := make(map[events.InstallationID]bool, len(it.Recipients))
		for _, r := range it.Recipients {
			if named[r] {
				// Named twice: one enqueue (the map holds one sequence
				// per recipient, and a member gets a message once).
				continue
			}
			named[r] = true
			k := queueKey{r, it.Channel}
			q := held[k]
			if first, ok := q.idem[keyOf(it.IdempotencyKey)]; ok && it.IdempotencyKey != "" {
				if err := first.check(k, it.IdempotencyKey, it.Payload); err != nil {
					return out, fmt.Errorf("engine: fan-out on %s: %w", it.Channel, err)
				}
				out[i][r] = first.seq
				continue
			}
			a := next[q]
			if a == nil {
				a = &ahead{rules: q.rules, pos: q.pos}
				next[q] = a
			}
			if first, ok := aheadKey(a.evs, it.IdempotencyKey); ok { // the same key earlier in this call
				if err := first.check(k, it.IdempotencyKey, it.Payload); err != nil {
					return out, fmt.Errorf("engine: fan-out on %s: %w", it.Channel, err)
				}
				out[i][r] = first.seq
				continue
			}
			ev := d.enqueueEventAt(k, a.pos, a.rules.LastSeq, Enqueue{Recipient: r, Channel: it.Channel, Payload: it.Payload, ExpiresAt: it.ExpiresAt, IdempotencyKey: it.IdempotencyKey})
			after, err := q.next(a.rules, ev.Body, a.evs)
			if err != nil {
				return out, fmt.Errorf("engine: fan-out on %s: enqueue on %s/%s: %w", it.Channel, r, it.Channel, err)
			}
			plan = append(plan, planned{item: i, q: q, t: eventlog.Transition{Expected: a.pos, Events: []events.Event{ev}}})
			a.rules, a.pos, a.evs = after, a.pos+1, append(a.evs, ev)
		}
	}
	ts := make([]eventlog.Transition, len(plan))
	queues := make([]*queue, len(plan))
	for i, p := range plan {
		ts[i], queues[i] = p.t, p.q
	}
	// The bulk stops at its first failure. Each transition it did not
	// store, or whose answer it lost, is decided on its own, in order:
	// the same event at the same position (idempotent by message id, with
	// or without an idempotency key); if another writer moved the queue
	// meanwhile, the queue is reloaded and the message enqueued there, and
	// so are this call's later messages for that queue.
	res, berr := d.appendEnqueues(ctx, ts, queues)
	bulkSent := !errors.Is(berr, errNotSent)
	moved := map[*queue]bool{}
	for i, p := range plan {
		it, q, evs := items[p.item], p.q, p.t.Events
		r, seq := q.key.recipient, evs[0].Body.(events.DeliveryEnqueued).Sequence
		if !moved[q] {
			var got []eventlog.Appended
			if i < len(res) {
				got = res[i]
			}
			var err error
			if got == nil {
				got, err = d.decideAfter(ctx, p.t.Expected, evs, bulkSent)
			}
			if err == nil {
				recordAppended(q, evs, got)
				out[p.item][r] = seq
				continue
			}
			q.reset()
			if !errors.Is(err, eventlog.ErrConflict) {
				return out, fmt.Errorf("engine: fan-out on %s: enqueue on %s/%s: %w", it.Channel, r, it.Channel, err)
			}
			decidedAgain(d.log, deliveryAgg(q.key), 1, err)
			moved[q] = true
		}
		s, _, err := d.enqueue(ctx, q, Enqueue{Recipient: r, Channel: it.Channel, Payload: it.Payload, ExpiresAt: it.ExpiresAt, IdempotencyKey: it.IdempotencyKey})
		if err != nil {
			return out, err
		}
		out[p.item][r] = s
	}
	return out, nil
}

// A call's enqueues to one queue are appended one transition each, every
// one waiting for the answer to the one before (its sequence is the next
// one's expected sequence): a burst of n messages to a queue is n round
// trips in a row. When a call's enqueues all go to one queue (a Host
// fanning out a group of two), nothing else fills the pipeline meanwhile
// and that chain is the fan-out's time; appendEnqueues then appends the
// run as atomic batches. A batch costs the server a staged, synced store
// of its own (a batch of two took as long as 13-18 single appends on a
// single replica: docs/benchmarks.md, "Atomic batches on a single
// replica") and CPU; with several queues in flight side by side the
// round trips overlap and batching them cost more than it saved (E2E at
// 5 and at 100 members, "Fan-out runs as atomic batches"), so only a
// single queue's run is batched. Each enqueue stays a transition of its
// own; a batch only makes several of them atomic together.
var (
	// batchFrom is the fewest enqueues of a call that are batched.
	batchFrom = 16
	// batchBytes bounds a batch's payloads, which the server stages whole.
	batchBytes = 8 << 20
)

// appendEnqueues appends ts, one enqueue each (queues[i] is ts[i]'s
// queue, a queue's in position order), in one bulk: a single queue's run
// of at least batchFrom as atomic batches of up to the Log's MaxBatch
// events and batchBytes of payload. It returns each enqueue's appended
// event, nil for those the bulk did not store or whose answer it lost
// (a batch's events share its fate), and the bulk's error, as
// appendBulkOnce.
func (d *Deliveries) appendEnqueues(ctx context.Context, ts []eventlog.Transition, queues []*queue) ([][]eventlog.Appended, error) {
	if !d.log.AtomicBatches() || len(ts) < batchFrom || slices.ContainsFunc(queues, func(q *queue) bool { return q != queues[0] }) {
		return appendBulkOnce(ctx, d.log, ts)
	}
	var bulk []eventlog.Transition
	first := make([]int, 0, len(ts)/d.log.MaxBatch()+1) // ts index of each batch's first event
	size := 0
	for i, t := range ts {
		n := len(t.Events[0].Body.(events.DeliveryEnqueued).Payload)
		if len(bulk) == 0 || len(bulk[len(bulk)-1].Events) >= d.log.MaxBatch() || size+n > batchBytes {
			bulk = append(bulk, eventlog.Transition{Expected: t.Expected})
			first = append(first, i)
			size = 0
		}
		b := &bulk[len(bulk)-1]
		b.Events = append(b.Events, t.Events[0])
		size += n
	}
	got, err := appendBulkOnce(ctx, d.log, bulk)
	res := make([][]eventlog.Appended, len(ts))
	for j, from := range first {
		if j < len(got) && got[j] != nil {
			for k := range got[j] {
				res[from+k] = got[j][k : k+1]
			}
		}
	}
	return res, err
}

// aheadKey returns the sequence of the enqueue among evs that used the
// idempotency key key (not empty).
func aheadKey(evs []events.Event, key string) (idemEntry, bool) {
	if key == "" {
		return idemEntry{}, false
	}
	for _, ev := range evs {
		if e, ok := deliveryBody(ev.Body).(events.DeliveryEnqueued); ok && e.IdempotencyKey == key {
			return newIdemEntry(e.Sequence, e.Payload), true
		}
	}
	return idemEntry{}, false
}

// idemKey is an idempotency key as a queue remembers it: the first 128
// bits of its SHA-256, a fixed size whatever the caller's keys (a queue
// keeps every key it ever saw).
type idemKey [16]byte

func keyOf(key string) idemKey {
	sum := sha256.Sum256([]byte(key))
	return idemKey(sum[:16])
}

// idemEntry is the enqueue an idempotency key named: its sequence, and
// the first 128 bits of its payload's SHA-256, so that the key given
// again with another payload is refused rather than answered as the first
// enqueue.
type idemEntry struct {
	seq uint64
	sum [16]byte
}

func newIdemEntry(seq uint64, payload []byte) idemEntry {
	sum := sha256.Sum256(payload)
	return idemEntry{seq: seq, sum: [16]byte(sum[:16])}
}

// check refuses payload under key on queue k when the key's enqueue had
// another payload: the caller would take the first message's sequence for
// its own, and its message would never be queued.
func (e idemEntry) check(k queueKey, key string, payload []byte) error {
	if newIdemEntry(e.seq, payload) == e {
		return nil
	}
	return fmt.Errorf("engine: enqueue on %s/%s: idempotency key %q names sequence %d, whose payload differs: %w",
		k.recipient, k.channel, key, e.seq, ErrIdempotencyKeyReused)
}

// Fetch returns up to limit (0: all; negative is refused) messages of
// the queue after its last acknowledged sequence, in sequence order,
// leaving out expired ones. It
// reads the queue's new events first, so it shows what other processes
// enqueued and acknowledged too. When it would leave one out, it refuses
// (eventlog.ErrClockAhead) if the Deliveries' clock is ahead of the
// server's by more than eventlog.MaxClockAhead.
func (d *Deliveries) Fetch(ctx context.Context, recipient events.InstallationID, channel string, limit int) ([]Delivery, error) {
	if limit < 0 {
		return nil, fmt.Errorf("engine: fetch %s/%s: limit %d is negative", recipient, channel, limit)
	}
	q, err := d.acquire1(ctx, queueKey{recipient, channel})
	if err != nil {
		return nil, err
	}
	defer d.release(q)
	if err := d.refresh(ctx, q); err != nil {
		return nil, err
	}
	out, err := d.pendingOf(ctx, q, limit)
	if err != nil {
		return nil, fmt.Errorf("engine: fetch %s/%s: %w", recipient, channel, err)
	}
	return out, nil
}

// pendingOf lists up to limit (0: all) of q's messages neither
// acknowledged nor expired, in sequence order, with copies of their
// payloads. When it leaves out one whose expiry passed by the
// Deliveries' clock, that clock must not be ahead of the server's
// (checkClock): acknowledging past a message left out gives it up.
func (d *Deliveries) pendingOf(ctx context.Context, q *queue, limit int) ([]Delivery, error) {
	now := d.now()
	out := make([]Delivery, 0, len(q.pending))
	expired := false
	for _, m := range q.pending {
		if m.ExpiresAt.IsZero() || now.Before(m.ExpiresAt) {
			out = append(out, m)
		} else {
			expired = true
		}
	}
	if expired {
		if err := d.checkClock(ctx, now); err != nil {
			return nil, err
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

// queueReaders bounds the queues a call reads from the log at once.
const queueReaders = 16

// readAll reads the queues qs, held by the caller, with read (load or
// refresh), up to queueReaders at once: a cold queue's history is a
// round trip per 1,024 events, and several cold queues need not wait for
// each other. It returns each queue's error (a queue that failed is
// reset).
func (d *Deliveries) readAll(ctx context.Context, qs []*queue, read func(context.Context, *queue) error) []error {
	errs := make([]error, len(qs))
	if len(qs) == 1 {
		errs[0] = read(ctx, qs[0])
		return errs
	}
	sem := make(chan struct{}, queueReaders)
	var wg sync.WaitGroup
	for i, q := range qs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = read(ctx, q)
		}()
	}
	wg.Wait()
	return errs
}

// FetchMany is Fetch for several recipients' queues on one channel: their
// new events are read concurrently (a queue this process holds up to date
// costs one message get), then each queue's pending messages are listed
// as Fetch lists them. It returns the messages by recipient; on an error
// (the first queue that could not be read) it returns nothing.
func (d *Deliveries) FetchMany(ctx context.Context, recipients []events.InstallationID, channel string, limit int) (map[events.InstallationID][]Delivery, error) {
	if limit < 0 {
		return nil, fmt.Errorf("engine: fetch on %s: limit %d is negative", channel, limit)
	}
	keys := make([]queueKey, len(recipients))
	for i, r := range recipients {
		keys[i] = queueKey{r, channel}
	}
	qs, err := d.acquire(ctx, keys...)
	if err != nil {
		return nil, err
	}
	defer d.release(qs...)
	if err := cmp.Or(d.readAll(ctx, qs, d.refresh)...); err != nil {
		return nil, err
	}
	out := make(map[events.InstallationID][]Delivery, len(qs))
	for _, q := range qs {
		ds, err := d.pendingOf(ctx, q, limit)
		if err != nil {
			return nil, fmt.Errorf("engine: fetch %s/%s: %w", q.key.recipient, channel, err)
		}
		out[q.key.recipient] = ds
	}
	return out, nil
}

// Acknowledge records that the recipient processed every message of the
// channel up to and including upTo. An older acknowledgement is a no-op;
// one beyond the last enqueued sequence is ErrInvalidAck.
func (d *Deliveries) Acknowledge(ctx context.Context, recipient events.InstallationID, channel string, upTo uint64) error {
	q, err := d.acquire1(ctx, queueKey{recipient, channel})
	if err != nil {
		return err
	}
	defer d.release(q)
	return d.acknowledge(ctx, q, upTo)
}

// acknowledge is Acknowledge on q, whose lock the caller holds.
func (d *Deliveries) acknowledge(ctx context.Context, q *queue, upTo uint64) error {
	k := q.key
	recipient, channel := k.recipient, k.channel
	for attempt := 0; attempt < DefaultMaxAttempts; attempt++ {
		if err := d.load(ctx, q); err != nil {
			return err
		}
		if upTo > q.rules.LastSeq {
			// Perhaps enqueued by another process: look before refusing.
			if err := d.refresh(ctx, q); err != nil {
				return err
			}
		}
		if upTo <= q.rules.AckedUpTo {
			// Nothing to record (this includes 0 on a queue where nothing
			// was enqueued, which the rules refuse as an event).
			return nil
		}
		ev := d.ackEvent(k, upTo)
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

func (d *Deliveries) ackEvent(k queueKey, upTo uint64) events.Event {
	return events.Event{Aggregate: deliveryAgg(k), Time: d.now().UTC(), Body: events.DeliveryAcknowledged{Recipient: k.recipient, Channel: k.channel, UpTo: upTo}}
}

// AcknowledgeMany is Acknowledge for several queues of one channel: upTo
// gives each recipient's sequence. The acknowledgements that need an
// event go into one pipelined bulk append; one the bulk did not settle,
// or one beyond the sequences this process knows, goes the way of
// Acknowledge. It returns the failures by recipient (nil when there are
// none).
func (d *Deliveries) AcknowledgeMany(ctx context.Context, channel string, upTo map[events.InstallationID]uint64) map[events.InstallationID]error {
	var errs map[events.InstallationID]error
	fail := func(r events.InstallationID, err error) {
		if errs == nil {
			errs = map[events.InstallationID]error{}
		}
		errs[r] = err
	}
	keys := make([]queueKey, 0, len(upTo))
	for r := range upTo {
		k := queueKey{r, channel}
		if err := deliveryAgg(k).Validate(); err != nil {
			fail(r, err)
			continue
		}
		keys = append(keys, k)
	}
	held, err := d.acquire(ctx, keys...)
	if err != nil {
		for _, k := range keys {
			fail(k.recipient, err)
		}
		return errs
	}
	defer d.release(held...)
	loadErrs := d.readAll(ctx, held, d.load)
	var qs []*queue
	var ts []eventlog.Transition
	for i, q := range held {
		k := q.key
		r, n := k.recipient, upTo[k.recipient]
		if loadErrs[i] != nil {
			fail(r, loadErrs[i])
			continue
		}
		if n <= q.rules.AckedUpTo {
			continue
		}
		ev := d.ackEvent(k, n)
		if n > q.rules.LastSeq {
			// Beyond what this process knows: Acknowledge reads first.
			if err := d.acknowledge(ctx, q, n); err != nil {
				fail(r, err)
			}
			continue
		}
		if _, err := q.next(q.rules, ev.Body, nil); err != nil {
			fail(r, fmt.Errorf("engine: acknowledge %s/%s up to %d, last enqueued %d: %w", r, channel, n, q.rules.LastSeq, ErrInvalidAck))
			continue
		}
		ev.Position = q.pos + 1
		qs = append(qs, q)
		ts = append(ts, eventlog.Transition{Expected: q.pos, Events: []events.Event{ev}})
	}
	res, berr := appendBulkOnce(ctx, d.log, ts)
	bulkSent := !errors.Is(berr, errNotSent)
	for i, q := range qs {
		if i < len(res) && res[i] != nil {
			recordAppended(q, ts[i].Events, res[i])
			continue
		}
		got, err := d.decideAfter(ctx, ts[i].Expected, ts[i].Events, bulkSent)
		if err == nil {
			recordAppended(q, ts[i].Events, got)
			continue
		}
		q.reset()
		r := q.key.recipient
		if !errors.Is(err, eventlog.ErrConflict) {
			fail(r, fmt.Errorf("engine: acknowledge %s/%s: %w", r, channel, err))
			continue
		}
		decidedAgain(d.log, deliveryAgg(q.key), 1, err)
		if err := d.acknowledge(ctx, q, upTo[r]); err != nil {
			fail(r, err)
		}
	}
	return errs
}

// Expire records delivery.expired for every pending message of the queue
// whose expiry has passed, in one atomic append, and returns their
// sequences. It refuses (eventlog.ErrClockAhead) when the Deliveries'
// clock is ahead of the server's by more than eventlog.MaxClockAhead.
func (d *Deliveries) Expire(ctx context.Context, recipient events.InstallationID, channel string) ([]uint64, error) {
	k := queueKey{recipient, channel}
	q, err := d.acquire1(ctx, k)
	if err != nil {
		return nil, err
	}
	defer d.release(q)
	for attempt := 0; attempt < DefaultMaxAttempts; attempt++ {
		if err := d.load(ctx, q); err != nil {
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
		// Expiry is judged on this clock (checkClock).
		if err := d.checkClock(ctx, now); err != nil {
			return nil, fmt.Errorf("engine: expire on %s/%s (nothing expired): %w", recipient, channel, err)
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
