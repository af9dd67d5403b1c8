package replay

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// VerifyResult says what Verify compared.
type VerifyResult struct {
	Installation events.InstallationID
	Path         string
	Schema       int
	// Checkpoint is the live database's checkpoint; Replayed the events
	// replayed into the temporary database to reach it.
	Checkpoint uint64
	Replayed   int
	// FromSnapshot is the checkpoint of the verified snapshot the replay
	// started from (0: the start of the history; see Options.FromStart).
	// The live database is compared with that snapshot plus the events
	// after it.
	FromSnapshot uint64
	// Digest is the content digest both databases share.
	Digest projections.Digest
}

// Verify checks the live database's file (projections.CheckFile: page
// HMACs, b-trees and indexes), then replays inst's events into a temporary
// database beside the live one (starting from the newest stored snapshot
// at or below the live checkpoint, unless opts.FromStart), up to the live
// database's checkpoint and at its schema, and
// compares the two table by table, row by row. It returns a *DriftError
// (errors.Is ErrDrift) naming the first difference when they differ. A
// stream holding less than the database is ErrBehind, unless the events
// missing at the database's sequences are there later (moved): then its
// checkpoint is what drifted (a *DriftError on table "checkpoint"), and a
// Rebuild takes them at their new sequences. The
// live database is only read; the temporary one (under a random key) is
// removed in every case. key may be projections.NoKey for an unencrypted
// database. The live database's writer may keep running: Verify compares
// one snapshot of it, taken at the start.
func Verify(ctx context.Context, l *eventlog.Log, inst events.InstallationID, live string, key projections.Key, opts *Options) (*VerifyResult, error) {
	log := l.Logger().With("installation", string(inst), "stream", l.Stream(), "op", "verify", "path", live)
	start := time.Now()
	log.Info("replay: verify started")
	res, err := verify(ctx, l, inst, live, key, opts)
	if err != nil {
		switch {
		case IsVerificationFailure(err):
			log.Error("replay: verify found the read model does not check out", since(start), "err", err)
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			log.Info("replay: verify cancelled", since(start), "err", err)
		default:
			log.Warn("replay: verify could not run", since(start), "err", err)
		}
		return nil, err
	}
	log.Info("replay: verify finished; the read model checks out", "events", res.Replayed, "from_snapshot", res.FromSnapshot, "seq", res.Checkpoint, "schema", res.Schema, since(start))
	return res, nil
}

func verify(ctx context.Context, l *eventlog.Log, inst events.InstallationID, live string, key projections.Key, opts *Options) (*VerifyResult, error) {
	o := opts.withDefaults()
	if err := inst.Validate(); err != nil {
		return nil, fmt.Errorf("replay: verify: %w", err)
	}
	// No projections.RemoveLeftovers here: verify takes no lock, and a
	// rebuild, rekey or migrate holding it may be building its
	// "<live>.rebuild-*" beside live, which that removed (the writer then
	// failed at its swap). Leftovers are removed by the next writer.
	ok, err := exists(live)
	if err != nil || !ok {
		if err == nil {
			err = errors.New("no such database")
		}
		return nil, &projections.FileError{Path: live, Op: "verify", Err: err}
	}
	// The file itself first: every page's HMAC, then the b-trees and
	// indexes, which a digest of the rows does not read.
	if err := projections.CheckFile(ctx, live, key, &o.DB); err != nil {
		return nil, err
	}
	src, err := openAsIs(live, key, o.DB)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	// The checkpoint and the tables are read in one snapshot, held across
	// the replay: the live database's writer (its installation or a
	// follower) may commit batches meanwhile, and comparing tables newer
	// than the checkpoint with a replay up to it would report drift on a
	// faithful read model.
	snap, err := src.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	defer snap.Close()
	res := &VerifyResult{Installation: inst, Path: live, Schema: src.SchemaVersion(), Checkpoint: snap.Checkpoint()}
	last, err := l.LastSeq(ctx, inst)
	if err != nil {
		return nil, err
	}
	drift := func(table, row, detail string) error {
		return &DriftError{Installation: inst, Path: live, Checkpoint: res.Checkpoint, Table: table, RowKey: row, Detail: detail}
	}
	liveHead, err := snap.Head(ctx)
	if err != nil {
		return nil, err
	}
	if liveHead.Installation != "" && liveHead.Installation != inst {
		return nil, &projections.FileError{Path: live, Op: "verify", Err: fmt.Errorf("%w: the database is installation %s's, not %s's", ErrWrongInstallation, liveHead.Installation, inst)}
	}
	// The stream holding less than the database is not drift of the
	// database: rebuilding it from this stream would lose what it holds.
	behind := func(detail string) error { return behindError(live, "verify", detail) }
	if res.Checkpoint > last {
		return nil, behind(fmt.Sprintf("the database has applied events of %s up to stream sequence %d, the stream's last one is at %d", inst, res.Checkpoint, last))
	}

	tmpKey, err := projections.GenerateRawKey()
	if err != nil {
		return nil, err
	}
	tmp, err := projections.BuildAside(scratchDir(src), filepath.Base(live))
	if err != nil {
		return nil, err
	}
	defer projections.RemoveAside(tmp)
	fresh, err := openFresh(tmp, projections.SaltPath(tmp), tmpKey, res.Schema, o.DB)
	if err != nil {
		return nil, err
	}
	defer fresh.Close()
	if !o.FromStart {
		log := l.Logger().With("installation", string(inst), "stream", l.Stream(), "op", "verify", "path", live)
		base, err := fromSnapshot(ctx, l, inst, fresh, res.Checkpoint, log)
		if err != nil {
			return nil, err
		}
		if base != nil {
			res.FromSnapshot = base.Checkpoint
			o.anchor = &chainAnchor{head: base.Head, cp: base.Checkpoint}
		}
	}
	n, cp, err := replayInto(ctx, l, inst, fresh, res.Checkpoint, o, PhaseVerify, nil, nil)
	res.Replayed = n
	if err != nil {
		return nil, err
	}
	short := ""
	if cp != res.Checkpoint {
		short = fmt.Sprintf("no event of %s at the database's checkpoint, stream sequence %d (the replay stopped at %d)", inst, res.Checkpoint, cp)
	} else {
		freshHead, err := fresh.Head(ctx)
		if err != nil {
			return nil, err
		}
		if lacks := freshHead.Lacks(liveHead); len(lacks) > 0 {
			short = fmt.Sprintf("missing from the stream: %s", lacks[0])
		}
	}
	if short != "" {
		// What the stream lacks at the database's sequences may be on it
		// later (an event republished at the stream's end, the original
		// deleted). Then the database has lost nothing, but its
		// checkpoint names no event and its catch-up stops at the moved
		// event, which it holds; a rebuild takes the events at their new
		// sequences (notLess, as Rebuild checks it). That is drift of the
		// checkpoint, which a rebuild repairs, not a stream holding less.
		m, end, err := replayInto(ctx, l, inst, fresh, untilEnd, o, PhaseVerify, nil, nil)
		res.Replayed += m
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			return nil, errors.Join(behind(short), fmt.Errorf("replay: verify: looking for the missing events later in the stream: %w", err))
		}
		if notLess(ctx, fresh, inst, &liveHead, l.ResealedFrom() != "") != nil {
			return nil, behind(short)
		}
		return nil, drift("checkpoint", "", fmt.Sprintf("%s, but every event the database holds is on the stream, the last at later sequences (up to %d): "+
			"its checkpoint names no event and it cannot catch up; a rebuild takes them at their new sequences and loses nothing", short, end))
	}
	diff, err := snap.CompareDB(ctx, fresh)
	if err != nil {
		return nil, err
	}
	if diff != nil {
		return nil, drift(diff.Table, diff.RowKey, "live database vs replay: "+diff.Detail)
	}
	if res.Digest, err = fresh.Digest(ctx); err != nil {
		return nil, err
	}
	return res, nil
}

// explainDrift turns a digest difference between the live database and a
// fresh replay into a *DriftError naming the first differing row.
func explainDrift(ctx context.Context, l *eventlog.Log, inst events.InstallationID, live string, key projections.Key, base projections.Options, fresh *projections.DB, cp uint64, d *projections.Difference) error {
	e := &DriftError{Installation: inst, Path: live, Checkpoint: cp, Table: d.Table, Detail: "live database vs replay: " + d.Detail}
	src, err := openAsIs(live, key, base)
	if err != nil {
		return e
	}
	defer src.Close()
	if row, err := projections.CompareDB(ctx, src, fresh); err == nil && row != nil {
		e.Table, e.RowKey, e.Detail = row.Table, row.RowKey, "live database vs replay: "+row.Detail
	}
	return e
}

// behindError is ErrBehind about the read model at path: the stream holds
// less than it (detail says what), which is no reason to rebuild it.
func behindError(path, op, detail string) error {
	return &projections.FileError{Path: path, Op: op, Err: fmt.Errorf("%w: %s", ErrBehind, detail),
		Hint: "keep this database; the stream lacks events it holds (a rebuild from this stream refuses to drop any): find the missing events, or check --data / --nats point at the right stream"}
}
