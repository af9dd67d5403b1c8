package replay

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestSnapshotOfAnOlderSchemaAfterCompaction: an installation whose
// history was compacted by an older build (its only copy of the deleted
// events a snapshot at that build's schema) stays verifiable and
// rebuildable after an upgrade: the snapshot is migrated like the read
// model, not passed over for a replay from a start the stream no longer
// holds (verify, rebuild, migrate and snapshot all failed with
// ErrCompacted, and a lost read model could not be recovered).
//
// A snapshot below schema 3 records no committer of its epochs, which a
// replay from the start may give: it is migrated only once the history
// was compacted, when no replay from the start is left.
func TestSnapshotOfAnOlderSchemaAfterCompaction(t *testing.T) {
	for _, old := range []int{2, projections.LatestSchema - 1} {
		t.Run(fmt.Sprintf("schema%d", old), func(t *testing.T) { testSnapshotOfAnOlderSchema(t, old) })
	}
}

func testSnapshotOfAnOlderSchema(t *testing.T, old int) {
	ctx := context.Background()
	l, _ := newLog(t)
	h := writeHistory(t, l, instA, 2, 30)
	key := rawDBKey(t, 0x47)
	live := filepath.Join(t.TempDir(), "a.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions(), SchemaVersion: old}); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, live, key)
	if _, err := Retain(ctx, l, instA, db, RetentionPolicy{History: KeepNone}, &RetainOptions{Options: *testReplayOptions()}); err != nil {
		db.Close()
		t.Fatal(err)
	}
	db.Close()
	res, err := Rebuild(ctx, l, instA, filepath.Join(t.TempDir(), "before.db"), key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatal(err)
	}
	if migrated := res.FromSnapshot != 0; migrated != (old >= minMigratedSnapshotSchema) {
		t.Fatalf("before the compaction, a rebuild at schema %d from a snapshot at %d started at %d", res.Schema, old, res.FromSnapshot)
	}
	if comp, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone}); err != nil || comp.Deleted == 0 {
		t.Fatalf("compact: %+v %v", comp, err)
	}

	// The upgrade: the read model migrated in place, then more events.
	if from, to, err := projections.MigrateInPlace(ctx, live, key, nil); err != nil || from != old || to != projections.LatestSchema {
		t.Fatalf("migrate in place: %d -> %d, %v", from, to, err)
	}
	if vr, err := Verify(ctx, l, instA, live, key, testReplayOptions()); err != nil || vr.FromSnapshot == 0 {
		t.Fatalf("verify after the upgrade: %+v %v", vr, err)
	}
	h.messages(6, 2)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	res, err = Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil || res.FromSnapshot == 0 || res.Schema != projections.LatestSchema {
		t.Fatalf("rebuild after the upgrade: %+v %v", res, err)
	}
	lost := filepath.Join(t.TempDir(), "recovered.db")
	if _, err := Rebuild(ctx, l, instA, lost, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatalf("recovery after the upgrade: %v", err)
	}
	a, _ := digestOf(t, live, key)
	b, _ := digestOf(t, lost, key)
	if d := projections.Compare(a, b); d != nil {
		t.Fatalf("recovered read model differs from the live one: %v", d)
	}
	// A new snapshot is checked against the migrated one.
	if _, err := Snapshot(ctx, l, instA, live, key, snapshotOpts()); err != nil {
		t.Fatalf("snapshot after the upgrade: %v", err)
	}
}

// TestSnapshotOfANewerSchemaAfterCompaction: a build that does not know
// the schema of an installation's only snapshot after a compaction (an
// older build after an upgrade's retain, or a rebuild --schema N) is
// refused with ErrSchemaTooNew naming the snapshot and its schema, not
// with ErrCompacted, which said to replay from a snapshot that exists.
// Before the compaction it replays from the start as before.
func TestSnapshotOfANewerSchemaAfterCompaction(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	writeHistory(t, l, instA, 2, 30)
	key := rawDBKey(t, 0x48)
	live := filepath.Join(t.TempDir(), "a.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, live, key)
	ret, err := Retain(ctx, l, instA, db, RetentionPolicy{History: KeepNone}, &RetainOptions{Options: *testReplayOptions()})
	db.Close()
	if err != nil || ret.Snapshot == nil {
		t.Fatalf("retain: %+v %v", ret, err)
	}
	old := projections.LatestSchema - 1
	atOld := &RebuildOptions{Options: *testReplayOptions(), SchemaVersion: old}
	if res, err := Rebuild(ctx, l, instA, filepath.Join(t.TempDir(), "before.db"), key, atOld); err != nil || res.FromSnapshot != 0 {
		t.Fatalf("rebuild at schema %d before the compaction: %+v %v; want one from the start", old, res, err)
	}
	if comp, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone}); err != nil || comp.Deleted == 0 {
		t.Fatalf("compact: %+v %v", comp, err)
	}
	_, err = Rebuild(ctx, l, instA, filepath.Join(t.TempDir(), "after.db"), key, atOld)
	if !errors.Is(err, projections.ErrSchemaTooNew) {
		t.Fatalf("rebuild at schema %d after the compaction: %v; want ErrSchemaTooNew", old, err)
	}
	want := fmt.Sprintf("snapshot at stream sequence %d is of schema %d", ret.Snapshot.Checkpoint, projections.LatestSchema)
	if !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
	// This build knows the snapshot's schema: the refusal is of the
	// downgrade, and no other build would do it (it said to use a build
	// that knows the schema, and then to run this very rebuild).
	if strings.Contains(err.Error(), "use a build that knows") || strings.Contains(err.Error(), "rebuild --schema") {
		t.Errorf("error %q sends the operator to a build that knows schema %d, which this one is", err, projections.LatestSchema)
	}
	if want := "a downgrade across a compaction needs a snapshot of that schema taken before it"; !strings.Contains(err.Error(), want) {
		t.Errorf("error %q does not say %q", err, want)
	}
}

// TestSnapshotThatDidNotKeepOutputs: a snapshot of a schema 8 file that
// applied own commits recorded with their output (a follower keeps a
// file at its schema) lacks those outputs. While the history still holds
// them it is passed over: a rebuild at the latest schema replays from
// the start and keeps them, and verify of a read model that has them
// agrees (it found drift, and a rebuild from the snapshot lost them).
func TestSnapshotThatDidNotKeepOutputs(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	gid, key := snapshotWithoutOutputs(t, l, false)
	live := filepath.Join(t.TempDir(), "live.db")
	res, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil || res.FromSnapshot != 0 || res.Schema != projections.LatestSchema {
		t.Fatalf("rebuild at the latest schema: %+v %v; want one from the start, not the snapshot", res, err)
	}
	wantOwnCommitOutput(t, live, key, gid)
	if vr, err := Verify(ctx, l, instA, live, key, testReplayOptions()); err != nil {
		t.Fatalf("verify of a read model that kept the outputs: %+v %v", vr, err)
	}
}

// TestCompactKeepsOutputsASnapshotDidNotKeep: a compaction does not
// delete the history that holds own commit outputs when the snapshot
// covering it (of a follower's read model kept at schema 8) did not keep
// them. Until 2026-12-06 Compact used that snapshot: it deleted the
// history, exit 0, and every rebuild after it started from the snapshot
// without the outputs (OwnCommits had no Welcome to hand back).
func TestCompactKeepsOutputsASnapshotDidNotKeep(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	gid, key := snapshotWithoutOutputs(t, l, false)
	_, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone})
	if !errors.Is(err, projections.ErrOutputsNotKept) || !errors.Is(err, ErrNoSnapshotToCompact) {
		t.Fatalf("compact over a snapshot that did not keep the outputs: %v; want ErrNoSnapshotToCompact and ErrOutputsNotKept", err)
	}
	if through, err := l.CompactedThrough(ctx, instA); err != nil || through != 0 {
		t.Fatalf("compacted through %d, %v; want nothing compacted", through, err)
	}
	live := filepath.Join(t.TempDir(), "live.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	wantOwnCommitOutput(t, live, key, gid)

	// A snapshot that kept them covers the history: compacted as usual.
	if _, err := Snapshot(ctx, l, instA, live, key, snapshotOpts()); err != nil {
		t.Fatal(err)
	}
	if _, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone}); err != nil {
		t.Fatalf("compact over a snapshot that kept the outputs: %v", err)
	}
	again := filepath.Join(t.TempDir(), "again.db")
	if res, err := Rebuild(ctx, l, instA, again, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil || res.FromSnapshot == 0 {
		t.Fatalf("rebuild after the compaction: %+v %v; want one from the snapshot", res, err)
	}
	wantOwnCommitOutput(t, again, key, gid)
}

// TestCompactRefusesASnapshotItCannotCheck: a snapshot of an older schema
// whose check for kept outputs cannot run (its scratch migration in the
// temporary directory fails) is passed over, not taken on trust; once the
// check can run, the same snapshot carries the compaction.
func TestCompactRefusesASnapshotItCannotCheck(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	key := rawDBKey(t, 0x4a)
	h := newHistoryGen(instA)
	h.setup(1)
	h.messages(6, 1)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	old := filepath.Join(t.TempDir(), "at-8.db")
	if _, err := Rebuild(ctx, l, instA, old, key, &RebuildOptions{Options: *testReplayOptions(), SchemaVersion: 8}); err != nil {
		t.Fatal(err)
	}
	if _, err := Snapshot(ctx, l, instA, old, key, snapshotOpts()); err != nil {
		t.Fatal(err)
	}
	// A temporary directory under a regular file cannot be made.
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("TMPDIR", filepath.Join(file, "tmp"))
	_, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone})
	if !errors.Is(err, ErrNoSnapshotToCompact) {
		t.Fatalf("compact with the check unable to run: %v; want ErrNoSnapshotToCompact", err)
	}
	if through, err := l.CompactedThrough(ctx, instA); err != nil || through != 0 {
		t.Fatalf("compacted through %d, %v; want nothing compacted", through, err)
	}
	t.Setenv("TMPDIR", t.TempDir())
	if _, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone}); err != nil {
		t.Fatalf("compact once the check runs: %v", err)
	}
}

// TestCompactThroughAnOlderSnapshotKeepsOutputs: with a snapshot that
// kept the outputs older than one that did not, a compaction goes
// through the older one, and a rebuild after it starts from there and
// replays the outputs (the newer snapshot migrated without them is not
// taken for the history compacted before it).
func TestCompactThroughAnOlderSnapshotKeepsOutputs(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	gid, key := snapshotWithoutOutputs(t, l, true)
	refs, err := l.Snapshots(ctx, instA)
	if err != nil || len(refs) != 2 {
		t.Fatalf("%d snapshots, %v; want 2", len(refs), err)
	}
	c, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone})
	if err != nil || c.Through != refs[1].Checkpoint {
		t.Fatalf("compact: %+v %v; want through the older snapshot, at %d", c, err, refs[1].Checkpoint)
	}
	live := filepath.Join(t.TempDir(), "live.db")
	res, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil || res.FromSnapshot != refs[1].Checkpoint {
		t.Fatalf("rebuild after the compaction: %+v %v; want one from the snapshot at %d", res, err, refs[1].Checkpoint)
	}
	wantOwnCommitOutput(t, live, key, gid)

	// With the older one gone, the newer one is all that covers the
	// compacted history: used without the outputs rather than no rebuild.
	if err := l.DeleteSnapshot(ctx, instA, refs[1].Checkpoint); err != nil {
		t.Fatal(err)
	}
	last := filepath.Join(t.TempDir(), "last.db")
	if res, err := Rebuild(ctx, l, instA, last, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil || res.FromSnapshot != refs[0].Checkpoint {
		t.Fatalf("rebuild with only the snapshot that did not keep the outputs: %+v %v; want one from it, at %d", res, err, refs[0].Checkpoint)
	}
}

// snapshotWithoutOutputs writes instA's history with an own commit that
// records its output (a Welcome) and stores a snapshot of a read model
// kept at schema 8, which applied it without keeping the output. With
// keptBefore, a snapshot at the latest schema is stored first, of the
// history before that commit. It returns the group and the read models'
// key.
func snapshotWithoutOutputs(t *testing.T, l *eventlog.Log, keptBefore bool) ([]byte, projections.Key) {
	t.Helper()
	ctx := context.Background()
	key := rawDBKey(t, 0x49)
	h := newHistoryGen(instA)
	h.setup(1)
	if keptBefore {
		if _, err := h.flush(ctx, l); err != nil {
			t.Fatal(err)
		}
		before := filepath.Join(t.TempDir(), "before.db")
		if _, err := Rebuild(ctx, l, instA, before, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
			t.Fatal(err)
		}
		if _, err := Snapshot(ctx, l, instA, before, key, snapshotOpts()); err != nil {
			t.Fatal(err)
		}
	}
	gid := []byte("own-output-group")
	id := hex.EncodeToString(gid)
	h.add(events.AggGroup, id, events.GroupCreated{GroupID: gid, Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("state-0")),
		Members: []events.Member{{Leaf: 0, Identity: []byte(instA)}}})
	h.add(events.AggGroup, id, events.CommitApplied{GroupID: gid, Epoch: 1, EpochAuthenticator: []byte("auth-1"),
		ConfirmedTranscriptHash: []byte("cth-1"), Commit: []byte("commit-1"), State: events.NewSecret([]byte("state-1")),
		Added:     []events.Member{{Leaf: 1, Identity: []byte("newbie")}},
		Committer: &events.Committer{Leaf: 0, Identity: []byte(instA), Own: true}, OwnOutput: &events.OwnOutput{Welcome: []byte("welcome-1")}},
		events.MemberAdded{GroupID: gid, Epoch: 1, Leaf: 1, Identity: []byte("newbie")})
	h.messages(6, 1)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	kept := filepath.Join(t.TempDir(), "kept-at-8.db")
	if _, err := Rebuild(ctx, l, instA, kept, key, &RebuildOptions{Options: *testReplayOptions(), SchemaVersion: 8}); err != nil {
		t.Fatal(err)
	}
	if _, err := Snapshot(ctx, l, instA, kept, key, snapshotOpts()); err != nil {
		t.Fatal(err)
	}
	return gid, key
}

// wantOwnCommitOutput fails t unless the read model at path hands back
// the Welcome of the own commit snapshotWithoutOutputs recorded.
func wantOwnCommitOutput(t *testing.T, path string, key projections.Key, gid []byte) {
	t.Helper()
	db := openDB(t, path, key)
	outs, err := db.OwnCommitOutputs(context.Background(), gid, 0)
	db.Close()
	if err != nil || len(outs) != 1 || string(outs[0].Welcome) != "welcome-1" {
		t.Fatalf("own commit outputs of %s: %+v %v; want epoch 1's", path, outs, err)
	}
}
