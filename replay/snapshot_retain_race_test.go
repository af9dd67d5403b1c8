package replay

import (
	"bytes"
	"context"
	"errors"
	"path/filepath"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestSnapshotRacingRetention runs a snapshot that read its read model
// before a retention deleted the old rows and stores it after (or while)
// the retention runs: on the file retain works on (replayer snapshot
// takes no lock), or on another copy ahead of it (a follower's), with
// the snapshot waiting after its check ("checked") or right before its
// put ("put"), for the whole retention ("all") or while the retention
// waits after deleting its rows ("rows"). Afterwards no stored snapshot
// holds a row the retention deleted, a rebuild from the stream gives the
// retained read model, and the snapshot did not end as if it had stored
// what it read. Until 2026-12-07 the snapshot stored the rows after
// their keys were shredded: over the retention's own snapshot (same
// checkpoint), or as the newest one (a copy ahead; with --keep 1 the
// retention's was pruned), and a rebuild brought the rows back.
func TestSnapshotRacingRetention(t *testing.T) {
	cases := []struct {
		name      string
		copyAhead bool
		keep      int
		stage     string
		during    string
	}{
		{"same file, after its check", false, 0, "checked", "all"},
		{"same file, before its put", false, 0, "put", "all"},
		{"same file, put between the retention's rows and its snapshot", false, 0, "put", "rows"},
		{"copy ahead, after its check", true, 0, "checked", "all"},
		{"copy ahead, before its put", true, 0, "put", "all"},
		{"copy ahead, before its put, keep 1", true, 1, "put", "all"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			ctx := context.Background()
			l, h, db, live, key := retainRaceWorld(t)
			dir := filepath.Dir(live)
			snapPath := live // replayer snapshot opens the file on its own
			if c.copyAhead {
				h.messages(4, 2)
				if _, err := h.flush(ctx, l); err != nil {
					t.Fatal(err)
				}
				snapPath = filepath.Join(dir, "copy.db")
				if _, err := Rebuild(ctx, l, instA, snapPath, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
					t.Fatal(err)
				}
			}
			sdb := openDB(t, snapPath, key)
			defer sdb.Close()
			if old, _ := messageCounts(t, sdb); old == 0 {
				t.Fatal("the snapshot's read model holds no old message: nothing to race")
			}

			waiting, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
			var putLater atomic.Bool
			so := &SnapshotOptions{Options: *testReplayOptions(), Keep: c.keep, hook: func(stage string) {
				switch {
				case stage == c.stage:
					close(waiting)
					<-release
				case stage == "put":
					putLater.Store(true)
				}
			}}
			go func() {
				_, err := SnapshotDB(ctx, l, instA, sdb, so)
				done <- err
			}()
			wait := func() error {
				select {
				case err := <-done:
					return err
				case <-time.After(2 * time.Minute):
					t.Fatal("the snapshot did not end")
					return nil
				}
			}
			select {
			case <-waiting:
			case err := <-done:
				t.Fatalf("the snapshot ended before %s: %v", c.stage, err)
			case <-time.After(2 * time.Minute):
				t.Fatalf("the snapshot did not reach %s", c.stage)
			}
			var snapErr error
			released := false
			ro := &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }}
			if c.during == "rows" {
				ro.Step = func(s string) {
					if s == "rows" && !released {
						released = true
						close(release)
						snapErr = wait()
					}
				}
			}
			res, err := Retain(ctx, l, instA, db, retainPolicy, ro)
			if err != nil {
				t.Fatalf("retain: %v", err)
			}
			if res.RowsDeleted == 0 || res.KeysShredded == 0 {
				t.Fatalf("retain deleted nothing: %+v", res)
			}
			if !released {
				close(release)
				snapErr = wait()
			}
			t.Logf("the racing snapshot: %v", snapErr)

			// No stored snapshot holds a row the retention deleted.
			refs, err := l.Snapshots(ctx, instA)
			if err != nil {
				t.Fatal(err)
			}
			if len(refs) == 0 {
				t.Fatal("no snapshot left: the shredded history cannot be rebuilt")
			}
			for _, r := range refs {
				if msgs, dels := retainedRowsIn(t, l, instA, r.Checkpoint); msgs != 0 || dels != 0 {
					t.Errorf("the snapshot at %d holds %d messages and %d deliveries the retention deleted (stored snapshots %v)", r.Checkpoint, msgs, dels, checkpoints(refs))
				}
			}
			checkRetainedRebuild(t, l, live, key, !c.copyAhead)
			// The snapshot did not end as if what it read were stored,
			// and one that waited before the retention mark's check was
			// not stored even for a moment.
			if !errors.Is(snapErr, ErrRetainedMeanwhile) {
				t.Errorf("the racing snapshot returned %v, want ErrRetainedMeanwhile", snapErr)
			}
			if c.stage == "checked" && putLater.Load() {
				t.Error("the racing snapshot was stored after the retention, then undone: the mark's check before the put did not refuse it")
			}
		})
	}
}

// TestRetentionWhileASnapshotIsStoredOverIt stores a snapshot that read
// the read model before the retention deleted its rows over the
// retention's own snapshot, after the retention pruned the others and
// before it shreds, and lets the snapshot die before it checks the
// retention mark again (its context is cancelled right after its put):
// the retention finds its snapshot replaced and shreds nothing
// (ErrRetainedMeanwhile); retaining again stores it again and finishes.
// Until 2026-12-07 (before the retention checked its snapshot after the
// prune) it shredded the keys under the replacement, which held the
// rows.
func TestRetentionWhileASnapshotIsStoredOverIt(t *testing.T) {
	ctx := context.Background()
	l, _, db, live, key := retainRaceWorld(t)
	sdb := openDB(t, live, key)
	defer sdb.Close()
	sctx, kill := context.WithCancel(ctx)
	defer kill()
	waiting, release, done := make(chan struct{}), make(chan struct{}), make(chan error, 1)
	so := &SnapshotOptions{Options: *testReplayOptions(), hook: func(stage string) {
		switch stage {
		case "put":
			close(waiting)
			<-release
		case "stored":
			kill()
		}
	}}
	go func() {
		_, err := SnapshotDB(sctx, l, instA, sdb, so)
		done <- err
	}()
	select {
	case <-waiting:
	case err := <-done:
		t.Fatalf("the snapshot ended before its put: %v", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("the snapshot did not reach its put")
	}
	var snapErr error
	ro := &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }, Step: func(s string) {
		if s == "prune" {
			close(release)
			select {
			case snapErr = <-done:
			case <-time.After(2 * time.Minute):
				t.Error("the snapshot did not end")
			}
		}
	}}
	res, err := Retain(ctx, l, instA, db, retainPolicy, ro)
	t.Logf("the snapshot: %v", snapErr)
	if !errors.Is(err, ErrRetainedMeanwhile) {
		t.Fatalf("retain with its snapshot replaced: %v, want ErrRetainedMeanwhile", err)
	}
	if res == nil || res.KeysShredded != 0 {
		t.Fatalf("retain with its snapshot replaced shredded keys: %+v", res)
	}
	ro.Step = nil
	if res, err = Retain(ctx, l, instA, db, retainPolicy, ro); err != nil || res.KeysShredded == 0 {
		t.Fatalf("retain again: %+v, %v", res, err)
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range refs {
		if msgs, dels := retainedRowsIn(t, l, instA, r.Checkpoint); msgs != 0 || dels != 0 {
			t.Errorf("the snapshot at %d holds %d messages and %d deliveries the retention deleted (stored snapshots %v)", r.Checkpoint, msgs, dels, checkpoints(refs))
		}
	}
	checkRetainedRebuild(t, l, live, key, true)
}

// retainRaceWorld is instA's retention world: its read model (db, open,
// at live, under key) holding 20 messages before retainCutoff, an older
// snapshot of it holding them too, then six newer messages: the history
// gen h goes on from there.
func retainRaceWorld(t *testing.T) (l *eventlog.Log, h *historyGen, db *projections.DB, live string, key projections.Key) {
	t.Helper()
	ctx := context.Background()
	l, _ = newLog(t)
	h = retainHistory(t, l, 30)
	key = rawDBKey(t, 0x42)
	live = filepath.Join(t.TempDir(), "a.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	db = openDB(t, live, key)
	t.Cleanup(func() { db.Close() })
	// An older snapshot, holding the old messages: a racing snapshot's
	// check starts from it.
	if _, err := SnapshotDB(ctx, l, instA, db, &SnapshotOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	h.t = baseTime.Add(49 * time.Hour)
	h.messages(6, 2)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	return l, h, db, live, key
}

// checkRetainedRebuild rebuilds instA's read model from the stream
// beside live: it must hold no message before retainCutoff, and with
// same equal the read model at live.
func checkRetainedRebuild(t *testing.T, l *eventlog.Log, live string, key projections.Key, same bool) {
	t.Helper()
	rebuilt := filepath.Join(filepath.Dir(live), "rebuilt.db")
	if _, err := Rebuild(context.Background(), l, instA, rebuilt, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatalf("rebuild after the retention: %v", err)
	}
	rdb := openDB(t, rebuilt, key)
	old, _ := messageCounts(t, rdb)
	rdb.Close()
	if old != 0 {
		t.Errorf("the rebuild brought back %d messages the retention deleted", old)
	}
	if same {
		want, _ := digestOf(t, live, key)
		if got, _ := digestOf(t, rebuilt, key); projections.Compare(want, got) != nil {
			t.Errorf("the rebuild differs from the retained read model: %v", projections.Compare(want, got))
		}
	}
}

// retainedRowsIn imports inst's snapshot at cp into a scratch read model
// and counts the messages and deliveries before retainCutoff that
// retention deletes.
func retainedRowsIn(t *testing.T, l *eventlog.Log, inst events.InstallationID, cp uint64) (msgs, dels int64) {
	t.Helper()
	ctx := context.Background()
	plain, err := l.OpenSnapshot(ctx, inst, cp)
	if err != nil {
		t.Fatal(err)
	}
	meta, err := projections.ReadSnapshotMeta(bytes.NewReader(plain))
	if err != nil {
		t.Fatal(err)
	}
	tmp := filepath.Join(t.TempDir(), "check.db")
	db, err := openFresh(tmp, projections.SaltPath(tmp), rawDBKey(t, 0x17), meta.Schema, testReplayOptions().DB)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if _, err := db.Import(ctx, bytes.NewReader(plain)); err != nil {
		t.Fatalf("import the snapshot at %d: %v", cp, err)
	}
	if msgs, err = db.CountMessagesBefore(ctx, retainCutoff); err != nil {
		t.Fatal(err)
	}
	if dels, err = db.CountDeliveriesBefore(ctx, retainCutoff); err != nil {
		t.Fatal(err)
	}
	return msgs, dels
}

func checkpoints(refs []eventlog.SnapshotRef) []uint64 {
	var out []uint64
	for _, r := range refs {
		out = append(out, r.Checkpoint)
	}
	return out
}
