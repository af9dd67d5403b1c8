package replay

import (
	"context"
	"errors"
	"path/filepath"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/projections"
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

// An object under instA's snapshot names past its history that does not
// open (forged) does not refuse a rekey, a migration or a rebuild of a
// live read model: it proves nothing, and the live one's checkpoint
// against the stream's says whether the stream holds less. It is logged,
// naming the bucket and the object. Only a recovery (no live read model)
// is still refused for it (TestRecoveryRefusesWhenASnapshotPastTheStreamDoesNotOpen).
// Until 2026-12-07 every rekey and migrate was refused for good
// (ErrBehind; the --force it advised is rebuild's alone), and so was an
// engine's open that migrates by replay.
func TestRekeyPastAForgedSnapshotName(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	writeHistory(t, l, instA, 2, 10)
	key := rawDBKey(t, 0x53)
	live := filepath.Join(t.TempDir(), "a.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	want, _ := digestOf(t, live, key)
	if _, err := l.PutSealedSnapshot(ctx, instA, forgedFar, []byte("not a snapshot")); err != nil {
		t.Fatal(err)
	}
	newKey := rawDBKey(t, 0x54)
	if _, err := Rekey(ctx, l, instA, live, key, newKey, testReplayOptions()); err != nil {
		t.Fatalf("rekey beside a forged snapshot name: %v (behind: %v)", err, errors.Is(err, ErrBehind))
	}
	if got, _ := digestOf(t, live, newKey); projections.Compare(want, got) != nil {
		t.Fatalf("the rekeyed read model differs: %v", projections.Compare(want, got))
	}
	if _, err := Rebuild(ctx, l, instA, live, newKey, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatalf("rebuild of the live read model beside a forged snapshot name: %v", err)
	}
	lost := filepath.Join(t.TempDir(), "recovered.db")
	if _, err := Rebuild(ctx, l, instA, lost, newKey, &RebuildOptions{Options: *testReplayOptions()}); !errors.Is(err, ErrBehind) {
		t.Fatalf("recovery beside a forged snapshot name: %v, want ErrBehind (no live read model to say what the stream held)", err)
	}
}
