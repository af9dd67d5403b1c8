package replay

import (
	"bytes"
	"cmp"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// Snapshots (docs/forward-secrecy.md, Snapshots): a sealed copy of a read
// model's rows at a checkpoint, stored beside the stream
// (eventlog.Log.PutSnapshot). Snapshot makes one and proves it first;
// Rebuild, Rekey, Migrate and Verify start from the newest one the
// keyring opens and replay only the tail after it (Options.FromStart
// replays the whole history instead).

// DefaultSnapshotKeep is how many snapshots of an installation are kept
// once a new one is stored, unless SnapshotOptions.Keep says otherwise.
const DefaultSnapshotKeep = 2

// PhaseSnapshot is the phase of the replay that checks a new snapshot
// (Progress.Phase).
const PhaseSnapshot = "snapshot"

// ErrSnapshotMismatch means a snapshot did not check out when it was
// made: the read model it was taken from differs from the previous
// snapshot (or the start) plus the events up to its checkpoint. Nothing
// was stored. It wraps ErrDrift: the read model drifted, or the previous
// snapshot does not hold what the history gives.
var ErrSnapshotMismatch = fmt.Errorf("%w: the snapshot does not check out against the history it replaces", ErrDrift)

// ErrSnapshotSuperseded is Snapshot's refusal of a read model behind
// the snapshots kept: as many newer ones as SnapshotOptions.Keep are
// stored already, so this one would be deleted as soon as stored.
// Nothing was stored or deleted.
var ErrSnapshotSuperseded = errors.New("replay: snapshot not stored: newer snapshots are kept")

// ErrRetainedMeanwhile is a snapshot's refusal of what it read because
// a retention deleted rows from the installation's read model after the
// snapshot it was checked against (the retention mark,
// eventlog.Log.RetentionMark, is past its base): it may hold those rows,
// whose keys the retention shreds. Snapshot again: the check then starts
// from the retention's snapshot.
var ErrRetainedMeanwhile = errors.New("replay: snapshot not stored: a retention deleted rows since the snapshot it was checked against")

// SnapshotOptions tune Snapshot.
type SnapshotOptions struct {
	// Options tune the check's replay (BatchSize, DB; FromStart checks
	// against the whole history instead of the previous snapshot plus
	// the events after it).
	Options
	// Keep is how many of the installation's snapshots are kept once the
	// new one is stored (the newest ones; objects under its names that
	// are not snapshots it opens are not counted: newestOpening). Default
	// DefaultSnapshotKeep.
	Keep int
	// Now is the clock of SnapshotMeta.CreatedAt (default time.Now).
	Now func() time.Time
	// Adjust, when set, is applied to the check's read model after its
	// replay, before the digests are compared: what the caller did to the
	// live read model beside the events (Retain: the rows retention
	// deleted).
	Adjust func(ctx context.Context, check *projections.DB) error

	// retention marks Retain's own snapshot, which the retention mark
	// does not refuse (it is the one the mark names).
	retention bool
	// hook, when set (tests), is called with "checked" once the check
	// passed, "put" right before the snapshot is stored and "stored"
	// right after.
	hook func(stage string)
}

// at calls the test hook, if any.
func (so *SnapshotOptions) at(stage string) {
	if so.hook != nil {
		so.hook(stage)
	}
}

// SnapshotResult says what Snapshot stored.
type SnapshotResult struct {
	Installation events.InstallationID
	// Path is the read model the snapshot was taken from.
	Path string
	// Checkpoint is the snapshot's checkpoint; Name its object's name,
	// Size its sealed size in bytes, Rows the rows it holds.
	Checkpoint uint64
	Name       string
	Size       uint64
	Rows       int
	Schema     int
	// Digest is the read model's digest at the checkpoint, which the
	// check reproduced.
	Digest projections.Digest
	// Base is the checkpoint of the snapshot the check started from (0:
	// the start of the history); Checked counts the events it replayed.
	Base    uint64
	Checked int
	// Unchanged: a snapshot was stored at this checkpoint already (the
	// read model has not moved since), and the read model equals it;
	// nothing new was stored (Name and Size are the stored one's).
	Unchanged bool
	// Pruned lists the checkpoints of the older snapshots deleted.
	Pruned []uint64
}

// Snapshot takes a snapshot of the read model at live (opened with key,
// only read) at its checkpoint, proves it, seals it and stores it, then
// deletes all but the newest opts.Keep of the installation's snapshots.
// See SnapshotDB.
func Snapshot(ctx context.Context, l *eventlog.Log, inst events.InstallationID, live string, key projections.Key, opts *SnapshotOptions) (*SnapshotResult, error) {
	var so SnapshotOptions
	if opts != nil {
		so = *opts
	}
	o := so.Options.withDefaults()
	if ok, err := exists(live); err != nil || !ok {
		if err == nil {
			err = errors.New("no such database")
		}
		return nil, &projections.FileError{Path: live, Op: "snapshot", Err: err}
	}
	src, err := openAsIs(live, key, o.DB)
	if err != nil {
		return nil, err
	}
	defer src.Close()
	return SnapshotDB(ctx, l, inst, src, &so)
}

// SnapshotDB takes a snapshot of db (one read transaction: its writer may
// keep applying events) at its checkpoint C and stores it only once it
// checks out: a fresh read model beside db, under a random key, built
// from the installation's newest snapshot below C (or from the start,
// with opts.FromStart or without one) plus the events up to C, must have
// the same content digest as db at C. When it does not, nothing is
// stored and the error (ErrSnapshotMismatch) names both digests and the
// first differing table. The snapshot records the installation chain's
// head at C (the link to the event at C), which later tails are checked
// against.
func SnapshotDB(ctx context.Context, l *eventlog.Log, inst events.InstallationID, db *projections.DB, opts *SnapshotOptions) (*SnapshotResult, error) {
	var so SnapshotOptions
	if opts != nil {
		so = *opts
	}
	log := l.Logger().With("installation", string(inst), "stream", l.Stream(), "op", "snapshot", "path", db.Path())
	start := time.Now()
	res, err := snapshotDB(ctx, l, inst, db, so, log)
	if err != nil {
		switch {
		case IsVerificationFailure(err):
			log.Error("replay: snapshot does not check out; nothing stored", since(start), "err", err)
		case errors.Is(err, ErrRetainedMeanwhile):
			log.Warn("replay: snapshot of what was read not stored: a retention ran meanwhile", since(start), "err", err)
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			log.Info("replay: snapshot cancelled; nothing stored", since(start), "err", err)
		default:
			log.Warn("replay: snapshot failed; nothing stored", since(start), "err", err)
		}
		return nil, err
	}
	log.Info("replay: snapshot stored", "seq", res.Checkpoint, "bytes", res.Size, "rows", res.Rows, "base", res.Base,
		"checked_events", res.Checked, "pruned", len(res.Pruned), since(start))
	return res, nil
}

// scratchDir is where a check replays into a database it then discards
// (under a key of its own): beside db, on the same file system and in its
// private directory, unless db was opened for reading only because that
// directory cannot be written (a backup on a read-only mount); then the
// system's temporary directory.
func scratchDir(db *projections.DB) string {
	if db.ReadOnly() {
		return os.TempDir()
	}
	return filepath.Dir(db.Path())
}

func snapshotDB(ctx context.Context, l *eventlog.Log, inst events.InstallationID, db *projections.DB, so SnapshotOptions, log *slog.Logger) (*SnapshotResult, error) {
	o := so.Options.withDefaults()
	if err := inst.Validate(); err != nil {
		return nil, fmt.Errorf("replay: snapshot: %w", err)
	}
	fail := func(err error) error { return &projections.FileError{Path: db.Path(), Op: "snapshot", Err: err} }
	snap, err := db.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	defer snap.Close()
	head, err := snap.Head(ctx)
	if err != nil {
		return nil, err
	}
	cp := snap.Checkpoint()
	switch {
	case head.Installation != "" && head.Installation != inst:
		return nil, fail(fmt.Errorf("%w: the database is installation %s's, not %s's", ErrWrongInstallation, head.Installation, inst))
	case head.Installation == "" || cp == 0:
		return nil, fail(errors.New("the read model holds no installation yet: nothing to snapshot"))
	}
	refs, err := listSnapshots(ctx, l, inst, log)
	if err != nil {
		return nil, err
	}
	keep := cmp.Or(max(so.Keep, 0), DefaultSnapshotKeep)
	newer, err := newestOpening(ctx, l, inst, refs, cp, max(keep, 1), log)
	if err != nil {
		return nil, fail(fmt.Errorf("nothing stored: the snapshots stored past the read model's checkpoint %d: %w", cp, err))
	}
	if err := checkKept(newer, cp, keep); err != nil {
		return nil, fail(err)
	}
	link, err := l.ChainLink(ctx, inst, cp)
	if err != nil {
		return nil, fail(err)
	}
	now := so.Now
	if now == nil {
		now = time.Now
	}
	var buf bytes.Buffer
	meta, err := snap.Export(ctx, &buf, projections.SnapshotMeta{Head: link, CreatedAt: now().UTC()})
	if err != nil {
		return nil, err
	}
	snap.Close() // the rest reads the stream and the check's database
	res := &SnapshotResult{Installation: inst, Path: db.Path(), Checkpoint: cp, Rows: meta.Rows, Schema: meta.Schema, Digest: meta.Digest}

	// The check: the previous snapshot (or the start) plus the tail.
	tmpKey, err := projections.GenerateRawKey()
	if err != nil {
		return nil, err
	}
	tmp, err := projections.BuildAside(scratchDir(db), filepath.Base(db.Path()))
	if err != nil {
		return nil, fail(err)
	}
	defer projections.RemoveAside(tmp)
	fresh, err := openFresh(tmp, projections.SaltPath(tmp), tmpKey, meta.Schema, o.DB)
	if err != nil {
		return nil, err
	}
	defer fresh.Close()
	var stored *eventlog.SnapshotRef // one at cp already: the check's base, nothing new stored
	if !o.FromStart {
		limit := cp - 1 // a snapshot is not checked against itself
		if so.Adjust != nil {
			limit = cp // but an adjusted one may be checked against its predecessor at cp
		} else if i := slices.IndexFunc(refs, func(r eventlog.SnapshotRef) bool { return r.Checkpoint == cp }); i >= 0 {
			// The read model has not moved since its last snapshot: it
			// must equal that one. Checked from an older base instead, a
			// history compacted through cp could not be replayed to it
			// (ErrCompacted, every time for an idle installation). Found
			// among all the names, not only the newest: an object put
			// under a later name by whoever may write to the bucket
			// would hide it. One at cp that does not open is passed
			// over by the import below, and stored anew.
			limit, stored = cp, &refs[i]
		}
		base, err := importSnapshot(ctx, l, inst, fresh, refs, limit, log)
		if err != nil {
			return nil, err
		}
		if base != nil {
			res.Base = base.Checkpoint
			o.anchor = &chainAnchor{head: base.Head, cp: base.Checkpoint}
		}
		if base == nil || base.Checkpoint != cp {
			stored = nil // the one at cp did not open: checked as usual, stored anew
		}
	}
	n, got, err := replayInto(ctx, l, inst, fresh, cp, o, PhaseSnapshot, nil, nil)
	res.Checked = n
	if err != nil {
		return nil, err
	}
	if got != cp {
		return nil, fail(fmt.Errorf("%w: no event of %s at the read model's checkpoint, stream sequence %d (the replay stopped at %d)", ErrBehind, inst, cp, got))
	}
	if so.Adjust != nil {
		if err := so.Adjust(ctx, fresh); err != nil {
			return nil, err
		}
	}
	d, err := fresh.Digest(ctx)
	if err != nil {
		return nil, err
	}
	if diff := projections.Compare(meta.Digest, d); diff != nil {
		from := "the start of the history"
		if res.Base > 0 {
			from = fmt.Sprintf("the snapshot at %d", res.Base)
		}
		return nil, fail(fmt.Errorf("%w: read model digest %s, %s plus the events up to %d give %s (first difference: %s)",
			ErrSnapshotMismatch, DigestID(meta.Digest), from, cp, DigestID(d), diff))
	}
	so.at("checked")
	if !so.retention {
		// A retention that deleted rows after the base: this read model
		// may hold them (it was read before the deletion, or is another
		// copy that was never retained).
		if m, since, err := retainedSince(ctx, l, inst, res.Base); err != nil {
			if errors.Is(err, events.ErrTampered) {
				// Forged: whether a retention ran is unknown; a
				// retention replaces it (replaceForgedMark), with or
				// without rows to delete. Not ignored: a genuine mark
				// overwritten during a retention would let this
				// snapshot keep the rows it deletes.
				return nil, fail(fmt.Errorf("nothing stored (until the mark is replaced no snapshot of %s is stored: retain this read model, replayer retain --installation %s --db %s with its policy or --messages forever, which writes its own mark over it): %w", inst, inst, db.Path(), err))
			}
			return nil, fail(fmt.Errorf("nothing stored: %w", err))
		} else if since {
			return nil, fail(fmt.Errorf("%w: %s; nothing stored (snapshot again: it is then checked against the retention's snapshot, and a read model that still holds those rows must be retained or rebuilt first)",
				ErrRetainedMeanwhile, retainedWhat(inst, m, res.Base)))
		}
	}
	if stored != nil {
		clear(buf.Bytes())
		res.Name, res.Size, res.Unchanged = stored.Name, stored.Size, true
		return res, nil
	}
	so.at("put")
	// What is at cp now (a retention's snapshot stored since the check,
	// say), kept sealed to put back should the mark be found forged
	// after the put (undoForgedMeanwhile).
	var prev []byte
	if !so.retention {
		prev, err = l.SealedSnapshot(ctx, inst, cp)
		switch {
		case errors.Is(err, eventlog.ErrNoSnapshot):
			prev, err = nil, nil
		case errors.Is(err, events.ErrMalformed), errors.Is(err, events.ErrTampered):
			// Not an object of its own (a link, content that does not
			// match its digest), put under the name by whoever may
			// write to the bucket: nothing to put back, and the put
			// replaces it rather than fail the snapshot, for good where
			// the read model's checkpoint does not move.
			log.Warn("replay: the object at the snapshot's name is not a sealed snapshot; the snapshot replaces it",
				"bucket", l.SnapshotBucket(), "snapshot_seq", cp, "err", err)
			prev, err = nil, nil
		}
		if err != nil {
			clear(buf.Bytes())
			return nil, fail(fmt.Errorf("nothing stored: the snapshot at %d it would replace: %w", cp, err))
		}
	}
	ref, err := l.PutSnapshot(ctx, inst, cp, buf.Bytes())
	clear(buf.Bytes())
	if err != nil {
		return nil, err
	}
	res.Name, res.Size = ref.Name, ref.Size
	so.at("stored")
	if !so.retention {
		// Checked again after the put: a retention that marked itself
		// between the check above and the put was not seen by it, and
		// its snapshot may have been stored over, or pruned by, this
		// one's.
		m, since, err := retainedSince(ctx, l, inst, res.Base)
		if errors.Is(err, events.ErrTampered) {
			return nil, undoForgedMeanwhile(ctx, l, inst, cp, prev, err)
		}
		if err != nil {
			return nil, fmt.Errorf("replay: snapshot of %s at %d stored, but whether a retention deleted rows meanwhile is unknown (snapshot again): %w", inst, cp, err)
		}
		if since {
			return nil, undoRetainedMeanwhile(ctx, l, inst, fresh, cp, link, now, m, res.Base)
		}
	}
	pruned, err := pruneSnapshots(ctx, l, inst, keep, log, cp, res.Base)
	for _, p := range pruned {
		res.Pruned = append(res.Pruned, p.Checkpoint)
	}
	if err != nil {
		// The new snapshot is stored and good; an old one lingers.
		log.Warn("replay: could not delete older snapshots", "err", err)
	}
	return res, nil
}

// retainedSince returns inst's retention mark and whether it is past
// base, the checkpoint of the snapshot a new one was checked against (0:
// the start): a retention deleted rows since, which the new one may
// hold.
func retainedSince(ctx context.Context, l *eventlog.Log, inst events.InstallationID, base uint64) (eventlog.RetentionMark, bool, error) {
	m, ok, err := l.RetentionMarkOf(ctx, inst)
	if err != nil || !ok || m.Checkpoint <= base {
		return m, false, err
	}
	return m, true, nil
}

// retainedWhat says what retention m did since base.
func retainedWhat(inst events.InstallationID, m eventlog.RetentionMark, base uint64) string {
	var cut []string
	if !m.Messages.IsZero() {
		cut = append(cut, "messages before "+m.Messages.Format(time.RFC3339))
	}
	if !m.Delivery.IsZero() {
		cut = append(cut, "deliveries before "+m.Delivery.Format(time.RFC3339))
	}
	if len(cut) == 0 {
		// replaceForgedMark's: what the forged mark hid is unknown.
		cut = append(cut, "what a retention mark that did not check out hid (replaced by a retention at the newest snapshot)")
	}
	from := "the start of the history"
	if base > 0 {
		from = fmt.Sprintf("the snapshot at %d", base)
	}
	return fmt.Sprintf("a retention of %s at stream sequence %d deleted %s after %s, which this snapshot was checked against",
		inst, m.Checkpoint, strings.Join(cut, " and "), from)
}

// undoForgedMeanwhile undoes the put of a snapshot at cp after which
// inst's retention mark no longer checks out (err): forged after it was
// checked, it may hide a retention that deleted rows meanwhile, whose
// snapshot at cp this one may have replaced (what undoRetainedMeanwhile
// mends needs the mark). What was at cp before the put, prev (sealed;
// nil: nothing), is put back. Left in place, one holding the rows a
// retention had just deleted, and shredded the keys of, would replace
// the retention's, and retaining again could not mend it (nothing left
// to shred).
func undoForgedMeanwhile(ctx context.Context, l *eventlog.Log, inst events.InstallationID, cp uint64, prev []byte, err error) error {
	var uerr error
	if prev != nil {
		_, uerr = l.PutSealedSnapshot(ctx, inst, cp, prev)
	} else {
		uerr = l.DeleteSnapshot(ctx, inst, cp)
	}
	if uerr != nil {
		return fmt.Errorf("replay: snapshot of %s at %d stored, but the retention mark no longer checks out, so it may hold rows a retention deleted meanwhile, and undoing the put failed (retain the installation's read model, which stores its snapshot): %w; %w", inst, cp, err, uerr)
	}
	return fmt.Errorf("replay: snapshot of %s at %d: nothing stored (the put was undone: the retention mark no longer checks out, and a retention may have deleted rows meanwhile; replayer retain replaces the mark, then snapshot again): %w", inst, cp, err)
}

// undoRetainedMeanwhile undoes the put of a snapshot at cp that a
// retention (m) marked past its base after it was checked: one at
// another checkpoint than the retention's is deleted; one at the
// retention's checkpoint may have replaced the retention's snapshot, so
// it is replaced in turn by what the retention stores there: fresh (the
// check's read model, equal to the snapshot) less the rows the retention
// deleted. Either way the error wraps ErrRetainedMeanwhile.
func undoRetainedMeanwhile(ctx context.Context, l *eventlog.Log, inst events.InstallationID, fresh *projections.DB, cp uint64, head events.Link, now func() time.Time, m eventlog.RetentionMark, base uint64) error {
	what := retainedWhat(inst, m, base)
	if cp != m.Checkpoint {
		if err := l.DeleteSnapshot(ctx, inst, cp); err != nil {
			return fmt.Errorf("%w: %s; the snapshot stored at %d meanwhile may hold those rows and could not be deleted (delete it: replayer snapshot --list names it): %w", ErrRetainedMeanwhile, what, cp, err)
		}
		return fmt.Errorf("%w: %s; the snapshot stored at %d meanwhile was deleted (snapshot again)", ErrRetainedMeanwhile, what, cp)
	}
	err := func() error {
		if !m.Messages.IsZero() {
			if _, err := fresh.DeleteMessagesBefore(ctx, m.Messages); err != nil {
				return err
			}
		}
		if !m.Delivery.IsZero() {
			if _, err := fresh.DeleteDeliveriesBefore(ctx, m.Delivery); err != nil {
				return err
			}
		}
		var buf bytes.Buffer
		defer func() { clear(buf.Bytes()) }()
		if _, err := fresh.ExportSnapshot(ctx, &buf, projections.SnapshotMeta{Head: head, CreatedAt: now().UTC()}); err != nil {
			return err
		}
		_, err := l.PutSnapshot(ctx, inst, cp, buf.Bytes())
		return err
	}()
	if err != nil {
		return fmt.Errorf("%w: %s; the snapshot stored at %d meanwhile may hold those rows, and storing the retained one there failed (retain again: it stores its snapshot there): %w", ErrRetainedMeanwhile, what, cp, err)
	}
	return fmt.Errorf("%w: %s; stored at %d instead: this read model less the rows the retention deleted, what the retention stores there", ErrRetainedMeanwhile, what, cp)
}

// checkKept refuses a snapshot at checkpoint cp that keeping the newest
// keep of refs (inst's stored snapshots that open, newest first:
// newestOpening) and it would delete at once: one taken of a read model
// behind the stored ones (a restored copy, a follower's stale file). It
// would have been stored, reported, and pruned by the same call.
func checkKept(refs []eventlog.SnapshotRef, cp uint64, keep int) error {
	var newer []uint64
	for _, r := range refs {
		if r.Checkpoint > cp {
			newer = append(newer, r.Checkpoint)
		}
	}
	if len(newer) < max(keep, 1) {
		return nil
	}
	return fmt.Errorf("%w: the read model's checkpoint is %d, and the stream keeps %d newer snapshots (at %v) of the %d kept: "+
		"this one would be deleted as soon as stored (snapshot a current read model, or keep more)", ErrSnapshotSuperseded, cp, len(newer), newer, keep)
}

// newestOpening returns the newest n of refs (inst's snapshot objects,
// newest first) above checkpoint floor that are snapshots: they open with
// the keyring and hold inst's read model at their checkpoint. Those in
// known (just stored, or just imported) are taken as such unread. An
// object that is not one (garbage, or a snapshot of another checkpoint,
// installation or stream, put under inst's names by whoever may write to
// the bucket; or one sealed under a root key the ring lacks) is passed
// over with a Warn naming the bucket, the object and why: it counts
// neither as a snapshot kept nor as one that supersedes. A failure that
// says nothing of the object (the server, ctx) is returned. Counting
// the newest names instead, a snapshot would be refused as superseded by
// objects that do not open, and genuine ones pruned for them.
func newestOpening(ctx context.Context, l *eventlog.Log, inst events.InstallationID, refs []eventlog.SnapshotRef, floor uint64, n int, log *slog.Logger, known ...uint64) ([]eventlog.SnapshotRef, error) {
	var out []eventlog.SnapshotRef
	for _, r := range refs {
		if len(out) >= n || r.Checkpoint <= floor {
			break
		}
		if slices.Contains(known, r.Checkpoint) {
			out = append(out, r)
			continue
		}
		err := CheckSnapshotObject(ctx, l, inst, r)
		switch {
		case err == nil:
			out = append(out, r)
		case ctx.Err() != nil:
			return nil, ctx.Err()
		case errors.Is(err, ErrNotASnapshot):
			log.Warn("replay: snapshot object is not a snapshot of the installation this keyring opens; passed over (neither kept nor deleted for it)",
				"bucket", l.SnapshotBucket(), "object", r.Name, "snapshot_seq", r.Checkpoint, "err", err)
		default:
			return nil, fmt.Errorf("snapshot object %s in %s: %w", r.Name, l.SnapshotBucket(), err)
		}
	}
	return out, nil
}

// ErrNotASnapshot marks an object under an installation's snapshot
// names that is not a snapshot of it this keyring opens (CheckSnapshotObject).
var ErrNotASnapshot = errors.New("replay: not a snapshot of the installation this keyring opens")

// CheckSnapshotObject reports whether the object ref, listed under inst's
// snapshot names, is a snapshot: it opens with l's keyring and holds
// inst's read model at ref's checkpoint. One that is not (garbage, a
// snapshot of another checkpoint, installation or stream put there by
// whoever may write to the bucket, one sealed under a root key the
// keyring lacks, one gone meanwhile) is an error wrapping
// ErrNotASnapshot and why; any other error (the server, ctx) says
// nothing of the object.
func CheckSnapshotObject(ctx context.Context, l *eventlog.Log, inst events.InstallationID, ref eventlog.SnapshotRef) error {
	plain, err := l.OpenSnapshot(ctx, inst, ref.Checkpoint)
	var meta projections.SnapshotMeta
	if err == nil {
		meta, err = projections.ReadSnapshotMeta(bytes.NewReader(plain))
	}
	clear(plain)
	if err == nil && (meta.Installation != inst || meta.Checkpoint != ref.Checkpoint) {
		err = fmt.Errorf("%w: it holds installation %s's read model at %d", projections.ErrSnapshot, meta.Installation, meta.Checkpoint)
	}
	switch {
	case err == nil:
		return nil
	case ctx.Err() != nil:
		return err
	case errors.Is(err, eventlog.ErrNoSnapshot), errors.Is(err, events.ErrTampered), errors.Is(err, events.ErrMalformed),
		errors.Is(err, events.ErrUnknownKey), errors.Is(err, events.ErrWrongKey), errors.Is(err, events.ErrUnknownVersion),
		errors.Is(err, projections.ErrSnapshot):
		return fmt.Errorf("%w: %w", ErrNotASnapshot, err)
	}
	return err
}

// pruneSnapshots deletes inst's snapshot objects older than the newest
// keep snapshots (newestOpening; known: checkpoints known to be, the one
// just stored and its check's base) and returns the deleted ones. With
// fewer than keep, nothing is deleted. Objects among the newest that are
// not snapshots are left, and not counted.
func pruneSnapshots(ctx context.Context, l *eventlog.Log, inst events.InstallationID, keep int, log *slog.Logger, known ...uint64) ([]eventlog.SnapshotRef, error) {
	refs, err := l.Snapshots(ctx, inst)
	if err != nil {
		return nil, err
	}
	keep = max(keep, 1)
	kept, err := newestOpening(ctx, l, inst, refs, 0, keep, log, known...)
	if err != nil || len(kept) < keep {
		return nil, err
	}
	oldest := kept[len(kept)-1].Checkpoint
	var gone []eventlog.SnapshotRef
	for _, r := range refs {
		if r.Checkpoint >= oldest {
			continue
		}
		if err := l.DeleteSnapshot(ctx, inst, r.Checkpoint); err != nil {
			return gone, err
		}
		gone = append(gone, r)
	}
	return gone, nil
}

// DigestID is a short, stable name of a content digest: the first 8
// bytes of the SHA-256 of its text form, in hex (what the replayer
// prints).
func DigestID(d projections.Digest) string {
	sum := sha256.Sum256([]byte(d.String()))
	return hex.EncodeToString(sum[:8])
}

// fromSnapshot imports into fresh (empty) the newest of inst's stored
// snapshots with a checkpoint at most limit that the keyring opens and
// that imports at fresh's schema version, and returns its header (nil:
// none, the caller replays from the start). A snapshot that cannot be
// fetched, opened (tampered, a root key the ring lacks) or imported is
// passed over with a Warn log naming why, and the next older one tried;
// one of an older schema version is migrated to fresh's (migrateSnapshot;
// below minMigratedSnapshotSchema only after a compaction); one of a
// newer version, or an uncompacted one below that, is passed over
// quietly.
func fromSnapshot(ctx context.Context, l *eventlog.Log, inst events.InstallationID, fresh *projections.DB, limit uint64, log *slog.Logger) (*projections.SnapshotMeta, error) {
	refs, err := listSnapshots(ctx, l, inst, log)
	if err != nil {
		return nil, err
	}
	return importSnapshot(ctx, l, inst, fresh, refs, limit, log)
}

// listSnapshots lists inst's stored snapshots, newest first. Only a
// cancelled ctx is an error: when they cannot be listed, that is logged
// (Warn) and the list is empty, so the caller replays from the start.
func listSnapshots(ctx context.Context, l *eventlog.Log, inst events.InstallationID, log *slog.Logger) ([]eventlog.SnapshotRef, error) {
	refs, err := l.Snapshots(ctx, inst)
	if err != nil {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		log.Warn("replay: cannot list snapshots; replaying from the start", "err", err)
		return nil, nil
	}
	return refs, nil
}

// importSnapshot is fromSnapshot on refs, inst's snapshots as
// listSnapshots gives them.
func importSnapshot(ctx context.Context, l *eventlog.Log, inst events.InstallationID, fresh *projections.DB, refs []eventlog.SnapshotRef, limit uint64, log *slog.Logger) (*projections.SnapshotMeta, error) {
	return importSnapshotOf(ctx, l, inst, fresh, refs, limit, log, false)
}

// importSnapshotOf is importSnapshot; lossy migrates snapshots that did
// not keep own outputs all the same (projections.ErrOutputsNotKept), as
// the last resort once a compaction left no replay from the start.
func importSnapshotOf(ctx context.Context, l *eventlog.Log, inst events.InstallationID, fresh *projections.DB, refs []eventlog.SnapshotRef, limit uint64, log *slog.Logger, lossy bool) (*projections.SnapshotMeta, error) {
	// compactedThrough is the sequence through which a compaction left
	// no replay (asked once, when a snapshot of an older schema is met,
	// or one of a newer schema was all there was); compacted says
	// whether it left no replay from the start.
	compactedThrough := sync.OnceValue(func() uint64 {
		through, err := l.CompactedThrough(ctx, inst)
		if err != nil {
			log.Warn("replay: cannot read the compaction marks; a snapshot below schema 3, or one that did not keep own outputs, is passed over", "err", err)
		}
		return through
	})
	compacted := func() bool { return compactedThrough() > 0 }
	// newer is the newest snapshot passed over for a newer schema: after
	// a compaction it may hold the only copy of the history, and a
	// replay from the start would fail naming nothing but the compaction.
	var newer struct {
		seq    uint64
		schema int
	}
	var notKept []eventlog.SnapshotRef // passed over for outputs the history may hold
	for _, ref := range refs {
		if ref.Checkpoint > limit {
			continue
		}
		plain, err := l.OpenSnapshot(ctx, inst, ref.Checkpoint)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			log.Warn("replay: snapshot cannot be used; trying an older one or the start", "bucket", l.SnapshotBucket(), "object", ref.Name, "snapshot_seq", ref.Checkpoint, "err", err)
			continue
		}
		meta, err := projections.ReadSnapshotMeta(bytes.NewReader(plain))
		// Whose it is and up to where, from its header, before anything
		// is written: Import commits what the header says (checking the
		// rows against it), so a snapshot of another installation, or of
		// another checkpoint, is passed over with fresh untouched.
		if err == nil && (meta.Installation != inst || meta.Checkpoint != ref.Checkpoint) {
			err = fmt.Errorf("%w: stored as installation %s's at stream sequence %d, it holds installation %s's read model at %d",
				projections.ErrSnapshot, inst, ref.Checkpoint, meta.Installation, meta.Checkpoint)
		}
		if err == nil && meta.Schema != fresh.SchemaVersion() {
			if meta.Schema > fresh.SchemaVersion() || (meta.Schema < minMigratedSnapshotSchema && !compacted()) {
				log.Info("replay: snapshot is of another schema version; trying an older one or the start", "snapshot_seq", ref.Checkpoint,
					"snapshot_schema", meta.Schema, "schema", fresh.SchemaVersion())
				if meta.Schema > fresh.SchemaVersion() && newer.seq == 0 {
					newer.seq, newer.schema = ref.Checkpoint, meta.Schema
				}
				clear(plain)
				continue
			}
			// Outputs a snapshot did not keep are in the history until it
			// is compacted through the snapshot: replay it rather than
			// lose them (an older snapshot may cover what was compacted).
			migrated, merr := migrateSnapshot(ctx, plain, fresh.Path(), fresh.SchemaVersion(), lossy || compactedThrough() >= ref.Checkpoint)
			clear(plain)
			if merr != nil {
				if ctx.Err() != nil {
					return nil, ctx.Err()
				}
				if errors.Is(merr, projections.ErrOutputsNotKept) {
					notKept = append(notKept, ref)
					log.Info("replay: snapshot of an older schema did not keep own commit or message outputs; trying an older one or the start", "snapshot_seq", ref.Checkpoint,
						"snapshot_schema", meta.Schema, "schema", fresh.SchemaVersion(), "err", merr)
					continue
				}
				log.Warn("replay: snapshot of an older schema version cannot be migrated; trying an older one or the start", "snapshot_seq", ref.Checkpoint,
					"snapshot_schema", meta.Schema, "schema", fresh.SchemaVersion(), "err", merr)
				continue
			}
			log.Info("replay: snapshot migrated", "snapshot_seq", ref.Checkpoint, "snapshot_schema", meta.Schema, "schema", fresh.SchemaVersion())
			plain = migrated
		}
		if err == nil {
			meta, err = fresh.Import(ctx, bytes.NewReader(plain))
		}
		clear(plain)
		if err != nil {
			if ctx.Err() != nil {
				return nil, ctx.Err()
			}
			if cp, cerr := fresh.Checkpoint(ctx); cerr != nil || cp != 0 {
				return nil, errors.Join(err, cerr, errors.New("replay: a failed snapshot import left the fresh database non-empty"))
			}
			log.Warn("replay: snapshot cannot be used; trying an older one or the start", "bucket", l.SnapshotBucket(), "object", ref.Name, "snapshot_seq", ref.Checkpoint, "err", err)
			continue
		}
		log.Info("replay: starting from a snapshot", "snapshot_seq", meta.Checkpoint, "rows", meta.Rows, "created_at", meta.CreatedAt)
		return &meta, nil
	}
	if len(notKept) > 0 && compacted() {
		// No snapshot covers the compacted history but these.
		return importSnapshotOf(ctx, l, inst, fresh, notKept, limit, log, true)
	}
	if newer.seq != 0 && compacted() {
		// An older build after a newer one's retain needs a build that
		// knows the snapshot's schema. This build knows it when the
		// replay was asked for an older schema (rebuild --schema N): no
		// build can go down from the snapshot, so none is to be advised,
		// nor the very rebuild --schema N that is refused.
		hint := fmt.Sprintf("use a build that knows schema %d", newer.schema)
		if newer.schema <= projections.LatestSchema {
			hint = fmt.Sprintf("a read model of schema %d can no longer be built from this history (a downgrade across a compaction needs a snapshot of that schema taken before it): build schema %d or later", fresh.SchemaVersion(), newer.schema)
		}
		return nil, fmt.Errorf("replay: %s: %w: its snapshot at stream sequence %d is of schema %d, this replay builds schema %d, and the history before it was compacted: %s",
			inst, projections.ErrSchemaTooNew, newer.seq, newer.schema, fresh.SchemaVersion(), hint)
	}
	return nil, nil
}

// minMigratedSnapshotSchema is the oldest schema version of a snapshot
// that fromSnapshot migrates whenever it is the newest usable one: from
// schema 3 on, the in-place migrations give what a replay gives, so a
// migrated snapshot plus the tail equals a full replay. Below it a file
// records no committer of its epochs, which a replay of newer events
// gives: such a snapshot is migrated (the committers staying unknown, as
// migrate --in-place leaves them) only once the history was compacted,
// when no replay from the start is left.
const minMigratedSnapshotSchema = 3

// migrateSnapshot brings plain, a snapshot of a schema version older than
// schema, to schema: it imports it into a scratch read model at its own
// version beside the file at beside (projections.BuildAside; the import
// checks its digest), migrates that in place
// (projections.Open) and exports it again with the header's chain head
// and creation time. The scratch database is removed. A snapshot is the
// only copy of the history a compaction deleted, so an upgrade to a
// newer schema must be able to start from one an older build made.
//
// A snapshot of a file that applied own commit or message outputs it
// could not keep (below schema 9, 10 or 11) is projections.ErrOutputsNotKept
// unless lossy, when schema keeps them: its migration would lack what a
// replay gives.
func migrateSnapshot(ctx context.Context, plain []byte, beside string, schema int, lossy bool) (out []byte, err error) {
	key, err := projections.GenerateRawKey()
	if err != nil {
		return nil, err
	}
	tmp, err := projections.BuildAside(filepath.Dir(beside), filepath.Base(beside))
	if err != nil {
		return nil, err
	}
	defer func() { err = errors.Join(err, projections.RemoveAside(tmp)) }()
	meta, err := projections.ReadSnapshotMeta(bytes.NewReader(plain))
	if err != nil {
		return nil, err
	}
	old, err := projections.Open(tmp, key, &projections.Options{SchemaVersion: meta.Schema})
	if err != nil {
		return nil, err
	}
	meta, err = old.Import(ctx, bytes.NewReader(plain))
	if err == nil && !lossy {
		err = old.OutputsKept(ctx, schema)
	}
	if cerr := old.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return nil, err
	}
	db, err := projections.Open(tmp, key, &projections.Options{SchemaVersion: schema, MigrateWithoutOutputs: lossy})
	if err != nil {
		return nil, fmt.Errorf("migrate snapshot from schema %d: %w", meta.Schema, err)
	}
	var buf bytes.Buffer
	_, err = db.ExportSnapshot(ctx, &buf, projections.SnapshotMeta{Head: meta.Head, CreatedAt: meta.CreatedAt})
	if cerr := db.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		clear(buf.Bytes())
		return nil, err
	}
	return buf.Bytes(), nil
}

// chainAnchor checks the links of a tail replayed after a snapshot into
// the history the snapshot replaces: a link to the snapshot's checkpoint
// must be to the event the snapshot's chain head names (same digest). A
// link to an earlier event (a writer whose head was stale) is accepted
// as the eventlog accepts a link before a read's first sequence: that
// part of the history may be purged. Links within the tail are the
// eventlog's to check.
type chainAnchor struct {
	head events.Link
	cp   uint64
}

func (a *chainAnchor) check(r eventlog.Record) error {
	if a == nil {
		return nil
	}
	p := r.Event.Prev
	if p.IsZero() || p.Seq > a.cp {
		return nil
	}
	if p.Seq == a.head.Seq && p != a.head {
		return fmt.Errorf("%w: the event links to stream sequence %d, which held another event than the snapshot's chain head records (the history the snapshot replaces was altered)", eventlog.ErrMissingEvent, p.Seq)
	}
	if p.Seq > a.head.Seq {
		return fmt.Errorf("%w: the event links to stream sequence %d, after the snapshot's chain head at %d but not after its checkpoint", eventlog.ErrMissingEvent, p.Seq, a.head.Seq)
	}
	return nil
}

// SnapshotPolicy says when a follower (Project) snapshots a read model:
// after EveryEvents events applied since the last snapshot, or after
// Every has passed with events applied since; zero turns either off. A
// snapshot is made in the background, one at a time per read model,
// while the projection goes on.
type SnapshotPolicy struct {
	EveryEvents int
	Every       time.Duration
	// Options tune the snapshots (Keep, the check's replay).
	Options SnapshotOptions
	// OnSnapshot, if set, is called after each snapshot attempt (res nil
	// when err is not), on the snapshot's goroutine.
	OnSnapshot func(inst events.InstallationID, res *SnapshotResult, err error)
}

// enabled reports whether the policy ever snapshots.
func (p *SnapshotPolicy) enabled() bool {
	return p != nil && (p.EveryEvents > 0 || p.Every > 0)
}

// snapshotter runs a SnapshotPolicy for Project.
type snapshotter struct {
	ctx   context.Context
	l     *eventlog.Log
	p     SnapshotPolicy
	dbs   map[events.InstallationID]*projections.DB
	mu    sync.Mutex
	state map[events.InstallationID]*snapState
	wg    sync.WaitGroup
}

type snapState struct {
	since   int       // events applied since the last snapshot
	last    time.Time // the last snapshot (or the start)
	running bool
}

func newSnapshotter(ctx context.Context, l *eventlog.Log, p SnapshotPolicy, dbs map[events.InstallationID]*projections.DB) *snapshotter {
	s := &snapshotter{ctx: ctx, l: l, p: p, dbs: dbs, state: map[events.InstallationID]*snapState{}}
	for inst := range dbs {
		s.state[inst] = &snapState{last: time.Now()}
	}
	return s
}

// applied counts n events applied to inst's read model and starts a
// snapshot when one is due.
func (s *snapshotter) applied(inst events.InstallationID, n int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.state[inst]
	if st == nil {
		return
	}
	st.since += n
	due := (s.p.EveryEvents > 0 && st.since >= s.p.EveryEvents) || (s.p.Every > 0 && st.since > 0 && time.Since(st.last) >= s.p.Every)
	if !due || st.running || s.ctx.Err() != nil {
		return
	}
	st.running = true
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		opts := s.p.Options
		res, err := SnapshotDB(s.ctx, s.l, inst, s.dbs[inst], &opts)
		s.mu.Lock()
		st.running = false
		if err == nil {
			st.since = 0
			st.last = time.Now()
		}
		s.mu.Unlock()
		if s.p.OnSnapshot != nil {
			s.p.OnSnapshot(inst, res, err)
		}
	}()
}

// wait waits for the snapshots under way.
func (s *snapshotter) wait() { s.wg.Wait() }
