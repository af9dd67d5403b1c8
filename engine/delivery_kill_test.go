package engine

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/childproc"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
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
	t.Parallel() // mostly waits on its own servers; sets no package variable
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
	t.Parallel() // mostly waits on its own servers; sets no package variable
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

// leaderKillsEnv names the environment variable with the number of
// stream leaders TestFanOutBatchesWhileAStreamLeaderDies kills; without
// it the test kills leaderKillsDefault (each costs an election: 5-10 s).
const (
	leaderKillsEnv     = "EPOCHLOG_LEADER_KILLS"
	leaderKillsDefault = 3
)

func leaderKills(t *testing.T) int {
	t.Helper()
	s := os.Getenv(leaderKillsEnv)
	if s == "" {
		return leaderKillsDefault
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number of kills", leaderKillsEnv, s)
	}
	return n
}

// Batched runs fanned out to one queue on a three-node cluster of
// nats-server processes while the stream's leader is killed (SIGKILL) in
// the middle of a run, then started again and caught up, several times.
// An in-process node's Shutdown would step down from its Raft groups
// first; a killed leader takes its staged batch, its replication and its
// clients' requests with it, unannounced. A run whose call returns an
// error is fanned out again with the same keys, as a service redoing its
// fan-out does. Every item of every run is queued exactly once, in call
// order, at the sequence the call returned for it; and bob's read model
// equals a rebuild from the stream.
//
// EPOCHLOG_LEADER_KILLS sets the number of kills (`make soak` runs 12).
func TestFanOutBatchesWhileAStreamLeaderDies(t *testing.T) {
	if testing.Short() {
		t.Skip("kills cluster nodes, an election each; not with -short")
	}
	t.Parallel() // mostly waits on its own servers; sets no package variable
	ctx := context.Background()
	c := natstest.StartProcessCluster(t, 3)
	ring := logtest.Keyring(t, 1, 0x5a)
	cfg := logtest.ClusterConfig(c.URL())
	cfg.Metrics = telemetry.NewMetrics()
	l := logtest.Open(t, cfg, ring)
	b := &backend{t: t, ring: ring, dir: t.TempDir(), log: l,
		insts: map[events.InstallationID]*Installation{}, keys: map[events.InstallationID]projections.Key{},
		now: time.Now()}
	b.del = NewDeliveries(l, nil)
	t.Cleanup(func() {
		for _, in := range b.insts {
			_ = in.Close()
		}
	})
	b.create(bob)
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (the kill times)", seed)
	rng := rand.New(rand.NewPCG(seed, 11))

	kills := leaderKills(t)
	// The longest a run may take, retries included: far longer than an
	// election and a run with a node down take.
	const runBound = 3 * time.Minute
	// The workload fans a run out for each token on next (through b.del
	// as it is then), again with the same keys while its call fails, and
	// reports each run done on finished (its last call's duration in
	// took); its end, with the errors of a run that failed for runBound,
	// on done.
	next, finished := make(chan struct{}), make(chan int, 1)
	var took atomic.Int64
	type runResult struct {
		out   []map[events.InstallationID]uint64
		tries int
		errs  []error
	}
	var results []runResult
	done := make(chan error, 1)
	go func() {
		for r := 0; ; r++ {
			if _, ok := <-next; !ok {
				done <- nil
				return
			}
			d := b.del
			var res runResult
			began := time.Now()
			for {
				res.tries++
				start := time.Now()
				out, err := d.FanOutMany(ctx, killRun(r))
				took.Store(int64(time.Since(start)))
				if err == nil {
					res.out = out
					break
				}
				res.errs = append(res.errs, err)
				if time.Since(began) > runBound {
					done <- fmt.Errorf("run %d: %d tries failed in %v: %v", r, res.tries, runBound, res.errs)
					return
				}
				time.Sleep(100 * time.Millisecond)
			}
			results = append(results, res)
			finished <- r
		}
	}()
	// begin starts the next run once the one before is done.
	begin := func() {
		t.Helper()
		select {
		case next <- struct{}{}:
		case err := <-done:
			t.Fatalf("the workload ended: %v", err)
		case <-time.After(runBound):
			t.Fatalf("the workload took no run for %v", runBound)
		}
	}
	// end waits for the run under way.
	end := func() int {
		t.Helper()
		select {
		case r := <-finished:
			return r
		case err := <-done:
			t.Fatalf("the workload ended: %v", err)
		case <-time.After(runBound):
			t.Fatalf("a run took more than %v", runBound)
		}
		return 0
	}
	begin()
	end() // a first run on the whole cluster, to time
	for k := range kills {
		// Every second kill, the node the Log's connection is on leads:
		// its client reconnects to another one as well.
		if k%2 == 1 {
			on := c.Node(l.Conn().ConnectedServerName())
			c.StepDownStream(l.Stream(), on)
		}
		// Kills 1 and 2 of every four, the service is patient: its calls
		// decide every enqueue themselves. Kills 3 and 4, it gives up
		// early: its Log waits for an answer for a moment and its calls
		// decide for less, so a call the kill hits returns an error
		// (ErrOutcomeUnknown) and its run is redone with the same keys.
		// Each change is a service restarting on a Log of its own.
		switch k % 4 {
		case 0:
			if k > 0 {
				l = logtest.Open(t, cfg, ring)
				b.del = NewDeliveries(l, nil)
			}
		case 2:
			impatient := cfg
			impatient.RequestTimeout = 250 * time.Millisecond
			l = openPatiently(t, impatient, ring)
			b.del = NewDeliveries(l, nil)
			b.del.OutcomeTimeout = 100 * time.Millisecond
		}
		leader := c.StreamLeader(l.Stream())
		begin()
		// Somewhere in the run's publishing, as long as the last one took.
		time.Sleep(time.Duration(rng.Int64N(max(took.Load(), 1))))
		t.Logf("kill %d: killing stream leader %s (client on %s)", k+1, leader.Name(), l.Conn().ConnectedServerName())
		leader.Kill()
		r := end()
		begin() // a run with the node down
		end()
		leader.Start()
		begin() // a run while it catches up
		c.WaitStreamCurrent(l.Stream())
		end()
		t.Logf("kill %d: in run %d", k+1, r)
	}
	close(next)
	if err := <-done; err != nil {
		t.Fatal(err)
	}

	redone := 0
	for r, res := range results {
		if res.tries > 1 {
			redone++
			t.Logf("run %d: %d tries; errors: %v", r, res.tries, res.errs)
		}
	}
	t.Logf("%d runs, %d redone after an error; appends tried again: %v lost answers, %v without a leader, %v conflicts, %v in flight",
		len(results), redone, telemetrytest.Value(t, cfg.Metrics, "epochlog_append_retries_total", "reason", telemetry.RetryLostAnswer),
		telemetrytest.Value(t, cfg.Metrics, "epochlog_append_retries_total", "reason", telemetry.RetryNoLeader),
		telemetrytest.Value(t, cfg.Metrics, "epochlog_append_retries_total", "reason", telemetry.RetryConflict),
		telemetrytest.Value(t, cfg.Metrics, "epochlog_append_retries_total", "reason", telemetry.RetryInFlight))
	ds, err := NewDeliveries(l, nil).Fetch(ctx, bob, "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != len(results)*killRunItems {
		t.Fatalf("bob's queue holds %d messages, want %d (%d runs, each item once)", len(ds), len(results)*killRunItems, len(results))
	}
	for i, d := range ds {
		r, j := i/killRunItems, i%killRunItems
		want := fmt.Sprintf("run%d-%d ", r, j)
		if d.Seq != uint64(i+1) || !strings.HasPrefix(string(d.Payload), want) {
			t.Fatalf("message %d: seq %d, payload %.16q; want seq %d, %q", i, d.Seq, d.Payload, i+1, want)
		}
		if got := results[r].out[j][bob]; got != d.Seq {
			t.Fatalf("run %d item %d: the call returned sequence %d, queued at %d", r, j, got, d.Seq)
		}
	}
	if err := b.insts[bob].CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	// The read model holds the queue as the stream has it.
	var projected int
	for after := uint64(0); ; {
		page, err := b.insts[bob].DB().PendingDeliveries(ctx, bob, "c", after, 10000)
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 {
			break
		}
		for _, p := range page {
			if d := ds[projected]; p.Seq != d.Seq || !bytes.Equal(p.Payload, d.Payload) {
				t.Fatalf("bob's read model: delivery %d is seq %d (%.16q), the queue's seq %d (%.16q)", projected, p.Seq, p.Payload, d.Seq, d.Payload)
			}
			projected++
		}
		after = page[len(page)-1].Seq
	}
	if projected != len(ds) {
		t.Fatalf("bob's read model: %d deliveries pending, the queue %d", projected, len(ds))
	}
	b.rebuiltAsLive(bob)
}

// openPatiently opens a Log as a restarting service does, trying again
// for up to a minute: cfg's RequestTimeout may be too short for the open
// itself (its key bucket's requests) while the cluster is still settling
// after a kill, on a loaded machine (CI met "open key bucket: context
// deadline exceeded" at 250 ms under -race).
func openPatiently(t *testing.T, cfg eventlog.Config, ring *events.Keyring) *eventlog.Log {
	t.Helper()
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(100 * time.Millisecond) {
		l, err := eventlog.Open(context.Background(), cfg, ring)
		if err == nil {
			t.Cleanup(func() { _ = l.Close() })
			return l
		}
		if time.Now().After(deadline) {
			t.Fatalf("open log for a minute: %v", err)
		}
	}
}
