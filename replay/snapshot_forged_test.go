package replay

import (
	"context"
	"errors"
	"fmt"
	"github.com/epochlog/epochlog/internal/syncbuf"
	"log/slog"
	"path/filepath"
	"strings"
	"testing"
	"time"

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

// syncBuffer is the logs a test reads while a logger writes them.
type syncBuffer = syncbuf.Buffer

// An object under instA's snapshot names that does not open, passed over
// by a rebuild from a snapshot (at the read model's checkpoint, above the
// genuine one) and by a compaction (far past the history), is named in
// the Warn that passes over it: its bucket and object name, and why.
// Until 2026-12-07 both named the checkpoint only: the object's name is
// a keyed pseudonym the operator cannot compute.
func TestForgedSnapshotObjectsAreNamedWhenPassedOver(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	h := writeHistory(t, l, instA, 2, 10)
	key := rawDBKey(t, 0x55)
	live := filepath.Join(t.TempDir(), "a.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	snap, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
	if err != nil {
		t.Fatal(err)
	}
	h.messages(3, 2)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	res, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatal(err)
	}
	for _, cp := range []uint64{res.Checkpoint, forgedFar} {
		if _, err := l.PutSealedSnapshot(ctx, instA, cp, []byte("not a snapshot")); err != nil {
			t.Fatal(err)
		}
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil {
		t.Fatal(err)
	}
	var logs syncBuffer
	cfg := eventlog.Config{NATSURL: l.Conn().ConnectedUrl(), RequestTimeout: 5 * time.Second, ReconnectWait: 20 * time.Millisecond}
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	l2 := openLog(t, cfg, keyring(t, 1, 0x11))
	if got, err := Rebuild(ctx, l2, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil || got.FromSnapshot != snap.Checkpoint {
		t.Fatalf("rebuild past a forged snapshot object: %+v %v, want it from the snapshot at %d", got, err, snap.Checkpoint)
	}
	if _, err := Compact(ctx, l2, instA, nil); err != nil && !errors.Is(err, ErrNoSnapshotToCompact) {
		t.Fatal(err)
	}
	// Each Warn that passes over one: the import's (at 24) and the
	// compaction's (both).
	names := map[uint64]string{}
	for _, r := range refs {
		names[r.Checkpoint] = r.Name
	}
	passed := 0
	for line := range strings.Lines(logs.String()) {
		if !strings.Contains(line, "snapshot cannot be used") {
			continue
		}
		passed++
		for cp, name := range names {
			if strings.Contains(line, fmt.Sprintf("snapshot_seq=%d ", cp)) &&
				(!strings.Contains(line, "object="+name) || !strings.Contains(line, "bucket="+l.SnapshotBucket())) {
				t.Errorf("a Warn passing over the object %s at %d does not name it and its bucket %s: %s", name, cp, l.SnapshotBucket(), line)
			}
		}
	}
	if passed < 3 {
		t.Errorf("%d Warns passing over a snapshot object, want 3 (the rebuild's, the compaction's two):\n%s", passed, logs.String())
	}
}
