package replay

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// forgeSnapshotNames puts under inst's snapshot names, at checkpoints
// far past its history, what whoever may write to the snapshots bucket
// can put there without the keyring: garbage, a genuine snapshot of inst
// (at own, its checkpoint) copied to a later name, and another
// installation's genuine snapshot (other at otherCP) renamed. It returns
// the checkpoints it put them at.
func forgeSnapshotNames(t *testing.T, l *eventlog.Log, inst events.InstallationID, own uint64, other events.InstallationID, otherCP uint64) []uint64 {
	t.Helper()
	ctx := context.Background()
	ownSealed, err := l.SealedSnapshot(ctx, inst, own)
	if err != nil {
		t.Fatal(err)
	}
	otherSealed, err := l.SealedSnapshot(ctx, other, otherCP)
	if err != nil {
		t.Fatal(err)
	}
	put := map[uint64][]byte{forgedFar: []byte("not a snapshot"), forgedFar - 1: ownSealed, forgedFar - 2: otherSealed}
	var cps []uint64
	for cp, b := range put {
		if _, err := l.PutSealedSnapshot(ctx, inst, cp, b); err != nil {
			t.Fatal(err)
		}
		cps = append(cps, cp)
	}
	return cps
}

// snapshotOfB stores a genuine snapshot of instB (a history of its own in
// l) and returns its checkpoint.
func snapshotOfB(t *testing.T, l *eventlog.Log) uint64 {
	t.Helper()
	ctx := context.Background()
	writeHistory(t, l, instB, 1, 5)
	key := rawDBKey(t, 0x52)
	live := filepath.Join(t.TempDir(), "b.db")
	if _, err := Rebuild(ctx, l, instB, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	res, err := Snapshot(ctx, l, instB, live, key, snapshotOpts())
	if err != nil {
		t.Fatal(err)
	}
	return res.Checkpoint
}

// storedCheckpoints lists the checkpoints of inst's stored snapshot objects.
func storedCheckpoints(t *testing.T, l *eventlog.Log, inst events.InstallationID) []uint64 {
	t.Helper()
	refs, err := l.Snapshots(context.Background(), inst)
	if err != nil {
		t.Fatal(err)
	}
	var cps []uint64
	for _, r := range refs {
		cps = append(cps, r.Checkpoint)
	}
	return cps
}

// Objects put under instA's snapshot names past its history (garbage,
// its own genuine snapshot copied to a later name, instB's renamed) do
// not open, and are not snapshots kept: a snapshot keeps the newest
// SnapshotOptions.Keep genuine ones, and is not refused as superseded
// by them. Until 2026-12-07 the names were counted: with one forged
// name the default keep of 2 pruned the older genuine snapshot, keeping
// the forged one; with two, every snapshot was refused
// (ErrSnapshotSuperseded, "snapshot a current read model") for good.
func TestSnapshotKeepsGenuineSnapshotsOverForgedNames(t *testing.T) {
	ctx := context.Background()
	l, h, db, _, _ := retainRaceWorld(t)
	first := storedCheckpoints(t, l, instA)
	if len(first) != 1 {
		t.Fatalf("snapshots of the world: %v, want one", first)
	}
	otherCP := snapshotOfB(t, l)
	if _, err := l.PutSealedSnapshot(ctx, instA, forgedFar, []byte("not a snapshot")); err != nil {
		t.Fatal(err)
	}
	second, err := SnapshotDB(ctx, l, instA, db, snapshotOpts())
	if err != nil {
		t.Fatalf("snapshot beside a forged name: %v", err)
	}
	if got := storedCheckpoints(t, l, instA); !slices.Contains(got, first[0]) || !slices.Contains(got, second.Checkpoint) {
		t.Fatalf("snapshots after the second: %v, want the genuine ones at %d and %d kept (pruned %v)", got, first[0], second.Checkpoint, second.Pruned)
	}

	forgeSnapshotNames(t, l, instA, first[0], instB, otherCP)
	h.messages(3, 1)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	third, err := SnapshotDB(ctx, l, instA, db, snapshotOpts())
	if err != nil {
		t.Fatalf("snapshot beside three forged names: %v (superseded: %v)", err, errors.Is(err, ErrSnapshotSuperseded))
	}
	got := storedCheckpoints(t, l, instA)
	if !slices.Contains(got, second.Checkpoint) || !slices.Contains(got, third.Checkpoint) || slices.Contains(got, first[0]) {
		t.Fatalf("snapshots after the third: %v, want the genuine ones at %d and %d kept, the one at %d pruned", got, second.Checkpoint, third.Checkpoint, first[0])
	}
	for _, cp := range []uint64{forgedFar, forgedFar - 1, forgedFar - 2} {
		if !slices.Contains(got, cp) {
			t.Errorf("the object at %d that does not open was deleted by a prune (%v): it is passed over, not trusted either way", cp, got)
		}
	}
}

// A retention beside objects put under instA's snapshot names past its
// history stores its snapshot and finishes: the objects, which do not
// open, are not newer snapshots it would be pruned for. Until 2026-12-07
// its snapshot (keep 1) was refused as superseded by them, after the
// rows were deleted and the mark written, every retention again.
func TestRetainPastForgedSnapshotNames(t *testing.T) {
	ctx := context.Background()
	l, _, db, live, key := retainRaceWorld(t)
	own := storedCheckpoints(t, l, instA)
	forgeSnapshotNames(t, l, instA, own[0], instB, snapshotOfB(t, l))
	res, err := Retain(ctx, l, instA, db, retainPolicy, &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }})
	if err != nil {
		t.Fatalf("retain beside forged snapshot names: %v (superseded: %v)", err, errors.Is(err, ErrSnapshotSuperseded))
	}
	if res.RowsDeleted == 0 || res.KeysShredded == 0 || res.Snapshot == nil {
		t.Fatalf("retain: %+v, want rows deleted, keys shredded and its snapshot stored", res)
	}
	checkRetainedRebuild(t, l, live, key, true)
}

// After a retention, objects put under instA's snapshot names past its
// history (garbage, its snapshot copied to a later name, instB's
// renamed) are not what a compaction trusts: it compacts through the
// retention's snapshot, the newest that opens. A rebuild is refused while
// they are there (they do not open, and may be all that shows the stream
// lost its tail: ErrBehind), naming the bucket and each object's name,
// and with --force rebuilds from the retention's snapshot what the
// retained read model holds. Until 2026-12-07 the refusal named neither
// the bucket nor the object.
func TestCompactAndRebuildPastForgedSnapshotNames(t *testing.T) {
	ctx := context.Background()
	l, _, db, live, key := retainRaceWorld(t)
	res, err := Retain(ctx, l, instA, db, retainPolicy, &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }})
	if err != nil || res.Snapshot == nil {
		t.Fatalf("retain: %+v %v", res, err)
	}
	forgeSnapshotNames(t, l, instA, res.Snapshot.Checkpoint, instB, snapshotOfB(t, l))
	comp, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone})
	if err != nil || comp.Through != res.Snapshot.Checkpoint || comp.Deleted == 0 {
		t.Fatalf("compact beside forged snapshot names: %+v %v, want it through the retention's snapshot at %d", comp, err, res.Snapshot.Checkpoint)
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := filepath.Join(filepath.Dir(live), "rebuilt.db")
	_, err = Rebuild(ctx, l, instA, rebuilt, key, &RebuildOptions{Options: *testReplayOptions()})
	if !errors.Is(err, ErrBehind) {
		t.Fatalf("rebuild beside forged snapshot names: %v, want ErrBehind", err)
	}
	for _, r := range refs {
		if r.Checkpoint == forgedFar && !strings.Contains(err.Error(), r.Name) {
			t.Errorf("rebuild's refusal %q does not name the object %s", err, r.Name)
		}
	}
	if !strings.Contains(err.Error(), l.SnapshotBucket()) {
		t.Errorf("rebuild's refusal %q does not name the bucket %s", err, l.SnapshotBucket())
	}
	if _, err := Rebuild(ctx, l, instA, rebuilt, key, &RebuildOptions{Options: *testReplayOptions(), Force: true}); err != nil {
		t.Fatalf("forced rebuild beside forged snapshot names: %v", err)
	}
	want, _ := digestOf(t, live, key)
	if got, _ := digestOf(t, rebuilt, key); projections.Compare(want, got) != nil {
		t.Fatalf("the forced rebuild differs from the retained read model: %v", projections.Compare(want, got))
	}
}

// A retention interrupted after it stored its snapshot, run again
// beside objects put under instA's snapshot names past its history
// (garbage, its own snapshot copied to a later name, instB's renamed),
// reuses the snapshot it stored: the newest that opens holds the read
// model at its checkpoint. Until 2026-12-07 the newest name was asked,
// and the retention stored its snapshot again (its check replaying the
// history since the older base) for each such object put there.
func TestRetainAgainReusesItsSnapshotPastForgedNames(t *testing.T) {
	l, _, db, live, key := retainRaceWorld(t)
	ctx, cancel := context.WithCancel(context.Background())
	step := func(s string) {
		if s == "snapshot" {
			cancel()
		}
	}
	first, err := Retain(ctx, l, instA, db, retainPolicy, &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }, Step: step})
	if !errors.Is(err, context.Canceled) || first == nil || first.Snapshot == nil {
		t.Fatalf("retain stopped after its snapshot: %+v, %v; want its snapshot stored and context.Canceled", first, err)
	}
	forgeSnapshotNames(t, l, instA, first.Snapshot.Checkpoint, instB, snapshotOfB(t, l))

	res, err := Retain(context.Background(), l, instA, db, retainPolicy, &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }})
	if err != nil {
		t.Fatalf("retain again beside forged snapshot names: %v", err)
	}
	if res.Snapshot != nil {
		t.Fatalf("retain again stored a snapshot at %d: the one it stored at %d holds the read model, and is the newest that opens", res.Snapshot.Checkpoint, first.Snapshot.Checkpoint)
	}
	if got := storedCheckpoints(t, l, instA); len(got) != 1 || got[0] != first.Snapshot.Checkpoint {
		t.Fatalf("snapshots after the retention: %v, want only its own at %d", got, first.Snapshot.Checkpoint)
	}
	checkRetainedRebuild(t, l, live, key, true)
}
