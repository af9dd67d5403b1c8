package engine

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/internal/childproc"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/internal/natstest"
)

// envFanOutKillChild carries what the child of TestFanOutBatchKilled
// needs: the server URL and the first run's number.
const envFanOutKillChild = "EPOCHLOG_TEST_FANOUT_KILL_CHILD"

// Each run is killRunItems keyed items of killRunBytes to bob: one call,
// batched (a single queue), about a megabyte, so that a kill lands in the
// middle of its publishing as often as between runs.
const (
	killRunItems = 200
	killRunBytes = 4 << 10
)

func killRun(r int) []FanOutItem {
	items := runItems(killRunItems, killRunBytes, bob)
	for j := range items {
		key := fmt.Sprintf("run%d-%d", r, j)
		items[j].IdempotencyKey = key
		copy(items[j].Payload, key+" ")
	}
	return items
}

// TestFanOutBatchKilledChild is a delivery service fanning runs out to
// bob's queue until it is killed, run by TestFanOutBatchKilled. It does
// nothing when run alone.
func TestFanOutBatchKilledChild(t *testing.T) {
	arg := os.Getenv(envFanOutKillChild)
	if arg == "" {
		t.Skip("run by TestFanOutBatchKilled")
	}
	f := strings.Fields(arg)
	first, err := strconv.Atoi(f[1])
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	l, err := eventlog.Open(ctx, eventlog.Config{NATSURL: f[0], RequestTimeout: 5 * time.Second}, keyring(t, 1, 0x42))
	if err != nil {
		t.Fatal(err)
	}
	d := NewDeliveries(l, nil)
	fmt.Println("ready")
	for r := first; ; r++ {
		fmt.Printf("run %d\n", r)
		if _, err := d.FanOutMany(ctx, killRun(r)); err != nil {
			t.Fatal(err)
		}
	}
}

// A delivery service killed (SIGKILL, a real child process) while it
// fans batched runs out to one queue, restarted: the run it was in is
// fanned out again with the same keys, as a service redoing its
// fan-outs after a restart does. Whatever the kill left (a batch staged
// and never committed, one committed whose answer never came, none
// sent), every item of every run is queued exactly once, in order, and
// the read model agrees.
func TestFanOutBatchKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes; not with -short")
	}
	ctx := context.Background()
	b := newBackend(t)
	b.create(bob)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (the kill times)", seed)
	rng := rand.New(rand.NewPCG(seed, 7))
	next := 0 // the first run the next child starts with
	for round := range 4 {
		child := childproc.Start(t, "TestFanOutBatchKilledChild",
			[]string{fmt.Sprintf("%s=%s %d", envFanOutKillChild, b.srv.URL(), next)}, "-test.count=1", "-test.v")
		last := next
		for ready := false; !ready; {
			line, err := child.Next()
			if err != nil {
				child.Kill()
				child.Wait()
				t.Fatalf("round %d: child not ready: %v\n%s", round, err, child.Output())
			}
			ready = line == "ready"
		}
		time.Sleep(time.Duration(20+rng.IntN(600)) * time.Millisecond)
		child.Kill()
		if err := child.Wait(); !child.Killed() {
			t.Fatalf("round %d: child not killed (wait: %v)\n%s", round, err, child.Output())
		}
		for _, line := range strings.Split(child.Output(), "\n") {
			if r, ok := strings.CutPrefix(line, "run "); ok {
				last, _ = strconv.Atoi(r)
			}
		}
		// The restart: the run it was in, again.
		if _, err := NewDeliveries(b.log, b.clock).FanOutMany(ctx, killRun(last)); err != nil {
			t.Fatalf("round %d: run %d again after the kill: %v", round, last, err)
		}
		t.Logf("round %d: killed in run %d", round, last)
		next = last + 1
	}
	ds, err := NewDeliveries(b.log, b.clock).Fetch(ctx, bob, "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != next*killRunItems {
		t.Fatalf("bob's queue holds %d messages, want %d (runs 0-%d, each item once)", len(ds), next*killRunItems, next-1)
	}
	for i, d := range ds {
		want := fmt.Sprintf("run%d-%d ", i/killRunItems, i%killRunItems)
		if d.Seq != uint64(i+1) || !strings.HasPrefix(string(d.Payload), want) {
			t.Fatalf("message %d: seq %d, payload %.16q; want seq %d, %q", i, d.Seq, d.Payload, i+1, want)
		}
	}
	b.checkRebuild(bob)
}

// Batched runs fanned out to one queue on a three-node cluster (where the
// stream leader stages a batch in memory) while the stream's leadership
// moves from node to node under them: a batch lost with its leader, or
// refused by the new one, is decided enqueue by enqueue; every item of
// every run lands once, in order.
func TestFanOutBatchesAcrossStreamLeaderChanges(t *testing.T) {
	if testing.Short() {
		t.Skip("a three-node cluster; not with -short")
	}
	ctx := context.Background()
	c := natstest.StartCluster(t, 3)
	l := logtest.Open(t, logtest.ClusterConfig(c.URL()), logtest.Keyring(t, 1, 0x5a))
	d := NewDeliveries(l, nil)
	const runs, moves = 16, 4
	progress := make(chan int, runs)
	done := make(chan error, 1)
	go func() {
		for r := range runs {
			if _, err := d.FanOutMany(ctx, killRun(r)); err != nil {
				done <- fmt.Errorf("run %d: %w", r, err)
				return
			}
			progress <- r
		}
		done <- nil
	}()
	for m := range moves {
		<-progress // a run done: the next one goes while the leader moves
		leader := c.StreamLeader(l.Stream())
		next := c.Nodes()[0]
		for _, n := range c.Nodes() {
			if n != leader {
				next = n
				break
			}
		}
		c.StepDownStream(l.Stream(), next)
		t.Logf("move %d: stream leader %s -> %s", m+1, leader.Name(), next.Name())
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	ds, err := NewDeliveries(l, nil).Fetch(ctx, bob, "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != runs*killRunItems {
		t.Fatalf("bob's queue holds %d messages, want %d (each item once)", len(ds), runs*killRunItems)
	}
	for i, d := range ds {
		want := fmt.Sprintf("run%d-%d ", i/killRunItems, i%killRunItems)
		if d.Seq != uint64(i+1) || !strings.HasPrefix(string(d.Payload), want) {
			t.Fatalf("message %d: seq %d, payload %.16q; want seq %d, %q", i, d.Seq, d.Payload, i+1, want)
		}
	}
}
