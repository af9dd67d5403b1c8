package lease

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// The bucket deleted while its holders run and created again by another
// process with a shorter TTL: a holder that went on with the TTL it read
// at Open would count a lease it takes there valid for longer than the
// bucket keeps it, and the next holder would take it meanwhile. A
// service's Acquire is refused (ErrBucketMismatch); a member gives up
// what it holds and takes nothing more, and the other members share the
// installations, never two at once. Until 2026-12-06 both held them.
func TestBucketCreatedAgainWithShorterTTL(t *testing.T) {
	ctx := context.Background()
	cfg := startServer(t)
	insts := installations(4)
	tr := newTracker()
	a := startMember(t, newProc(t, cfg, "A", "g", 9*time.Second), tr, insts)
	svc := newProc(t, cfg, "S", "g", 0)
	eventually(t, "A to serve everything", func() bool { _, n := tr.servedBy(); return n == len(insts) })

	js, err := jetstream.New(a.log.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, a.bucket.Name()); err != nil {
		t.Fatal(err)
	}
	// A's leases end: at its next pass now, or once not renewed.
	eventually(t, "A to give up what it held in the deleted bucket", func() bool { return len(a.m.Held()) == 0 })
	newProc(t, cfg, "C", "g", time.Second) // creates it again
	// Two passes of A, which must take nothing there. (Checked before B
	// starts: once B serves everything, A serves nothing in any case.)
	time.Sleep(2 * a.bucket.RenewEvery())
	if by, _ := tr.servedBy(); by["A"] != 0 || len(a.m.Held()) != 0 {
		t.Fatalf("A serves %d installations (holds %d) in a bucket created again with another TTL", by["A"], len(a.m.Held()))
	}
	startMember(t, newProc(t, cfg, "B", "g", 0), tr, insts)
	eventually(t, "B to serve everything", func() bool {
		by, n := tr.servedBy()
		return n == len(insts) && by["B"] == len(insts)
	})
	tr.check(t)
	if _, err := svc.bucket.Acquire(ctx, events.InstallationID("other")); !errors.Is(err, ErrBucketMismatch) {
		t.Fatalf("Acquire on a bucket created again: %v, want ErrBucketMismatch", err)
	}
}

// A lease acquired alone (Bucket.Acquire, no member) while its bucket is
// deleted and created again by another process, which acquires the same
// installation there at once: the new bucket's revisions start from 1
// again, so the old holder's renewal (a write at the revision it last
// wrote) matched the new holder's revision and landed in the new bucket,
// over the new holder's lease, and both counted themselves holders.
// Until 2026-12-06 it did; now the renewal finds the bucket changed,
// sends nothing, and the old lease ends naming ErrBucketMismatch, while
// the new holder keeps its lease.
func TestRenewalDoesNotLandInBucketCreatedAgain(t *testing.T) {
	ctx := context.Background()
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	la, err := a.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(a.log.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteKeyValue(ctx, a.bucket.Name()); err != nil {
		t.Fatal(err)
	}
	c := newProc(t, cfg, "C", "g", testTTL) // creates it again
	lc, err := c.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	if lc.Revision() != la.Revision() {
		t.Fatalf("C acquired at revision %d, A at %d: the test needs them equal", lc.Revision(), la.Revision())
	}
	// A's next renewal decides: either it lands over C's lease, or A's
	// lease ends.
	eventually(t, "A's renewal to land or A's lease to end", func() bool {
		h, err := c.bucket.Holding(ctx, inst)
		return la.Err() != nil || err == nil && h.Holder != "holder C"
	})
	// C renews meanwhile (every TTL/3): its revision is compared with
	// the bucket's in a read between two of its renewals, not across
	// one (the bucket at R+1 while C, its answer on the way, says R).
	eventually(t, "a read of C's lease between two of its renewals", func() bool {
		before := lc.Revision()
		h, err := c.bucket.Holding(ctx, inst)
		after := lc.Revision()
		if err != nil || h.Holder != "holder C" {
			t.Fatalf("the lease in the bucket created again: %+v (%v); want C's (A's renewal landed there)", h, err)
		}
		return before == after && h.Revision == after
	})
	select {
	case <-la.Done():
	case <-time.After(waitLimit):
		t.Fatal("A's lease did not end")
	}
	if err := la.Check(); !errors.Is(err, ErrLeaseLost) || !errors.Is(err, ErrBucketMismatch) {
		t.Fatalf("A's lease: %v, want ErrLeaseLost and ErrBucketMismatch", err)
	}
	// C renews in its own bucket, undisturbed.
	eventually(t, "C to renew", func() bool { return lc.Revision() > la.Revision() })
	if err := lc.Check(); err != nil {
		t.Fatalf("C's lease: %v", err)
	}
	if err := la.Release(ctx); err != nil {
		t.Fatalf("releasing A's ended lease: %v", err)
	}
	if h, err := c.bucket.Holding(ctx, inst); err != nil || h.Holder != "holder C" {
		t.Fatalf("after A's release: %+v (%v); want C's lease", h, err)
	}
	if err := lc.Release(ctx); err != nil {
		t.Fatal(err)
	}
}
