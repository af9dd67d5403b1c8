package replay

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// RebuildOptions tune Rebuild.
type RebuildOptions struct {
	Options
	// NewKey is the key of the rebuilt database. The zero Key means the
	// key the live database is opened with (a plain rebuild). NoKey is
	// refused: read models are never written unencrypted.
	NewKey projections.Key
	// SchemaVersion is the schema of the rebuilt database: 0 means
	// projections.LatestSchema (a rebuild is also a migration), -1 the
	// live database's own version (a rekey keeps the schema).
	SchemaVersion int
	// CompareLive replays the fresh database only up to the live one's
	// checkpoint first and refuses to swap (with a *DriftError) unless
	// both have equal content there. Rekey sets it: the content under the
	// new key is then proven equal to the content under the old one.
	CompareLive bool
	// Force swaps in the rebuilt database even when it holds less than
	// the live one (ErrBehind): for an operator who knows the stream is
	// the history to trust and the live database's extra events are to be
	// dropped. It never overrides ErrWrongInstallation or ErrNoHistory.
	// What the live database held more is named (RebuildResult.Dropped)
	// and the live database kept beside (RebuildResult.KeptReplaced).
	Force bool
	// Fence, if set, is asked right before the rebuilt database is
	// swapped in, and before each batch the catch-up after the swap
	// commits to it, as ProjectOptions.Fence is: an error leaves the live
	// database as it was (or, after the swap, stops the catch-up), removes
	// the rebuilt file, and Rebuild returns it wrapped. A lease holder
	// (package lease) passes its lease's Check: the writer lock Rebuild
	// holds covers one host only, and a holder whose lease ended while it
	// rebuilt must not swap its file in over the new holder's on shared
	// storage.
	Fence func(inst events.InstallationID) error
	// Lock is the live database's writer lock when the caller holds it
	// already (projections.Lock of live): Rebuild then neither takes it
	// (a second flock, even in this process, would conflict) nor lets go
	// of it, so no other writer comes between what the caller did and
	// the rebuild, or between the rebuild and what the caller does next.
	// engine.OpenInstallation migrating by replay passes its own. A lock
	// of another file is refused.
	Lock *projections.WriterLock

	op string // what the logs call it: "rebuild" (default), "rekey", "migrate"
}

// RebuildResult says what a Rebuild did.
type RebuildResult struct {
	Installation events.InstallationID
	// Path is the live database, now the rebuilt one.
	Path string
	// Existed is whether a live database was there before; Recovered
	// whether it was there but damaged (ErrCorrupt) and so replaced
	// without being read. The damaged file is kept at KeptDamaged
	// ("<live>.damaged-<unix time>", a hard link made before the swap).
	Existed, Recovered bool
	KeptDamaged        string
	// PreviousSchema and PreviousCheckpoint describe the old database (0
	// when there was none, or it was damaged).
	PreviousSchema     int
	PreviousCheckpoint uint64
	// Schema is the schema version of the rebuilt database.
	Schema int
	// Replayed counts events applied into the fresh database before the
	// swap (after the snapshot it started from, if any); CaughtUp those
	// applied after it (appended while the rebuild ran).
	Replayed, CaughtUp int
	// FromSnapshot is the checkpoint of the snapshot the rebuild started
	// from (0: it replayed the whole history; see Options.FromStart).
	FromSnapshot uint64
	// Checkpoint is the rebuilt database's checkpoint at the end.
	Checkpoint uint64
	// Dropped says what the live database held that the rebuilt one does
	// not, when Force overruled that refusal (ErrBehind); the live
	// database is then kept at KeptReplaced ("<live>.replaced-<unix
	// time>", a hard link made before the swap).
	Dropped      string
	KeptReplaced string
	// Digest is the content digest at the swap when CompareLive was set
	// (equal to the old database's), else the zero Digest.
	Digest projections.Digest
}

// Rebuild replays inst's events into a fresh database beside the live one
// at live, verifies it (integrity check, checkpoint reached), fsyncs it,
// atomically renames it over live and fsyncs the directory, then applies
// the events appended meanwhile. key opens the live database (if there is
// one) and, unless opts.NewKey is set, the rebuilt one.
//
// Rebuild never swaps in less than the live database holds: it refuses
// (leaving the live file as it was) when the installation has no events on
// the stream or its history lacks installation.created (ErrNoHistory), when
// the live database belongs to another installation (ErrWrongInstallation),
// and, unless opts.Force, when the rebuilt database is behind the live one
// (ErrBehind: a lower checkpoint, or fewer events of some aggregate). By
// default it also re-derives every MLS transition as it replays (see
// Options.SkipMLSCheck).
//
// The live database is only read, and replaced by the rename alone: a
// process killed at any moment leaves either the old database intact or
// the new one complete (possibly a little behind the stream, which the
// next catch-up fixes). A cancelled ctx removes the temporary file and
// leaves the live database as it was, unless the rename already happened.
//
// Rebuild holds the live database's writer lock (projections.Lock, or
// the caller's: RebuildOptions.Lock) from start to end: while an installation or a follower holds it, Rebuild
// fails at once with projections.ErrLocked naming the holder (stop it
// first), and none can start writing while Rebuild runs. A live database that is damaged (ErrCorrupt, on
// opening it or reading its checkpoint) is replaced without being read
// further; any other failure to open it (wrong key, not a read model,
// schema too new) stops Rebuild before it writes. With CompareLive a
// damaged database stops Rebuild too: there is nothing to compare with.
//
// A passphrase key uses the live database's salt sidecar (opts.DB.SaltPath,
// default projections.SaltPath(live); created there if missing) so the swapped file opens with it; a rekey to another
// passphrase keeps that salt, since the database and its sidecar cannot
// be replaced in one atomic step.
func Rebuild(ctx context.Context, l *eventlog.Log, inst events.InstallationID, live string, key projections.Key, opts *RebuildOptions) (*RebuildResult, error) {
	var ro RebuildOptions
	if opts != nil {
		ro = *opts
	}
	op := cmp.Or(ro.op, "rebuild")
	log := l.Logger().With("installation", string(inst), "stream", l.Stream(), "op", op, "path", live)
	start := time.Now()
	log.Info("replay: "+op+" started", "schema_asked", ro.SchemaVersion, "mls_check", !ro.SkipMLSCheck, "compare_live", ro.CompareLive, "force", ro.Force)
	res, err := rebuild(ctx, l, inst, live, key, ro, log)
	if err != nil {
		switch {
		case IsVerificationFailure(err):
			log.Error("replay: "+op+" failed verification; the live read model is unchanged unless swapped", since(start), "swapped", res != nil, "err", err)
		case errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded):
			log.Info("replay: "+op+" cancelled", since(start), "swapped", res != nil, "err", err)
		default:
			log.Warn("replay: "+op+" failed", since(start), "swapped", res != nil, "err", err)
		}
		return res, err
	}
	log.Info("replay: "+op+" finished", "events", res.Replayed+res.CaughtUp, "replayed", res.Replayed, "caught_up", res.CaughtUp, "from_snapshot", res.FromSnapshot,
		"seq", res.Checkpoint, "schema", res.Schema, "previous_schema", res.PreviousSchema, "previous_seq", res.PreviousCheckpoint,
		"recovered", res.Recovered, since(start))
	return res, nil
}

func rebuild(ctx context.Context, l *eventlog.Log, inst events.InstallationID, live string, key projections.Key, ro RebuildOptions, log *slog.Logger) (*RebuildResult, error) {
	o := ro.Options.withDefaults()
	fail := func(op string, err error) error {
		return &projections.FileError{Path: live, Op: op, Err: err}
	}
	if err := inst.Validate(); err != nil {
		return nil, fmt.Errorf("replay: rebuild: %w", err)
	}
	newKey := ro.NewKey
	if !newKey.Valid() {
		newKey = key
	}
	if !newKey.Valid() || newKey.IsPlaintext() {
		return nil, fail("rebuild", errors.New("the rebuilt database needs an encryption key (raw or passphrase)"))
	}
	// A rekey or a migration of a path that holds nothing (a typo) is
	// refused before the directory, the lock file or anything else is
	// made there.
	if ok, err := exists(live); err != nil {
		return nil, fail(cmp.Or(ro.op, "rebuild"), err)
	} else if !ok {
		if err := needsLive(ro); err != nil {
			return nil, fail(ro.op, err)
		}
	}
	// The one writer of live from here to the end: a follower or an
	// installation writing meanwhile would write to the file the swap
	// replaces.
	if err := ensureDir(filepath.Dir(live)); err != nil {
		return nil, fail("rebuild", err)
	}
	// Through a symbolic link, the database it names is rebuilt (and
	// locked), not the link.
	canon, err := projections.CanonicalPath(live)
	if err != nil {
		return nil, fail("rebuild", err)
	}
	live = canon
	if ro.Lock == nil {
		lk, err := projections.Lock(live)
		if err != nil {
			return nil, err
		}
		defer lk.Unlock()
	} else if !ro.Lock.Held(live) {
		return nil, fail("rebuild", fmt.Errorf("the writer lock given (RebuildOptions.Lock) is not held on this database (it is on %s)", ro.Lock.Path()))
	}
	if _, err := projections.RemoveLeftovers(live); err != nil {
		return nil, fail("rebuild: remove leftovers", err)
	}
	res := &RebuildResult{Installation: inst, Path: live}
	var liveDigest projections.Digest
	var liveHead *projections.Head // nil: no live database, or a damaged one
	if res.Existed, err = exists(live); err != nil {
		return nil, fail("rebuild", err)
	}
	if res.Existed {
		lv, err := readLive(ctx, live, key, o.DB, ro.CompareLive)
		switch {
		case errors.Is(err, projections.ErrCorrupt) && !ro.CompareLive:
			// Damage found on opening or on reading the checkpoint: the
			// file is replaced without being read further.
			res.Recovered = true
		case err != nil:
			// Reading every row (rekey, migrate) meets damage the open
			// did not, which SQLite may report only as "SQL logic
			// error": the file check names the page.
			if ro.CompareLive && !errors.Is(err, projections.ErrWrongKey) {
				if cerr := projections.CheckFile(ctx, live, key, &o.DB); cerr != nil {
					return nil, cerr
				}
			}
			return nil, err
		default:
			res.PreviousSchema, res.PreviousCheckpoint, liveDigest, liveHead = lv.schema, lv.head.Checkpoint, lv.digest, &lv.head
			// Damage the open and the head did not touch (an index page,
			// say): the database is still compared, and kept aside.
			switch err := projections.CheckFile(ctx, live, key, &o.DB); {
			case errors.Is(err, projections.ErrCorrupt) && !ro.CompareLive:
				res.Recovered = true
			case err != nil:
				return nil, err
			}
		}
	} else if err := needsLive(ro); err != nil {
		return nil, fail(ro.op, err)
	}
	if liveHead != nil && liveHead.Installation != "" && liveHead.Installation != inst {
		return nil, fail("rebuild", fmt.Errorf("%w: the database is installation %s's, not %s's", ErrWrongInstallation, liveHead.Installation, inst))
	}
	streamLast, err := l.LastSeq(ctx, inst)
	if err != nil {
		return nil, err
	}
	if streamLast == 0 && liveHead != nil && liveHead.Checkpoint > 0 && !ro.Force {
		return nil, fail("rebuild", fmt.Errorf("%w: the live database has applied events of %s up to stream sequence %d, the stream holds none", ErrBehind, inst, liveHead.Checkpoint))
	}
	if streamLast == 0 {
		return nil, fail("rebuild", fmt.Errorf("%w: stream %s holds no event of installation %s (check the installation id and the store or server you point at)", ErrNoHistory, l.Stream(), inst))
	}
	// On a stream a re-seal made, a read model of the source has
	// checkpoints of the source's sequences: only the positions of its
	// aggregates, which the re-seal keeps, say whether the stream holds
	// less (after the replay, notLess), so this check is skipped there,
	// not left to --force, which would switch that one off too.
	if liveHead != nil && streamLast < liveHead.Checkpoint && !ro.Force && l.ResealedFrom() == "" {
		return nil, fail("rebuild", fmt.Errorf("%w: the live database has applied events up to stream sequence %d, the stream's last event of %s is at %d", ErrBehind, liveHead.Checkpoint, inst, streamLast))
	}
	if !ro.Force {
		// Without a live database (a lost one recovered, a damaged one)
		// a stored snapshot may still show what the stream held.
		if cp, err := snapshotPast(ctx, l, inst, streamLast, liveHead != nil && liveHead.Checkpoint > 0, log); err != nil {
			return nil, err
		} else if cp > 0 {
			return nil, fail("rebuild", fmt.Errorf("%w: a snapshot of %s (replayer snapshot) was taken at stream sequence %d, the stream's last event of it is at %d: the stream lost events the snapshot holds", ErrBehind, inst, cp, streamLast))
		}
	}
	var mc *mlsChecker
	if !o.SkipMLSCheck {
		mc = newMLSChecker(inst)
	}
	schema := ro.SchemaVersion
	switch {
	case schema == 0:
		schema = projections.LatestSchema
	case schema < 0 && res.PreviousSchema > 0:
		schema = res.PreviousSchema
	case schema < 0:
		schema = projections.LatestSchema
	}

	tmp, err := projections.BuildAside(filepath.Dir(live), filepath.Base(live))
	if err != nil {
		return nil, fail("rebuild", err)
	}
	fresh, err := openFresh(tmp, saltPath(live, o.DB), newKey, schema, o.DB)
	if err != nil {
		_ = projections.RemoveAside(tmp)
		return nil, err
	}
	closed := false
	abandon := func(err error) (*RebuildResult, error) {
		if !closed {
			_ = fresh.Close()
		}
		return nil, errors.Join(err, projections.RemoveAside(tmp))
	}

	target := res.PreviousCheckpoint
	if !ro.CompareLive {
		target = streamLast
	}
	if !o.FromStart {
		base, err := fromSnapshot(ctx, l, inst, fresh, target, log)
		if err != nil {
			return abandon(err)
		}
		if base != nil {
			res.FromSnapshot = base.Checkpoint
			o.anchor = &chainAnchor{head: base.Head, cp: base.Checkpoint}
			if mc != nil {
				// The checker re-derives each group from its first event;
				// the snapshot was checked when it was made.
				log.Info("replay: MLS re-derivation is not run for the tail after a snapshot (replayer verify --mls, or --from-start, re-derives the whole history)")
				mc = nil
			}
		}
	}
	n, _, err := replayInto(ctx, l, inst, fresh, target, o, PhaseReplay, mc, nil)
	res.Replayed += n
	if err != nil {
		return abandon(err)
	}
	if ro.CompareLive {
		d, err := fresh.Digest(ctx)
		if err != nil {
			return abandon(err)
		}
		if diff := projections.Compare(liveDigest, d); diff != nil {
			return abandon(explainDrift(ctx, l, inst, live, key, o.DB, fresh, res.PreviousCheckpoint, diff))
		}
		res.Digest = d
	}
	// Shrink the window after the swap: apply what arrived meanwhile.
	n, cp, err := replayInto(ctx, l, inst, fresh, untilEnd, o, PhaseCatchUp, mc, nil)
	res.Replayed += n
	if err != nil {
		return abandon(err)
	}
	if cp < target {
		return abandon(fail("rebuild", fmt.Errorf("%w: the rebuilt database stopped at stream sequence %d, before the stream's last event of %s at %d", ErrBehind, cp, inst, target)))
	}
	if err := notLess(ctx, fresh, inst, liveHead, l.ResealedFrom() != ""); err != nil {
		if !ro.Force || !errors.Is(err, ErrBehind) {
			return abandon(fail("rebuild", err))
		}
		// Forced: the live database's word is overruled, not thrown
		// away: it is kept beside, and the loss named.
		res.Dropped = err.Error()
		res.KeptReplaced = fmt.Sprintf("%s.replaced-%d", live, time.Now().Unix())
	}
	if err := fresh.IntegrityCheck(ctx); err != nil {
		return abandon(err)
	}
	closed = true
	if err := fresh.Close(); err != nil {
		return abandon(err)
	}
	// Last chance to back out: after the rename the new database is live.
	if err := ctx.Err(); err != nil {
		return abandon(err)
	}
	if res.Recovered {
		// A damaged database could not be compared with the rebuilt one:
		// keep it, under another name, for whoever investigates.
		res.KeptDamaged = fmt.Sprintf("%s.damaged-%d", live, time.Now().Unix())
		if err := os.Link(live, res.KeptDamaged); err != nil {
			return abandon(fail("rebuild: keep the damaged database", err))
		}
		log.Warn("replay: the live read model is damaged; kept aside, a rebuilt one replaces it", "kept", res.KeptDamaged)
	}
	if res.KeptReplaced != "" {
		if err := os.Link(live, res.KeptReplaced); err != nil {
			return abandon(fail("rebuild: keep the replaced database", err))
		}
		log.Warn("replay: forced: the live read model holds events the stream does not; kept aside, a rebuilt one with less replaces it",
			"kept", res.KeptReplaced, "dropped", res.Dropped)
	}
	if ro.Fence != nil {
		// Asked last, as a projection's commit is (ApplyIf): whoever
		// holds the read model now may have written it meanwhile.
		if err := ro.Fence(inst); err != nil {
			for _, kept := range []string{res.KeptDamaged, res.KeptReplaced} {
				if kept != "" {
					_ = os.Remove(kept) // a link to the live file, which stays
				}
			}
			return abandon(fmt.Errorf("replay: %s: not swapping the rebuilt database (stream sequence %d) in at %s: %w", inst, cp, live, err))
		}
	}
	if err := projections.Swap(tmp, live); err != nil {
		return abandon(err)
	}
	// From here the rebuilt database is live: a failure must say so (an
	// operator keeping the old key would keep one that opens nothing).
	swapped := func(err error) (*RebuildResult, error) {
		return res, &SwappedError{Path: live, Err: err}
	}
	if !newKey.Equal(key) && !isPassphrase(newKey) {
		// The old passphrase's salt now protects nothing.
		salt := saltPath(live, o.DB)
		if err := os.Remove(salt); err != nil && !errors.Is(err, fs.ErrNotExist) {
			log.Warn("replay: the old passphrase's salt sidecar could not be removed; it protects nothing now", "salt", salt, "err", err)
		}
	}
	res.Schema = schema
	res.Checkpoint = cp // as swapped
	db, err := openAt(live, newKey, schema, o.DB)
	if err != nil {
		return swapped(err)
	}
	defer db.Close()
	o.fence = ro.Fence // the file is live now
	n, cp, err = replayInto(ctx, l, inst, db, untilEnd, o, PhaseCatchUp, mc, nil)
	res.CaughtUp = n
	res.Checkpoint = max(res.Checkpoint, cp)
	if err != nil {
		return swapped(err)
	}
	if err := db.Close(); err != nil {
		return swapped(err)
	}
	return res, nil
}

// liveState is what Rebuild reads of the live database, in one snapshot.
type liveState struct {
	schema int
	head   projections.Head
	digest projections.Digest // only when asked for
}

// readLive opens the live database as it is and reads its schema version
// and Head, and with digest its content digest, in one snapshot. A damaged
// file fails with ErrCorrupt whether the damage shows when it is opened or
// only when the checkpoint or a table is read.
func readLive(ctx context.Context, live string, key projections.Key, base projections.Options, digest bool) (lv liveState, err error) {
	src, err := openAsIs(live, key, base)
	if err != nil {
		return lv, err
	}
	defer func() {
		if cerr := src.Close(); err == nil {
			err = cerr
		}
	}()
	snap, err := src.Snapshot(ctx)
	if err != nil {
		return lv, err
	}
	defer snap.Close()
	if digest {
		if lv.digest, err = snap.Digest(ctx); err != nil {
			return lv, err
		}
	}
	if lv.head, err = snap.Head(ctx); err != nil {
		return lv, err
	}
	lv.schema = src.SchemaVersion()
	return lv, nil
}

// notLess refuses a rebuilt database that is not inst's history or holds
// less than the live one (live nil: none to compare with). On a stream a
// re-seal made (resealed), the live checkpoint may be of the source's
// sequences: positions alone decide.
func notLess(ctx context.Context, fresh *projections.DB, inst events.InstallationID, live *projections.Head, resealed bool) error {
	h, err := fresh.Head(ctx)
	if err != nil {
		return err
	}
	if h.Installation != inst {
		return fmt.Errorf("%w: the events of %s on the stream (up to sequence %d) hold no installation.created: its first events are missing", ErrNoHistory, inst, h.Checkpoint)
	}
	if live == nil {
		return nil
	}
	lacks := h.Lacks(*live)
	if len(lacks) == 0 && (h.Checkpoint >= live.Checkpoint || resealed) {
		return nil
	}
	what := make([]string, 0, 4)
	for i, s := range lacks {
		if i == 3 {
			what = append(what, fmt.Sprintf("and %d more aggregates", len(lacks)-3))
			break
		}
		what = append(what, s.String())
	}
	if len(what) == 0 {
		what = append(what, fmt.Sprintf("events after stream sequence %d", h.Checkpoint))
	}
	return fmt.Errorf("%w: the stream gives installation %s up to sequence %d, the live database holds up to %d; missing from the stream: %s",
		ErrBehind, inst, h.Checkpoint, live.Checkpoint, strings.Join(what, ", "))
}

// isPassphrase reports whether k is a passphrase key, the only kind that
// reads the salt sidecar. The redacted text is the one exported view of a
// key's kind.
func isPassphrase(k projections.Key) bool {
	t, _ := k.MarshalText()
	return strings.Contains(string(t), "passphrase")
}

// openFresh creates the rebuilt database at tmp, using the salt sidecar at
// salt (the live database's, which stays where it is) for a passphrase key.
func openFresh(tmp, salt string, key projections.Key, schema int, base projections.Options) (*projections.DB, error) {
	o := base
	o.SchemaVersion = schema
	o.SaltPath = salt
	o.CheckIntegrity = false
	return projections.Open(tmp, key, &o)
}

// openAt opens the live database at schema.
func openAt(live string, key projections.Key, schema int, base projections.Options) (*projections.DB, error) {
	o := base
	o.SchemaVersion = schema
	o.SaltPath = saltPath(live, base)
	o.CheckIntegrity = false
	return projections.Open(live, key, &o)
}

// Rekey replays inst's read model at live under newKey: it rebuilds beside
// the live database (opened with oldKey) at the live schema, proves the new
// content equal to the old at the old checkpoint (else a *DriftError and
// nothing changes), swaps, and catches up. Afterwards oldKey is refused
// with projections.ErrWrongKey and newKey opens the database. Raw and
// passphrase keys mix freely; see Rebuild for the salt sidecar.
func Rekey(ctx context.Context, l *eventlog.Log, inst events.InstallationID, live string, oldKey, newKey projections.Key, opts *Options) (*RebuildResult, error) {
	if !newKey.Valid() || newKey.IsPlaintext() {
		return nil, &projections.FileError{Path: live, Op: "rekey", Err: errors.New("the new key must be a raw key or a passphrase")}
	}
	if newKey.Equal(oldKey) {
		return nil, &projections.FileError{Path: live, Op: "rekey", Err: errors.New("the new key equals the old one")}
	}
	ro := RebuildOptions{NewKey: newKey, SchemaVersion: -1, CompareLive: true, op: "rekey"}
	if opts != nil {
		ro.Options = *opts
	}
	return Rebuild(ctx, l, inst, live, oldKey, &ro)
}

// Migrate rebuilds inst's read model at live by replay at the newest
// schema (projections.LatestSchema), under newKey if it is valid, else
// under key. It is the general migration path: it works from any older
// schema and from an unencrypted database (key = projections.NoKey, newKey
// required). A missing live database is refused (fs.ErrNotExist): Rebuild
// builds one. projections.MigrateInPlace is the fast path for small schema steps.
func Migrate(ctx context.Context, l *eventlog.Log, inst events.InstallationID, live string, key, newKey projections.Key, opts *Options) (*RebuildResult, error) {
	ro := RebuildOptions{NewKey: newKey, SchemaVersion: projections.LatestSchema, op: "migrate"}
	if opts != nil {
		ro.Options = *opts
	}
	return Rebuild(ctx, l, inst, live, key, &ro)
}

// needsLive is the refusal of ro's operation when there is no live
// database, or nil when it builds one: a rekey has nothing to compare
// with, and a migration would build a new database where a typo'd path
// points, report it recovered, and leave the one meant at its old schema.
func needsLive(ro RebuildOptions) error {
	switch {
	case ro.CompareLive:
		return fmt.Errorf("%w: no live database to compare with", fs.ErrNotExist)
	case ro.op == "migrate":
		return fmt.Errorf("%w: no database to migrate (rebuild builds one from the stream)", fs.ErrNotExist)
	}
	return nil
}

// ensureDir creates a missing read-model directory (0700), as opening a
// new database would: recovering into a new path needs no mkdir first.
func ensureDir(dir string) error {
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return err
	}
	return os.Chmod(dir, 0o700)
}

// snapshotPast returns the checkpoint of the newest of inst's stored
// snapshots taken past the stream's last event of inst, last, that opens
// (its seal authenticates it: a name alone proves nothing), or 0. One
// past it that does not open (a chunk lost, bytes changed, another
// installation's moved under this name) proves nothing either way, and
// nothing else is left to say what the stream held: it is refused
// (ErrBehind) as well, naming it, for the operator to decide (--force),
// not a warning after which the rebuild goes on with less. With a live
// read model (live: one that has applied events), whose checkpoint
// against last says whether the stream holds less, such an object is
// only logged: whoever may write to the bucket can put one under any
// name, and refusing it would refuse every rekey and migrate (which have
// no --force) and an engine's migration by replay, for good.
func snapshotPast(ctx context.Context, l *eventlog.Log, inst events.InstallationID, last uint64, live bool, log *slog.Logger) (uint64, error) {
	refs, err := l.Snapshots(ctx, inst)
	if err != nil {
		if ctx.Err() != nil {
			return 0, ctx.Err()
		}
		return 0, fmt.Errorf("replay: rebuild: the stored snapshots, which may show what the stream held, cannot be listed (--force rebuilds without looking): %w", err)
	}
	var unreadable error
	for _, ref := range refs {
		if ref.Checkpoint <= last {
			continue
		}
		plain, err := l.OpenSnapshot(ctx, inst, ref.Checkpoint)
		if err != nil {
			if ctx.Err() != nil {
				return 0, ctx.Err()
			}
			log.Warn("replay: a snapshot past the stream's last event does not open", "bucket", l.SnapshotBucket(), "object", ref.Name,
				"snapshot_seq", ref.Checkpoint, "last", last, "err", err)
			if unreadable == nil && !live {
				// Named by object and bucket, for the operator to look
				// at: installation and checkpoint do not name it (the
				// name is a keyed pseudonym).
				unreadable = fmt.Errorf("%w: a snapshot object of %s named for stream sequence %d (object %s in bucket %s), past the stream's last event of it at %d, does not open (%v): the stream may have lost events it holds, or the snapshot was damaged or planted; keep what you have, and --force rebuilds from the stream anyway",
					ErrBehind, inst, ref.Checkpoint, ref.Name, l.SnapshotBucket(), last, err)
			}
			continue
		}
		clear(plain)
		return ref.Checkpoint, nil
	}
	return 0, unreadable
}
