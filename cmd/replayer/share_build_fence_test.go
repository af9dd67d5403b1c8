package main

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/lease"
	"github.com/epochlog/epochlog/replay"
)

// A share group's follower building a read model it lacks loses its lease
// while it rebuilds, and the new holder (another host, on shared storage:
// the writer lock covers one host only) puts its own read model at the
// target meanwhile. The follower must not swap its rebuilt file in over
// the new holder's: the build fails naming the lost lease, the target is
// still the new holder's file, and the rebuilt one is removed. Until
// 2026-12-06 the swap was not fenced and replaced it.
func TestFollowShareBuildDoesNotSwapAfterLosingItsLease(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	svc, dir := t.TempDir(), t.TempDir()
	id := events.InstallationID("share-fence")
	createInstallation(t, l, svc, id)
	enqueueFor(t, l, id, "before", 5)
	key, err := readDBKeyFile(filepath.Join(svc, string(id)+".key"))
	if err != nil {
		t.Fatal(err)
	}
	target := filepath.Join(dir, string(id)+".db")

	// B, the next holder, on the same share group's bucket.
	bb, err := lease.Open(ctx, l, lease.Config{Group: "g", TTL: 2 * time.Second, Holder: "B"})
	if err != nil {
		t.Fatal(err)
	}
	// A, the follower, with its own connection; its lease ends right as
	// its rebuild starts.
	logs := &syncBuffer{}
	var mu sync.Mutex // the hook's results
	var lsA *lease.Lease
	var theirs os.FileInfo
	var hookErr error
	loseLease := func() {
		mu.Lock()
		defer mu.Unlock()
		hookErr = func() error {
			if err := lsA.Release(ctx); err != nil {
				return err
			}
			lsB, err := bb.Acquire(ctx, id)
			if err != nil {
				return err
			}
			t.Cleanup(func() { _ = lsB.Release(ctx) })
			// B's own read model, built on its host and swapped in at the
			// target.
			built := filepath.Join(t.TempDir(), "b.db")
			if _, err := replay.Rebuild(ctx, l, id, built, key, nil); err != nil {
				return err
			}
			if err := os.Rename(built, target); err != nil {
				return err
			}
			theirs, err = os.Stat(target)
			return err
		}()
	}
	ring, err := parseKeyring(testRingText)
	if err != nil {
		t.Fatal(err)
	}
	h := logtest.OnMessage{Handler: slog.NewTextHandler(logs, nil), Msg: "replay: rebuild started", Once: &sync.Once{}, Hook: loseLease}
	la, err := eventlog.Open(ctx, eventlog.Config{NATSURL: srv.URL(), Logger: slog.New(h)}, ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { la.Close() })
	ba, err := lease.Open(ctx, la, lease.Config{Group: "g", Holder: "A"})
	if err != nil {
		t.Fatal(err)
	}
	if lsA, err = ba.Acquire(ctx, id); err != nil {
		t.Fatal(err)
	}

	f := &follower{lg: slog.New(slog.NewTextHandler(io.Discard, nil)), log: la, id: id, path: target, key: key}
	err = f.build(ctx, key, lsA)
	mu.Lock()
	defer mu.Unlock()
	if hookErr != nil {
		t.Fatalf("B taking the lease and writing its read model: %v", hookErr)
	}
	if theirs == nil {
		t.Fatal("the rebuild never started")
	}
	if !errors.Is(err, lease.ErrLeaseLost) || !strings.Contains(err.Error(), "not swapping the rebuilt database") {
		t.Fatalf("build after losing the lease: %v, want ErrLeaseLost and no swap\n%s", err, logs.String())
	}
	now, serr := os.Stat(target)
	if serr != nil || !os.SameFile(now, theirs) {
		t.Fatalf("the target is no longer B's read model (%v): A swapped its rebuilt file in after losing its lease", serr)
	}
	if left, _ := filepath.Glob(target + ".rebuild-*"); len(left) != 0 {
		t.Fatalf("A's rebuilt file left behind: %v", left)
	}
	if !strings.Contains(logs.String(), "not swapping the rebuilt database") {
		t.Errorf("A's logs do not say why it did not swap:\n%s", logs.String())
	}
}
