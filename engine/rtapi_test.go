package engine

import (
	"context"
	"errors"
	"sync/atomic"
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
