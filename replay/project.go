package replay

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// Projection pairs an installation with its open read model.
type Projection struct {
	Installation events.InstallationID
	DB           *projections.DB
}

// ProjectOptions tune Project. The zero value (or nil) means defaults.
type ProjectOptions struct {
	// BatchSize bounds the events applied in one transaction (default
	// DefaultBatch; a batch is also cut at 8 MiB of events). Under load
	// batches fill up; when events trickle in, each is applied as soon as
	// it arrives.
	BatchSize int
	// OnApply, if set, is called after each committed batch with the
	// installation, the number of events and the new checkpoint. It runs
	// on the applying goroutine: keep it short.
	OnApply func(inst events.InstallationID, n int, checkpoint uint64)
	// OnHeldUntil, if set, is called after each committed batch, after
	// OnApply, once per installation of the batch: its read model, at
	// checkpoint, holds every event of the installation the stream stored
	// before until (the server's timestamp of the batch's last event,
	// eventlog.Record.Stored). An event it has not applied is younger
	// than time.Since(until), which is what a readiness check needs
	// without asking the stream. It runs on the applying goroutine: keep
	// it short.
	OnHeldUntil func(inst events.InstallationID, checkpoint uint64, until time.Time)
	// Fence, if set, is asked right before each batch is committed to
	// installation inst's read model, once the batch is written in its
	// transaction; an error rolls the batch back and stops Project with
	// that error. Asked after the write, not before: writing a large
	// batch can take seconds. A lease holder passes its lease's Check
	// (package lease), so that it never commits after its lease ended.
	Fence func(inst events.InstallationID) error
	// Snapshots, if set, makes a snapshot of a read model (SnapshotDB) as
	// the policy says, in the background, while projecting goes on. A
	// snapshot that fails is logged and tried again when next due; it
	// never stops Project.
	Snapshots *SnapshotPolicy
}

// Project keeps the read models of one or many installations current: it
// follows their events on the bus from the lowest of their checkpoints and
// applies each event to its installation's read model, until ctx is
// cancelled (it then returns ctx's error), an event cannot be read or
// applied (it returns that error, naming the stream sequence) or
// ProjectOptions.Fence refuses a batch (it returns the fence's error,
// wrapped). Each read model resumes from its own checkpoint after a
// restart: events at or below it are skipped, and an event's effects
// commit with its checkpoint, so nothing is lost or applied twice.
// Project must be the only writer of these read models: it holds their
// writer locks (projections.Lock) while it runs, and fails at once with
// projections.ErrLocked naming the holder when another writer has one.
func Project(ctx context.Context, l *eventlog.Log, ps []Projection, opts *ProjectOptions) error {
	var o ProjectOptions
	if opts != nil {
		o = *opts
	}
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBatch
	}
	if len(ps) == 0 {
		return errors.New("replay: project: no read models given")
	}
	dbs := make(map[events.InstallationID]*projections.DB, len(ps))
	cps := make(map[events.InstallationID]uint64, len(ps))
	insts := make([]events.InstallationID, 0, len(ps))
	from := ^uint64(0)
	for _, p := range ps {
		if err := p.Installation.Validate(); err != nil {
			return fmt.Errorf("replay: project: %w", err)
		}
		if p.DB == nil {
			return fmt.Errorf("replay: project: installation %s has no read model", p.Installation)
		}
		if _, dup := dbs[p.Installation]; dup {
			return fmt.Errorf("replay: project: installation %s given twice", p.Installation)
		}
		if p.DB.ReadOnly() {
			return fmt.Errorf("replay: project %s: read model %s is open for reading only (its directory cannot be written)", p.Installation, p.DB.Path())
		}
		cp, err := p.DB.Checkpoint(ctx)
		if err != nil {
			return fmt.Errorf("replay: project %s: %w", p.Installation, err)
		}
		dbs[p.Installation], cps[p.Installation] = p.DB, cp
		insts = append(insts, p.Installation)
		from = min(from, cp+1)
	}

	// Project is the writer of each read model while it runs.
	for _, pr := range ps {
		lk, err := projections.Lock(pr.DB.Path())
		if err != nil {
			return fmt.Errorf("replay: project %s: %w", pr.Installation, err)
		}
		defer lk.Unlock()
		// A rebuild, rekey or migrate may have swapped the file between
		// the caller's open and this lock: what Project would apply would
		// go to the replaced file, and the read model at the path never
		// move on.
		if replaced, err := pr.DB.Replaced(); err != nil {
			return fmt.Errorf("replay: project %s: %w", pr.Installation, err)
		} else if replaced {
			return &projections.FileError{Path: pr.DB.Path(), Op: "project", Err: fmt.Errorf("the read model of %s was replaced (rebuilt, rekeyed or migrated) after it was opened", pr.Installation),
				Hint: "open it again"}
		}
	}
	// Each read model must be its installation's and no further on than
	// the stream: another installation's file would take events meant for
	// its name, and one ahead would wait, healthy-looking, for events the
	// stream lost (and skip new ones at sequences at or below its
	// checkpoint).
	for _, pr := range ps {
		if err := checkFollowable(ctx, l, pr, cps[pr.Installation]); err != nil {
			return err
		}
	}

	log := l.Logger()
	lag := newLagTracker(l, len(insts) == 1)
	defer lag.gone()
	for _, inst := range insts {
		lag.probe(ctx, inst, cps[inst])
	}
	log.Info("replay: projecting", "stream", l.Stream(), "installations", len(insts), "from", from)
	start := time.Now()

	parent := ctx
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if o.Snapshots.enabled() {
		sn := newSnapshotter(ctx, l, *o.Snapshots, dbs)
		defer func() {
			cancel() // stops a snapshot under way; the read models outlive it
			sn.wait()
		}()
		onApply := o.OnApply
		o.OnApply = func(inst events.InstallationID, n int, cp uint64) {
			if onApply != nil {
				onApply(inst, n, cp)
			}
			sn.applied(inst, n)
		}
	}
	in := make(chan eventlog.Record, followQueue)
	ahead := newByteGate(followQueueBytes)
	applyErr := make(chan error, 1)
	go func() {
		applyErr <- applyStream(ctx, l, in, dbs, o, lag, ahead)
		cancel()
	}()
	followErr := l.FollowInstallations(ctx, insts, from, func(r eventlog.Record) error {
		if r.Seq <= cps[r.Event.Aggregate.Installation] {
			return nil
		}
		if err := ahead.acquire(ctx, r.Size); err != nil {
			return err
		}
		select {
		case in <- r:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	})
	close(in)
	err := <-applyErr
	switch {
	case err != nil && parent.Err() == nil:
	case parent.Err() != nil:
		err = parent.Err()
	default:
		err = followErr
	}
	var fenced fencedError
	switch {
	case parent.Err() != nil && errors.Is(err, parent.Err()):
		log.Info("replay: projecting stopped", "stream", l.Stream(), "installations", len(insts), since(start))
	case errors.As(err, &fenced):
		log.Info("replay: projecting stopped by its fence", "stream", l.Stream(), "installations", len(insts), since(start), "err", err)
	default:
		countApplyError(l.Metrics(), err)
		log.Error("replay: projecting failed", "stream", l.Stream(), "installations", len(insts), since(start), "err", err)
	}
	return err
}

// followQueue is how many records Project's reader may get ahead of its
// applier, and followQueueBytes how many bytes of sealed events (those
// queued and those of the batch being applied): a backlog of large
// events (a group's commits with its state, up to max_payload) must not
// be held 2,048 at a time while SQLite writes them.
const (
	followQueue      = 2048
	followQueueBytes = 16 << 20 // two batches cut at batchBytes (8 MiB)
)

// byteGate bounds the bytes one producer has handed to one consumer and
// the consumer has not yet released. A record larger than the limit
// passes alone.
type byteGate struct {
	mu    sync.Mutex
	held  int
	limit int
	freed chan struct{} // a release since the producer last looked
}

func newByteGate(limit int) *byteGate {
	return &byteGate{limit: limit, freed: make(chan struct{}, 1)}
}

// cost is what a record of n bytes holds of the gate.
func (g *byteGate) cost(n int) int { return min(max(n, 0), g.limit) }

// acquire waits until a record of n bytes fits (or nothing is held), or
// ctx ends.
func (g *byteGate) acquire(ctx context.Context, n int) error {
	n = g.cost(n)
	for {
		g.mu.Lock()
		if g.held == 0 || g.held+n <= g.limit {
			g.held += n
			g.mu.Unlock()
			return nil
		}
		g.mu.Unlock()
		select {
		case <-g.freed:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
}

// release gives back what acquire took: the sum of the records' costs.
func (g *byteGate) release(n int) {
	g.mu.Lock()
	g.held -= n
	g.mu.Unlock()
	select {
	case g.freed <- struct{}{}:
	default:
	}
}

// fencedError is ProjectOptions.Fence's refusal of a batch: Project
// stops, and that is no failure of the read model.
type fencedError struct{ err error }

func (e fencedError) Error() string { return e.err.Error() }
func (e fencedError) Unwrap() error { return e.err }

// applyStream applies records from in as they come, grouping what is
// already waiting into batches per installation.
func applyStream(ctx context.Context, l *eventlog.Log, in <-chan eventlog.Record, dbs map[events.InstallationID]*projections.DB, o ProjectOptions, lag *lagTracker, ahead *byteGate) error {
	m, log := l.Metrics(), l.Logger()
	pending := map[events.InstallationID][]projections.Record{}
	behind := map[events.InstallationID]uint64{} // Record.Pending of each one's last record
	var last eventlog.Record                     // the last record added
	var order []events.InstallationID
	flush := func() error {
		for _, inst := range order {
			recs := pending[inst]
			err := applyFenced(ctx, dbs[inst], inst, recs, o.Fence)
			var fenced fencedError
			if errors.As(err, &fenced) {
				return err
			}
			if err != nil {
				return fmt.Errorf("replay: project %s: %w", inst, err)
			}
			cp := recs[len(recs)-1].Seq
			countApplied(m, recs)
			lag.applied(ctx, inst, cp, len(recs), behind[inst])
			log.Debug("replay: applied", "installation", string(inst), "stream", l.Stream(), "events", len(recs), "seq", cp)
			if o.OnApply != nil {
				o.OnApply(inst, len(recs), cp)
			}
			if o.OnHeldUntil != nil {
				o.OnHeldUntil(inst, cp, last.Stored)
			}
			pending[inst] = recs[:0]
		}
		if len(order) > 0 && last.Pending == 0 {
			lag.atEnd()
		}
		order = order[:0]
		return nil
	}
	taken := 0 // the batch's bytes, as it holds them of ahead
	add := func(r eventlog.Record) {
		taken += ahead.cost(r.Size)
		inst := r.Event.Aggregate.Installation
		if len(pending[inst]) == 0 {
			order = append(order, inst)
		}
		pending[inst] = append(pending[inst], projections.Record{Seq: r.Seq, Event: r.Event})
		behind[inst], last = r.Pending, r
	}
	for {
		r, ok := <-in
		if !ok {
			return nil
		}
		taken = 0
		add(r)
		// Take what is already queued, without waiting, up to a batch
		// (in events or in bytes).
	drain:
		for n := 1; n < o.BatchSize && taken < batchBytes; n++ {
			select {
			case r, ok := <-in:
				if !ok {
					break drain
				}
				add(r)
			default:
				break drain
			}
		}
		err := flush()
		ahead.release(taken)
		if err != nil {
			return err
		}
	}
}

// checkFollowable refuses to project into pr's read model when it is
// another installation's (ErrWrongInstallation) or has applied events past
// the installation's last one on the stream (ErrBehind).
func checkFollowable(ctx context.Context, l *eventlog.Log, pr Projection, cp uint64) error {
	path := pr.DB.Path()
	h, err := pr.DB.Head(ctx)
	if err != nil {
		return fmt.Errorf("replay: project %s: %w", pr.Installation, err)
	}
	if h.Installation != "" && h.Installation != pr.Installation {
		return &projections.FileError{Path: path, Op: "project", Err: fmt.Errorf("%w: the database is installation %s's, not %s's", ErrWrongInstallation, h.Installation, pr.Installation)}
	}
	last, err := l.LastSeq(ctx, pr.Installation)
	if errors.Is(err, eventlog.ErrErased) {
		// Nothing of it is left to follow: its subjects were purged and
		// its tombstone is on a subject a follow does not read, so the
		// follow would wait, healthy, for good.
		return &projections.FileError{Path: path, Op: "project", Err: err, Hint: "this read model is what is left of an erased installation: delete it"}
	}
	if err != nil {
		return fmt.Errorf("replay: project %s: %w", pr.Installation, err)
	}
	if cp > last {
		return behindError(path, "project", fmt.Sprintf("the database has applied events of %s up to stream sequence %d, the stream's last one is at %d", pr.Installation, cp, last))
	}
	if err := l.StillHolds(ctx, pr.Installation, cp); err != nil {
		return &projections.FileError{Path: path, Op: "project", Err: err, Hint: "keep the database; replayer verify compares it with the stream"}
	}
	return nil
}
