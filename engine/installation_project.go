package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// maxGetsCatchUp bounds how many events project fetches one by one
// before it hands over to CatchUp's consumer.
const maxGetsCatchUp = 256

// project brings the read model up to the end of the installation's
// events. After an operation only a few events are new (its own, and
// deliveries or other writers' events appended meanwhile), so it fetches
// them with direct reads instead of creating a consumer for each
// operation; a longer backlog goes through Log.CatchUp. The read model
// refuses gaps and repeats per aggregate.
func (in *Installation) project(ctx context.Context) error {
	if err := in.errIfClosed(); err != nil {
		return err
	}
	cp, err := in.db.Checkpoint(ctx)
	if err != nil {
		return err
	}
	_, err = in.projectFrom(ctx, cp)
	return err
}

// projectFrom is project from cp, the read model's checkpoint, which the
// caller has just read; it returns the checkpoint reached.
func (in *Installation) projectFrom(ctx context.Context, cp uint64) (uint64, error) {
	filter, err := in.log.InstallationFilter(in.id)
	if err != nil {
		return 0, err
	}
	var recs []projections.Record
	n, _, err := in.log.ReadN(ctx, in.id, filter, cp+1, maxGetsCatchUp, func(r eventlog.Record) error {
		recs = append(recs, projections.Record{Seq: r.Seq, Event: r.Event})
		return nil
	})
	if err != nil {
		countApplyError(in.log.Metrics(), err)
		return 0, fmt.Errorf("engine: installation %s: catch up read model: %w", in.id, err)
	}
	if len(recs) > 0 {
		if err := in.db.Apply(ctx, recs); err != nil {
			countApplyError(in.log.Metrics(), err)
			return 0, fmt.Errorf("engine: installation %s: project: %w", in.id, err)
		}
		cp = recs[len(recs)-1].Seq
		countApplied(in.log.Metrics(), recs)
		for _, r := range recs {
			if r.Event.Aggregate.Type == events.AggInstallation {
				// External PSKs may have changed: read them now, while the
				// read model is at hand (nil on failure: read when needed).
				_ = in.refreshPSKs(ctx)
				break
			}
		}
		in.log.Logger().Debug("engine: projected", "installation", string(in.id), "stream", in.log.Stream(), "events", len(recs), "seq", recs[len(recs)-1].Seq)
	}
	if n == maxGetsCatchUp {
		return in.catchUpAll(ctx)
	}
	return cp, nil
}

// appendAndProjectKnown is appendAndProject for the transitions whose
// event is large (a group's state rides on every commit and proposal):
// it appends the event at expected, then applies it to the read model
// from memory when the stream shows it is the only event of the
// installation the read model lacks (applyAppended), so that it is not
// fetched back and opened again; otherwise it projects as
// appendAndProject does. The errors are appendAndProject's.
func (in *Installation) appendAndProjectKnown(ctx context.Context, agg events.Aggregate, expected uint64, b events.Body) error {
	evs, res, err := in.appendDecided(ctx, agg, expected, b)
	if err != nil {
		return err
	}
	if in.applyAppended(ctx, evs, res) {
		return nil
	}
	if err := in.project(ctx); err != nil {
		return fmt.Errorf("%w: %w", errNotProjected, err)
	}
	return nil
}

// proofByGetMaxBytes is the most applyAppended reads back to prove that
// the events it appended are all the read model lacks. Up to it, the
// proof is one message get: the installation's first event after the
// read model's checkpoint, which the server returns whole. Above it (a
// commit of a group of 1,000 is 84 KiB), the proof is the stream's count
// of the installation's events on each subject, which costs no event
// bytes but grows with the installation's aggregates: its groups and key
// packages, hundreds in a long-lived installation (with it, a path update
// took 5.4 ms in an installation of 1,000 groups against 1.8 ms in one
// of one group: BenchmarkManyAggregates).
var proofByGetMaxBytes = 16 << 10 // a variable for tests (proofBy)

// applyAppended applies evs, just appended with results res, to the read
// model from memory, when it can prove they are all the read model
// lacks (firstAfterProof or countsProof, by the events' size). The proof's
// request runs while SQLite writes the events, and their transaction
// commits only if the proof holds. Anything else (another writer's
// event, a delivery queued meanwhile), or a failure, returns false with
// nothing applied: the caller reads the events instead.
func (in *Installation) applyAppended(ctx context.Context, evs []events.Event, res []eventlog.Appended) bool {
	if len(evs) == 0 || len(res) != len(evs) {
		return false
	}
	recs := make([]projections.Record, len(evs))
	size, contiguous := 0, true
	for i, ev := range evs {
		if i > 0 && res[i].Seq <= res[i-1].Seq {
			return false
		}
		if i > 0 && res[i].Seq != res[i-1].Seq+1 {
			contiguous = false
		}
		size += res[i].Size
		ev.Position = res[i].Position
		recs[i] = projections.Record{Seq: res[i].Seq, Event: ev}
	}
	var proof func(from uint64) error
	if contiguous && size <= proofByGetMaxBytes {
		proof = in.firstAfterProof(ctx, res[0].Seq)
	} else {
		proof = in.countsProof(ctx, evs, res)
	}
	if proof == nil {
		return false
	}
	if err := in.db.ApplyIf(ctx, recs, proof); err != nil {
		if !errors.Is(err, errNotOnlyAppended) {
			countApplyError(in.log.Metrics(), err)
		}
		return false
	}
	countApplied(in.log.Metrics(), recs)
	in.log.Logger().Debug("engine: projected", "installation", string(in.id), "stream", in.log.Stream(), "events", len(recs), "seq", recs[len(recs)-1].Seq, "from", "memory")
	return true
}

// firstAfterProof proves that events appended at stream sequences first,
// first+1, ... (one atomic append is stored contiguously) are all the
// read model lacks: the installation's first event after the read
// model's checkpoint is the first of them. The read model holds every
// event of the installation up to its checkpoint (it reads from there),
// so nothing of the installation lies before them unread; what comes
// after them is read by the next catch-up. The get is asked now and
// checked in the transaction, against the checkpoint the transaction
// started from (another Apply in between fails it). It returns nil
// when the proof cannot start.
func (in *Installation) firstAfterProof(ctx context.Context, first uint64) func(from uint64) error {
	cp, err := in.db.Checkpoint(ctx)
	if err != nil || first <= cp {
		return nil
	}
	filter, err := in.log.InstallationFilter(in.id)
	if err != nil {
		return nil
	}
	type firstAfter struct {
		seq   uint64
		found bool
		err   error
	}
	asked := make(chan firstAfter, 1) // buffered: an early return leaves no goroutine behind
	go func() {
		seq, found, err := in.log.FirstSeqAfter(ctx, filter, cp)
		asked <- firstAfter{seq, found, err}
	}()
	return func(from uint64) error {
		if from != cp {
			return errNotOnlyAppended
		}
		got := <-asked
		switch {
		case got.err != nil:
			return fmt.Errorf("%w: %w", errNotOnlyAppended, got.err)
		case !got.found || got.seq != first:
			return errNotOnlyAppended
		}
		return nil
	}
}

// countsProof proves that evs, appended with results res, are all the
// read model lacks: on every subject of the installation, the stream's
// count of events (one request) must be the read model's position plus
// the events of evs on it. It returns nil when the proof cannot start.
func (in *Installation) countsProof(ctx context.Context, evs []events.Event, res []eventlog.Appended) func(from uint64) error {
	type subjectCounts struct {
		counts map[string]uint64
		err    error
	}
	asked := make(chan subjectCounts, 1) // buffered: an early return leaves no goroutine behind
	go func() {
		counts, err := in.log.SubjectCounts(ctx, in.id)
		asked <- subjectCounts{counts, err}
	}()
	cp, positions, err := in.db.Projected(ctx)
	if err != nil {
		return nil
	}
	known := map[string]uint64{}
	for i, ev := range evs {
		if res[i].Seq <= cp {
			return nil
		}
		subj, err := in.log.Subject(ev.Aggregate)
		if err != nil {
			return nil
		}
		known[subj]++
	}
	held := map[string]uint64{}
	for a, p := range positions {
		subj, err := in.log.Subject(a)
		if err != nil {
			return nil
		}
		held[subj] = p
	}
	return func(from uint64) error {
		if from != cp {
			return errNotOnlyAppended
		}
		got := <-asked
		if got.err != nil {
			return fmt.Errorf("%w: %w", errNotOnlyAppended, got.err)
		}
		for subj := range known {
			if _, ok := got.counts[subj]; !ok {
				return errNotOnlyAppended
			}
		}
		for subj, n := range got.counts {
			if n != held[subj]+known[subj] {
				return errNotOnlyAppended
			}
		}
		return nil
	}
}

// errNotOnlyAppended is applyAppended's proof failing: the stream holds
// events of the installation besides the read model's and those just
// appended (or could not be asked); they are read instead.
var errNotOnlyAppended = errors.New("engine: the read model lacks more than the events just appended")
