package replay

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
)

// forgedFar is a checkpoint far past any instA reaches in these tests:
// whoever may write to the snapshots bucket (no keyring) can list its
// names and put an object under one at any checkpoint.
const forgedFar = 1 << 40

// A forged object under instA's snapshot names at a checkpoint past its
// history (garbage) does not hide the snapshot at the read model's
// checkpoint: a snapshot of the unmoved read model after a compaction is
// still checked against that one (Unchanged). Until 2026-12-07 only the
// newest name was looked at, so the check started from an older base,
// whose events the compaction had deleted: every snapshot of the idle
// compacted installation failed with ErrCompacted while the object was
// there.
func TestSnapshotOfAnUnmovedReadModelPastAForgedName(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	writeHistory(t, l, instA, 2, 20)
	key := rawDBKey(t, 0x51)
	live := filepath.Join(t.TempDir(), "a.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	first, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
	if err != nil || first.Unchanged {
		t.Fatalf("first snapshot: %+v %v", first, err)
	}
	if comp, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone}); err != nil || comp.Deleted == 0 {
		t.Fatalf("compact: %+v %v", comp, err)
	}
	if _, err := l.PutSealedSnapshot(ctx, instA, forgedFar, []byte("not a snapshot")); err != nil {
		t.Fatal(err)
	}
	again, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
	if err != nil {
		t.Fatalf("snapshot of the unmoved read model after the compaction, beside a forged name: %v (compacted: %v)", err, errors.Is(err, eventlog.ErrCompacted))
	}
	if !again.Unchanged || again.Name != first.Name || again.Checkpoint != first.Checkpoint {
		t.Fatalf("snapshot again: %+v, want unchanged, the first one (%s at %d)", again, first.Name, first.Checkpoint)
	}
}
