package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// queueEvents counts the delivery events of recipient's channel on the
// stream, by kind.
func queueEvents(t *testing.T, l *eventlog.Log, recipient events.InstallationID, channel string) map[events.Kind]int {
	t.Helper()
	out := map[events.Kind]int{}
	if err := l.Read(context.Background(), recipient, 0, func(r eventlog.Record) error {
		if a := r.Event.Aggregate; a.Type == events.AggDelivery && a.ID == channel {
			out[r.Event.Body.Kind()]++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// unmuteLater lets the proxy's answers through again after more than two
// request timeouts, and drops its connections (the client reconnects).
func unmuteLater(p *lossyProxy) {
	p.mute.Store(true)
	go func() {
		time.Sleep(2500 * time.Millisecond)
		p.mute.Store(false)
		p.Drop()
	}()
}

// An enqueue, a fan-out and an acknowledgement whose answers are lost for
// a while are decided before they return: the same event is appended
// again until the server answers, and lands once. The enqueue has no
// idempotency key, so only the event's message id keeps it from landing
// twice.
func TestDeliveriesDecideAppendsWhoseAnswerWasLost(t *testing.T) {
	t.Parallel() // mostly waits on its own servers; sets no package variable
	ctx := context.Background()
	b, proxy, direct := lossyBackend(t)
	const ch = "lossy"
	// Both queues loaded (a read, which asks again on its own): the calls
	// below only append.
	for _, id := range []events.InstallationID{alice, bob} {
		if _, err := b.del.Fetch(ctx, id, ch, 0); err != nil {
			t.Fatal(err)
		}
	}

	unmuteLater(proxy)
	seq, dup, err := b.del.Enqueue(ctx, Enqueue{Recipient: alice, Channel: ch, Payload: []byte("one")})
	if err != nil || seq != 1 || dup {
		t.Fatalf("Enqueue with its answers lost for a while: seq %d dup %v, %v; want seq 1", seq, dup, err)
	}

	unmuteLater(proxy)
	seqs, err := b.del.FanOut(ctx, []events.InstallationID{alice, bob}, ch, []byte("two"), time.Time{}, "")
	if err != nil || seqs[alice] != 2 || seqs[bob] != 1 {
		t.Fatalf("FanOut with its answers lost for a while: %v, %v; want alice 2, bob 1", seqs, err)
	}

	unmuteLater(proxy)
	if err := b.del.Acknowledge(ctx, alice, ch, 2); err != nil {
		t.Fatalf("Acknowledge with its answers lost for a while: %v", err)
	}

	for id, want := range map[events.InstallationID]map[events.Kind]int{
		alice: {events.KindDeliveryEnqueued: 2, events.KindDeliveryAcknowledged: 1},
		bob:   {events.KindDeliveryEnqueued: 1},
	} {
		got := queueEvents(t, direct, id, ch)
		for k, n := range want {
			if got[k] != n {
				t.Errorf("%s: %d %s events on the stream, want %d (all: %v)", id, got[k], k, n, got)
			}
		}
	}
	fresh := NewDeliveries(direct, nil)
	if ds, err := fresh.Fetch(ctx, alice, ch, 0); err != nil || len(ds) != 0 {
		t.Errorf("alice's queue as a fresh service reads it: %d pending, %v; want none", len(ds), err)
	}
	if ds, err := fresh.Fetch(ctx, bob, ch, 0); err != nil || len(ds) != 1 || string(ds[0].Payload) != "two" {
		t.Errorf("bob's queue as a fresh service reads it: %+v, %v; want message two", ds, err)
	}
}

// With no answer at all, a call ends with ErrOutcomeUnknown when its
// context ends, or after OutcomeTimeout with a context that does not.
// (Both queues are loaded before: loading one is a read, bounded by the
// Log's ProgressTimeout.)
func TestDeliveriesOutcomeUnknown(t *testing.T) {
	b, proxy, _ := lossyBackend(t)
	for _, ch := range []string{"silent-ack", "silent-enqueue"} {
		if _, _, err := b.del.Enqueue(context.Background(), Enqueue{Recipient: alice, Channel: ch, Payload: []byte("one")}); err != nil {
			t.Fatal(err)
		}
	}
	proxy.mute.Store(true)

	short, cancel := context.WithTimeout(context.Background(), 1500*time.Millisecond)
	err := b.del.Acknowledge(short, alice, "silent-ack", 1)
	cancel()
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Acknowledge whose answer never came, context ended: %v, want ErrOutcomeUnknown and the context's error", err)
	}

	b.del.OutcomeTimeout = 1500 * time.Millisecond
	done := make(chan error, 1)
	go func() {
		_, _, err := b.del.Enqueue(context.Background(), Enqueue{Recipient: alice, Channel: "silent-enqueue", Payload: []byte("two")})
		done <- err
	}()
	select {
	case err := <-done:
		if !errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("Enqueue whose answer never came: %v, want ErrOutcomeUnknown", err)
		}
		t.Logf("Enqueue: %v", err)
	case <-time.After(time.Minute):
		t.Fatal("Enqueue whose answer never came did not end within a minute (OutcomeTimeout 1.5s)")
	}
}
