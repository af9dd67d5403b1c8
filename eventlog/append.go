package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strconv"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/diskspace"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
	"github.com/nats-io/nuid"
)

// JetStream headers used by Append. The batch headers have no constants in
// nats.go (it has no atomic batch helper); their names and semantics are
// those of nats-server 2.12+ (server/stream.go, jetstream_batching.go).
const (
	hdrMsgID       = jetstream.MsgIDHeader               // deduplication
	hdrExpectedSeq = jetstream.ExpectedLastSubjSeqHeader // optimistic concurrency
	hdrBatchID     = "Nats-Batch-Id"
	hdrBatchSeq    = "Nats-Batch-Sequence"
	hdrBatchCommit = "Nats-Batch-Commit"
)

// storeMinFree is the free space below which a failed append on the
// embedded server is put down to a full disk: less than one block of the
// server's file store.
const storeMinFree = 1 << 20

// JetStream API error codes Append reacts to.
const (
	codeWrongLastSeq         jetstream.ErrorCode = 10071 // expected last subject sequence mismatch
	codeWrongLastSeqConstant jetstream.ErrorCode = 10164 // same, replicated streams / in-flight subject
	codeDupInProcess         jetstream.ErrorCode = 10158 // message id in process (clustered)
	codeBatchDuplicate       jetstream.ErrorCode = 10201 // atomic batch holds an already stored message id

	codeAccountResources  jetstream.ErrorCode = 10002 // the account's JetStream limits reached
	codeInsufficientRes   jetstream.ErrorCode = 10023 // the server's storage limit (max_file_store) reached
	codeStorageExceeded   jetstream.ErrorCode = 10047 // no storage resources left on the server
	codeStreamStoreFailed jetstream.ErrorCode = 10077 // the stream's store refused the message ("{err}")
)

// Appended describes one event Append stored (or found already stored).
type Appended struct {
	// Seq is the stream sequence of the event.
	Seq uint64
	// Subject is the subject it is stored on.
	Subject string
	// Position is its position within the aggregate.
	Position uint64
	// Duplicate is true when the event was already in the stream: this
	// append was a retry of one that had succeeded.
	Duplicate bool
	// Size is the sealed event's size in bytes, as stored: what reading
	// it back costs.
	Size int
}

// prepared is an append with its events sealed and their message ids.
type prepared struct {
	agg      events.Aggregate
	subject  string
	expected uint64
	ids      []string
	envs     [][]byte
	kinds    []string // the events' kinds, for metrics and logs

	// one backs ids, envs and kinds for a single event, the common
	// transition: one allocation instead of four.
	one struct {
		id   [1]string
		env  [1][]byte
		kind [1]string
	}
}

func (p *prepared) last() uint64 { return p.expected + uint64(len(p.envs)) }

// Append appends evs, all of one aggregate, at positions expected+1,
// expected+2, ...; expected is the position of the aggregate's last event as
// the caller knows it (0 for a new aggregate). An event's Position may be 0
// (Append fills it in) or must equal its slot; a zero Time is set to now.
//
// The events land together or not at all (one JetStream atomic batch when
// there are several; see ErrAtomicUnsupported). If another writer appended
// to the aggregate first, Append fails with ErrConflict and writes nothing;
// if the aggregate's last event on the stream is before expected (the
// caller holds events the stream lost), with ErrMissingEvent.
//
// Append is idempotent: each event carries a deterministic Nats-Msg-Id (the
// position and a keyed digest of the event), so repeating an append whose
// outcome is unknown (a timeout, a lost connection) with the same expected
// position and the same events never stores them twice. It returns the
// original sequences with Duplicate set, also after the server's duplicate
// window, because Append then finds the events on the stream. A zero Time
// is not part of that identity, so such retries match too.
func (l *Log) Append(ctx context.Context, expected uint64, evs ...events.Event) ([]Appended, error) {
	p, err := l.prepare(ctx, expected, evs)
	if err != nil {
		return nil, err
	}
	start := time.Now()
	res, err := l.appendPrepared(ctx, p)
	if err == nil {
		l.countAppended(p, time.Since(start))
	}
	return res, err
}

// prepare validates the events, fills positions, times and links, derives
// the message ids and seals the envelopes. Every event of one append links
// to the installation's head before it (positions order them).
func (l *Log) prepare(ctx context.Context, expected uint64, evs []events.Event) (*prepared, error) {
	return l.prepareAt(ctx, expected, evs, l.now().UTC(), nil)
}

// prepareAt is prepare at now (a zero event time becomes now), with the
// events' data keys as prefetchKeys found them (keys[i] for evs[i]; nil:
// none found).
func (l *Log) prepareAt(ctx context.Context, expected uint64, evs []events.Event, now time.Time, keys []windowKey) (*prepared, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	if e := l.edited.Load(); e != nil {
		return nil, *e
	}
	if l.cfg.ReadOnly {
		return nil, ErrReadOnly
	}
	if err := l.checkNotBehind(ctx); err != nil {
		return nil, err
	}
	n := len(evs)
	switch {
	case n == 0:
		return nil, fmt.Errorf("%w: no events", ErrInvalidAppend)
	case n > l.cfg.MaxBatch:
		return nil, fmt.Errorf("%w: %d events in one append, more than MaxBatch %d", ErrInvalidAppend, n, l.cfg.MaxBatch)
	case n > 1 && !l.atomic:
		return nil, fmt.Errorf("%w: stream %s: append of %d events needs atomic batch publish; append them one per call", ErrAtomicUnsupported, l.cfg.Stream, n)
	}
	agg := evs[0].Aggregate
	as, err := l.aggSubject(agg)
	if err != nil {
		return nil, err
	}
	if err := l.erasedKnown(agg.Installation); err != nil {
		return nil, err
	}
	prev, err := l.headOf(ctx, agg.Installation)
	if err != nil {
		return nil, err
	}
	p := &prepared{agg: agg, subject: as.subject, expected: expected}
	if n == 1 {
		p.ids, p.envs, p.kinds = p.one.id[:], p.one.env[:], p.one.kind[:]
	} else {
		p.ids, p.envs, p.kinds = make([]string, n), make([][]byte, n), make([]string, n)
	}
	for i, e := range evs {
		if e.Aggregate != agg {
			return nil, fmt.Errorf("%w: event %d is for aggregate %s %q of %s, event 0 for %s %q of %s: one append takes one aggregate",
				ErrInvalidAppend, i, e.Aggregate.Type, e.Aggregate.ID, e.Aggregate.Installation, agg.Type, agg.ID, agg.Installation)
		}
		slot := expected + uint64(i) + 1
		if e.Position == 0 {
			e.Position = slot
		} else if e.Position != slot {
			return nil, fmt.Errorf("%w: event %d has position %d, but appending after position %d puts it at %d",
				ErrInvalidAppend, i, e.Position, expected, slot)
		}
		if e.Body == nil {
			return nil, fmt.Errorf("%w: event %d at position %d has no body", ErrInvalidAppend, i, e.Position)
		}
		e.Prev = prev
		p.kinds[i] = string(e.Body.Kind())
		var key windowKey
		if keys != nil {
			key = keys[i]
		}
		if p.ids[i], p.envs[i], err = l.sealEvent(ctx, as.subject, as.pseudo, e, now, key); err != nil {
			return nil, fmt.Errorf("eventlog: append to %s: event %d: %w", as.subject, i, err)
		}
	}
	return p, nil
}

// refusedBackoff is the pause before the n-th publish again (n from 0) of
// an append the server refused although the stream shows the aggregate at
// the expected position: 5 ms, doubling, at most 160 ms. On a cluster the
// leader refuses a check on a subject whose previous message is still
// being replicated ("wrong last sequence" without a sequence, code 10164),
// even when that previous message is the one the append follows; a stale
// cached sequence is refused the same way. Neither is a conflict, so
// appendPrepared tries again for up to Config.RequestTimeout.
func refusedBackoff(n int) time.Duration {
	return 5 * time.Millisecond << min(n, 5) // 5 ms ... 160 ms
}

// appendPrepared appends p synchronously: a publish checked against the
// aggregate's tail; a refusal is settled by reading the stream (an earlier
// attempt landed, or another writer won: ErrConflict), or retried when the
// stream shows the aggregate where p expects it.
func (l *Log) appendPrepared(ctx context.Context, p *prepared) ([]Appended, error) {
	t, err := l.tailFor(ctx, p)
	var refused error
	var giveUp time.Time // set at the first refusal at the expected position
	for attempt := 0; ; attempt++ {
		if err != nil {
			return nil, err
		}
		if t.pos != p.expected {
			return l.settle(ctx, p, t, refused)
		}
		var res []Appended
		if len(p.envs) == 1 {
			res, err = l.publishOne(ctx, p, t.seq)
		} else {
			res, err = l.publishBatch(ctx, p, t.seq)
		}
		if err == nil {
			l.setTail(p.subject, tail{seq: res[len(res)-1].Seq, pos: p.last()})
			l.noteAppended(p, res)
			return res, nil
		}
		l.dropTail(p.subject)
		if !isRace(err) {
			err = l.appendError(p, err)
			if len(p.envs) > 1 && !Unanswered(err) {
				// Refused, but perhaps not whole (ErrPartialBatch).
				if t, lerr := l.lookup(ctx, p.subject, p.agg.Installation); lerr == nil && t.pos > p.expected && t.pos < p.last() {
					if perr := l.partialBatch(ctx, p, t, err); perr != nil {
						return nil, perr
					}
				}
			}
			return nil, err
		}
		refused = err
		if t, err = l.lookup(ctx, p.subject, p.agg.Installation); err != nil || t.pos != p.expected {
			continue // settled at the top of the loop
		}
		// Refused although the aggregate is where p expects it: wait for
		// the server's in-flight state to clear, then publish again.
		if giveUp.IsZero() {
			giveUp = time.Now().Add(l.cfg.RequestTimeout)
		} else if time.Now().After(giveUp) {
			// What keeps refusing it is, on a cluster, most often a stream
			// leader that cannot replicate: a lost quorum (NotServedError
			// says what to check).
			return nil, fmt.Errorf("eventlog: append to %s at position %d: refused although the stream shows the aggregate at position %d (stream seq %d); the append is idempotent, retry it: %w",
				p.subject, p.expected+1, t.pos, t.seq, &NotServedError{Took: l.cfg.RequestTimeout, Tries: attempt + 1, Err: refused})
		}
		l.cfg.Metrics.Retry(telemetry.RetryInFlight)
		l.logger.Debug("eventlog: append refused at the expected position while the server's state settles; sending again",
			append(appendAttrs(l.cfg.Stream, p), "seq", t.seq, "attempt", attempt+1, "err", refused)...)
		select {
		case <-time.After(refusedBackoff(attempt)):
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}

// afterFailedPublish handles the error of a pipelined publish: a refusal
// of the expected sequence is settled by reading the stream, or, with the
// aggregate still where p expects it, retried through appendPrepared;
// anything else is returned.
func (l *Log) afterFailedPublish(ctx context.Context, p *prepared, pubErr error) ([]Appended, error) {
	l.dropTail(p.subject)
	if !isRace(pubErr) {
		return nil, l.appendError(p, pubErr)
	}
	t, err := l.lookup(ctx, p.subject, p.agg.Installation)
	if err != nil {
		return nil, err
	}
	if t.pos != p.expected {
		return l.settle(ctx, p, t, pubErr)
	}
	return l.appendPrepared(ctx, p)
}

// tailFor returns the aggregate's last event as far as it matters for
// appending after p.expected: the cache when it agrees with the caller, no
// lookup at all for a new aggregate (the server checks "no message yet"),
// otherwise the stream's answer.
func (l *Log) tailFor(ctx context.Context, p *prepared) (tail, error) {
	t, ok := l.cachedTail(p.subject)
	if ok && t.pos == p.expected {
		return t, nil
	}
	if !ok && p.expected == 0 {
		return tail{}, nil
	}
	t, err := l.lookup(ctx, p.subject, p.agg.Installation)
	if err != nil || t.seq != 0 || p.expected == 0 {
		return t, err
	}
	// No event on the subject, but the writer expects some: in a history
	// a snapshot carries (compaction mark), an aggregate may have none
	// left on the stream, and its next event goes at the position the
	// writer's read model holds. Published for an empty subject, so a
	// racing writer is still refused; a wrong position is refused by
	// every projection, which knows the aggregate's position.
	carried, err := l.carried(ctx, p.agg.Installation)
	if err != nil || !carried {
		return t, err
	}
	return tail{pos: p.expected}, nil
}

// carried reports whether inst's history on this stream was compacted
// (carried by a snapshot from some sequence on); remembered once true.
func (l *Log) carried(ctx context.Context, inst events.InstallationID) (bool, error) {
	l.mu.Lock()
	known := l.compacted[inst]
	l.mu.Unlock()
	if known {
		return true, nil
	}
	seq, err := l.CompactedThrough(ctx, inst)
	if err != nil || seq == 0 {
		return false, err
	}
	l.mu.Lock()
	if len(l.compacted) >= cacheMax {
		clear(l.compacted)
	}
	l.compacted[inst] = true
	l.mu.Unlock()
	return true, nil
}

// Unanswered reports whether an Append failed for want of an
// answer (the request timed out or was cancelled, the connection dropped or
// is reconnecting), so that its events may be stored and trying again
// decides it; or was refused at the expected position while a cluster's
// in-flight state clears, which Append says to try again.
// A caller that must know the outcome (an operation whose output must not
// be dropped while its events are durable) appends the same events again
// while this holds: Append never stores them twice. Anything else
// (a refusal by the server or before sending, a message too large, a bad
// record on the stream, a missing stream) is an answer: trying again
// cannot mend it.
func Unanswered(err error) bool {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		return isRace(err)
	}
	for _, lost := range []error{
		context.DeadlineExceeded, context.Canceled, nats.ErrTimeout,
		nats.ErrConnectionReconnecting, nats.ErrReconnectBufExceeded,
		nats.ErrDisconnected, nats.ErrStaleConnection, nats.ErrConnectionClosed,
	} {
		if errors.Is(err, lost) {
			return true
		}
	}
	return false
}

// isRace reports whether a publish failed because the aggregate (or the
// message id) was not in the state the publish required.
// appendError describes the refusal err of p's publish: an event over
// the server's max_payload by its kind, position and size
// (ErrEventTooLarge).
func (l *Log) appendError(p *prepared, err error) error {
	if errors.Is(err, nats.ErrMaxPayload) {
		big := 0
		for i, env := range p.envs {
			if len(env) > len(p.envs[big]) {
				big = i
			}
		}
		return fmt.Errorf("%w: append to %s at position %d: event %s sealed to %d bytes, the server's max_payload is %d bytes (raise it on the server): %w",
			ErrEventTooLarge, p.subject, p.expected+uint64(big)+1, p.kinds[big], len(p.envs[big]), l.nc.MaxPayload(), err)
	}
	if limit := storeFull(err); limit != "" {
		return fmt.Errorf("%w: append to %s at position %d: stream %s has reached %s; make room (purge the stream, raise the limit or free the disk) and append again: %w",
			ErrStreamFull, p.subject, p.expected+1, l.cfg.Stream, limit, err)
	}
	if l.srv != nil && !l.srv.JetStreamEnabled() {
		// nats-server switches JetStream off when its store fails (a
		// full disk); appends then go unanswered, which says nothing.
		return fmt.Errorf("eventlog: append to %s at position %d: the embedded server has switched JetStream off, as it does when its store at %s is full or cannot be written (free space there, then start again): %w",
			p.subject, p.expected+1, filepath.Join(l.cfg.DataDir, "jetstream"), err)
	}
	if l.srv != nil {
		// A standalone server whose store cannot write often just does
		// not answer, JetStream still on: say the disk is full when it is.
		store := filepath.Join(l.cfg.DataDir, "jetstream")
		if full := diskspace.Exhausted(store, storeMinFree); full != nil {
			return fmt.Errorf("eventlog: append to %s at position %d: the embedded server's store cannot grow (%w): make room there, then restart the process (the server keeps its store's write error until it starts again): %w",
				p.subject, p.expected+1, full, err)
		}
	}
	return fmt.Errorf("eventlog: append to %s at position %d: %w", p.subject, p.expected+1, err)
}

// storeFull names the limit when err is the server's refusal of a
// publish for want of room, and returns "" otherwise. nats-server answers
// these with status 503 too, as it does a stream without a leader, but
// publishing again cannot succeed before an operator makes room. Of the
// store's refusals (10077, whose description is the store's own error)
// only its limits are: a closed store is a failover.
func storeFull(err error) string {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return ""
	}
	switch ae.ErrorCode {
	case codeAccountResources:
		return "the account's JetStream storage limit"
	case codeInsufficientRes, codeStorageExceeded:
		return "the server's JetStream storage limit (max_file_store) or the end of its disk"
	case codeStreamStoreFailed:
		switch ae.Description {
		case "maximum bytes exceeded":
			return "its max_bytes limit (discard new)"
		case "maximum messages exceeded":
			return "its max_msgs limit (discard new)"
		case "maximum messages per subject exceeded":
			return "its max_msgs_per_subject limit (discard new)"
		}
	}
	return ""
}

func isRace(err error) bool {
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return false
	}
	switch ae.ErrorCode {
	case codeWrongLastSeq, codeWrongLastSeqConstant, codeDupInProcess, codeBatchDuplicate:
		return true
	}
	return false
}

// settle decides an append whose expected position is not the aggregate's
// tail t: a retry of an append that already landed (return its events), a
// conflict, or, when the stream's tail is before the expected position,
// events missing from the stream.
func (l *Log) settle(ctx context.Context, p *prepared, t tail, cause error) ([]Appended, error) {
	if t.pos < p.expected {
		// Another writer only moves a tail forward: the writer saw events
		// of the aggregate (its read model holds them) that the stream no
		// longer gives, deleted or lost. Appending after them, or
		// catching up and trying again, cannot mend that.
		carried := false
		if t.seq == 0 {
			var err error
			if carried, err = l.carried(ctx, p.agg.Installation); err != nil {
				return nil, err
			}
		}
		if !carried {
			return nil, fmt.Errorf("eventlog: append to %s %q of installation %s (subject %s) after position %d: the stream's last event of it is at position %d (stream seq %d): %w; the events the writer holds after it are gone from the stream (verify the read model against the stream: replayer verify)",
				p.agg.Type, p.agg.ID, p.agg.Installation, p.subject, p.expected, t.pos, t.seq, ErrMissingEvent)
		}
	}
	if t.pos >= p.last() {
		res, ok, err := l.findExisting(ctx, p, t)
		if err != nil {
			return nil, err
		}
		if ok {
			return res, nil
		}
	}
	if t.pos > p.expected && t.pos < p.last() {
		// Between p's first and last position: another writer, or only
		// the first of p's own events stored. (A tail before p's first
		// position is a carried aggregate's empty subject: none of p.)
		if err := l.partialBatch(ctx, p, t, cause); err != nil {
			return nil, err
		}
	}
	err := fmt.Errorf("%w: %s %q of installation %s (subject %s) is at position %d (stream seq %d), append expected %d",
		ErrConflict, p.agg.Type, p.agg.ID, p.agg.Installation, p.subject, t.pos, t.seq, p.expected)
	if cause != nil {
		err = fmt.Errorf("%w (server: %v)", err, cause)
	}
	l.cfg.Metrics.Conflict()
	l.logger.Debug("eventlog: append conflict: the aggregate moved past the expected position",
		append(appendAttrs(l.cfg.Stream, p), "expected", p.expected, "position", t.pos, "seq", t.seq)...)
	return nil, err
}

// lookup reads the aggregate's last event from the stream, verifies it and
// caches its sequence and position.
func (l *Log) lookup(ctx context.Context, subject string, inst events.InstallationID) (tail, error) {
	m, err := l.getLastMsg(ctx, subject)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		l.dropTail(subject)
		return tail{}, nil
	}
	if err != nil {
		return tail{}, fmt.Errorf("eventlog: look up last event on %s: %w", subject, err)
	}
	var pos uint64
	ev, err := l.open(ctx, inst, subject, m.Data)
	switch {
	case err == nil:
		pos = ev.Position
	case errors.Is(err, ErrRetainedOut):
		// The aggregate's last event is of a period retention shredded (a
		// group idle since a day that is gone): its position is read from
		// its message id, which the next append's expected-sequence check
		// and every reader's order check hold to account.
		p, ok := events.MessageIDPosition(m.Header.Get(hdrMsgID))
		if !ok {
			return tail{}, l.recordError(subject, m.Sequence, "lookup", err)
		}
		pos = p
	default:
		return tail{}, l.recordError(subject, m.Sequence, "lookup", err)
	}
	t := tail{seq: m.Sequence, pos: pos}
	l.mu.Lock()
	l.tails[subject] = t
	l.mu.Unlock()
	return t, nil
}

// partialBatch returns an error wrapping ErrPartialBatch when the
// aggregate's events after p.expected through its tail t, which is short of
// p's last position, are p's own first events (their message ids match):
// the server stored part of p's batch. It returns nil when they are
// another writer's (or cannot be read: the caller's own error stands).
func (l *Log) partialBatch(ctx context.Context, p *prepared, t tail, cause error) error {
	n := int(t.pos - p.expected)
	res, ok, err := l.findFirst(ctx, p, t, n)
	if err != nil || !ok {
		return nil
	}
	err = fmt.Errorf("%w: append to %s %q of installation %s (subject %s) at positions %d to %d: the server stored the first %d of its %d events (stream seq %d to %d) and not the rest, breaking the batch's atomicity (a storage limit of the server or account reached mid-batch?); the stream holds part of the transition, which appending again cannot mend",
		ErrPartialBatch, p.agg.Type, p.agg.ID, p.agg.Installation, p.subject, p.expected+1, p.last(), n, len(p.envs), res[0].Seq, res[n-1].Seq)
	if cause != nil {
		err = fmt.Errorf("%w (server: %v)", err, cause)
	}
	return err
}

// findExisting looks for p's events on the stream, given that the
// aggregate's tail t is at or past p's last position. It finds the message
// at position p.expected+1 by binary search over stream sequences (positions
// grow with sequences on one subject), then compares message ids.
func (l *Log) findExisting(ctx context.Context, p *prepared, t tail) ([]Appended, bool, error) {
	return l.findFirst(ctx, p, t, len(p.ids))
}

// findFirst is findExisting for p's first n events, with t at or past
// position p.expected+n.
func (l *Log) findFirst(ctx context.Context, p *prepared, t tail, n int) ([]Appended, bool, error) {
	want := p.expected + 1
	// Smallest s such that the first message at or after s has a position
	// of at least want; such a message exists (t itself).
	lo, hi := uint64(1), t.seq
	for lo < hi {
		mid := lo + (hi-lo)/2
		m, pos, err := l.nextOnSubject(ctx, p, mid)
		if err != nil {
			return nil, false, err
		}
		if pos >= want {
			hi = mid
		} else {
			lo = m.Sequence + 1
		}
	}
	res := make([]Appended, 0, n)
	seq := hi
	for i, id := range p.ids[:n] {
		m, pos, err := l.nextOnSubject(ctx, p, seq)
		if err != nil {
			return nil, false, err
		}
		if pos != want+uint64(i) || m.Header.Get(hdrMsgID) != id {
			return nil, false, nil
		}
		res = append(res, Appended{Seq: m.Sequence, Subject: p.subject, Position: pos, Duplicate: true, Size: len(m.Data)})
		seq = m.Sequence + 1
	}
	return res, true, nil
}

// nextOnSubject returns the first message of p's subject at or after seq,
// and its position (from its message id, or by opening it).
func (l *Log) nextOnSubject(ctx context.Context, p *prepared, seq uint64) (*jetstream.RawStreamMsg, uint64, error) {
	m, err := l.getMsg(ctx, seq, jetstream.WithGetMsgSubject(p.subject))
	if err != nil {
		return nil, 0, fmt.Errorf("eventlog: find events on %s from seq %d: %w", p.subject, seq, err)
	}
	if pos, ok := events.MessageIDPosition(m.Header.Get(hdrMsgID)); ok {
		return m, pos, nil
	}
	ev, err := l.open(ctx, p.agg.Installation, p.subject, m.Data)
	if err != nil {
		return nil, 0, l.recordError(p.subject, m.Sequence, "lookup", err)
	}
	return m, ev.Position, nil
}

// message builds the NATS message for p's i-th event. Only the first event
// carries the expected last subject sequence: the server refuses the check
// on a subject already written earlier in the same batch.
func (l *Log) message(p *prepared, i int, lastSeq uint64, batchID string) *nats.Msg {
	h := nats.Header{hdrMsgID: []string{p.ids[i]}}
	if i == 0 {
		h[hdrExpectedSeq] = []string{strconv.FormatUint(lastSeq, 10)}
	}
	if batchID != "" {
		h[hdrBatchID] = []string{batchID}
		h[hdrBatchSeq] = []string{strconv.Itoa(i + 1)}
		if i == len(p.envs)-1 {
			h[hdrBatchCommit] = []string{"1"}
		}
	}
	return &nats.Msg{Subject: p.subject, Header: h, Data: p.envs[i]}
}

func (l *Log) publishOne(ctx context.Context, p *prepared, lastSeq uint64) ([]Appended, error) {
	ack, err := l.js.PublishMsg(ctx, l.message(p, 0, lastSeq, ""))
	if err != nil {
		return nil, err
	}
	return []Appended{{Seq: ack.Sequence, Subject: p.subject, Position: p.last(), Duplicate: ack.Duplicate, Size: len(p.envs[0])}}, nil
}

// publishBatch publishes p's events as one atomic batch: all but the last
// without a reply (the server stages them), the last with the commit header
// as a request whose reply is the batch's PubAck.
func (l *Log) publishBatch(ctx context.Context, p *prepared, lastSeq uint64) ([]Appended, error) {
	id := newBatchID()
	n := len(p.envs)
	for i := 0; i < n-1; i++ {
		if err := l.nc.PublishMsg(l.message(p, i, lastSeq, id)); err != nil {
			return nil, fmt.Errorf("publish batch message %d of %d: %w", i+1, n, err)
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, l.cfg.RequestTimeout)
		defer cancel()
	}
	resp, err := l.nc.RequestMsgWithContext(ctx, l.message(p, n-1, lastSeq, id))
	if err != nil {
		return nil, fmt.Errorf("commit batch of %d: %w", n, err)
	}
	ack, err := parseBatchAck(resp.Data, n)
	if err != nil {
		return nil, err
	}
	// A committed batch is stored contiguously (the server holds the
	// stream's isolation lock across the commit, or proposes it as one
	// multi-entry), so the sequences end at the acknowledged one.
	res := make([]Appended, n)
	for i := range res {
		res[i] = Appended{Seq: ack.Seq - uint64(n-1-i), Subject: p.subject, Position: p.expected + uint64(i) + 1, Size: len(p.envs[i])}
	}
	return res, nil
}

// newBatchID returns a fresh batch id. Batch ids are random, not derived from
// the events: a retry must not join a half-staged earlier attempt.
func newBatchID() string { return nuid.Next() }

// batchAck is the PubAck of an atomic batch commit.
type batchAck struct {
	Stream string              `json:"stream"`
	Seq    uint64              `json:"seq"`
	Batch  string              `json:"batch"`
	Count  int                 `json:"count"`
	Error  *jetstream.APIError `json:"error"`
}

// parseBatchAck reads the PubAck of the commit of a batch of n messages:
// an acknowledgement of another count, or of a last sequence the batch
// cannot end at, is an error.
func parseBatchAck(data []byte, n int) (batchAck, error) {
	var a batchAck
	if err := json.Unmarshal(data, &a); err != nil {
		return a, fmt.Errorf("commit batch: invalid PubAck: %w", err)
	}
	if a.Error != nil {
		return a, fmt.Errorf("commit batch: %w", a.Error)
	}
	if a.Stream == "" || a.Seq == 0 {
		return a, fmt.Errorf("commit batch: invalid PubAck %q", data)
	}
	return a, checkBatchAck(n, a.Count, a.Seq)
}

// checkBatchAck checks a batch commit's PubAck, of count messages (0:
// not said) ending at stream sequence last, against the batch of n
// messages it acknowledges, for Append and AppendBulk alike.
func checkBatchAck(n, count int, last uint64) error {
	if count != 0 && count != n {
		return fmt.Errorf("commit batch of %d: server acknowledged %d messages", n, count)
	}
	return checkBatchEnd(n, last)
}

// checkBatchEnd checks that a batch of n messages can end at stream
// sequence last: its first message is at last-(n-1), which is at least
// 1. A PubAck naming an earlier one would make the batch's sequences
// wrap around below zero.
func checkBatchEnd(n int, last uint64) error {
	if n > 0 && last < uint64(n) {
		return fmt.Errorf("commit batch of %d: the PubAck names stream sequence %d as the batch's last, which leaves no room for the batch before it", n, last)
	}
	return nil
}
