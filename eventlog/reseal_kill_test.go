package eventlog

import (
	"context"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// The re-seal kill test runs Reseal (source ring {1, 2}, target ring {7})
// in a child process (kill_helpers_test.go), into a new
// target stream each round, and SIGKILLs it at spread-out moments while
// it pauses after each event copied. After every kill the source is
// untouched, and Reseal run again in the parent finishes: every event
// verified, every installation reading back equal from a fresh Log on the
// target with the target's ring alone.

const envResealTarget = "EPOCHLOG_RESEAL_TARGET"

const resealChildPause = 40 * time.Millisecond

var resealKillInsts = []events.InstallationID{"reseal-a", "reseal-b"}

func resealTarget(ctx context.Context, src *Log, stream string) (*Log, error) {
	ring, err := rewrapRing(7)
	if err != nil {
		return nil, err
	}
	return OpenBeside(ctx, src, stream, strings.ToLower(stream), ring)
}

func runResealChild() error {
	ctx := context.Background()
	ring, err := rewrapRing(1, 2)
	if err != nil {
		return err
	}
	src, err := childLog(ring)
	if err != nil {
		return err
	}
	defer src.Close()
	dst, err := resealTarget(ctx, src, os.Getenv(envResealTarget))
	if err != nil {
		return err
	}
	defer dst.Close()
	fmt.Println("open")
	_, err = Reseal(ctx, src, dst, &ResealOptions{Installations: resealKillInsts, step: func() {
		fmt.Println("event")
		time.Sleep(resealChildPause)
	}})
	return err
}

func TestResealKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	srv := natstestStart(t)
	cfg := testConfig(srv)
	ctx := context.Background()
	src := openLog(t, cfg, ringOf(t, 1, 2))
	want := map[events.InstallationID][]Record{}
	total := 0
	for _, inst := range resealKillInsts {
		writeMixed(t, src, inst)
		want[inst] = readAll(t, src, inst, 0)
		total += len(want[inst])
	}
	srcMsgs := streamMsgs(t, src)
	const rounds = 5
	for round := range rounds {
		target := fmt.Sprintf("EPOCHLOG_K%d", round)
		// From just after the start to about the end of the copy.
		out := killAfter(t, "reseal", srv.URL(), time.Duration(round)*time.Duration(total)*resealChildPause/(rounds-1)+20*time.Millisecond,
			envResealTarget+"="+target)
		done := strings.Count(out, "event")
		if got := streamMsgs(t, src); got != srcMsgs {
			t.Fatalf("round %d (%d events copied): the source has %d messages, %d before", round, done, got, srcMsgs)
		}
		dst, err := resealTarget(ctx, src, target)
		if err != nil {
			t.Fatalf("round %d: open the target again: %v", round, err)
		}
		res, err := Reseal(ctx, src, dst, &ResealOptions{Installations: resealKillInsts})
		if err != nil {
			t.Fatalf("round %d (%d events copied before the kill): reseal again: %v", round, done, err)
		}
		if res.Verified != total || res.Copied+res.Skipped != total {
			t.Fatalf("round %d (%d copied before the kill): reseal again: %+v, want %d events", round, done, res, total)
		}
		_ = dst.Close()
		fresh, err := resealTarget(ctx, src, target)
		if err != nil {
			t.Fatal(err)
		}
		for inst, recs := range want {
			got := readAll(t, fresh, inst, 0)
			if len(got) != len(recs) {
				t.Fatalf("round %d: %s has %d events in the target, %d in the source", round, inst, len(got), len(recs))
			}
			for i := range got {
				sameEvent(t, got[i].Event, recs[i].Event)
			}
		}
		_ = fresh.Close()
		t.Logf("round %d: killed after %d of %d events; finished by copying %d, skipping %d", round, done, total, res.Copied, res.Skipped)
	}
}
