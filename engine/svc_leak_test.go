package engine

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// settledGoroutines is runtime.NumGoroutine once it stops falling (up to
// a generous bound): goroutines of closed things take a moment to end.
func settledGoroutines() int {
	n := runtime.NumGoroutine()
	for i := 0; i < 100; i++ {
		time.Sleep(50 * time.Millisecond)
		m := runtime.NumGoroutine()
		if m == n && i > 10 {
			return m
		}
		n = m
	}
	return n
}

// leftAfter waits (up to a minute: a loaded machine ends closed things
// late) until at most limit goroutines and limitFDs file descriptors are
// left, and returns the counts then and the descriptors' targets.
func leftAfter(t *testing.T, limit, limitFDs int) (int, []string) {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	for {
		g, fds := runtime.NumGoroutine(), svcOpenFDs(t)
		if g <= limit && len(fds) <= limitFDs || time.Now().After(deadline) {
			return g, fds
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func svcOpenFDs(t *testing.T) []string {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	var out []string
	for _, fd := range fds {
		target, _ := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		out = append(out, target)
	}
	return out
}

func goroutineDump() string {
	buf := make([]byte, 1<<20)
	return string(buf[:runtime.Stack(buf, true)])
}

// serviceRound is what a service does between its start and its exit:
// open the Log, create or open two installations, a group, a member, a
// message through Deliveries and a Host, then close everything.
func serviceRound(t *testing.T, cfg eventlog.Config, ring *events.Keyring, dir string, round int, keys map[events.InstallationID]projections.Key) {
	t.Helper()
	ctx := context.Background()
	l, err := eventlog.Open(ctx, cfg, ring)
	if err != nil {
		t.Fatalf("round %d: open log: %v", round, err)
	}
	defer func() {
		if err := l.Close(); err != nil {
			t.Errorf("round %d: close log: %v", round, err)
		}
	}()
	del := NewDeliveries(l, nil)
	host := NewHost(l, del, nil)
	a, b := events.InstallationID(fmt.Sprintf("a-%d", round)), events.InstallationID(fmt.Sprintf("b-%d", round))
	var ins []*Installation
	for _, id := range []events.InstallationID{a, b} {
		k, _ := projections.GenerateRawKey()
		keys[id] = k
		in, err := CreateInstallation(ctx, l, id, filepath.Join(dir, string(id)+".db"), k, nil)
		if err != nil {
			t.Fatalf("round %d: create %s: %v", round, id, err)
		}
		ins = append(ins, in)
	}
	defer func() {
		for _, in := range ins {
			if err := in.Close(); err != nil {
				t.Errorf("close %s: %v", in.ID(), err)
			}
		}
	}()
	kp, err := ins[1].PublishKeyPackage(ctx, "dir", false)
	if err != nil {
		t.Fatal(err)
	}
	g, err := ins[0].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	co, err := ins[0].AddMembers(ctx, g.GroupID, kp.KeyPackage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := del.FanOut(ctx, co.Added, "mls", co.Welcome, time.Time{}, "w"); err != nil {
		t.Fatal(err)
	}
	res := host.Send(ctx, []SendRequest{{Installation: ins[0], GroupID: g.GroupID, Content: []byte("hi")}})
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	if _, err := del.FanOut(ctx, res[0].Output.Recipients, "mls", res[0].Output.Message, time.Time{}, "m"); err != nil {
		t.Fatal(err)
	}
	dr := host.Deliver(ctx, "mls", ins[1:], 0)
	if dr[0].Err != nil || len(dr[0].Delivered) != 2 {
		t.Fatalf("round %d: deliver: %+v", round, dr[0])
	}
	// Reopen one from its read model (a process restart of it).
	if err := ins[1].Close(); err != nil {
		t.Fatal(err)
	}
	ins[1], err = OpenInstallation(ctx, l, b, filepath.Join(dir, string(b)+".db"), keys[b], nil)
	if err != nil {
		t.Fatalf("round %d: reopen: %v", round, err)
	}
	if _, err := ins[1].Epoch(ctx, g.GroupID); err != nil {
		t.Fatal(err)
	}
}

// TestServiceLifecycleLeaksNothing opens and closes Logs, installations,
// Deliveries and Hosts many times, on an external server and on the
// embedded one, and counts goroutines and file descriptors after.
func TestServiceLifecycleLeaksNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("many rounds")
	}
	for _, mode := range []string{"external", "embedded"} {
		t.Run(mode, func(t *testing.T) {
			ring := keyring(t, 1, 0x42)
			dir := t.TempDir()
			var cfg eventlog.Config
			if mode == "external" {
				cfg = testConfig(natstest.Start(t, natstest.Options{}))
			} else {
				cfg = eventlog.DefaultConfig(filepath.Join(dir, "store"))
				cfg.EmbeddedInProcess = true
			}
			keys := map[events.InstallationID]projections.Key{}
			// Warm up: the first round starts what a process keeps.
			serviceRound(t, cfg, ring, dir, 0, keys)
			g0, fd0 := settledGoroutines(), svcOpenFDs(t)
			const rounds = 8
			for r := 1; r <= rounds; r++ {
				serviceRound(t, cfg, ring, dir, r, keys)
			}
			g1, fd1 := leftAfter(t, g0+2, len(fd0)+2)
			if g1 > g0+2 {
				t.Errorf("goroutines %d after the warm-up, %d after %d more rounds:\n%s", g0, g1, rounds, goroutineDump())
			}
			if len(fd1) > len(fd0)+2 {
				t.Errorf("file descriptors %d after the warm-up, %d after %d more rounds: %v", len(fd0), len(fd1), rounds, fd1)
			}
		})
	}
}

// TestCancelledOperationsLeakNothing: operations whose contexts end at a
// sweep of moments (sends, updates, receives, fan-outs, fetches, a Host's
// batches) leave no goroutine or file descriptor behind once everything
// is closed.
func TestCancelledOperationsLeakNothing(t *testing.T) {
	if testing.Short() {
		t.Skip("many rounds")
	}
	srv := natstest.Start(t, natstest.Options{})
	cfg := testConfig(srv)
	ring := keyring(t, 1, 0x42)
	dir := t.TempDir()
	keys := map[events.InstallationID]projections.Key{}
	serviceRound(t, cfg, ring, dir, 0, keys)
	g0, fd0 := settledGoroutines(), svcOpenFDs(t)
	ctx := context.Background()
	for round := 1; round <= 3; round++ {
		func() {
			l, err := eventlog.Open(ctx, cfg, ring)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			del := NewDeliveries(l, nil)
			host := NewHost(l, del, nil)
			var ins []*Installation
			for _, name := range []string{"a", "b"} {
				id := events.InstallationID(fmt.Sprintf("c%s-%d", name, round))
				k, _ := projections.GenerateRawKey()
				in, err := CreateInstallation(ctx, l, id, filepath.Join(dir, string(id)+".db"), k, nil)
				if err != nil {
					t.Fatal(err)
				}
				defer in.Close()
				ins = append(ins, in)
			}
			kp, err := ins[1].PublishKeyPackage(ctx, "d", true)
			if err != nil {
				t.Fatal(err)
			}
			g, err := ins[0].CreateGroup(ctx, nil)
			if err != nil {
				t.Fatal(err)
			}
			co, err := ins[0].AddMembers(ctx, g.GroupID, kp.KeyPackage)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ins[1].Receive(ctx, co.Welcome); err != nil {
				t.Fatal(err)
			}
			for i := range 40 {
				d := time.Duration(i) * 150 * time.Microsecond
				cctx, cancel := context.WithTimeout(ctx, d)
				if s, err := ins[0].Send(cctx, g.GroupID, []byte("x"), nil); err == nil {
					_, _ = del.FanOut(cctx, s.Recipients, "mls", s.Message, time.Time{}, fmt.Sprintf("m%d-%d", round, i))
				}
				_, _ = del.Fetch(cctx, ins[1].ID(), "mls", 0)
				host.Deliver(cctx, "mls", ins[1:], 0)
				host.Send(cctx, []SendRequest{{Installation: ins[1], GroupID: g.GroupID, Content: []byte("y")}})
				_ = ins[0].CatchUp(cctx)
				cancel()
			}
		}()
	}
	g1, fd1 := leftAfter(t, g0+2, len(fd0)+2)
	if g1 > g0+2 {
		t.Errorf("goroutines %d before, %d after rounds of cancelled operations:\n%s", g0, g1, goroutineDump())
	}
	if len(fd1) > len(fd0)+2 {
		t.Errorf("file descriptors %d before, %d after rounds of cancelled operations: %v", len(fd0), len(fd1), fd1)
	}
}
