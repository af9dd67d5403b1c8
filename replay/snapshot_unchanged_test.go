package replay

import (
	"context"
	"path/filepath"
	"testing"
)

// A snapshot of a read model that has not moved since its last snapshot
// is checked against that one and stores nothing new (Unchanged). Until
// 2026-12-06 it was checked from an older base plus the events, which a
// compaction through the checkpoint had deleted: every snapshot of an
// idle compacted installation failed with ErrCompacted (a nightly
// `replayer snapshot` over every installation reported failures).
func TestSnapshotOfAnUnmovedReadModelIsUnchanged(t *testing.T) {
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
	again, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
	if err != nil {
		t.Fatalf("snapshot of the unmoved read model after the compaction: %v", err)
	}
	if !again.Unchanged || again.Name != first.Name || again.Checkpoint != first.Checkpoint || again.Base != first.Checkpoint {
		t.Fatalf("snapshot again: %+v, want unchanged, the first one (%s at %d)", again, first.Name, first.Checkpoint)
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil || len(refs) != 1 {
		t.Fatalf("snapshots stored: %v %v, want the first one only", refs, err)
	}
}
