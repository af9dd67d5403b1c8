package lease

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// A lease key deleted or purged by someone else while a member holds it
// (an operator's "nats kv del" to force a takeover): the key is free at
// once, and anyone may acquire it, so the member must stop at once, as
// its watch shows it, not at its next renewal. Here its renewals go
// unanswered, so only the watch can tell it.
func TestShareMemberStopsWhenItsKeyIsDeleted(t *testing.T) {
	ctx := context.Background()
	cfg := startServer(t)
	tr := newTracker()
	a := startMember(t, newProc(t, cfg, "A", "g", 2*time.Minute), tr, []events.InstallationID{inst})
	eventually(t, "A to serve the installation", func() bool { _, n := tr.servedBy(); return n == 1 })
	a.m.mu.Lock()
	la := a.m.held[inst]
	a.m.mu.Unlock()
	key, err := a.bucket.installationKey(inst)
	if err != nil {
		t.Fatal(err)
	}
	restore := cutOff(a.bucket)
	defer restore()
	for _, op := range []string{"delete", "purge"} {
		b := newProc(t, cfg, "B-"+op, "g", 0)
		switch op {
		case "delete":
			err = b.bucket.kv.Delete(ctx, key)
		case "purge":
			err = b.bucket.kv.Purge(ctx, key)
		}
		if err != nil {
			t.Fatal(err)
		}
		lb, err := b.bucket.Acquire(ctx, inst)
		if err != nil {
			t.Fatalf("%s: B cannot take the freed lease: %v", op, err)
		}
		eventually(t, "A to stop serving once its lease key was "+op+"d", func() bool {
			_, n := tr.servedBy()
			return n == 0 && la.Check() != nil
		})
		if err := lb.Release(ctx); err != nil {
			t.Fatal(err)
		}
		if op == "delete" {
			restore()
			eventually(t, "A to serve the installation again", func() bool { _, n := tr.servedBy(); return n == 1 && len(a.m.Held()) == 1 })
			a.m.mu.Lock()
			la = a.m.held[inst]
			a.m.mu.Unlock()
			restore = cutOff(a.bucket)
		}
	}
	tr.check(t)
}

// Run on a Member that is already running is refused: the two would
// take each other's leases, each counting the other's as its own
// (the same member id), and serve the same installations at once.
func TestMemberRunTwiceIsRefused(t *testing.T) {
	cfg := startServer(t)
	insts := installations(4)
	tr := newTracker()
	a := startMember(t, newProc(t, cfg, "A", "g", testTTL), tr, insts)
	eventually(t, "A to serve everything", func() bool { _, n := tr.servedBy(); return n == len(insts) })
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	second := make(chan error, 1)
	go func() {
		second <- a.m.Run(ctx, func() []events.InstallationID { return insts }, tr.serve("A-again"))
	}()
	select {
	case err := <-second:
		if err == nil || errors.Is(err, context.Canceled) {
			t.Fatalf("a second Run of a running member returned %v, want an error", err)
		}
	case <-time.After(3 * testTTL):
		cancel()
		<-second
		tr.check(t)
		t.Fatal("a second Run of a running member runs")
	}
	tr.check(t)
}
