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
	// Two passes of A, which must take nothing there.
	time.Sleep(2 * a.bucket.RenewEvery())
	startMember(t, newProc(t, cfg, "B", "g", 0), tr, insts)
	eventually(t, "B to serve everything", func() bool {
		by, n := tr.servedBy()
		return n == len(insts) && by["B"] == len(insts)
	})
	tr.check(t)
	if by, _ := tr.servedBy(); by["A"] != 0 {
		t.Fatalf("A serves %d installations in a bucket created again with another TTL", by["A"])
	}
	if _, err := svc.bucket.Acquire(ctx, events.InstallationID("other")); !errors.Is(err, ErrBucketMismatch) {
		t.Fatalf("Acquire on a bucket created again: %v, want ErrBucketMismatch", err)
	}
}
