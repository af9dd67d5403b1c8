package replay

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// Retention with deletion (docs/forward-secrecy.md, Retention, shredding
// and compaction). Retain applies an installation's policy to its
// message and delivery history, in an order that a kill at any point leaves a state
// that running it again finishes, and where nothing that must be kept is
// unreadable:
//
//  1. rows: the read model's messages older than the messages cutoff,
//     and its acknowledged or expired deliveries enqueued before the
//     delivery cutoff, are deleted (secure_delete is on);
//  2. snapshot: a snapshot of the read model is made and checked (the
//     check replays the history and deletes the same rows) and
//     stored; it is now what carries the retained state forward;
//  3. prune: every other snapshot of the installation is deleted (they
//     may hold the messages just deleted, sealed under a key derived from
//     the root);
//  4. keys: the data key of every messages period (group, UTC day) and
//     delivery period (queue, UTC day) before its cutoff is shredded: a
//     shred mark, then a purge of the key's every revision from the key
//     bucket and of the Log's cache; and each group's epoch chain is
//     advanced past the epochs the policy no longer keeps
//     (eventlog.Log.ShredEpochsBefore).
//
// Then the periods' events are unreadable everywhere, and purgeable:
// Compact deletes those the newest snapshot covers.

// KeepAllEpochs and KeepNoPastEpochs are the special values of
// RetentionPolicy.PastEpochs.
const (
	// KeepAllEpochs keeps every epoch's key (the default).
	KeepAllEpochs = 0
	// KeepNoPastEpochs keeps the current epoch's key only (and those of
	// the past epochs whose secrets the read model still holds).
	KeepNoPastEpochs = -1
)

// KeepForever and KeepNone are the special values of
// RetentionPolicy.Messages and Delivery.
const (
	// KeepForever keeps the message history forever (the default).
	KeepForever time.Duration = 0
	// KeepNone keeps no history past the UTC day it was recorded in:
	// each day is shredded once it has ended (and RetentionGrace has
	// passed).
	KeepNone time.Duration = -1
)

// RetentionPolicy is an installation's retention policy.
type RetentionPolicy struct {
	// Messages is how long application messages are kept, by age, at the
	// granularity of their data keys' periods (a group's UTC day): a day
	// is shredded once all of it is older than Messages plus
	// RetentionGrace, so a message lives between that and a day more.
	// KeepForever (0) keeps them forever; KeepNone keeps none past its day.
	Messages time.Duration
	// Delivery is how long delivery queue events are kept, by age, at the
	// granularity of a queue's UTC day, as Messages. The read model's
	// acknowledged and expired deliveries enqueued before the cutoff are
	// deleted (their payloads were dropped at the acknowledgement; with
	// the rows go their idempotency keys, so the deduplication window of
	// a queue is its delivery retention); pending ones are kept whatever
	// their age, carried by the snapshot.
	Delivery time.Duration
	// History is how long events stay on the stream at all once a
	// snapshot covers them, by the time the stream stored them: Compact
	// deletes older events at or below the newest snapshot, whatever
	// their period (their content lives on in the snapshot; a replay from
	// the start is refused from then on). KeepForever (0) keeps them;
	// KeepNone deletes every event the snapshot covers. Unlike the other
	// ages it destroys no key: what it removes is the events, from the
	// stream.
	History time.Duration
	// PastEpochs is how many epochs before each group's current one keep
	// the keys of their recorded states (creation, proposals, commits,
	// joins: events.ClassEpoch); older epochs' keys are destroyed by
	// advancing the group's epoch chain. Never fewer than the read model
	// still holds secrets of (the member's maximum_past_epochs window):
	// the archive keeps what the member keeps. KeepAllEpochs (0) keeps
	// every epoch; KeepNoPastEpochs keeps the current one only.
	PastEpochs int
}

// keepEpochsFrom returns the oldest epoch of a group at epoch current
// whose key the policy keeps, given the oldest the read model holds
// secrets of (held false: none), and false when it keeps them all.
func (p RetentionPolicy) keepEpochsFrom(current, oldestHeld uint64, held bool) (uint64, bool) {
	var keep uint64
	switch {
	case p.PastEpochs == KeepAllEpochs:
		return 0, false
	case p.PastEpochs < 0:
		keep = current
	case uint64(p.PastEpochs) < current:
		keep = current - uint64(p.PastEpochs)
	}
	if held {
		keep = min(keep, oldestHeld)
	}
	return keep, keep > 0
}

// EpochCut is a group's epoch chain advanced by Retain.
type EpochCut struct {
	// Group is the group aggregate's id (hex of the MLS group id).
	Group string `json:"group"`
	// From is the oldest epoch whose key the chain derived before, Keep
	// the oldest after: epochs From to Keep-1 lost their keys.
	From uint64 `json:"from"`
	Keep uint64 `json:"keep"`
}

// RetentionGrace is how long after the age says a day may go retention
// still keeps it. Writers in other processes seal a day's events under
// the day's key as they cached it, by their own clocks: one a little
// behind, or an append still being retried (for up to the engine's
// OutcomeTimeout), seals into a day that has just ended, and an event
// sealed under a key shredded meanwhile opens for no one else. A Log
// whose clock lags the server's by more than eventlog.MaxClockBehind
// (less than this) refuses appends, so no writer dates events further
// back than that.
const RetentionGrace = time.Hour

// cutoff is the start of the oldest UTC day kept by age at now.
func cutoff(age time.Duration, now time.Time) (time.Time, bool) {
	switch {
	case age == KeepForever:
		return time.Time{}, false
	case age < 0:
		age = 0
	}
	return now.Add(-age - RetentionGrace).UTC().Truncate(24 * time.Hour), true
}

// MessagesCutoff returns the start of the oldest UTC day whose messages
// the policy keeps at now: the days before it are shredded. ok is false
// when the policy keeps every message.
func (p RetentionPolicy) MessagesCutoff(now time.Time) (time.Time, bool) {
	return cutoff(p.Messages, now)
}

// DeliveryCutoff is MessagesCutoff for the delivery history.
func (p RetentionPolicy) DeliveryCutoff(now time.Time) (time.Time, bool) {
	return cutoff(p.Delivery, now)
}

// RetainOptions tune Retain.
type RetainOptions struct {
	// Options tune the snapshot's check (BatchSize, DB).
	Options
	// Now is the clock the policy is applied at (default time.Now).
	Now func() time.Time
	// RecordStates, when set, is called with the messages cutoff before
	// any message is counted or deleted, to record the state of each group
	// whose messages older than it a reload of the group still needs
	// (projections.DB.GroupsToRecordBefore): the engine's
	// Installation.Retain records them (events.StateRecorded) and
	// projects them into the read model. The messages of groups it does
	// not record are kept (RetainResult.GroupsKept).
	RecordStates func(ctx context.Context, cutoff time.Time) error
	// Step, when set, is called after each step: "rows", "snapshot",
	// "prune", "epochs <group>" after each group's chain is cut, "keys"
	// (tests: kill points).
	Step func(string)
}

// RetainResult says what Retain did.
type RetainResult struct {
	Installation events.InstallationID
	// Cutoff and DeliveryCutoff are the starts of the oldest UTC days
	// kept (zero: kept forever).
	Cutoff, DeliveryCutoff time.Time
	// Periods are the messages and delivery periods shredded (or found
	// still keyed and shredded now).
	Periods []eventlog.PeriodOfDay
	// RowsDeleted counts the messages deleted from the read model,
	// DeliveriesDeleted the deliveries.
	RowsDeleted, DeliveriesDeleted int64
	// GroupsKept counts the groups whose messages older than the cutoff
	// were kept because a reload of the group still needs them (recorded
	// since its state, in an epoch it holds: projections.DB.DeleteMessagesBefore)
	// and no state was recorded for it (RetainOptions.RecordStates): they
	// go once the group's state moves past them (its next commit, once
	// their epoch is retired, or retention through the engine).
	GroupsKept int
	// Snapshot is the snapshot made (nil when the newest one already was
	// of this read model at its checkpoint, or nothing was to do).
	Snapshot *SnapshotResult
	// SnapshotsDeleted lists the checkpoints of the other snapshots
	// deleted.
	SnapshotsDeleted []uint64
	// KeysShredded counts the key bucket entries destroyed.
	KeysShredded int
	// UnknownKeys counts the installation's messages and delivery keys
	// whose day Retain could not tell (of no group or queue the read
	// model holds, or dated days ahead): kept, and logged.
	UnknownKeys int
	// Epochs are the groups whose epoch chains were advanced (or found
	// behind the policy and advanced now).
	Epochs []EpochCut
}

// Retain applies p to the message history of inst, whose read model is
// db (the live one: Retain deletes from it). See the steps above. With
// KeepForever for both it does nothing but replace a retention mark that
// does not check out (replaceForgedMark), as every retention does. Running it again after an interruption
// finishes the work; running it again after it finished changes nothing
// (the days already shredded have no key left to find).
//
// The periods are found from the read model's groups and delivery queues
// and every key of the installation in the key bucket
// (eventlog.Log.OldDayPeriods): a day before the cutoff is shredded
// whether or not the read model still holds a message of it (an earlier
// run, or a build before this search, may have deleted its messages and
// left its key). A key that matches no group or queue of the read model
// is kept, counted in UnknownKeys
// (docs/forward-secrecy.md, What is built: retention).
func Retain(ctx context.Context, l *eventlog.Log, inst events.InstallationID, db *projections.DB, p RetentionPolicy, opts *RetainOptions) (*RetainResult, error) {
	var o RetainOptions
	if opts != nil {
		o = *opts
	}
	now := o.Now
	if now == nil {
		now = time.Now
	}
	step := func(s string) {
		if o.Step != nil {
			o.Step(s)
		}
	}
	// An erased installation has nothing left to shred, and its read
	// model is what is left of it: refused, untouched, as snapshot,
	// compact and follow refuse it, before anything is asked of the read
	// model or the clock. Going ahead, RetainFile would delete the read
	// model's old messages, then fail on the snapshot; through the engine
	// it would fail recording a group's state, or, with no message to
	// delete (--past-epochs), succeed having "nothing left to shred".
	if err := RefuseErased(ctx, l, inst, db.Path()); err != nil {
		return nil, err
	}
	res := &RetainResult{Installation: inst}
	at := now()
	msgCut, msgOK := p.MessagesCutoff(at)
	delCut, delOK := p.DeliveryCutoff(at)
	epochsOK := p.PastEpochs != KeepAllEpochs
	historyOK := p.History != KeepForever
	if msgOK {
		res.Cutoff = msgCut
	}
	if delOK {
		res.DeliveryCutoff = delCut
	}
	if msgOK || delOK || historyOK {
		// The ages are measured on this clock: one far ahead would shred
		// every day there is.
		if err := l.CheckClock(ctx, at); err != nil {
			return nil, fmt.Errorf("replay: retention of %s (nothing done): %w", inst, err)
		}
	}
	log := l.Logger().With("installation", string(inst), "stream", l.Stream(), "op", "retain", "path", db.Path())
	fail := func(err error) error { return &projections.FileError{Path: db.Path(), Op: "retain", Err: err} }
	self, found, err := db.Installation(ctx)
	if err != nil {
		return nil, err
	}
	switch {
	case !found:
		return nil, fail(errors.New("the read model holds no installation yet"))
	case self.ID != inst:
		return nil, fail(fmt.Errorf("%w: the database is installation %s's, not %s's", ErrWrongInstallation, self.ID, inst))
	}
	// A retention mark that does not check out (written by someone
	// without the keyring) refuses every snapshot of inst: replaced here
	// whatever this retention deletes, not only by one with rows to
	// delete (MarkRetention, step 0), since retain is the remedy the
	// snapshot's refusal names.
	if err := replaceForgedMark(ctx, l, inst, log); err != nil {
		return nil, fmt.Errorf("replay: retention of %s (nothing deleted): %w", inst, err)
	}
	if !msgOK && !delOK && !epochsOK && !historyOK {
		return res, nil
	}
	var rows int64
	if msgOK && o.RecordStates != nil {
		if err := o.RecordStates(ctx, msgCut); err != nil {
			return nil, fmt.Errorf("replay: retention of %s (nothing deleted): record the group states the messages to delete are since: %w", inst, err)
		}
	}
	if msgOK {
		groups, err := db.Groups(ctx)
		if err != nil {
			return nil, err
		}
		ids := make([]string, len(groups))
		for i, g := range groups {
			ids[i] = hex.EncodeToString(g.ID) // the group aggregate's id, as the engine names it
		}
		ps, unknown, err := l.OldDayPeriods(ctx, inst, events.ClassMessages, ids, msgCut, at)
		if err != nil {
			return nil, err
		}
		res.Periods = append(res.Periods, ps...)
		res.UnknownKeys += unknown
		n, err := db.CountMessagesBefore(ctx, msgCut)
		if err != nil {
			return nil, err
		}
		rows += n
	}
	if delOK {
		queues, err := db.DeliveryChannels(ctx)
		if err != nil {
			return nil, err
		}
		ps, unknown, err := l.OldDayPeriods(ctx, inst, events.ClassDelivery, queues, delCut, at)
		if err != nil {
			return nil, err
		}
		res.Periods = append(res.Periods, ps...)
		res.UnknownKeys += unknown
		n, err := db.CountDeliveriesBefore(ctx, delCut)
		if err != nil {
			return nil, err
		}
		rows += n
	}
	if res.UnknownKeys > 0 {
		log.Warn("replay: retention: keys of the installation whose day it cannot tell are kept (a group or queue the read model does not hold, or a day far ahead)", "keys", res.UnknownKeys)
	}
	if epochsOK {
		if res.Epochs, err = epochCuts(ctx, l, inst, db, p); err != nil {
			return nil, err
		}
	}
	if len(res.Periods) == 0 && rows == 0 && len(res.Epochs) == 0 && !historyOK {
		log.Info("replay: retention: nothing to shred", "messages_cutoff", res.Cutoff, "delivery_cutoff", res.DeliveryCutoff, "past_epochs", p.PastEpochs)
		return res, nil
	}

	// 0. The mark: from now on a snapshot checked against one older than
	// the read model's checkpoint (the retention's snapshot's), or
	// against the start, is refused or undone (snapshotDB,
	// retainedSince): it may hold the rows deleted next. Without it a
	// snapshot that read the read model before step 1 and was stored
	// after step 2 would replace (same checkpoint) or outlive (a copy
	// ahead) the retention's, with the rows in it, once their keys were
	// gone (TestSnapshotRacingRetention).
	if rows > 0 {
		cp, err := db.Checkpoint(ctx)
		if err != nil {
			return nil, err
		}
		m := eventlog.RetentionMark{Checkpoint: cp}
		if msgOK {
			m.Messages = msgCut
		}
		if delOK {
			m.Delivery = delCut
		}
		if err := l.MarkRetention(ctx, inst, m); err != nil {
			return nil, fmt.Errorf("replay: retention of %s (nothing deleted): %w", inst, err)
		}
	}

	// 1. The rows, on the live read model and, in the snapshot's check,
	// on the one rebuilt from the history.
	deleteRows := func(ctx context.Context, db *projections.DB) (msgs, dels int64, err error) {
		if msgOK {
			if msgs, err = db.DeleteMessagesBefore(ctx, msgCut); err != nil {
				return 0, 0, err
			}
		}
		if delOK {
			if dels, err = db.DeleteDeliveriesBefore(ctx, delCut); err != nil {
				return 0, 0, err
			}
		}
		return msgs, dels, nil
	}
	if res.RowsDeleted, res.DeliveriesDeleted, err = deleteRows(ctx, db); err != nil {
		return nil, err
	}
	if msgOK {
		kept, err := db.GroupsToRecordBefore(ctx, msgCut)
		if err != nil {
			return nil, err
		}
		if res.GroupsKept = len(kept); res.GroupsKept > 0 {
			log.Warn("replay: retention: messages older than the cutoff kept, recorded since their group's state (a reload still needs them); retention through the engine (Installation.Retain) records the states and deletes them",
				"groups", res.GroupsKept)
		}
	}
	// The rows are gone and no snapshot holds their absence yet: the
	// moment the engine's kill test stops a retention at.
	log.Debug("replay: retention: rows deleted", "messages_deleted", res.RowsDeleted, "deliveries_deleted", res.DeliveriesDeleted)
	step("rows")

	// 2. The snapshot that replaces what is shredded: reused when the
	// newest one already holds exactly this read model at its checkpoint
	// (an earlier, interrupted run made it).
	snapCP, err := newestSnapshotOf(ctx, l, inst, db, log)
	if err != nil {
		return nil, err
	}
	if snapCP == 0 {
		adjust := func(ctx context.Context, check *projections.DB) error {
			_, _, err := deleteRows(ctx, check)
			return err
		}
		res.Snapshot, err = SnapshotDB(ctx, l, inst, db, &SnapshotOptions{Options: o.Options, Keep: 1, Now: now, Adjust: adjust, retention: true})
		if errors.Is(err, ErrSnapshotMismatch) {
			// Retaining again compares the same two: it would fail the same
			// way, every time (a retention interrupted before its snapshot
			// on a file since migrated in place to schema 12, or drift).
			// Nothing is shredded yet, so the history still holds every
			// row this retention deleted.
			return res, fmt.Errorf("replay: retention of %s: the snapshot that replaces the shredded history (nothing shredded; retaining again fails the same way: "+
				"rebuild the read model from the stream, replayer rebuild, which brings back the rows deleted since its last snapshot, then retain again): %w", inst, err)
		}
		if err != nil {
			return res, fmt.Errorf("replay: retention of %s: the snapshot that replaces the shredded history (nothing shredded; retain again): %w", inst, err)
		}
		snapCP = res.Snapshot.Checkpoint
		res.SnapshotsDeleted = append(res.SnapshotsDeleted, res.Snapshot.Pruned...)
	}
	step("snapshot")

	// 3. Older snapshots hold the deleted messages; so may a newer one
	// (another copy of the read model, snapshotted by its follower
	// before this snapshot was stored). Only this one is kept: a later
	// snapshot is checked against it.
	refs, err := l.Snapshots(ctx, inst)
	if err != nil {
		return res, fmt.Errorf("replay: retention of %s: list snapshots (retain again to finish): %w", inst, err)
	}
	for _, r := range refs {
		if r.Checkpoint == snapCP {
			continue
		}
		if err := l.DeleteSnapshot(ctx, inst, r.Checkpoint); err != nil {
			return res, fmt.Errorf("replay: retention of %s: delete an older snapshot (retain again to finish): %w", inst, err)
		}
		res.SnapshotsDeleted = append(res.SnapshotsDeleted, r.Checkpoint)
	}
	step("prune")

	// Still this read model's: a snapshot that read it before step 1 may
	// have been stored over it at the same checkpoint. That one stores
	// this content again once it finds the mark (snapshotDB); until then
	// nothing is shredded.
	if held, err := snapshotHolds(ctx, l, inst, snapCP, db); err != nil {
		return res, fmt.Errorf("replay: retention of %s: check the snapshot at %d (nothing shredded; retain again): %w", inst, snapCP, err)
	} else if !held {
		return res, fmt.Errorf("replay: retention of %s: %w: the snapshot at %d no longer holds the retained read model: a snapshot that read it before its rows were deleted was stored over it (nothing shredded; retain again)",
			inst, ErrRetainedMeanwhile, snapCP)
	}

	// 4. The keys.
	kids := make([]events.DataKeyID, len(res.Periods))
	for i, p := range res.Periods {
		kids[i] = p.ID
	}
	if res.KeysShredded, err = l.ShredDataKeys(ctx, inst, kids); err != nil {
		return res, fmt.Errorf("replay: retention of %s: %w", inst, err)
	}
	for _, c := range res.Epochs {
		if _, err := l.ShredEpochsBefore(ctx, inst, c.Group, c.Keep); err != nil {
			return res, fmt.Errorf("replay: retention of %s: group %s: %w", inst, c.Group, err)
		}
		step("epochs " + c.Group)
	}
	step("keys")
	log.Info("replay: retention applied", "messages_cutoff", res.Cutoff, "delivery_cutoff", res.DeliveryCutoff, "periods", len(res.Periods), "epoch_chains", len(res.Epochs),
		"messages_deleted", res.RowsDeleted, "deliveries_deleted", res.DeliveriesDeleted,
		"keys_shredded", res.KeysShredded, "snapshot_seq", snapCP, "snapshots_deleted", len(res.SnapshotsDeleted))
	return res, nil
}

// epochCuts lists the groups of db whose epoch chains derive epochs the
// policy no longer keeps.
func epochCuts(ctx context.Context, l *eventlog.Log, inst events.InstallationID, db *projections.DB, p RetentionPolicy) ([]EpochCut, error) {
	groups, err := db.Groups(ctx)
	if err != nil {
		return nil, err
	}
	var cuts []EpochCut
	for _, g := range groups {
		held, ok, err := db.OldestHeldEpoch(ctx, g.ID)
		if err != nil {
			return nil, err
		}
		keep, any := p.keepEpochsFrom(g.Epoch, held, ok)
		if !any {
			continue
		}
		agg := hex.EncodeToString(g.ID)
		id, err := l.GroupEpochID(inst, agg, 0)
		if err != nil {
			return nil, err
		}
		start, found, err := l.EpochChainStart(ctx, inst, id)
		if err != nil {
			return nil, err
		}
		if found && start < keep {
			cuts = append(cuts, EpochCut{Group: agg, From: start, Keep: keep})
		}
	}
	return cuts, nil
}

// newestSnapshotOf returns the checkpoint of inst's newest snapshot (the
// newest that opens: newestOpening) when it holds exactly db's content
// at db's checkpoint (same digest), else 0. Not the newest name listed:
// an object put under a later name by whoever may write to the bucket
// would make a retention run again store its snapshot again.
func newestSnapshotOf(ctx context.Context, l *eventlog.Log, inst events.InstallationID, db *projections.DB, log *slog.Logger) (uint64, error) {
	refs, err := l.Snapshots(ctx, inst)
	if err != nil || len(refs) == 0 {
		return 0, err
	}
	cp, err := db.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	newest, err := newestOpening(ctx, l, inst, refs, 0, 1, log)
	if err != nil || len(newest) == 0 || newest[0].Checkpoint != cp {
		return 0, err
	}
	if held, err := snapshotHolds(ctx, l, inst, cp, db); err != nil || !held {
		return 0, err
	}
	return cp, nil
}

// replaceForgedMark replaces inst's retention mark when it does not
// check out (events.ErrTampered) with one of this keyring at the newest
// snapshot's checkpoint (of one that opens; 0 when there is none), no
// cutoffs. The forged
// mark may hide a genuine one; a finished retention leaves its snapshot
// as the newest, so a mark there refuses what the genuine one would
// (a snapshot checked against an older base), and lets through a
// snapshot checked against the newest. A forged mark tells nothing more
// than a mark deleted by the same hand would.
func replaceForgedMark(ctx context.Context, l *eventlog.Log, inst events.InstallationID, log *slog.Logger) error {
	_, _, err := l.RetentionMarkOf(ctx, inst)
	if !errors.Is(err, events.ErrTampered) {
		return err
	}
	refs, err := l.Snapshots(ctx, inst)
	if err != nil {
		return fmt.Errorf("replace a retention mark that does not check out: %w", err)
	}
	// The newest that opens: anyone who may write to the snapshots
	// bucket can list its names and put one under a checkpoint past any
	// the installation will reach, and a mark there would refuse every
	// snapshot for good, no later retention replacing it.
	newest, err := newestOpening(ctx, l, inst, refs, 0, 1, log)
	if err != nil {
		return fmt.Errorf("replace a retention mark that does not check out: %w", err)
	}
	var m eventlog.RetentionMark
	if len(newest) > 0 {
		m.Checkpoint = newest[0].Checkpoint
	}
	// Only over the forged mark: a genuine one written since it was read
	// (a retention of another copy) stays, with its cutoffs, even one at
	// the same checkpoint.
	_, err = l.ReplaceForgedRetentionMark(ctx, inst, m)
	return err
}

// snapshotHolds reports whether inst's snapshot at cp opens and holds
// exactly db's content (same digest); one that does not open, or is
// missing, does not.
func snapshotHolds(ctx context.Context, l *eventlog.Log, inst events.InstallationID, cp uint64, db *projections.DB) (bool, error) {
	meta, err := snapshotMeta(ctx, l, inst, cp)
	if err != nil {
		return false, ctx.Err() // not usable: a new one is made
	}
	d, err := db.Digest(ctx)
	if err != nil {
		return false, err
	}
	return projections.Compare(meta.Digest, d) == nil, nil
}

// snapshotMeta opens inst's snapshot at cp and returns its header.
func snapshotMeta(ctx context.Context, l *eventlog.Log, inst events.InstallationID, cp uint64) (projections.SnapshotMeta, error) {
	plain, err := l.OpenSnapshot(ctx, inst, cp)
	if err != nil {
		return projections.SnapshotMeta{}, err
	}
	defer clear(plain)
	return projections.ReadSnapshotMeta(bytes.NewReader(plain))
}

// ErrNoSnapshotToCompact means Compact found no snapshot of the
// installation that opens: nothing is covered, nothing is deleted.
var ErrNoSnapshotToCompact = errors.New("replay: compact: no usable snapshot of the installation")

// CompactOptions tune Compact.
type CompactOptions struct {
	// History, when not KeepForever, also deletes the events the stream
	// stored longer ago than it (KeepNone: all) that the snapshot covers:
	// RetentionPolicy.History.
	History time.Duration
	// Now is the clock History is applied at (default time.Now).
	Now func() time.Time
	// Step, when set, is called after each step of
	// eventlog.Log.CompactRetainedOut (tests: kill points).
	Step func(string)
}

// clock is o.Now, default time.Now.
func (o CompactOptions) clock() func() time.Time {
	if o.Now != nil {
		return o.Now
	}
	return time.Now
}

// storedBefore is the stream time before which History deletes events
// (zero: none).
func (o CompactOptions) storedBefore() time.Time {
	now := o.clock()
	switch {
	case o.History == KeepForever:
		return time.Time{}
	case o.History < 0:
		return now().Add(time.Hour) // every covered event, stored up to now (and a little clock skew)
	}
	return now().Add(-o.History)
}

// Compact deletes from the stream inst's events of shredded periods
// (Retain), and with opts.History those stored longer ago than it, that
// its newest usable snapshot covers (at or below its checkpoint):
// eventlog.Log.CompactRetainedOut. Rebuild, verify, rekey
// and migrate then start from that snapshot; one from the start fails
// with eventlog.ErrCompacted. Compacting again finishes an interrupted
// compaction.
//
// A snapshot of a read model kept below the latest schema that applied
// own commit or message outputs without keeping them
// (projections.ErrOutputsNotKept: a follower's file at its old schema
// while upgraded engines write) is passed over while the history it
// covers is not compacted: that history is their only copy. When no
// other snapshot is usable, the error wraps both ErrNoSnapshotToCompact
// and ErrOutputsNotKept, naming the snapshot.
func Compact(ctx context.Context, l *eventlog.Log, inst events.InstallationID, opts *CompactOptions) (*eventlog.Compacted, error) {
	var o CompactOptions
	if opts != nil {
		o = *opts
	}
	if o.History != KeepForever {
		if err := l.CheckClock(ctx, o.clock()()); err != nil {
			return nil, fmt.Errorf("replay: compact %s by stored time (nothing done): %w", inst, err)
		}
	}
	keepsOutputs, err := outputsCheck(ctx, l, inst)
	if err != nil {
		return nil, err
	}
	var notKept error
	cp, ok, err := newestUsableSnapshot(ctx, l, inst, "compact", func(r eventlog.SnapshotRef, meta projections.SnapshotMeta, plain []byte) error {
		err := keepsOutputs(r, meta, plain)
		if err != nil && notKept == nil {
			notKept = err
		}
		return err
	})
	if err != nil {
		return nil, err
	}
	if ok {
		return l.CompactRetainedOut(ctx, inst, cp, &eventlog.CompactOptions{Step: o.Step, StoredBefore: o.storedBefore()})
	}
	if notKept != nil {
		return nil, fmt.Errorf("%w %s: %w; compacting the history it covers would lose them (%s)", ErrNoSnapshotToCompact, inst, notKept, snapshotKeepingOutputs)
	}
	// An erased installation has no snapshot left, and none can be made:
	// say so rather than send the operator to make one.
	if err := l.CheckNotErased(ctx, inst); errors.Is(err, eventlog.ErrErased) {
		return nil, fmt.Errorf("replay: compact: %w", err)
	} else if err != nil {
		return nil, err
	}
	return nil, fmt.Errorf("%w %s (make one: replayer snapshot, or retain)", ErrNoSnapshotToCompact, inst)
}

// snapshotKeepingOutputs is the remedy for a snapshot outputsCheck
// refuses.
const snapshotKeepingOutputs = "make a snapshot that keeps them: migrate that read model by replay (replayer migrate), then replayer snapshot"

// outputsCheck returns a check of inst's snapshots for
// newestUsableSnapshot that refuses one of a read model kept below the
// latest schema that applied own commit or message outputs without
// keeping them (projections.ErrOutputsNotKept, naming the snapshot),
// unless the history is compacted through it: until then the history
// holds their only copy. The check is the migration a rebuild would
// make; it runs only on a snapshot below the latest schema.
func outputsCheck(ctx context.Context, l *eventlog.Log, inst events.InstallationID) (func(eventlog.SnapshotRef, projections.SnapshotMeta, []byte) error, error) {
	through, err := l.CompactedThrough(ctx, inst)
	if err != nil {
		return nil, err
	}
	return func(r eventlog.SnapshotRef, meta projections.SnapshotMeta, plain []byte) error {
		if meta.Schema >= projections.LatestSchema || r.Checkpoint <= through {
			return nil // nothing it lacks is left in the history
		}
		out, err := migrateSnapshot(ctx, plain, filepath.Join(os.TempDir(), "epochlog-snapshot-check"), projections.LatestSchema, false)
		clear(out)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, projections.ErrOutputsNotKept):
			return fmt.Errorf("snapshot at %d (schema %d): %w", r.Checkpoint, meta.Schema, err)
		default:
			// Not known to keep them (a full temporary directory, say):
			// passed over, not taken on trust.
			return fmt.Errorf("snapshot at %d (schema %d): checking that it keeps own outputs (migrated in %s): %w", r.Checkpoint, meta.Schema, os.TempDir(), err)
		}
	}, nil
}

// newestUsableSnapshot returns the checkpoint of inst's newest snapshot
// that opens, holds inst's read model at its checkpoint and passes check
// (when not nil: given the snapshot's header and plaintext), passing
// over the others with a Warn log (op names the caller); false: none.
func newestUsableSnapshot(ctx context.Context, l *eventlog.Log, inst events.InstallationID, op string, check func(eventlog.SnapshotRef, projections.SnapshotMeta, []byte) error) (uint64, bool, error) {
	refs, err := l.Snapshots(ctx, inst)
	if err != nil {
		return 0, false, err
	}
	for _, r := range refs {
		plain, err := l.OpenSnapshot(ctx, inst, r.Checkpoint)
		var meta projections.SnapshotMeta
		if err == nil {
			meta, err = projections.ReadSnapshotMeta(bytes.NewReader(plain))
		}
		if err == nil && (meta.Installation != inst || meta.Checkpoint != r.Checkpoint) {
			err = fmt.Errorf("%w: it holds %s at %d", projections.ErrSnapshot, meta.Installation, meta.Checkpoint)
		}
		if err == nil && check != nil {
			err = check(r, meta, plain)
		}
		clear(plain)
		if err != nil {
			if ctx.Err() != nil {
				return 0, false, ctx.Err()
			}
			l.Logger().Warn("replay: "+op+": snapshot cannot be used; trying an older one", "installation", string(inst),
				"stream", l.Stream(), "bucket", l.SnapshotBucket(), "object", r.Name, "snapshot_seq", r.Checkpoint, "err", err)
			continue
		}
		return r.Checkpoint, true, nil
	}
	return 0, false, nil
}

// RetainFile is Retain on the read model at path, opened with key (the
// live one: its messages are deleted in place). It holds the read
// model's writer lock (projections.Lock) throughout, so it fails at once
// while an installation or a follower writes it.
func RetainFile(ctx context.Context, l *eventlog.Log, inst events.InstallationID, path string, key projections.Key, p RetentionPolicy, opts *RetainOptions) (*RetainResult, error) {
	var o RetainOptions
	if opts != nil {
		o = *opts
	}
	if ok, err := exists(path); err != nil || !ok {
		if err == nil {
			err = errors.New("no such database")
		}
		return nil, &projections.FileError{Path: path, Op: "retain", Err: err}
	}
	lk, err := projections.Lock(path)
	if err != nil {
		return nil, err
	}
	defer lk.Unlock()
	db, err := openAsIs(path, key, o.Options.withDefaults().DB)
	if err != nil {
		return nil, err
	}
	defer db.Close()
	return Retain(ctx, l, inst, db, p, &o)
}

// RefuseErased is Retain's refusal of an erased installation inst, whose
// read model is at path: a *projections.FileError wrapping its
// *eventlog.ErasedError with the hint to delete what is left; nil when
// inst is not erased. A caller that opens the installation through the
// engine before Retain (its catch-up fails on an erased installation
// too, without the hint) asks it first.
func RefuseErased(ctx context.Context, l *eventlog.Log, inst events.InstallationID, path string) error {
	if err := l.CheckNotErased(ctx, inst); errors.Is(err, eventlog.ErrErased) {
		return &projections.FileError{Path: path, Op: "retain", Err: err,
			Hint: "nothing was changed; this read model is what is left of an erased installation: delete it"}
	} else if err != nil {
		return fmt.Errorf("replay: retention of %s (nothing done): %w", inst, err)
	}
	return nil
}
