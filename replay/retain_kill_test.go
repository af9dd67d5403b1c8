package replay

import (
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// The retention kill test runs Retain then Compact in a child process
// (this test binary, re-executed with envRetainChild set, running only
// this test) and SIGKILLs it after a growing number of its steps, now and
// then a random moment later (inside the next step). The nats-server
// lives in the parent. After every kill: every retained message is still
// in the live read model and in a rebuild; once any key of the shredded
// days is gone, no snapshot and no rebuild holds a message of those days
// and the Logs open none of their events; running again finishes.

const (
	envRetainChild = "EPOCHLOG_RETAIN_CHILD" // the NATS URL: run as the child
	envRetainDB    = "EPOCHLOG_RETAIN_DB"
)

// retainChildPause is the child's pause after each step.
const retainChildPause = 100 * time.Millisecond

// runRetainChild is the child: retain, then compact, printing each step.
func runRetainChild(t *testing.T, url, path string) {
	ctx := context.Background()
	l, db, step := retainChild(t, url, path)
	if _, err := Retain(ctx, l, instA, db, retainPolicy, &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }, Step: step}); err != nil {
		t.Fatal(err)
	}
	if _, err := Compact(ctx, l, instA, &CompactOptions{Step: step}); err != nil {
		t.Fatal(err)
	}
	step("done")
}

func TestRetainKill9(t *testing.T) {
	if url := os.Getenv(envRetainChild); url != "" {
		runRetainChild(t, url, os.Getenv(envRetainDB))
		return
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	ctx := context.Background()
	l, srv := newLog(t)
	retainHistory(t, l, 30)
	writeHistory(t, l, instB, 1, 20)
	live := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 0x42)
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, live, key)
	if _, err := SnapshotDB(ctx, l, instA, db, &SnapshotOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	if old, all := messageCounts(t, db); old != 20 || all != 60 {
		t.Fatalf("%d old messages of %d, want 20 of 60", old, all)
	}
	db.Close()
	type raw struct {
		seq     uint64
		subject string
		data    []byte
	}
	var doomed []raw // the events of the days retention shreds
	if err := l.Read(ctx, instA, 0, func(r eventlog.Record) error {
		if c, _ := events.PeriodOf(r.Event, r.Event.Time); c == events.ClassMessages && r.Event.Time.Before(retainCutoff) {
			env, err := rawEnv(l, r.Seq)
			doomed = append(doomed, raw{r.Seq, r.Subject, env})
			return err
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	wantB, err := l.LastSeq(ctx, instB)
	if err != nil {
		t.Fatal(err)
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 1))
	groups := []string{"67726f75702d30303030", "67726f75702d30303031"} // hex of genGroupID(0), (1)
	finished := false
	var kills []string
	for round := 0; round < 20 && !finished; round++ {
		// One step further each round through retention's steps, then
		// three at a time through the compaction's deletes.
		killAfter := round + 1
		if round > 5 {
			killAfter = 6 + 3*(round-5)
		}
		var late time.Duration
		if round%2 == 1 {
			late = time.Duration(rng.IntN(150)) * time.Millisecond
		}
		last, done := killRun(t, round, "TestRetainKill9", []string{envRetainChild + "=" + srv.URL(), envRetainDB + "=" + live}, killAfter, late)
		if done {
			finished = true
		} else {
			kills = append(kills, last)
		}

		// The state the kill left, seen by a fresh Log (nothing cached).
		check := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
		db := openDB(t, live, key)
		old, all := messageCounts(t, db)
		db.Close()
		if all-old != 40 {
			t.Fatalf("round %d (killed after %q): the live read model holds %d retained messages, want 40", round, last, all-old)
		}
		left, _, err := check.OldDayPeriods(ctx, instA, events.ClassMessages, groups, retainCutoff, retainCutoff)
		if err != nil {
			t.Fatal(err)
		}
		shredding := len(left) < 2
		p := filepath.Join(t.TempDir(), "rebuilt.db")
		if _, err := Rebuild(ctx, check, instA, p, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
			t.Fatalf("round %d (killed after %q): rebuild: %v", round, last, err)
		}
		rb := openDB(t, p, key)
		rold, rall := messageCounts(t, rb)
		rb.Close()
		if rall-rold != 40 || (shredding && rold != 0) {
			t.Fatalf("round %d (killed after %q, %d keys left): the rebuild holds %d old and %d retained messages", round, last, len(left), rold, rall-rold)
		}
		if shredding {
			refs, err := check.Snapshots(ctx, instA)
			if err != nil || len(refs) != 1 {
				t.Fatalf("round %d (killed after %q): keys shredded, but %d snapshots (%v)", round, last, len(refs), err)
			}
			for _, c := range doomed {
				if ok, err := stillKeyed(left, c.data); err != nil || ok {
					continue
				}
				if _, err := check.OpenEnvelope(ctx, instA, c.subject, c.data); !errors.Is(err, eventlog.ErrRetainedOut) {
					t.Fatalf("round %d: shredded event at seq %d: %v, want ErrRetainedOut", round, c.seq, err)
				}
			}
		}
		if got, err := check.LastSeq(ctx, instB); err != nil || got != wantB {
			t.Fatalf("round %d: %s's last event at %d (%v), want %d", round, instB, got, err, wantB)
		}
		_ = check.Close()
	}
	if !finished {
		t.Fatalf("the child never finished (killed after %v)", kills)
	}
	t.Logf("kills after steps: %v", kills)

	// Finished: the live read model is what the snapshot plus the tail
	// give, the doomed events are gone from the stream, and a replay from
	// the start names the compaction.
	d, _ := digestOf(t, live, key)
	p := filepath.Join(t.TempDir(), "final.db")
	if _, err := Rebuild(ctx, l, instA, p, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	if rd, _ := digestOf(t, p, key); projections.Compare(d, rd) != nil {
		t.Fatalf("the rebuild differs from the live read model: %v", projections.Compare(d, rd))
	}
	for _, c := range doomed {
		if _, err := rawEnv(l, c.seq); err == nil {
			t.Fatalf("shredded event at seq %d still on the stream", c.seq)
		}
	}
	if err := l.CheckNotCompacted(ctx, instA); !errors.Is(err, eventlog.ErrCompacted) {
		t.Fatalf("after compaction: %v", err)
	}
}

// stillKeyed reports whether the envelope's period is among those whose
// keys are left.
func stillKeyed(left []eventlog.PeriodOfDay, env []byte) (bool, error) {
	id, _, err := events.EnvelopeDataKeyID(env)
	if err != nil {
		return false, err
	}
	for _, p := range left {
		if p.ID == id {
			return true, nil
		}
	}
	return false, nil
}
