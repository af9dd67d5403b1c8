package replay

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

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
	h := newHistoryGen(instA)
	h.setup(1)
	gid := []byte("own-output-group")
	id := hex.EncodeToString(gid)
	h.add(events.AggGroup, id, events.GroupCreated{GroupID: gid, Ciphersuite: 3, Epoch: 0, State: events.Secret("state-0"),
		Members: []events.Member{{Leaf: 0, Identity: []byte(instA)}}})
	h.add(events.AggGroup, id, events.CommitApplied{GroupID: gid, Epoch: 1, EpochAuthenticator: []byte("auth-1"),
		ConfirmedTranscriptHash: []byte("cth-1"), Commit: []byte("commit-1"), State: events.Secret("state-1"),
		Added:     []events.Member{{Leaf: 1, Identity: []byte("newbie")}},
		Committer: &events.Committer{Leaf: 0, Identity: []byte(instA), Own: true}, OwnOutput: &events.OwnOutput{Welcome: []byte("welcome-1")}},
		events.MemberAdded{GroupID: gid, Epoch: 1, Leaf: 1, Identity: []byte("newbie")})
	h.messages(6, 1)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	key := rawDBKey(t, 0x49)
	kept := filepath.Join(t.TempDir(), "kept-at-8.db")
	if _, err := Rebuild(ctx, l, instA, kept, key, &RebuildOptions{Options: *testReplayOptions(), SchemaVersion: 8}); err != nil {
		t.Fatal(err)
	}
	if _, err := Snapshot(ctx, l, instA, kept, key, snapshotOpts()); err != nil {
		t.Fatal(err)
	}
	live := filepath.Join(t.TempDir(), "live.db")
	res, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil || res.FromSnapshot != 0 || res.Schema != projections.LatestSchema {
		t.Fatalf("rebuild at the latest schema: %+v %v; want one from the start, not the snapshot", res, err)
	}
	db := openDB(t, live, key)
	outs, err := db.OwnCommitOutputs(ctx, gid, 0)
	db.Close()
	if err != nil || len(outs) != 1 || string(outs[0].Welcome) != "welcome-1" {
		t.Fatalf("own commit outputs after the rebuild: %+v %v; want epoch 1's", outs, err)
	}
	if vr, err := Verify(ctx, l, instA, live, key, testReplayOptions()); err != nil {
		t.Fatalf("verify of a read model that kept the outputs: %+v %v", vr, err)
	}
}
