package replay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// DefaultBatch is how many events a replay applies per SQLite
// transaction unless Options.BatchSize says otherwise: the read model's
// own default (projections.DefaultBatchSize). A batch is cut sooner when
// its events reach batchBytes.
const DefaultBatch = projections.DefaultBatchSize

// batchBytes bounds the sealed bytes of the events of one batch, so that
// what a replay holds in memory (at most four batches, replayInto; the
// batch Project is applying) is bounded whatever the events' size: 2,048
// commits of a group of 1,000 members, whose blank-parent commits are 84
// KiB each, would be 172 MB. Events of a few KiB reach DefaultBatch first.
var batchBytes = 8 << 20 // a variable for tests

// Options tune the replay operations (CatchUp, Rebuild, Rekey,
// Migrate, Verify). The zero value (or nil) means defaults.
type Options struct {
	// BatchSize is how many events share one read-model transaction.
	// Default DefaultBatch. A batch is also cut at 8 MiB of events.
	BatchSize int
	// DB are the options read models are opened with. SchemaVersion is
	// set by each operation; SaltPath, if set, is the salt sidecar of the
	// read model operated on (default projections.SaltPath of its path),
	// which a rebuilt file is created with and keeps after the swap; the
	// rest (Argon2 parameters for new passphrase sidecars, BusyTimeout)
	// are passed on.
	DB projections.Options
	// Progress, if set, is called after each applied batch. It runs on the
	// replay's own goroutine: keep it short.
	Progress func(Progress)
	// SkipMLSCheck turns off what Rebuild (and so Rekey and Migrate) does
	// by default while replaying into a fresh database: re-derive every
	// MLS transition and check it against what was recorded, as VerifyMLS
	// does (docs/benchmarks.md gives the cost). A mismatch stops the
	// replay before anything is swapped in.
	SkipMLSCheck bool
	// FromStart makes Rebuild, Rekey, Migrate and Verify replay the whole
	// history instead of starting from the installation's newest stored
	// snapshot (see snapshot.go) and replaying the tail after it.
	FromStart bool

	// anchor, set by an operation that started from a snapshot, checks
	// the tail's links into the history the snapshot replaces.
	anchor *chainAnchor
	// fence, if set, is asked before each batch commits (ApplyIf):
	// RebuildOptions.Fence, once the rebuilt database is live.
	fence func(inst events.InstallationID) error
}

func (o *Options) withDefaults() Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.BatchSize <= 0 {
		r.BatchSize = DefaultBatch
	}
	r.DB.BatchSize = r.BatchSize
	return r
}

// Progress reports how far a replay got.
type Progress struct {
	// Installation is the installation being replayed.
	Installation events.InstallationID
	// Phase is "replay" (into a fresh database), "catch-up" (after a
	// rebuild or swap), or "verify".
	Phase string
	// Applied counts events applied so far in this phase.
	Applied int
	// Seq is the stream sequence of the last applied event; From and To
	// bound the phase (To is 0 when the phase runs to the stream's end as
	// found when it began, i.e. the target is not known in advance).
	Seq, From, To uint64
}

// Replay phases named in Progress.Phase.
const (
	PhaseReplay  = "replay"
	PhaseCatchUp = "catch-up"
	PhaseVerify  = "verify"
)

// errTargetReached stops a Read at the replay target; it never escapes.
var errTargetReached = errors.New("replay: replay target reached")

// CatchUp applies inst's events after db's checkpoint, up to the last event
// in the stream when it is called, in transactions of opts.BatchSize
// events. It returns how many events it applied and the new checkpoint. An
// event the read model cannot apply stops it with the error naming the
// stream sequence; everything applied before stays committed.
//
// With the Log's Metrics set, CatchUp records where the read model stands
// (telemetry.Metrics.ProjectorAt: checkpoint, events behind and the age of
// the oldest) when it starts and after each batch.
func CatchUp(ctx context.Context, l *eventlog.Log, inst events.InstallationID, db *projections.DB, opts *Options) (int, uint64, error) {
	o := opts.withDefaults()
	start := time.Now()
	n, cp, err := replayInto(ctx, l, inst, db, untilEnd, o, PhaseCatchUp, nil, newLagTracker(l, true))
	if err == nil {
		l.Logger().Debug("replay: caught up", "installation", string(inst), "stream", l.Stream(), "events", n, "seq", cp, since(start))
	}
	logFailure(l.Logger(), "replay: catch-up failed", err, "installation", string(inst), "stream", l.Stream(), "events", n, "seq", cp)
	return n, cp, err
}

// untilEnd as a replay target means the stream's end as found when the
// read begins.
const untilEnd = ^uint64(0)

// applyFenced applies recs to db, asking fence (if set) right before the
// commit; its refusal comes back as a fencedError.
func applyFenced(ctx context.Context, db *projections.DB, inst events.InstallationID, recs []projections.Record, fence func(events.InstallationID) error) error {
	if fence == nil {
		return db.Apply(ctx, recs)
	}
	// Asked once the batch is written, right before its commit: a lease
	// that ends while a large batch is written stops it.
	return db.ApplyIf(ctx, recs, func(uint64) error {
		if err := fence(inst); err != nil {
			return fencedError{fmt.Errorf("replay: %s: not applying events from seq %d: %w", inst, recs[0].Seq, err)}
		}
		return nil
	})
}

// replayInto applies inst's events after db's checkpoint up to stream
// sequence to (untilEnd: up to the stream's end when the read begins). Reading,
// opening and decoding events runs on the consumer's goroutine while a
// second goroutine applies the previous batch, so the two overlap.
// With mc set, every record is also checked by mc (MLS re-derived) before
// it is applied; mc must have seen every earlier record of inst. With lag
// set, where db stands is recorded as it advances (lagTracker). Every
// committed batch counts in the Log's Metrics, by event kind, as does an
// event that could not be applied.
func replayInto(ctx context.Context, l *eventlog.Log, inst events.InstallationID, db *projections.DB, to uint64, o Options, phase string, mc *mlsChecker, lag *lagTracker) (int, uint64, error) {
	cp, err := db.Checkpoint(ctx)
	if err != nil {
		return 0, 0, err
	}
	if lag != nil {
		lag.probe(ctx, inst, cp)
	}
	if cp >= to {
		return 0, cp, nil
	}
	if cp == 0 {
		// From the start: refused once compaction deleted part of the
		// history (retain.go); the events of shredded periods that are
		// still there stop the read with eventlog.ErrRetainedOut.
		if err := l.CheckNotCompacted(ctx, inst); err != nil {
			return 0, 0, err
		}
	}
	m := l.Metrics()
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// A batch goes with the last record's Record.Pending (for lag).
	type batchOf struct {
		recs    []projections.Record
		pending uint64
	}
	batches := make(chan batchOf, 2)
	// Spent batches come back for reuse, so a replay of any length holds
	// at most four batches of records.
	spare := make(chan []projections.Record, 4)
	type result struct {
		applied int
		last    uint64
		err     error
	}
	done := make(chan result, 1)
	go func() {
		res := result{last: cp}
		for bo := range batches {
			b := bo.recs
			if res.err != nil {
				continue
			}
			if err := applyFenced(ctx, db, inst, b, o.fence); err != nil {
				res.err = err
				cancel()
				continue
			}
			res.applied += len(b)
			res.last = b[len(b)-1].Seq
			countApplied(m, b)
			if lag != nil {
				lag.applied(ctx, inst, res.last, len(b), bo.pending)
			}
			if o.Progress != nil {
				p := Progress{Installation: inst, Phase: phase, Applied: res.applied, Seq: res.last, From: cp + 1, To: to}
				if to == untilEnd {
					p.To = 0
				}
				o.Progress(p)
			}
			clear(b)
			select {
			case spare <- b[:0]:
			default:
			}
		}
		done <- res
	}()
	batch := make([]projections.Record, 0, o.BatchSize)
	var pending uint64 // the last record's Record.Pending
	size := 0          // the batch's sealed bytes
	send := func() error {
		select {
		case batches <- batchOf{batch, pending}:
		case <-ctx.Done():
			return ctx.Err()
		}
		select {
		case batch = <-spare:
		default:
			batch = make([]projections.Record, 0, o.BatchSize)
		}
		return nil
	}
	readErr := l.Read(ctx, inst, cp+1, func(r eventlog.Record) error {
		if r.Seq > to {
			return errTargetReached
		}
		if err := o.anchor.check(r); err != nil {
			return err
		}
		if mc != nil {
			if err := mc.check(r.Event); err != nil {
				return fmt.Errorf("re-deriving MLS: %w", err)
			}
		}
		batch = append(batch, projections.Record{Seq: r.Seq, Event: r.Event})
		pending = r.Pending
		size += r.Size
		if len(batch) >= o.BatchSize || size >= batchBytes {
			size = 0
			return send()
		}
		return nil
	})
	if errors.Is(readErr, errTargetReached) {
		readErr = nil
	}
	if readErr == nil && len(batch) > 0 {
		readErr = send()
	}
	close(batches)
	res := <-done
	if res.err != nil {
		countApplyError(m, res.err)
	} else if readErr != nil {
		countApplyError(m, readErr)
	}
	switch {
	case res.err != nil:
		return res.applied, res.last, fmt.Errorf("replay: %s %s: %w", phase, inst, res.err)
	case readErr != nil:
		if ctx.Err() != nil && errors.Is(readErr, context.Canceled) {
			return res.applied, res.last, readErr
		}
		return res.applied, res.last, fmt.Errorf("replay: %s %s: %w", phase, inst, readErr)
	}
	return res.applied, res.last, nil
}

// openAsIs opens an existing read model at whatever schema version it has:
// opening at a newer version would migrate it in place, which a replay
// source must never do. NoKey opens an unencrypted source read-only.
func openAsIs(path string, key projections.Key, base projections.Options) (*projections.DB, error) {
	o := base
	o.SaltPath = saltPath(path, base)
	o.CheckIntegrity = false
	return projections.OpenExisting(path, key, &o)
}

// saltPath is the salt sidecar of the read model at path: the one the
// caller's options name, else the default beside it.
func saltPath(path string, base projections.Options) string {
	return cmp.Or(base.SaltPath, projections.SaltPath(path))
}

// exists reports whether path is a non-empty file. Anything else there
// (a directory, a named pipe, a device such as /dev/null) is ErrNotOurs:
// a pipe or a device has size 0, and was taken for a missing database,
// which a rebuild "recovered" by renaming its file over it.
func exists(path string) (bool, error) {
	st, err := os.Stat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, err
	}
	if !st.Mode().IsRegular() {
		return false, fmt.Errorf("%w: not a regular file (%s)", projections.ErrNotOurs, fileKind(st.Mode()))
	}
	return st.Size() > 0, nil
}

// fileKind names the kind of file of mode, for an error.
func fileKind(m fs.FileMode) string {
	switch {
	case m.IsDir():
		return "a directory"
	case m&fs.ModeNamedPipe != 0:
		return "a named pipe"
	case m&fs.ModeSocket != 0:
		return "a socket"
	case m&fs.ModeDevice != 0:
		return "a device"
	}
	return "mode " + m.Type().String()
}
