package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// ErrNoSnapshotToReseal means an installation whose history retention
// trimmed has no snapshot that can carry it into the new stream.
var ErrNoSnapshotToReseal = errors.New("replay: reseal: no usable snapshot carries the installation's trimmed history")

// Reseal re-seals src's history into dst (eventlog.Reseal), the
// installations whose history retention trimmed included
// (eventlog.Log.HistoryTrimmed: days or epochs shredded, events
// compacted). Such a history does not read from its start; it is carried
// by its newest usable snapshot instead:
//
//  1. the events from the snapshot's checkpoint on (that event, its
//     anchor, included) are copied and verified like any others, each
//     aggregate starting at its own position;
//  2. the snapshot is re-sealed into dst at the copy of its anchor: its
//     read model imported aside, its checkpoint set to that sequence, and
//     exported again with the chain head there, so the content digest
//     is the source's but for the checkpoint;
//  3. dst marks the history compacted through the anchor
//     (eventlog.Log.MarkCompacted), so a replay from its start fails with
//     eventlog.ErrCompacted, as on the source.
//
// Rebuilds from dst then start from the carried snapshot. Interrupted,
// Reseal run again finishes (each step is idempotent). A trimmed
// installation without a usable snapshot, or whose newest snapshot's
// anchor was shredded, is refused before anything is copied
// (ErrNoSnapshotToReseal): make a fresh snapshot (replayer snapshot) and
// re-seal again.
func Reseal(ctx context.Context, src, dst *eventlog.Log, opts *eventlog.ResealOptions) (*eventlog.Resealed, error) {
	var o eventlog.ResealOptions
	if opts != nil {
		o = *opts
	}
	from := map[events.InstallationID]uint64{}
	for _, inst := range o.Installations {
		if inst.Validate() != nil {
			continue // eventlog.Reseal names it
		}
		if _, _, erased, err := src.Tombstone(ctx, inst); err != nil {
			return nil, err
		} else if erased {
			continue
		}
		trimmed, err := src.HistoryTrimmed(ctx, inst)
		if err != nil {
			return nil, err
		}
		if !trimmed {
			continue
		}
		cp, err := carrierSnapshot(ctx, src, inst)
		if err != nil {
			return nil, err
		}
		from[inst] = cp
	}
	o.From = from
	res, err := eventlog.Reseal(ctx, src, dst, &o)
	if err != nil {
		return res, err
	}
	for inst, cp := range from {
		anchor, ok := res.Anchors[inst]
		if !ok {
			return res, fmt.Errorf("replay: reseal: %s: no anchor in %s", inst, dst.Stream()) // unreachable: Reseal sets one per From
		}
		if err := carrySnapshot(ctx, src, dst, inst, cp, anchor); err != nil {
			return res, fmt.Errorf("replay: reseal %s into %s (re-seal again to finish): %w", inst, dst.Stream(), err)
		}
		if err := dst.MarkCompacted(ctx, inst, anchor.Seq); err != nil {
			return res, fmt.Errorf("replay: reseal %s into %s (re-seal again to finish): %w", inst, dst.Stream(), err)
		}
		src.Logger().Info("replay: history carried by a snapshot into the new stream", "installation", string(inst),
			"stream", src.Stream(), "snapshot_seq", cp, "target", dst.Stream(), "target_seq", anchor.Seq)
	}
	return res, nil
}

// carrierSnapshot returns the checkpoint of inst's newest usable
// snapshot, whose anchor event (at the checkpoint) must open, and which
// must keep the own outputs the history before it holds (outputsCheck):
// the history before it is not copied.
func carrierSnapshot(ctx context.Context, l *eventlog.Log, inst events.InstallationID) (uint64, error) {
	keepsOutputs, err := outputsCheck(ctx, l, inst)
	if err != nil {
		return 0, err
	}
	var notKept error
	cp, ok, err := newestUsableSnapshot(ctx, l, inst, "reseal", func(r eventlog.SnapshotRef, meta projections.SnapshotMeta, plain []byte) error {
		notKept = keepsOutputs(r, meta, plain)
		return nil // the newest usable one carries, or none
	})
	if err != nil {
		return 0, err
	}
	if !ok {
		return 0, fmt.Errorf("%w: %s (make one: replayer snapshot; then re-seal again)", ErrNoSnapshotToReseal, inst)
	}
	if notKept != nil {
		return 0, fmt.Errorf("%w: %s: %w; the history before it, which holds them, is not copied (%s; then re-seal again)", ErrNoSnapshotToReseal, inst, notKept, snapshotKeepingOutputs)
	}
	if _, err := l.EventAt(ctx, inst, cp); err != nil {
		return 0, fmt.Errorf("%w: %s's newest snapshot, at %d, is anchored on an event that does not open (make a fresh snapshot: replayer snapshot; then re-seal again): %w",
			ErrNoSnapshotToReseal, inst, cp, err)
	}
	return cp, nil
}

// carrySnapshot re-seals inst's snapshot at cp in src into dst at anchor.
func carrySnapshot(ctx context.Context, src, dst *eventlog.Log, inst events.InstallationID, cp uint64, anchor events.Link) error {
	plain, err := src.OpenSnapshot(ctx, inst, cp)
	if err != nil {
		return err
	}
	defer clear(plain)
	meta, err := projections.ReadSnapshotMeta(bytes.NewReader(plain))
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "epochlog-reseal-snapshot-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	key, err := projections.GenerateRawKey()
	if err != nil {
		return err
	}
	path := filepath.Join(dir, "carried.db")
	db, err := projections.Open(path, key, &projections.Options{SchemaVersion: meta.Schema, SaltPath: projections.SaltPath(path)})
	if err != nil {
		return err
	}
	defer db.Close()
	if _, err := db.Import(ctx, bytes.NewReader(plain)); err != nil {
		return err
	}
	if err := db.Rebase(ctx, anchor.Seq); err != nil {
		return err
	}
	var buf bytes.Buffer
	if _, err := db.ExportSnapshot(ctx, &buf, projections.SnapshotMeta{Head: anchor, CreatedAt: meta.CreatedAt}); err != nil {
		return err
	}
	defer clear(buf.Bytes())
	_, err = dst.PutSnapshot(ctx, inst, anchor.Seq, buf.Bytes())
	return err
}
