package eventlog

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// The re-wrap kill test runs Rewrap (ring {1, 2, 3}, current 3) in a child
// process (kill_helpers_test.go) and SIGKILLs it at
// spread-out moments while it pauses after each entry. After every kill,
// every entry is wrapped under 2 or 3, a fresh Log with the whole ring
// reads every event, and re-wrapping again leaves every entry under 3 and
// the ring without 2 reading everything.

const rewrapChildPause = 60 * time.Millisecond

var rewrapKillInsts = []events.InstallationID{"kill-a", "kill-b", "kill-c"}

func runRewrapChild() error {
	ring, err := rewrapRing(1, 2, 3)
	if err != nil {
		return err
	}
	l, err := childLog(ring)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("open")
	_, err = l.Rewrap(context.Background(), &RewrapOptions{Installations: rewrapKillInsts, step: func(string) {
		fmt.Println("entry")
		time.Sleep(rewrapChildPause)
	}})
	return err
}

func TestRewrapKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	srv := natstestStart(t)
	cfg := testConfig(srv)
	ctx := context.Background()
	w := openLog(t, cfg, ringOf(t, 1, 2))
	want := map[events.InstallationID]int{}
	for _, inst := range rewrapKillInsts {
		want[inst] = writeMixed(t, w, inst)
	}
	total := wrapIDs(t, w)[2]
	// back wraps everything under 2 again before each round: ring {1, 3,
	// 2}, current 2.
	back := openLog(t, cfg, ringOf(t, 1, 3, 2))
	const rounds = 6
	for round := range rounds {
		if _, err := back.Rewrap(ctx, &RewrapOptions{Installations: rewrapKillInsts}); err != nil {
			t.Fatal(err)
		}
		out := killAfter(t, "rewrap", srv.URL(), time.Duration(round)*time.Duration(total)*rewrapChildPause/rounds)
		done := strings.Count(out, "entry")

		full := openLog(t, cfg, ringOf(t, 1, 2, 3))
		ids := wrapIDs(t, full)
		if ids[2]+ids[3] != total || len(ids) > 2 {
			t.Fatalf("round %d (%d entries done): wraps %v, want %d under 2 or 3", round, done, ids, total)
		}
		for inst, n := range want {
			if recs, err := tryReadAll(full, inst, 0); err != nil || len(recs) != n {
				t.Fatalf("round %d (%d entries done): %s reads %d of %d: %v", round, done, inst, len(recs), n, err)
			}
		}
		if _, err := full.Rewrap(ctx, &RewrapOptions{Installations: rewrapKillInsts}); err != nil {
			t.Fatalf("round %d: rewrap again: %v", round, err)
		}
		if ids := wrapIDs(t, full); ids[3] != total {
			t.Fatalf("round %d: after rewrap again: %v", round, ids)
		}
		no2 := openLog(t, cfg, ringOf(t, 1, 3))
		for inst, n := range want {
			if recs, err := tryReadAll(no2, inst, 0); err != nil || len(recs) != n {
				t.Fatalf("round %d: without key 2, %s reads %d of %d: %v", round, inst, len(recs), n, err)
			}
		}
		_ = full.Close()
		_ = no2.Close()
		t.Logf("round %d: killed after %d of %d entries", round, done, total)
	}
}
