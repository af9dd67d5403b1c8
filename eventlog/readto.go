package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// Reading back what was just appended. A caller that appended events for
// several installations and wants them (with whatever else those
// installations got meanwhile) knows the last sequence it needs from its
// acknowledgements, so it need not ask the stream for the end, as Read
// does with one request per installation, nor fetch the events one
// message get at a time, as ReadN does.

// ReadInstallationsTo is ReadInstallations with the end named by the
// caller: it delivers the installations' events with stream sequences
// from fromSeq (0 and 1 both mean from the start) through toSeq, in stream
// order, with one consumer filtered on the installations, and returns
// once it has delivered the event at toSeq (or, should the stream hold
// none of theirs there, the last of theirs before it). Events appended
// after toSeq may or may not be delivered too; none is skipped before it.
// toSeq should be the sequence of one of their events (an append's
// acknowledgement gives it): if none of their events lies between fromSeq
// and toSeq, the read waits for one until Config.ProgressTimeout.
//
// Every record is checked as in ReadInstallations (opened, on its
// aggregate's subject, positions and links contiguous after the first
// event seen of each aggregate); a failure stops the read with a
// *RecordError.
func (l *Log) ReadInstallationsTo(ctx context.Context, insts []events.InstallationID, fromSeq, toSeq uint64, fn func(Record) error) error {
	r, filters, err := l.rangeReader(insts, fromSeq, fn)
	if err != nil || toSeq < r.from {
		return err
	}
	_, err = r.consume(ctx, filters, toSeq, false)
	return l.rangeStalled(r.silentErased(ctx, err), insts)
}

// ScanTo is ReadInstallationsTo reading the whole stream between fromSeq
// and toSeq with one unfiltered consumer, passing over (unopened) the
// events of installations other than insts. It is the cheaper read when
// the installations' events fill most of the range, as right after a
// batch of their appends: the server then streams what it holds, where a
// consumer filtered on many installations has each message matched
// against every filter. Its records, their checks and its end are
// ReadInstallationsTo's.
func (l *Log) ScanTo(ctx context.Context, insts []events.InstallationID, fromSeq, toSeq uint64, fn func(Record) error) error {
	r, _, err := l.rangeReader(insts, fromSeq, fn)
	if err != nil || toSeq < r.from {
		return err
	}
	return l.rangeStalled(r.silentErased(ctx, r.scan(ctx, toSeq)), insts)
}

// rangeReader is the reader of insts from fromSeq (Read, Follow, their
// plural forms and the range reads) and the filters it reads.
func (l *Log) rangeReader(insts []events.InstallationID, fromSeq uint64, fn func(Record) error) (*reader, []string, error) {
	if l.closed.Load() {
		return nil, nil, ErrClosed
	}
	if len(insts) == 0 {
		return nil, nil, errors.New("eventlog: read: no installations given")
	}
	r := l.newReader(fromSeq, fn)
	r.links = newLinkChecker(l, r.from, len(insts))
	filters := make([]string, 0, len(insts))
	for _, inst := range insts {
		f, err := l.InstallationFilter(inst)
		if err != nil {
			return nil, nil, err
		}
		p := strings.TrimSuffix(strings.TrimPrefix(f, r.prefix), ".>")
		if _, dup := r.insts[p]; dup {
			continue
		}
		r.insts[p] = inst
		filters = append(filters, f)
	}
	return r, filters, nil
}

// rangeStalled logs a range read that stalled.
func (l *Log) rangeStalled(err error, insts []events.InstallationID) error {
	if errors.Is(err, ErrStalled) {
		names := make([]string, len(insts))
		for i, inst := range insts {
			names[i] = string(inst)
		}
		l.logStalled(err, strings.Join(names, ","))
	}
	return err
}

// scan runs one consumer on all of the Log's subjects from r.next and
// delivers r's installations' records up to end (see consume, which it
// follows for a read that ends).
func (r *reader) scan(ctx context.Context, end uint64) error {
	l := r.l
	// No filter: the stream holds the Log's subjects only, and the server
	// streams an unfiltered consumer's messages without matching them.
	cons, err := l.orderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       r.next,
		InactiveThreshold: consumerInactiveThreshold,
	})
	if err != nil {
		return fmt.Errorf("eventlog: stream %s: create ordered consumer from seq %d: %w", l.cfg.Stream, r.next, err)
	}
	defer r.deleteConsumer(cons)
	it, err := cons.Messages(l.readPull()...)
	if err != nil {
		return fmt.Errorf("eventlog: stream %s: consume from seq %d: %w", l.cfg.Stream, r.next, err)
	}
	defer it.Stop()
	stop := context.AfterFunc(ctx, it.Stop)
	defer stop()
	wd := r.watch(ctx, it, []string{l.cfg.SubjectPrefix + ".>"}, end, false)
	defer wd.done()
	for {
		m, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			if serr := wd.stalled(); serr != nil {
				return serr
			}
			return fmt.Errorf("eventlog: stream %s: next message after seq %d: %w", l.cfg.Stream, r.next-1, err)
		}
		md, err := m.Metadata()
		if err != nil {
			return l.recordError(m.Subject(), r.next, "metadata", err)
		}
		seq := md.Sequence.Stream
		if seq < r.next {
			continue // delivered before a consumer restart
		}
		rest, _ := strings.CutPrefix(m.Subject(), r.prefix)
		instP, _, _ := strings.Cut(rest, ".")
		if _, ours := r.insts[instP]; ours {
			wd.handling(true)
			err = r.deliver(ctx, seq, m.Subject(), m.Data(), md.NumPending, md.Timestamp)
			wd.handling(false)
			if err != nil {
				return err
			}
		}
		r.next = seq + 1
		wd.progress()
		if seq >= end {
			return nil
		}
	}
}

// SubjectCounts returns the stream's count of inst's events by subject
// (one request): the number of events of each of its aggregates, whose
// positions run 1, 2, 3... on their subjects. A caller that holds some of
// them (a read model's positions) and knows the others (events it just
// appended) can tell from it whether anything else was appended.
func (l *Log) SubjectCounts(ctx context.Context, inst events.InstallationID) (map[string]uint64, error) {
	f, err := l.InstallationFilter(inst)
	if err != nil {
		return nil, err
	}
	return l.subjectCounts(ctx, []string{f})
}

// FirstSeqAfter returns the stream sequence of the first event on subject
// after stream sequence after (found false: none yet), with one message
// get, without opening the event.
func (l *Log) FirstSeqAfter(ctx context.Context, subject string, after uint64) (seq uint64, found bool, err error) {
	m, err := l.getMsg(ctx, after+1, jetstream.WithGetMsgSubject(subject))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return 0, false, nil
	}
	if err != nil {
		return 0, false, fmt.Errorf("eventlog: stream %s: first event on %s after seq %d: %w", l.cfg.Stream, subject, after, err)
	}
	return m.Sequence, true, nil
}
