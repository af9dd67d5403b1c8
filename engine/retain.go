package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/replay"
)

// RetainOptions tune Installation.Retain.
type RetainOptions struct {
	// Compact then deletes from the stream the events the new snapshot
	// covers whose keys are gone (and, with a History age, those stored
	// longer ago): replay.Compact. A History age compacts whatever this
	// says.
	Compact bool
	// SkipMLSCheck skips re-deriving the MLS transitions in the replay
	// that checks the snapshot (replay.Options.SkipMLSCheck).
	SkipMLSCheck bool
	// Check, if set, tunes the replay that checks the snapshot (its
	// batch size, its progress reports); its DB options are always the
	// installation's.
	Check *replay.Options
}

// Retained is what Installation.Retain did.
type Retained struct {
	*replay.RetainResult
	// Compacted is the compaction's report (nil: not compacted).
	Compacted *eventlog.Compacted
}

// recordStatesBefore records, for each group holding messages older than
// cut that a reload of the group still needs (recorded since its state,
// in an epoch it holds: projections.DB.GroupsToRecordBefore), its state
// as it stands, ratchets moved on (events.StateRecorded), and projects
// it: the messages are then behind the group's state and retention
// deletes them, and a reload still refuses a replay of a deleted one (its
// generation is consumed in the state). Each is one group transition
// (transact): a lost race with another process of the installation
// catches up and records the state again.
func (in *Installation) recordStatesBefore(ctx context.Context, cut time.Time) error {
	ids, err := in.db.GroupsToRecordBefore(ctx, cut)
	if err != nil {
		return fmt.Errorf("engine: installation %s: %w", in.id, err)
	}
	for _, id := range ids {
		_, err := in.transact(ctx, id, func(gs *groupState) (*mls.Group, events.Body, error) {
			st, err := gs.g.MarshalBinary()
			if err != nil {
				return nil, nil, fmt.Errorf("engine: installation %s: group %x: encode group state: %w", in.id, id, err)
			}
			b := events.StateRecorded{GroupID: gs.g.GroupID(), Epoch: gs.g.Epoch()}.WithStateFrom(gs.epochStart.Bytes(), st)
			return gs.g, b, nil
		})
		if errors.Is(err, ErrUnknownGroup) || errors.Is(err, mls.ErrNotMember) {
			continue // left meanwhile (another process): no reload needs them
		}
		if err != nil {
			// errNotProjected too: the messages are deleted only behind a
			// state the read model holds.
			return fmt.Errorf("engine: installation %s: group %x: record its state before retention: %w", in.id, id, err)
		}
	}
	return nil
}

// Retain applies an installation's retention policy on its open read
// model (replay.Retain: rows, a checked snapshot, older snapshots, then
// the keys of the message and delivery days and past epochs the policy no
// longer keeps), first recording the state of each group whose messages
// to delete a reload would still need (group.state_recorded:
// recordStatesBefore), so that all of them go and a deleted message
// delivered again stays refused, between operations: it holds the installation's
// operation lock throughout, after catching the read model up, so the
// snapshot covers everything the installation has appended. A service
// calls it on its own schedule (daily, say); running it again after an
// interruption finishes the work. Operations dated in a shredded period
// fail afterwards with eventlog.ErrRetainedOut.
func (in *Installation) Retain(ctx context.Context, p replay.RetentionPolicy, opts *RetainOptions) (*Retained, error) {
	var o RetainOptions
	if opts != nil {
		o = *opts
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.errIfClosed(); err != nil {
		return nil, fmt.Errorf("engine: retain: %w", err)
	}
	if err := in.project(ctx); err != nil {
		return nil, err
	}
	var check replay.Options
	if o.Check != nil {
		check = *o.Check
	}
	check.DB, check.SkipMLSCheck = in.opts.DB, check.SkipMLSCheck || o.SkipMLSCheck
	ro := &replay.RetainOptions{Options: check, Now: in.opts.Now, RecordStates: in.recordStatesBefore}
	res, err := replay.Retain(ctx, in.log, in.id, in.db, p, ro)
	if err != nil {
		return &Retained{RetainResult: res}, fmt.Errorf("engine: installation %s: %w", in.id, err)
	}
	out := &Retained{RetainResult: res}
	if o.Compact || p.History != replay.KeepForever {
		co := &replay.CompactOptions{History: p.History, Now: in.opts.Now}
		out.Compacted, err = replay.Compact(ctx, in.log, in.id, co)
		if errors.Is(err, replay.ErrNoSnapshotToCompact) && res.Snapshot == nil {
			// Nothing was shredded, so no snapshot was taken, and the
			// installation has none: the compaction asked for needs one.
			if res.Snapshot, err = replay.SnapshotDB(ctx, in.log, in.id, in.db, &replay.SnapshotOptions{Options: check}); err != nil {
				return out, fmt.Errorf("engine: installation %s: a snapshot for the compaction: %w", in.id, err)
			}
			out.Compacted, err = replay.Compact(ctx, in.log, in.id, co)
		}
		if err != nil {
			return out, fmt.Errorf("engine: installation %s: %w", in.id, err)
		}
	}
	return out, nil
}
