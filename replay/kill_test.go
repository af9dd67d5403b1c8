package replay

import (
	"context"
	"encoding/hex"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/childproc"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// The kill tests run Rebuild and Rekey in a child process (this test
// binary, re-executed with EPOCHLOG_KILL_CHILD set) and SIGKILL it at
// spread-out moments. The nats-server lives in the parent, so only the
// replayer dies. After every kill the live database must be the old one,
// intact, or the new one, complete: never half of each, never missing.

const (
	envKillChild  = "EPOCHLOG_KILL_CHILD" // "rebuild", "rekey" or "rebuild-mem": run as the child
	envKillRounds = "EPOCHLOG_KILL_ROUNDS"
	envKillURL    = "EPOCHLOG_KILL_NATS_URL"
	envKillDB     = "EPOCHLOG_KILL_DB"
	envKillKey    = "EPOCHLOG_KILL_KEY"     // hex of the live key
	envKillNewKey = "EPOCHLOG_KILL_NEW_KEY" // hex of the rekey target
)

// TestMain turns the test binary into the kill tests' child when asked.
func TestMain(m *testing.M) {
	if op := os.Getenv(envKillChild); op != "" {
		if err := runKillChild(op); err != nil {
			fmt.Fprintln(os.Stderr, "kill child:", err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func killKeyring() (*events.Keyring, error) {
	k, err := events.NewRootKey([]byte("kill-test-root-key-32-bytes-long"))
	if err != nil {
		return nil, err
	}
	return events.NewKeyring(1, k)
}

func hexKey(s string) (projections.Key, error) {
	b, err := hex.DecodeString(s)
	if err != nil {
		return projections.Key{}, err
	}
	return projections.RawKey(b)
}

func runKillChild(op string) error {
	ring, err := killKeyring()
	if err != nil {
		return err
	}
	l, err := eventlog.Open(context.Background(), eventlog.Config{NATSURL: os.Getenv(envKillURL)}, ring)
	if err != nil {
		return err
	}
	defer l.Close()
	key, err := hexKey(os.Getenv(envKillKey))
	if err != nil {
		return err
	}
	ctx := context.Background()
	opts := &Options{BatchSize: 64, SkipMLSCheck: true} // placeholder MLS states
	switch op {
	case "rebuild":
		_, err = Rebuild(ctx, l, instA, os.Getenv(envKillDB), key, &RebuildOptions{Options: *opts})
	case "rekey":
		var nk projections.Key
		if nk, err = hexKey(os.Getenv(envKillNewKey)); err == nil {
			_, err = Rekey(ctx, l, instA, os.Getenv(envKillDB), key, nk, opts)
		}
	case "rebuild-mem":
		err = rebuildMeasuringMemory(ctx, l, os.Getenv(envKillDB), key)
	default:
		err = fmt.Errorf("unknown operation %q", op)
	}
	return err
}

func TestKillDuringRebuildAndRekey(t *testing.T) {
	rounds := 6
	if s := os.Getenv(envKillRounds); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("$%s=%q: want a positive number", envKillRounds, s)
		}
		rounds = n
	}
	srv := natstest.Start(t, natstest.Options{})
	ring, err := killKeyring()
	if err != nil {
		t.Fatal(err)
	}
	l := openLog(t, testConfig(srv), ring)
	writeHistory(t, l, instA, 6, 1500)

	dir := t.TempDir()
	live := filepath.Join(dir, "live.db")
	k1hex, k2hex := hex.EncodeToString(fill32(0x31)), hex.EncodeToString(fill32(0x32))
	k1, k2 := rawDBKey(t, 0x31), rawDBKey(t, 0x32)
	if _, err := Rebuild(context.Background(), l, instA, live, k1, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	want, _ := digestOf(t, live, k1)

	// The child runs no test: TestMain runs op instead.
	child := func(op string) *childproc.Child {
		return childproc.Start(t, "", []string{envKillChild + "=" + op, envKillURL + "=" + srv.URL(),
			envKillDB + "=" + live, envKillKey + "=" + k1hex, envKillNewKey + "=" + k2hex})
	}
	// One uninterrupted run of each sets the range the kills spread over.
	timed := func(op string) time.Duration {
		start := time.Now()
		c := child(op)
		if err := c.Wait(); err != nil {
			t.Fatalf("uninterrupted %s child: %v\n%s", op, err, c.Output())
		}
		return time.Since(start)
	}
	tRebuild := timed("rebuild")
	tRekey := timed("rekey")
	// Back to key 1 for the rekey rounds.
	if _, err := Rekey(context.Background(), l, instA, live, k2, k1, testReplayOptions()); err != nil {
		t.Fatal(err)
	}

	rng := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 7))
	for _, op := range []string{"rebuild", "rekey"} {
		span := tRebuild
		if op == "rekey" {
			span = tRekey
		}
		outcomes := map[string]int{}
		// Rounds past the planned ones aim at the side no kill reached
		// yet: a loaded machine can stretch or squeeze the timed run.
		extra := 0
		for i := 0; i < rounds+extra; i++ {
			if i == rounds-1 && rounds >= 4 && extra == 0 && (outcomes["old"] == 0 || outcomes["new"] == 0) {
				extra = 2 * rounds
			}
			before, err := os.Stat(live)
			if err != nil {
				t.Fatal(err)
			}
			// Stratified delays from "just started" to "surely done"
			// (the timed run includes process start and exit, which vary),
			// jittered within each stratum.
			frac := (float64(i) + rng.Float64()) / float64(rounds) * 1.6
			if i >= rounds {
				switch {
				case outcomes["new"] == 0: // later and later
					frac = 1.6 + float64(i-rounds+1)*0.8
				case outcomes["old"] == 0: // early
					frac = rng.Float64() * 0.2
				default:
					continue // both sides reached
				}
			}
			delay := time.Duration(frac * float64(span))
			c := child(op)
			time.Sleep(delay)
			c.Kill()
			_ = c.Wait()

			// The live file is the old one (same inode) or the new one.
			after, err := os.Stat(live)
			if err != nil {
				t.Fatalf("%s killed after %v: live database gone: %v", op, delay, err)
			}
			swapped := !os.SameFile(before, after)
			key := k1
			if op == "rekey" && swapped {
				key = k2
			}
			got, cp := digestOf(t, live, key)
			if d := projections.Compare(want, got); d != nil {
				t.Fatalf("%s killed after %v (swapped=%v): content differs: %v", op, delay, swapped, d)
			}
			if cp == 0 {
				t.Fatalf("%s killed after %v: live database has no checkpoint", op, delay)
			}
			if _, err := projections.RemoveLeftovers(live); err != nil {
				t.Fatalf("removing leftovers: %v", err)
			}
			noLeftovers(t, live)
			if swapped {
				outcomes["new"]++
			} else {
				outcomes["old"]++
			}
			if op == "rekey" && swapped {
				// Reset to key 1 uninterrupted, which also proves a
				// database left by a kill is fit for the next operation.
				if _, err := Rekey(context.Background(), l, instA, live, k2, k1, testReplayOptions()); err != nil {
					t.Fatalf("rekey back after a kill: %v", err)
				}
			}
		}
		t.Logf("%s: %d rounds over %v: old database kept %d times, new one complete %d times",
			op, outcomes["old"]+outcomes["new"], span, outcomes["old"], outcomes["new"])
		if rounds >= 4 && (outcomes["old"] == 0 || outcomes["new"] == 0) {
			t.Fatalf("%s: kills did not land on both sides of the swap (%v): the delays are not spread", op, outcomes)
		}
	}
	// An uninterrupted rebuild after all the kills works and agrees.
	if _, err := Rebuild(context.Background(), l, instA, live, k1, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	got, _ := digestOf(t, live, k1)
	if d := projections.Compare(want, got); d != nil {
		t.Fatalf("final rebuild differs: %v", d)
	}
}

func fill32(b byte) []byte {
	out := make([]byte, 32)
	for i := range out {
		out[i] = b
	}
	return out
}
