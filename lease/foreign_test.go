package lease

import (
	"context"
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
