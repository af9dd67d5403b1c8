package main

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// TestVerifyWhileWriterRuns: verify reads the live database's checkpoint
// and its tables in one snapshot. If they were read apart, the live
// database's normal writer (a follower, or the installation itself)
// applying events in between would make verify report drift on a
// database that is exactly its history.
func TestVerifyWhileWriterRuns(t *testing.T) {
	ctx := context.Background()
	_, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("verify-a")
	path := filepath.Join(dir, "verify-a.db")
	key, err := writeDBKeyFile(filepath.Join(dir, "verify-a.key"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := engine.CreateInstallation(ctx, l, id, path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
	queue := engine.NewDeliveries(l, nil)
	enqueue := func(round string, n int) {
		for i := range n {
			if _, _, err := queue.Enqueue(ctx, engine.Enqueue{Recipient: id, Channel: "mls",
				Payload: []byte(fmt.Sprintf("%s-%d", round, i)), IdempotencyKey: fmt.Sprintf("%s-%d", round, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	enqueue("one", 10)
	// The live database is the installation's, caught up: a faithful
	// projection of its history.
	live, err := projections.OpenExisting(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, _, err := replay.CatchUp(ctx, l, id, live, nil); err != nil {
		t.Fatal(err)
	}
	// More events arrive; the live writer applies them while verify runs
	// (deterministically, from verify's progress callback).
	enqueue("two", 3)
	var once sync.Once
	var catchErr error
	caughtUp := 0
	_, err = replay.Verify(ctx, l, id, path, key, &replay.Options{BatchSize: 1, Progress: func(replay.Progress) {
		once.Do(func() { caughtUp, _, catchErr = replay.CatchUp(ctx, l, id, live, nil) })
	}})
	if catchErr != nil {
		t.Fatal(catchErr)
	}
	if caughtUp == 0 {
		t.Fatal("the writer applied nothing during verify: the test did not exercise the race")
	}
	// The live database is still exactly its history (a fresh verify
	// passes), so the concurrent verify must not report drift.
	if _, err2 := replay.Verify(ctx, l, id, path, key, nil); err2 != nil {
		t.Fatalf("the live database does not match its history afterwards: %v", err2)
	}
	if errors.Is(err, replay.ErrDrift) {
		t.Fatalf("verify reported drift (exit 3) on a faithful read model whose writer applied events during the verify: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}
