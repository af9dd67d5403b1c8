package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

func TestDeliveryQueues(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	in := b.create(bob)
	d := b.del
	enq := func(payload, key string, exp time.Time) (uint64, bool) {
		t.Helper()
		s, dup, err := d.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "inbox", Payload: []byte(payload), ExpiresAt: exp, IdempotencyKey: key})
		if err != nil {
			t.Fatal(err)
		}
		return s, dup
	}
	if s, dup := enq("one", "k1", time.Time{}); s != 1 || dup {
		t.Fatalf("first enqueue: seq %d dup %v", s, dup)
	}
	if s, dup := enq("one again", "k1", time.Time{}); s != 1 || !dup {
		t.Fatalf("retried enqueue: seq %d dup %v, want 1 true", s, dup)
	}
	enq("two", "k2", b.now.Add(time.Minute))
	enq("three", "k3", time.Time{})
	// Another channel has its own sequence.
	if s, _, err := d.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "other", Payload: []byte("x"), IdempotencyKey: "o1"}); err != nil || s != 1 {
		t.Fatalf("other channel: seq %d, %v", s, err)
	}
	got, err := d.Fetch(ctx, bob, "inbox", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 3 || string(got[0].Payload) != "one" || got[2].Seq != 3 {
		t.Fatalf("fetch: %+v", got)
	}
	if err := d.Acknowledge(ctx, bob, "inbox", 1); err != nil {
		t.Fatal(err)
	}
	mustErrIs(t, d.Acknowledge(ctx, bob, "inbox", 9), ErrInvalidAck)
	b.now = b.now.Add(2 * time.Minute)
	got, _ = d.Fetch(ctx, bob, "inbox", 0)
	if len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("after ack and expiry: %+v", got)
	}
	seqs, err := d.Expire(ctx, bob, "inbox")
	if err != nil || len(seqs) != 1 || seqs[0] != 2 {
		t.Fatalf("expire: %v, %v", seqs, err)
	}
	// A new service process reloads the queues from the log: the
	// idempotency keys, acknowledgements and expiries hold.
	d2 := NewDeliveries(b.log, b.clock)
	if s, dup, err := d2.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "inbox", Payload: []byte("two"), IdempotencyKey: "k2"}); err != nil || s != 2 || !dup {
		t.Fatalf("retry after restart: seq %d dup %v %v", s, dup, err)
	}
	got, _ = d2.Fetch(ctx, bob, "inbox", 0)
	if len(got) != 1 || got[0].Seq != 3 {
		t.Fatalf("after restart: %+v", got)
	}
	// Two services on one queue: the stale one conflicts, reloads and
	// takes the next sequence.
	if s, _, _ := d2.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "inbox", Payload: []byte("four")}); s != 4 {
		t.Fatalf("seq %d, want 4", s)
	}
	if s, _, err := d.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "inbox", Payload: []byte("five")}); err != nil || s != 5 {
		t.Fatalf("stale service: seq %d, %v", s, err)
	}
	// The recipient's read model projects the same queue.
	if err := in.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	pend, err := in.DB().PendingDeliveries(ctx, bob, "inbox", 0, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(pend) != 3 || pend[0].Seq != 3 || pend[2].Seq != 5 {
		t.Fatalf("read model pending: %d", len(pend))
	}
	out, err := d.FanOut(ctx, []events.InstallationID{bob, alice}, "inbox", []byte("all"), time.Time{}, "fan-1")
	if err != nil || out[bob] != 6 || out[alice] != 1 {
		t.Fatalf("fan-out: %v %v", out, err)
	}
	again, err := d2.FanOut(ctx, []events.InstallationID{bob, alice}, "inbox", []byte("all"), time.Time{}, "fan-1")
	if err != nil || again[bob] != 6 || again[alice] != 1 {
		t.Fatalf("retried fan-out from another process: %v %v", again, err)
	}
	b.checkRebuild(bob)
}

// Two delivery services on one log ("several processes may serve the same
// queues"): what one enqueues, the other fetches, and the recipient may
// acknowledge it through either.
func TestDeliveriesServedByTwoProcesses(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(bob)
	d1, d2 := NewDeliveries(b.log, b.clock), NewDeliveries(b.log, b.clock)
	if _, _, err := d1.Enqueue(ctx, Enqueue{Recipient: bob, Channel: mlsChannel, Payload: []byte("one"), IdempotencyKey: "k1"}); err != nil {
		t.Fatal(err)
	}
	if ds, err := d2.Fetch(ctx, bob, mlsChannel, 0); err != nil || len(ds) != 1 { // d2 loads the queue
		t.Fatalf("second service fetches %d messages (%v), want 1", len(ds), err)
	}
	s2, _, err := d1.Enqueue(ctx, Enqueue{Recipient: bob, Channel: mlsChannel, Payload: []byte("two"), IdempotencyKey: "k2"})
	if err != nil {
		t.Fatal(err)
	}
	ds, err := d2.Fetch(ctx, bob, mlsChannel, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2 || ds[1].Seq != s2 || string(ds[1].Payload) != "two" {
		t.Errorf("second service fetches %+v, want both messages (seq %d enqueued by the first)", ds, s2)
	}
	s3, _, err := d1.Enqueue(ctx, Enqueue{Recipient: bob, Channel: mlsChannel, Payload: []byte("three"), IdempotencyKey: "k3"})
	if err != nil {
		t.Fatal(err)
	}
	// An acknowledgement beyond what d2 has seen is checked against the log.
	if err := d2.Acknowledge(ctx, bob, mlsChannel, s3); err != nil {
		t.Fatalf("second service refuses a valid acknowledgement of seq %d: %v", s3, err)
	}
	if ds, err := d1.Fetch(ctx, bob, mlsChannel, 0); err != nil || len(ds) != 0 {
		t.Errorf("first service still fetches %d messages (%v) after the second's acknowledgement, want none", len(ds), err)
	}
	if err := d1.Acknowledge(ctx, bob, mlsChannel, s3+1); !errors.Is(err, ErrInvalidAck) {
		t.Errorf("acknowledging seq %d, never enqueued: %v, want ErrInvalidAck", s3+1, err)
	}
	// Both services keep appending where the queue is.
	if s4, _, err := d2.Enqueue(ctx, Enqueue{Recipient: bob, Channel: mlsChannel, Payload: []byte("four")}); err != nil || s4 != s3+1 {
		t.Errorf("second service enqueues at seq %d (%v), want %d", s4, err, s3+1)
	}
	if ds, err := d1.Fetch(ctx, bob, mlsChannel, 0); err != nil || len(ds) != 1 || string(ds[0].Payload) != "four" {
		t.Errorf("first service fetches %+v (%v), want the second's message four", ds, err)
	}
}
