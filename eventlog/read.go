package eventlog

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/nats-io/nats.go/jetstream"
)

// Record is one verified event read from the stream.
type Record struct {
	// Seq is the event's stream sequence: the checkpoint to resume after.
	Seq uint64
	// Subject is the subject it was stored on.
	Subject string
	// Event is the opened event (its body upcast to the current version).
	Event events.Event
	// Pending is, from Read and Follow (and their plural forms), the
	// server's count of the read's events after this one that it had not
	// delivered yet when it sent this one: 0 means the read was at the
	// stream's end (for the installations read together, not each one).
	// ReadN leaves it 0: it does not know.
	Pending uint64
	// Size is the event's size on the stream: its sealed envelope, in
	// bytes. A reader that holds records before applying them (a replay's
	// batches) bounds what it holds by it.
	Size int
	// Stored is when the server stored the event (its timestamp): an
	// event stored before it has a lower stream sequence (within the
	// clock skew between a cluster's nodes, across a leader change).
	Stored time.Time
}

// Read calls fn for each of inst's events with a stream sequence at or after
// fromSeq (0 and 1 both mean from the start), in stream order, and returns
// when it has delivered every event that was in the stream when Read began.
// See ReadInstallations for the checks made on every record. An erased
// installation is its *ErasedError (ErrErased), whatever fromSeq: from
// the start it is checked before reading, from later when the read
// delivered nothing of it, which would otherwise return nothing and no
// error.
func (l *Log) Read(ctx context.Context, inst events.InstallationID, fromSeq uint64, fn func(Record) error) error {
	return l.scan(ctx, []events.InstallationID{inst}, fromSeq, false, fn)
}

// Follow is Read that does not stop at the end: it keeps delivering new
// events as they are appended until ctx is cancelled (it then returns
// ctx's error) or the Log is closed (ErrClosed). A NATS disconnect or server restart in between loses
// nothing and delivers nothing twice: delivery resumes after the last
// sequence handed to fn. An erase of the installation (Erase) ends it
// with an *ErasedError (ErrErased) as soon as the tombstone is written:
// the follow reads the tombstone's subject too, or it would wait, for
// good, on subjects the erase purged. One erased before Follow is called
// ends it at once, whatever fromSeq.
func (l *Log) Follow(ctx context.Context, inst events.InstallationID, fromSeq uint64, fn func(Record) error) error {
	return l.scan(ctx, []events.InstallationID{inst}, fromSeq, true, fn)
}

// ReadInstallations is Read over several installations at once, merged in
// stream order (one consumer with one filter per installation).
//
// Every record is opened and verified with the keyring (events.Open, bound
// to the stream and the record's actual subject), its subject must be the
// one its aggregate maps to, and positions must be contiguous per
// aggregate: 1, 2, 3... from the start of the stream. When reading from a
// later sequence, the first event seen of each aggregate is taken as is
// (its predecessors are before fromSeq); the caller that checkpointed
// knows the position to expect. Any failure stops the read with a
// *RecordError naming stream, subject and sequence, wrapping the cause
// (events.ErrTampered, events.ErrWrongKey, events.ErrMoved, ErrOutOfOrder,
// ...). An error returned by fn stops the read too, wrapped the same way.
func (l *Log) ReadInstallations(ctx context.Context, insts []events.InstallationID, fromSeq uint64, fn func(Record) error) error {
	return l.scan(ctx, insts, fromSeq, false, fn)
}

// FollowInstallations is Follow over several installations at once. The
// erase of any of them ends it with that installation's *ErasedError.
func (l *Log) FollowInstallations(ctx context.Context, insts []events.InstallationID, fromSeq uint64, fn func(Record) error) error {
	return l.scan(ctx, insts, fromSeq, true, fn)
}

// LastSeq returns the stream sequence of inst's last event, or 0 if it has
// none. An erased installation (one with a tombstone) is an *ErasedError
// (ErrErased), so that a rebuild or verify of it says so.
func (l *Log) LastSeq(ctx context.Context, inst events.InstallationID) (uint64, error) {
	f, err := l.InstallationFilter(inst)
	if err != nil {
		return 0, err
	}
	if err := l.CheckNotErased(ctx, inst); err != nil {
		return 0, err
	}
	return l.lastSeq(ctx, []string{f})
}

func (l *Log) lastSeq(ctx context.Context, filters []string) (uint64, error) {
	var last uint64
	for _, f := range filters {
		m, err := l.getLastMsg(ctx, f)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			continue
		}
		if err != nil {
			return 0, fmt.Errorf("eventlog: stream %s: last message on %s: %w", l.cfg.Stream, f, err)
		}
		last = max(last, m.Sequence)
	}
	return last, nil
}

// reader holds the state of one Read or Follow.
type reader struct {
	l     *Log
	insts map[string]events.InstallationID // by installation pseudonym
	from  uint64
	next  uint64            // the next stream sequence to deliver
	pos   map[string]uint64 // by subject: position of the last event delivered
	links *linkChecker
	// lastProgress is when the read last delivered a record, or found
	// nothing pending (follow), or started.
	lastProgress time.Time
	fn           func(Record) error
	prefix       string
	// silent is set when the server stopped answering a stalled read: its
	// consumer is not deleted (the request would wait out its timeout).
	silent atomic.Bool
	// tombs are the tombstone subjects a follow reads, by subject: one
	// delivered ends the follow with the installation's *ErasedError.
	tombs map[string]events.InstallationID
	// tombOf is the tombstone subject of each installation filter of a
	// follow, for its watchdog.
	tombOf map[string]string
	// got holds the installations the read delivered a record of.
	got map[events.InstallationID]bool
}

// silentErased is what ends a read from past the start (fromSeq > 1)
// that finished with err (nil, or stalled): the *ErasedError of one of
// its installations it delivered nothing of, if one has a tombstone
// (its events are purged: such a read finds nothing and would say
// nothing). A read from the start checks before it begins; one
// that delivered records of every installation asks nothing.
func (r *reader) silentErased(ctx context.Context, err error) error {
	if r.from <= 1 || (err != nil && !errors.Is(err, ErrStalled)) {
		return err
	}
	for _, inst := range r.insts {
		if r.got[inst] {
			continue
		}
		if eerr := r.l.CheckNotErased(ctx, inst); errors.Is(eerr, ErrErased) {
			return eerr
		} else if eerr != nil && err == nil {
			return eerr
		}
	}
	return err
}

// scan is Read, Follow and their plural forms; a stalled read is logged.
func (l *Log) scan(ctx context.Context, insts []events.InstallationID, fromSeq uint64, follow bool, fn func(Record) error) error {
	r, filters, err := l.rangeReader(insts, fromSeq, fn)
	if err != nil {
		return err
	}
	if follow {
		// A follow reads its installations' tombstone subjects too: an
		// erase while it runs purges the subjects it reads, and would
		// leave it waiting for good. One subject each, exact: another
		// installation's erase delivers nothing here.
		r.tombs = make(map[string]events.InstallationID, len(r.insts))
		r.tombOf = make(map[string]string, len(r.insts))
		for _, inst := range r.insts {
			// One erased already ends it at once: a follow from past
			// its tombstone (a checkpoint after it) would never be
			// delivered it, and would wait for good.
			if err := l.CheckNotErased(ctx, inst); err != nil {
				return err
			}
			subj, err := l.TombstoneSubject(inst)
			if err != nil {
				return err
			}
			if _, dup := r.tombs[subj]; !dup {
				r.tombs[subj] = inst
				filters = append(filters, subj)
			}
			if f, err := l.InstallationFilter(inst); err == nil {
				r.tombOf[f] = subj
			}
		}
	}
	err = r.run(ctx, filters, follow)
	if !follow {
		err = r.silentErased(ctx, err)
	}
	return l.rangeStalled(err, insts)
}

// ReadSubject is Read of one of inst's subjects (an aggregate's, as
// Subject names it): its events with a stream sequence at or after
// fromSeq, in stream order, through one consumer. It is the way to read a
// long history of one aggregate, which ReadN reads with a message get per
// event. Records are checked as ReadInstallations checks them, but for
// the links between events, which run across the installation's other
// subjects (as in ReadN).
func (l *Log) ReadSubject(ctx context.Context, inst events.InstallationID, subject string, fromSeq uint64, fn func(Record) error) error {
	if l.closed.Load() {
		return ErrClosed
	}
	r := l.newReader(fromSeq, fn)
	f, err := l.InstallationFilter(inst)
	if err != nil {
		return err
	}
	p := strings.TrimSuffix(strings.TrimPrefix(f, r.prefix), ".>")
	if !strings.HasPrefix(subject, r.prefix+p+".") || strings.ContainsAny(subject, "*>") {
		return fmt.Errorf("eventlog: read %s: subject %q is not one of the installation's subjects", inst, subject)
	}
	r.insts[p] = inst
	if r.from <= 1 {
		if err := l.CheckNotErased(ctx, inst); err != nil {
			return err
		}
	}
	return l.rangeStalled(r.silentErased(ctx, r.run(ctx, []string{subject}, false)), []events.InstallationID{inst})
}

// newReader returns a read from stream sequence fromSeq (0 and 1: from
// the start) handing its records to fn, for its caller to give the
// installations it reads and a link checker (none: links are not
// checked).
func (l *Log) newReader(fromSeq uint64, fn func(Record) error) *reader {
	fromSeq = max(fromSeq, 1)
	return &reader{l: l, insts: map[string]events.InstallationID{}, from: fromSeq, next: fromSeq,
		pos: map[string]uint64{}, fn: fn, prefix: l.cfg.SubjectPrefix + ".", lastProgress: time.Now(),
		got: map[events.InstallationID]bool{}}
}

// run reads the subjects of filters (r's installations', or narrower).
func (r *reader) run(ctx context.Context, filters []string, follow bool) error {
	l, fromSeq := r.l, r.from
	var end uint64
	var counts map[string]uint64 // the server's message count per subject, for a whole history
	if !follow {
		var err error
		if fromSeq <= 1 {
			// A whole history of an erased installation is refused
			// (its events are purged, or unreadable).
			for _, inst := range r.insts {
				if err := l.CheckNotErased(ctx, inst); err != nil {
					return err
				}
			}
			// Counted before the end is fixed: what is appended meanwhile
			// only adds to what the read gets.
			if counts, err = l.subjectCounts(ctx, filters); err != nil {
				return err
			}
		}
		if end, err = l.lastSeq(ctx, filters); err != nil {
			return err
		}
		if end < fromSeq {
			return checkCounts(l.cfg.Stream, counts, r.pos)
		}
	}
	// The ordered consumer already recreates itself after disconnects and
	// server restarts; this loop is for what it gives up on. It restarts
	// after the last delivered sequence, so nothing repeats.
	backoff := 50 * time.Millisecond
	var failingSince time.Time // when the current run of failed consumers began
	for {
		runStart := time.Now()
		done, err := r.consume(ctx, filters, end, follow)
		if err == nil && !follow {
			return checkCounts(l.cfg.Stream, counts, r.pos)
		}
		if done || err == nil {
			return err
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if l.closed.Load() {
			return fmt.Errorf("%w (after seq %d)", ErrClosed, r.next-1)
		}
		var rerr *RecordError
		if errors.As(err, &rerr) || !follow {
			return err
		}
		// Follow outlives a server restart or a failover, but not a
		// server gone, or a stream stuck, for longer than the bound.
		if failingSince.IsZero() || r.lastProgress.After(runStart) {
			failingSince = time.Now() // a new run of failures begins
			l.logger.Warn("eventlog: follow lost its consumer; resuming after the last delivered event",
				"stream", l.cfg.Stream, "seq", r.next-1, "err", err)
		} else {
			l.logger.Debug("eventlog: follow still without a consumer; trying again",
				"stream", l.cfg.Stream, "seq", r.next-1, "duration", time.Since(failingSince).Round(time.Millisecond).String(), "err", err)
		}
		if since := time.Since(failingSince); since > l.cfg.ProgressTimeout {
			return fmt.Errorf("%w: following %s: no progress for %v after seq %d: %w", ErrStalled, strings.Join(filters, ", "), since.Round(time.Second), r.next-1, err)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

// consume runs one ordered consumer from r.next. It returns done=true when
// the read is complete (or failed for good), false with a transport error
// that is worth a new consumer.
func (r *reader) consume(ctx context.Context, filters []string, end uint64, follow bool) (bool, error) {
	l := r.l
	cons, err := l.orderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects: filters,
		DeliverPolicy:  jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:    r.next,
		// The server reaps a consumer whose reader vanished (crash, lost
		// connection) after this long; a clean stop deletes it at once.
		InactiveThreshold: consumerInactiveThreshold,
	})
	if err != nil {
		return false, fmt.Errorf("eventlog: stream %s: create ordered consumer from seq %d: %w", l.cfg.Stream, r.next, err)
	}
	defer r.deleteConsumer(cons)
	it, err := cons.Messages(l.readPull()...)
	if err != nil {
		return false, fmt.Errorf("eventlog: stream %s: consume from seq %d: %w", l.cfg.Stream, r.next, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	// The watchdog looks for undelivered events on the installations'
	// subjects, and on the tombstone subject only of one that holds no
	// event (an erase purged them; see watchdog.pending): asking for
	// every tombstone subject would double an idle follow's requests,
	// for a message that comes once, if ever.
	watched := filters
	if len(r.tombs) > 0 {
		watched = slices.DeleteFunc(slices.Clone(filters), func(f string) bool { _, t := r.tombs[f]; return t })
	}
	wd := r.watch(ctx, it, watched, end, follow)
	defer wd.done()
	for {
		// it.Stop runs after ctx ends, but in a goroutine of its own:
		// until it does, Next hands out what the consumer holds, and a
		// read cancelled by its own handler could finish as if not.
		if err := ctx.Err(); err != nil {
			return true, err
		}
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return true, ctx.Err()
			}
			if serr := wd.stalled(); serr != nil {
				return !follow, serr
			}
			return false, fmt.Errorf("eventlog: stream %s: next message after seq %d: %w", l.cfg.Stream, r.next-1, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return true, l.recordError(m.Subject(), r.next, "metadata", err)
		}
		seq := md.Sequence.Stream
		if seq < r.next {
			// Already delivered before a consumer restart.
			continue
		}
		wd.handling(true) // the time the caller's handler takes is not the server's
		err = r.deliver(ctx, seq, m.Subject(), m.Data(), md.NumPending, md.Timestamp)
		wd.handling(false)
		if err != nil {
			return true, err
		}
		r.next = seq + 1
		wd.progress()
		if !follow && seq >= end {
			return true, nil
		}
		if !follow && md.NumPending == 0 {
			// The consumer sees nothing more, but its count can lag the
			// stream (a replicated stream just after a burst of appends):
			// done only if the stream agrees, else read on.
			if last, err := r.lastSeqBounded(ctx, filters); err == nil && last <= seq {
				return true, nil
			}
		}
	}
}

// readHeartbeat is the idle heartbeat of a read's consumer: two missed
// ones (its node died, or the connection did) make the client recreate the
// consumer elsewhere. The client's default, 5s, stalls a read or a follow
// 10s on a cluster node's loss; 2s costs one small message per idle
// follower every 2s.
const readHeartbeat = 2 * time.Second

// readPrefetch is how many messages a read's consumer asks the server for
// at a time (nats.go's default).
const readPrefetch = 500

// minReadRequestBytes and readRequestSlack size readRequestBytes.
const (
	minReadRequestBytes = 8 << 20
	readRequestSlack    = 64 << 10 // the subject, the headers, the protocol
)

// readPull is the pull options of a read's consumer: readPrefetch
// messages a request, and no more bytes a request than readRequestBytes.
func (l *Log) readPull() []jetstream.PullMessagesOpt {
	return []jetstream.PullMessagesOpt{
		jetstream.PullHeartbeat(readHeartbeat),
		jetstream.PullMaxMessagesWithBytesLimit(readPrefetch, l.readRequestBytes()),
	}
}

// readRequestBytes bounds the bytes of one pull request of a read's
// consumer. A count alone buffers in the client whatever that many events
// weigh: 500 commits carrying a group's state, or events up to the
// embedded server's 8 MiB max_payload, are hundreds of MiB to gigabytes
// delivered ahead of the reader. A request must be able to carry the
// largest message the server accepts, or the consumer stalls on it:
// max_payload, with room for the subject and headers. A read holds about
// two requests' worth at most.
func (l *Log) readRequestBytes() int {
	return max(minReadRequestBytes, int(l.nc.MaxPayload())+readRequestSlack)
}

// consumerInactiveThreshold bounds how long an abandoned read's consumer
// lingers on the server. Streams cap their consumers, so many short reads
// must not pile up.
const consumerInactiveThreshold = 30 * time.Second

// deleteConsumer removes a finished read's consumer. It is best effort: if
// the delete fails (connection gone, server busy) the server still reaps the
// consumer after consumerInactiveThreshold, and the read's outcome stands.
func (r *reader) deleteConsumer(cons jetstream.Consumer) {
	info := cons.CachedInfo()
	if info == nil || r.l.closed.Load() || r.silent.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), r.l.cfg.RequestTimeout)
	defer cancel()
	_ = r.l.stream.DeleteConsumer(ctx, info.Name)
}

// deliver verifies one record and hands it to fn.
func (r *reader) deliver(ctx context.Context, seq uint64, subject string, data []byte, pending uint64, stored time.Time) error {
	l := r.l
	if inst, ok := r.tombs[subject]; ok {
		return r.erased(inst, seq, subject, data)
	}
	rest, ok := strings.CutPrefix(subject, r.prefix)
	instP, _, _ := strings.Cut(rest, ".")
	inst, known := r.insts[instP]
	if !ok || !known {
		// The consumer's filters make this unreachable unless the server
		// misbehaves; refuse rather than guess the installation.
		return l.recordError(subject, seq, "subject", fmt.Errorf("%w: subject is not one of the requested installations'", events.ErrMoved))
	}
	ev, err := l.open(ctx, inst, subject, data)
	if err != nil {
		return l.recordError(subject, seq, "open", err)
	}
	want, err := l.Subject(ev.Aggregate)
	if err != nil || want != subject {
		return l.recordError(subject, seq, "subject", fmt.Errorf("%w: event of %s %q belongs on %s", events.ErrMoved, ev.Aggregate.Type, ev.Aggregate.ID, want))
	}
	last, seen := r.pos[subject]
	switch {
	case seen && ev.Position == last:
		return l.recordError(subject, seq, "order", fmt.Errorf("%w: position %d repeats the previous event", ErrOutOfOrder, ev.Position))
	case seen && ev.Position != last+1:
		return l.recordError(subject, seq, "order", fmt.Errorf("%w: position %d after position %d", ErrOutOfOrder, ev.Position, last))
	case !seen && r.from <= 1 && ev.Position != 1:
		return l.recordError(subject, seq, "order", fmt.Errorf("%w: first event of the aggregate has position %d, want 1", ErrOutOfOrder, ev.Position))
	}
	if r.links == nil {
		l.noteHead(inst, events.LinkTo(seq, data))
	} else if err := r.links.check(ctx, inst, seq, ev, data); err != nil {
		return l.recordError(subject, seq, "chain", err)
	}
	r.pos[subject] = ev.Position
	r.got[inst] = true
	if err := r.fn(Record{Seq: seq, Subject: subject, Event: ev, Pending: pending, Size: len(data), Stored: stored}); err != nil {
		return l.recordError(subject, seq, "handle", err)
	}
	return nil
}

// erased opens the tombstone of inst a follow was delivered (at stream
// sequence seq on subject) and returns the *ErasedError that ends the
// follow. A message there that does not open as inst's tombstone (anyone
// who may publish on the stream's subjects can put one there) is passed
// over with a Warn log naming it: the installation is not erased by it,
// and a *RecordError would end a follow of a live installation.
func (r *reader) erased(inst events.InstallationID, seq uint64, subject string, data []byte) error {
	l := r.l
	t, err := events.OpenTombstone(l.keys, inst, l.binding(subject), data)
	if err != nil {
		l.logger.Warn("eventlog: a message on the tombstone subject is not the installation's tombstone; ignored (the installation is not erased)",
			"stream", l.cfg.Stream, "installation", string(inst), "subject", subject, "seq", seq, "why", notTombstoneWhy(err),
			"remedy", fmt.Sprintf("nats stream rmm %s %d", l.cfg.Stream, seq))
		return nil
	}
	l.noteErased(inst, t, seq)
	return &ErasedError{Stream: l.cfg.Stream, Installation: inst, ErasedAt: t.ErasedAt, By: t.By, Seq: seq}
}

// ReadN fetches up to limit of inst's records on subjects matching
// filter from stream sequence from on, one message get each ("next message
// at or after sequence N on these subjects"), and calls fn for each. It
// creates no consumer, which makes it the cheap way to read the few events
// an operation needs. Each record is opened and verified and must sit on
// its aggregate's subject, as in Read. It returns how many records it
// delivered and the sequence to continue from; fewer than limit means the
// end was reached. Finding nothing, it does not tell an erased
// installation (its events purged) from one with nothing new: it is the
// read after every operation, where that would cost a request each time
// (the engine asks CheckNotErased when it opens an installation, and an
// append to an erased one fails with its *ErasedError).
//
// ReadN carries on across a stream-leader failover: each message get is
// bounded by Config.RequestTimeout, and one the server leaves unanswered,
// or answers that the stream has no leader right now, is asked again after
// a pause (50 ms, doubling, at most 1 s). A get unanswered for
// Config.ProgressTimeout ends the read with ErrStalled, naming the stream
// sequence it was reading after (ctx may end it sooner).
func (l *Log) ReadN(ctx context.Context, inst events.InstallationID, filter string, from uint64, limit int, fn func(Record) error) (int, uint64, error) {
	// get returns the first message on filter at or after seq (or
	// jetstream.ErrMsgNotFound), asking again until it has an answer.
	get := func(seq uint64) (*jetstream.RawStreamMsg, error) {
		start := time.Now()
		giveUp := start.Add(l.cfg.ProgressTimeout)
		for attempt := 0; ; attempt++ {
			actx, cancel := context.WithTimeout(ctx, max(min(l.cfg.RequestTimeout, time.Until(giveUp)), time.Millisecond))
			m, err := l.getMsg(actx, seq, jetstream.WithGetMsgSubject(filter))
			cancel()
			switch {
			case err == nil, errors.Is(err, jetstream.ErrMsgNotFound):
				return m, err
			case ctx.Err() != nil:
				return nil, fmt.Errorf("eventlog: stream %s: fetch %s after seq %d: %w", l.cfg.Stream, inst, seq-1, ctx.Err())
			case l.closed.Load():
				return nil, fmt.Errorf("%w (fetching %s after seq %d)", ErrClosed, inst, seq-1)
			case !unanswered(err):
				return nil, fmt.Errorf("eventlog: stream %s: fetch %s after seq %d: %w", l.cfg.Stream, inst, seq-1, err)
			case !time.Now().Before(giveUp):
				return nil, l.logStalled(fmt.Errorf("%w: stream %s: fetch %s after seq %d: no answer for %v (%d tries): %w",
					ErrStalled, l.cfg.Stream, inst, seq-1, time.Since(start).Round(time.Millisecond), attempt+1, err), string(inst))
			}
			l.logger.Debug("eventlog: message get unanswered; asking again", "stream", l.cfg.Stream, "installation", string(inst),
				"seq", seq-1, "attempt", attempt+1, "err", err)
			select {
			case <-ctx.Done():
				return nil, fmt.Errorf("eventlog: stream %s: fetch %s after seq %d: %w (last try: %v)", l.cfg.Stream, inst, seq-1, ctx.Err(), err)
			case <-time.After(min(50*time.Millisecond<<min(attempt, 5), time.Second, time.Until(giveUp))):
			}
		}
	}
	next := max(from, 1)
	n := 0
	// Links can be checked only when every event of the installation
	// passes the filter; a narrower read still teaches the Log its head.
	var links *linkChecker
	if all, err := l.InstallationFilter(inst); err == nil && all == filter {
		links = newLinkChecker(l, next, 1)
	}
	for n < limit {
		m, err := get(next)
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return n, next, err
		}
		ev, err := l.open(ctx, inst, m.Subject, m.Data)
		if err != nil {
			return n, next, l.recordError(m.Subject, m.Sequence, "open", err)
		}
		if want, err := l.Subject(ev.Aggregate); err != nil || want != m.Subject {
			return n, next, l.recordError(m.Subject, m.Sequence, "subject", fmt.Errorf("%w: event of %s %q belongs on %s", events.ErrMoved, ev.Aggregate.Type, ev.Aggregate.ID, want))
		}
		if links != nil {
			if err := links.check(ctx, inst, m.Sequence, ev, m.Data); err != nil {
				return n, next, l.recordError(m.Subject, m.Sequence, "chain", err)
			}
		} else {
			l.noteHead(inst, events.LinkTo(m.Sequence, m.Data))
		}
		if err := fn(Record{Seq: m.Sequence, Subject: m.Subject, Event: ev, Size: len(m.Data), Stored: m.Time}); err != nil {
			return n, next, l.recordError(m.Subject, m.Sequence, "handle", err)
		}
		n++
		next = m.Sequence + 1
	}
	return n, next, nil
}

// subjectCounts returns the server's count of messages per subject under
// filters.
func (l *Log) subjectCounts(ctx context.Context, filters []string) (map[string]uint64, error) {
	out := map[string]uint64{}
	for _, f := range filters {
		info, err := l.streamInfo(ctx, jetstream.WithSubjectFilter(f))
		if err != nil {
			return nil, fmt.Errorf("eventlog: stream %s: subjects of %s: %w", l.cfg.Stream, f, err)
		}
		for subj, n := range info.State.Subjects {
			out[subj] = n
		}
	}
	return out, nil
}

// checkCounts compares a whole history's read (delivered: the last
// position read per subject, which is the number of its events, positions
// being contiguous from 1) with the server's own count per subject: a
// message the server counts but did not deliver (one it skipped, unable to
// load it) is missing even at the tail of its aggregate, where neither
// positions nor links can show it.
func checkCounts(stream string, counts, delivered map[string]uint64) error {
	var missing []string
	for subj, n := range counts {
		if got := delivered[subj]; got < n {
			missing = append(missing, fmt.Sprintf("%s: %d of %d", subj, got, n))
		}
	}
	if len(missing) == 0 {
		return nil
	}
	slices.Sort(missing)
	if len(missing) > 3 {
		missing = append(missing[:3], fmt.Sprintf("and %d more subjects", len(missing)-3))
	}
	return fmt.Errorf("%w: stream %s counts more events than it delivered (subject: delivered of counted): %s", ErrMissingEvent, stream, strings.Join(missing, "; "))
}

// lastSeqBounded is lastSeq under the Log's request timeout.
func (r *reader) lastSeqBounded(ctx context.Context, filters []string) (uint64, error) {
	ctx, cancel := context.WithTimeout(ctx, r.l.cfg.RequestTimeout)
	defer cancel()
	return r.l.lastSeq(ctx, filters)
}
