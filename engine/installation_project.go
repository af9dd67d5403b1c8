package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// maxGetsCatchUp bounds how many events project fetches one by one
// before it hands over to CatchUp's consumer.
const maxGetsCatchUp = 256

// readByGets fetches up to limit of inst's records on subjects matching
// filter from stream sequence from on, one message get each ("next message
// at or after sequence N on these subjects"), and calls fn for each. It
// creates no consumer, which makes it the cheap way to read the few events
// an operation needs. Each record is opened and verified and must sit on
// its aggregate's subject, as in Read. It returns how many records it
// delivered and the sequence to continue from; fewer than limit means the
// end was reached.
func (l *Log) readByGets(ctx context.Context, inst events.InstallationID, filter string, from uint64, limit int, fn func(Record) error) (int, uint64, error) {
	next := max(from, 1)
	n := 0
	for n < limit {
		m, err := l.stream.GetMsg(ctx, next, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return n, next, fmt.Errorf("engine: stream %s: fetch %s after seq %d: %w", l.cfg.Stream, inst, next-1, err)
		}
		ev, err := events.Open(l.keys, inst, l.binding(m.Subject), m.Data)
		if err != nil {
			return n, next, l.recordError(m.Subject, m.Sequence, "open", err)
		}
		if want, err := l.Subject(ev.Aggregate); err != nil || want != m.Subject {
			return n, next, l.recordError(m.Subject, m.Sequence, "subject", fmt.Errorf("%w: event of %s %q belongs on %s", events.ErrMoved, ev.Aggregate.Type, ev.Aggregate.ID, want))
		}
		if err := fn(Record{Seq: m.Sequence, Subject: m.Subject, Event: ev}); err != nil {
			return n, next, l.recordError(m.Subject, m.Sequence, "handle", err)
		}
		n++
		next = m.Sequence + 1
	}
	return n, next, nil
}

// project brings the read model up to the end of the installation's
// events. After an operation only a few events are new (its own, and
// deliveries or other writers' events appended meanwhile), so it fetches
// them with direct reads instead of creating a consumer for each
// operation; a longer backlog goes through Log.CatchUp. The read model
// refuses gaps and repeats per aggregate.
func (in *Installation) project(ctx context.Context) error {
	cp, err := in.db.Checkpoint(ctx)
	if err != nil {
		return err
	}
	filter, err := in.log.InstallationFilter(in.id)
	if err != nil {
		return err
	}
	var recs []projections.Record
	n, _, err := in.log.readByGets(ctx, in.id, filter, cp+1, maxGetsCatchUp, func(r Record) error {
		recs = append(recs, projections.Record{Seq: r.Seq, Event: r.Event})
		return nil
	})
	if err != nil {
		return fmt.Errorf("engine: installation %s: catch up read model: %w", in.id, err)
	}
	if len(recs) > 0 {
		if err := in.db.Apply(ctx, recs); err != nil {
			return fmt.Errorf("engine: installation %s: project: %w", in.id, err)
		}
	}
	if n == maxGetsCatchUp {
		return in.catchUpAll(ctx)
	}
	return nil
}
