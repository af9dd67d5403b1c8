package replay

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
)

// TestRetainOverAForgedRetentionMark: someone with write access to the
// retention bucket but not the keyring overwrites instA's retention mark
// with garbage. A retention with rows to delete replaces it with its own
// (the forged one says nothing a deletion of the key would not) and
// succeeds, and snapshots work again after it. Until 2026-12-07 every
// retain failed on it for good ("does not check out", nothing deleted),
// and so did every snapshot: only deleting the key by hand, under a
// pseudonym the operator cannot compute, ended it.
func TestRetainOverAForgedRetentionMark(t *testing.T) {
	ctx := context.Background()
	l, _, db, _, _ := retainRaceWorld(t)
	// A genuine mark, so that the key exists under instA's pseudonym;
	// then the forgery, under every mark name the bucket lists.
	if err := l.MarkRetention(ctx, instA, eventlog.RetentionMark{Checkpoint: 1}); err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, l.RetentionBucket())
	if err != nil {
		t.Fatal(err)
	}
	names, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	forged := 0
	for name := range names.Keys() {
		if strings.HasSuffix(name, ".retaining") {
			if _, err := kv.Put(ctx, name, []byte("garbage")); err != nil {
				t.Fatal(err)
			}
			forged++
		}
	}
	if forged == 0 {
		t.Fatal("no retention mark to forge")
	}
	if _, _, err := l.RetentionMarkOf(ctx, instA); err == nil {
		t.Fatal("the forged mark checks out")
	}

	res, err := Retain(ctx, l, instA, db, retainPolicy, &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }})
	if err != nil {
		t.Fatalf("retain over a forged retention mark: %v", err)
	}
	if res.RowsDeleted == 0 || res.KeysShredded == 0 {
		t.Fatalf("retain deleted nothing: %+v", res)
	}
	cp, err := db.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if m, ok, err := l.RetentionMarkOf(ctx, instA); err != nil || !ok || m.Checkpoint != cp {
		t.Fatalf("retention mark after the retention: %+v %v %v, want its own at %d", m, ok, err, cp)
	}
	if _, err := SnapshotDB(ctx, l, instA, db, &SnapshotOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatalf("snapshot after the retention: %v", err)
	}
}

// forgeRetentionMarks overwrites every retention mark in l's retention
// bucket with garbage and returns the names it overwrote.
func forgeRetentionMarks(t *testing.T, l *eventlog.Log) []string {
	t.Helper()
	ctx := context.Background()
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, l.RetentionBucket())
	if err != nil {
		t.Fatal(err)
	}
	names, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var forged []string
	for name := range names.Keys() {
		if strings.HasSuffix(name, ".retaining") {
			if _, err := kv.Put(ctx, name, []byte("garbage")); err != nil {
				t.Fatal(err)
			}
			forged = append(forged, name)
		}
	}
	if len(forged) == 0 {
		t.Fatal("no retention mark to forge")
	}
	return forged
}

// TestRetainWithNothingToDeleteReplacesAForgedRetentionMark: the mark is
// forged after a retention deleted what there was to delete. The
// snapshot's refusal names the bucket key and the remedy; a retention
// with nothing left to delete (the remedy) replaces the mark with one of
// its own at the newest snapshot's checkpoint, and snapshots work again.
// Until 2026-12-07 only a retention that deleted rows replaced it: one
// with nothing to delete left it, and every snapshot stayed refused.
func TestRetainWithNothingToDeleteReplacesAForgedRetentionMark(t *testing.T) {
	ctx := context.Background()
	l, _, db, _, _ := retainRaceWorld(t)
	opts := &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }}
	if res, err := Retain(ctx, l, instA, db, retainPolicy, opts); err != nil || res.RowsDeleted == 0 {
		t.Fatalf("first retention: %+v %v", res, err)
	}
	forged := forgeRetentionMarks(t, l)

	_, err := SnapshotDB(ctx, l, instA, db, &SnapshotOptions{Options: *testReplayOptions()})
	if err == nil {
		t.Fatal("snapshot stored over a forged retention mark")
	}
	for _, want := range []string{l.RetentionBucket(), forged[0], "replayer retain"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("snapshot refusal %q does not name %q", err, want)
		}
	}

	// As the refusal says: with the installation's policy, or with
	// --messages forever (KeepForever: nothing to do but this).
	res, err := Retain(ctx, l, instA, db, RetentionPolicy{Messages: KeepForever, Delivery: KeepForever}, opts)
	if err != nil {
		t.Fatalf("retain with nothing to delete over a forged mark: %v", err)
	}
	if res.RowsDeleted != 0 || res.DeliveriesDeleted != 0 {
		t.Fatalf("second retention deleted rows: %+v", res)
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil || len(refs) == 0 {
		t.Fatalf("snapshots: %v %v", refs, err)
	}
	if m, ok, err := l.RetentionMarkOf(ctx, instA); err != nil || !ok || m.Checkpoint != refs[0].Checkpoint {
		t.Fatalf("retention mark after the retention: %+v %v %v, want its own at %d", m, ok, err, refs[0].Checkpoint)
	}
	if _, err := SnapshotDB(ctx, l, instA, db, &SnapshotOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatalf("snapshot after the retention: %v", err)
	}
}

// TestReplacingAForgedMarkKeepsAGenuineOneWrittenMeanwhile: a retention
// with nothing to delete (the remedy the snapshot's refusal names) finds
// instA's mark forged; before it replaces it, another retention (of
// another copy of the read model, at the same checkpoint, the newest
// snapshot's) writes its genuine mark, with its cutoffs. That mark
// stays: a snapshot stored over the other retention's undoes itself by
// deleting the rows before the mark's cutoffs (undoRetainedMeanwhile),
// and with none it would keep the rows whose keys that retention
// shreds. Until 2026-12-07 the replacement, at the same checkpoint, was
// written over the genuine mark (no cutoffs).
func TestReplacingAForgedMarkKeepsAGenuineOneWrittenMeanwhile(t *testing.T) {
	ctx := context.Background()
	l, _, db, _, _ := retainRaceWorld(t)
	snap, err := SnapshotDB(ctx, l, instA, db, &SnapshotOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatal(err)
	}
	cp := snap.Checkpoint
	if err := l.MarkRetention(ctx, instA, eventlog.RetentionMark{Checkpoint: 1}); err != nil {
		t.Fatal(err)
	}
	forgeRetentionMarks(t, l)

	genuine := eventlog.RetentionMark{Checkpoint: cp, Messages: retainCutoff, Delivery: retainCutoff}
	var hookErr error
	cfg := eventlog.Config{NATSURL: l.Conn().ConnectedUrl(), RequestTimeout: 5 * time.Second, ReconnectWait: 20 * time.Millisecond}
	cfg.Logger = slog.New(logtest.OnMessage{
		Handler: slog.NewTextHandler(io.Discard, nil),
		Msg:     "eventlog: retention replaces a retention mark that does not check out (written by someone without the keyring)",
		Once:    new(sync.Once),
		Hook:    func() { hookErr = l.MarkRetention(ctx, instA, genuine) },
	})
	l2 := openLog(t, cfg, keyring(t, 1, 0x11))
	opts := &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }}
	if _, err := Retain(ctx, l2, instA, db, RetentionPolicy{Messages: KeepForever, Delivery: KeepForever}, opts); err != nil {
		t.Fatalf("retain with nothing to delete over a forged mark: %v", err)
	}
	if hookErr != nil {
		t.Fatalf("the genuine mark written meanwhile: %v", hookErr)
	}
	m, ok, err := l.RetentionMarkOf(ctx, instA)
	if err != nil || !ok || m != genuine {
		t.Fatalf("retention mark after the replacement raced a genuine one: %+v %v %v, want the genuine %+v", m, ok, err, genuine)
	}
}

// TestSnapshotFindingTheMarkForgedAfterItsPutUndoesIt: a snapshot reads
// instA's read model before a retention deletes its rows, and puts
// after the retention finished (stored its snapshot at the same
// checkpoint, shredded the keys); the retention mark, which would have
// had the snapshot mend itself (undoRetainedMeanwhile), is forged in
// between. The snapshot finds it so after its put and puts back what
// was there (the retention's): no stored snapshot holds the rows whose
// keys are gone, and a rebuild equals the retained read model. Until
// 2026-12-07 the snapshot stayed, the error said "snapshot again", and
// retaining again did not mend it (nothing left to shred).
func TestSnapshotFindingTheMarkForgedAfterItsPutUndoesIt(t *testing.T) {
	ctx := context.Background()
	l, _, db, live, key := retainRaceWorld(t)
	sdb := openDB(t, live, key)
	defer sdb.Close()
	waiting, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	so := &SnapshotOptions{Options: *testReplayOptions(), hook: func(stage string) {
		if stage == "put" {
			close(waiting)
			<-release
		}
	}}
	go func() {
		_, err := SnapshotDB(ctx, l, instA, sdb, so)
		done <- err
	}()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("the snapshot ended before its put: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the snapshot did not reach its put")
	}
	opts := &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }}
	if res, err := Retain(ctx, l, instA, db, retainPolicy, opts); err != nil || res.KeysShredded == 0 {
		t.Fatalf("retain: %+v %v", res, err)
	}
	forgeRetentionMarks(t, l)
	close(release)
	if err := <-done; !errors.Is(err, events.ErrTampered) {
		t.Fatalf("snapshot that found the mark forged after its put: %v, want events.ErrTampered", err)
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil || len(refs) == 0 {
		t.Fatalf("snapshots: %v %v", refs, err)
	}
	for _, r := range refs {
		if msgs, dels := retainedRowsIn(t, l, instA, r.Checkpoint); msgs != 0 || dels != 0 {
			t.Errorf("the snapshot at %d holds %d messages and %d deliveries the retention deleted (stored snapshots %v)", r.Checkpoint, msgs, dels, checkpoints(refs))
		}
	}
	checkRetainedRebuild(t, l, live, key, true)
}

// TestReplacingAForgedMarkIgnoresAForgedSnapshot: beside the forged mark,
// an object under instA's snapshot names at a checkpoint far past its
// history that does not open (whoever may write to the snapshots bucket
// can list the names and put one). The retention that replaces the mark
// writes it at the newest snapshot that opens: snapshots of the read
// model, moved on, work again.
// Until 2026-12-07 it took the newest name listed: its mark, past every
// checkpoint the installation will reach, refused every snapshot
// (ErrRetainedMeanwhile) and no later retention could replace it (the
// later checkpoint stays).
func TestReplacingAForgedMarkIgnoresAForgedSnapshot(t *testing.T) {
	ctx := context.Background()
	l, h, db, _, _ := retainRaceWorld(t)
	snap, err := SnapshotDB(ctx, l, instA, db, &SnapshotOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatal(err)
	}
	if err := l.MarkRetention(ctx, instA, eventlog.RetentionMark{Checkpoint: 1}); err != nil {
		t.Fatal(err)
	}
	forgeRetentionMarks(t, l)
	const far = 1 << 40
	if _, err := l.PutSealedSnapshot(ctx, instA, far, []byte("not a snapshot")); err != nil {
		t.Fatal(err)
	}
	opts := &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }}
	if _, err := Retain(ctx, l, instA, db, RetentionPolicy{Messages: KeepForever, Delivery: KeepForever}, opts); err != nil {
		t.Fatalf("retain with nothing to delete over a forged mark: %v", err)
	}
	if m, ok, err := l.RetentionMarkOf(ctx, instA); err != nil || !ok || m.Checkpoint != snap.Checkpoint {
		t.Fatalf("retention mark after the retention: %+v %v %v, want one at the newest snapshot that opens, %d", m, ok, err, snap.Checkpoint)
	}
	h.messages(2, 1)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	if _, err := SnapshotDB(ctx, l, instA, db, &SnapshotOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatalf("snapshot after the retention: %v", err)
	}
}
