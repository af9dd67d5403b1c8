package engine

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestOpenWithAnotherInstallationsReadModel: a typo'd Register or an
// OpenInstallation given another installation's file (and key) is refused,
// and leaves the installation it named working: its appends in this
// process must not fail because of the other read model's checkpoint.
func TestOpenWithAnotherInstallationsReadModel(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	bob := b.create("bob")
	b.create("alice")
	for range 3 {
		b.keyPackage("alice") // alice's checkpoint moves past bob's last event
	}
	if err := b.insts["alice"].Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	if in, err := OpenInstallation(ctx, b.log, "bob", b.dbPath("alice"), b.keys["alice"], b.opts()); err == nil {
		in.Close()
		t.Fatal("opened bob on alice's read model")
	} else {
		mustErrIs(t, err, ErrWrongReadModel)
	}
	if _, err := bob.PublishKeyPackage(ctx, "directory", true); err != nil {
		t.Fatalf("bob after a mistaken open of alice's read model as bob's: %v", err)
	}
	if _, err := bob.CreateGroup(ctx, nil); err != nil {
		t.Fatalf("bob create group: %v", err)
	}
	alice, err := OpenInstallation(ctx, b.log, "alice", b.dbPath("alice"), b.keys["alice"], b.opts())
	if err != nil {
		t.Fatalf("reopen alice: %v", err)
	}
	b.insts["alice"] = alice
	if _, err := alice.PublishKeyPackage(ctx, "directory", true); err != nil {
		t.Fatalf("alice: %v", err)
	}
}

// TestPoolJoinedOpenOutlivesItsOpenersContext: an acquire that joins
// another acquire's open of the same installation is not failed by the
// opener's context ending: its own context is alive, so it opens the
// installation itself.
func TestPoolJoinedOpenOutlivesItsOpenersContext(t *testing.T) {
	f := newPoolFixture(t, 1)
	id := f.ids[0]
	entered := make(chan struct{})
	var calls atomic.Int32
	keys := func(ctx context.Context, id events.InstallationID) (projections.Key, error) {
		if calls.Add(1) == 1 {
			close(entered)
			<-ctx.Done() // the first open is slow, and its caller gives up
			return projections.Key{}, ctx.Err()
		}
		return f.key(ctx, id)
	}
	p := NewPool(f.log, keys, &PoolOptions{MaxOpen: 2, Wait: time.Minute})
	t.Cleanup(func() { p.Close() })
	if err := p.Register(id, f.path(id)); err != nil {
		t.Fatal(err)
	}
	actx, cancel := context.WithCancel(context.Background())
	aerr := make(chan error, 1)
	go func() {
		_, release, err := p.Acquire(actx, id)
		if err == nil {
			release()
		}
		aerr <- err
	}()
	<-entered
	berr := make(chan error, 1)
	go func() {
		in, release, err := p.Acquire(context.Background(), id)
		if err == nil {
			err = touch(context.Background(), in)
			release()
		}
		berr <- err
	}()
	// B has joined A's open once the entry holds two refs.
	for deadline := time.Now().Add(time.Minute); ; {
		p.mu.Lock()
		refs := p.entries[id].refs
		p.mu.Unlock()
		if refs == 2 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("second acquire never joined the open")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-aerr; !errors.Is(err, context.Canceled) {
		t.Fatalf("opener: %v, want context.Canceled", err)
	}
	select {
	case err := <-berr:
		if err != nil {
			t.Fatalf("acquire with a live context failed with its opener's: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("second acquire stuck")
	}
}

// TestClosedInstallationRecordsNothing: an operation on a closed
// Installation (a handle kept after Close, or after a Pool's release) is
// refused with ErrClosed, and appends nothing to the log.
func TestClosedInstallationRecordsNothing(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	alice := b.create("alice")
	g, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	last := func() uint64 {
		filter, err := b.log.InstallationFilter("alice")
		if err != nil {
			t.Fatal(err)
		}
		var seq uint64
		if _, _, err := b.log.ReadN(ctx, "alice", filter, 1, 1000, func(r eventlog.Record) error { seq = r.Seq; return nil }); err != nil {
			t.Fatal(err)
		}
		return seq
	}
	before := last()
	ops := map[string]func() error{
		"CreateGroup":         func() error { _, err := alice.CreateGroup(ctx, nil); return err },
		"Send":                func() error { _, err := alice.Send(ctx, g.GroupID, []byte("x"), nil); return err },
		"Update":              func() error { _, err := alice.Update(ctx, g.GroupID); return err },
		"PublishKeyPackage":   func() error { _, err := alice.PublishKeyPackage(ctx, "d", true); return err },
		"RegisterExternalPSK": func() error { return alice.RegisterExternalPSK(ctx, []byte("psk"), make([]byte, 32)) },
		"CatchUp":             func() error { return alice.CatchUp(ctx) },
		"Epoch":               func() error { _, err := alice.Epoch(ctx, g.GroupID); return err },
		"Host.Send": func() error {
			return NewHost(b.log, b.del, nil).Send(ctx, []SendRequest{{Installation: alice, GroupID: g.GroupID, Content: []byte("x")}})[0].Err
		},
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s on a closed installation: %v, want ErrClosed", name, err)
		}
	}
	if after := last(); after != before {
		t.Fatalf("a closed installation appended: last event %d, was %d", after, before)
	}
}

// TestPoolLowFileLimit runs a Pool whose opens run out of file
// descriptors (RLIMIT_NOFILE lowered, in a child process): every acquire
// returns, its error says what ran out, nothing is half recorded, and
// once descriptors are free again every installation opens and works.
func TestPoolLowFileLimit(t *testing.T) {
	if os.Getenv("RTAPI_NOFILE_CHILD") == "" {
		for _, extra := range []int{4, 7, 10, 14, 20} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
			cmd := exec.CommandContext(ctx, os.Args[0], "-test.run=^TestPoolLowFileLimit$", "-test.v", "-test.count=1")
			cmd.Env = append(os.Environ(), "RTAPI_NOFILE_CHILD="+strconv.Itoa(extra))
			out, err := cmd.CombinedOutput()
			t.Logf("child with %d descriptors to spare:\n%s", extra, out)
			if ctx.Err() != nil {
				t.Fatal("child hung")
			}
			cancel()
			if err != nil {
				t.Fatalf("child: %v", err)
			}
		}
		return
	}
	const n = 8
	f := newPoolFixture(t, n)
	ctx := context.Background()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	extra, _ := strconv.Atoi(os.Getenv("RTAPI_NOFILE_CHILD"))
	low.Cur = uint64(len(fds) + extra) // room for a few installations at most
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Fatal(err)
	}
	p := NewPool(f.log, f.key, &PoolOptions{MaxOpen: n, Wait: 30 * time.Second})
	for _, id := range f.ids {
		if err := p.Register(id, f.path(id)); err != nil {
			t.Fatal(err)
		}
	}
	var wg sync.WaitGroup
	var ok atomic.Int32
	errs := make([]error, n)
	hold := make(chan struct{})
	for i, id := range f.ids {
		wg.Go(func() {
			cctx, cancel := context.WithTimeout(ctx, 90*time.Second)
			defer cancel()
			errs[i] = p.With(cctx, id, func(in *Installation) error {
				if _, err := in.PublishKeyPackage(cctx, "d", true); err != nil {
					return err
				}
				ok.Add(1)
				<-hold // all held at once: the descriptors stay taken
				return nil
			})
		})
	}
	// Wait until every acquire has succeeded or failed.
	for deadline := time.Now().Add(3 * time.Minute); ; {
		failed := int(p.Stats().OpenErrors)
		if int(ok.Load())+failed >= n || time.Now().After(deadline) {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	close(hold)
	wg.Wait()
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	failed := 0
	for i, err := range errs {
		if err != nil {
			failed++
			t.Logf("%s: %v", f.ids[i], err)
			if !errors.Is(err, syscall.EMFILE) && !strings.Contains(err.Error(), "too many open files") {
				t.Errorf("%s: error does not say what ran out: %v", f.ids[i], err)
			}
		}
	}
	t.Logf("%d succeeded, %d failed", ok.Load(), failed)
	if failed == 0 {
		t.Log("no open failed: the limit was not low enough")
	}
	if err := p.Close(); err != nil {
		t.Errorf("close pool: %v", err)
	}
	// Descriptors back: every installation opens and catches up, and
	// holds exactly the key packages whose publish returned.
	p2 := NewPool(f.log, f.key, &PoolOptions{MaxOpen: 2})
	defer p2.Close()
	var total int
	for _, id := range f.ids {
		if err := p2.Register(id, f.path(id)); err != nil {
			t.Fatal(err)
		}
		if err := p2.With(ctx, id, func(in *Installation) error {
			if err := touch(ctx, in); err != nil {
				return err
			}
			kps, err := in.DB().AvailableKeyPackages(ctx)
			total += len(kps)
			return err
		}); err != nil {
			t.Fatalf("%s after the limit is raised: %v", id, err)
		}
	}
	if total != int(ok.Load()) {
		t.Fatalf("%d key packages recorded, %d publishes returned", total, ok.Load())
	}
}
