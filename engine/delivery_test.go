package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
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
	if s, dup := enq("one", "k1", time.Time{}); s != 1 || !dup {
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

// rawQueue appends bodies to a new queue of recipient's on channel as they
// are, one append each at positions 1, 2, ..., past the service's checks
// (a buggy or hostile writer). It returns their stream sequences.
func (b *backend) rawQueue(recipient events.InstallationID, channel string, bodies ...events.Body) []uint64 {
	b.t.Helper()
	agg := events.Aggregate{Installation: recipient, Type: events.AggDelivery, ID: channel}
	seqs := make([]uint64, len(bodies))
	for i, body := range bodies {
		res, err := b.log.Append(context.Background(), uint64(i), events.Event{Aggregate: agg, Time: b.now, Body: body})
		if err != nil {
			b.t.Fatalf("raw append %d: %v", i, err)
		}
		seqs[i] = res[0].Seq
	}
	return seqs
}

// The service and the read model fold a queue's events by the same rules
// (events.QueueState, and the two the stores keep: one expiry per message,
// one use per idempotency key): an event the rules refuse, written past the
// service, stops both at its stream sequence.
func TestDeliveriesRefuseWhatTheReadModelRefuses(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	const ch = "inbox"
	enq := func(seq uint64, key string) events.Body {
		return events.DeliveryEnqueued{Channel: ch, Sequence: seq, Payload: []byte("secret payload"), IdempotencyKey: key}
	}
	ack := func(upTo uint64) events.Body { return events.DeliveryAcknowledged{Channel: ch, UpTo: upTo} }
	exp := func(seq uint64) events.Body { return events.DeliveryExpired{Channel: ch, Sequence: seq} }
	cases := []struct {
		name   string
		bodies []events.Body // the last one is refused
		want   string
	}{
		{"enqueue gap", []events.Body{enq(1, ""), enq(3, "")}, "enqueue sequence 3 after 1"},
		{"enqueue repeat", []events.Body{enq(1, ""), enq(1, "")}, "enqueue sequence 1 after 1"},
		{"ack beyond last", []events.Body{enq(1, ""), enq(2, ""), ack(3)}, "acknowledgement up to 3: only 2 enqueued"},
		{"ack of an empty queue", []events.Body{ack(0)}, "nothing was ever enqueued"},
		{"expire never enqueued", []events.Body{enq(1, ""), exp(2)}, "expire sequence 2: never enqueued"},
		{"expire acknowledged", []events.Body{enq(1, ""), enq(2, ""), ack(1), exp(1)}, "expire sequence 1: already acknowledged"},
		{"expire twice", []events.Body{enq(1, ""), enq(2, ""), exp(2), exp(2)}, "expire sequence 2: already expired"},
		{"idempotency key repeated", []events.Body{enq(1, "k"), enq(2, "k")}, "idempotency key used before, by sequence 1"},
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := events.InstallationID(fmt.Sprintf("rules-%d", i))
			for j, body := range c.bodies { // the bodies name the queue they are on
				switch v := body.(type) {
				case events.DeliveryEnqueued:
					v.Recipient, c.bodies[j] = r, v
				case events.DeliveryAcknowledged:
					v.Recipient, c.bodies[j] = r, v
				case events.DeliveryExpired:
					v.Recipient, c.bodies[j] = r, v
				}
			}
			seqs := b.rawQueue(r, ch, c.bodies...)
			bad := seqs[len(seqs)-1]

			d := NewDeliveries(b.log, b.clock)
			_, err := d.Fetch(ctx, r, ch, 0)
			var re *eventlog.RecordError
			switch {
			case err == nil:
				t.Fatal("the service loaded the queue")
			case !errors.Is(err, events.ErrQueueRule):
				t.Errorf("error %v does not wrap events.ErrQueueRule", err)
			case !errors.As(err, &re) || re.Seq != bad:
				t.Errorf("error %v does not name stream sequence %d", err, bad)
			case !strings.Contains(err.Error(), c.want):
				t.Errorf("error %q does not say %q", err, c.want)
			case strings.Contains(err.Error(), "secret payload"):
				t.Errorf("error %q shows a payload", err)
			}
			if _, _, err := d.Enqueue(ctx, Enqueue{Recipient: r, Channel: ch, Payload: []byte("x")}); !errors.Is(err, events.ErrQueueRule) {
				t.Errorf("enqueue on the broken queue: %v, want events.ErrQueueRule", err)
			}

			db, err := projections.Open(filepath.Join(b.dir, string(r)+".db"), rawDBKey(t, 3), nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			_, _, err = replay.CatchUp(ctx, b.log, r, db, nil)
			var ae *projections.ApplyError
			if !errors.Is(err, projections.ErrCannotApply) || !errors.As(err, &ae) || ae.Seq != bad {
				t.Errorf("read model: %v, want ErrCannotApply at stream sequence %d", err, bad)
			}
		})
	}
}

// What the service accepts the read model accepts: acknowledgements are
// checked by the shared rules before they are appended.
func TestAcknowledgeChecksTheRules(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	in := b.create(bob)
	d := b.del
	mustErrIs(t, d.Acknowledge(ctx, bob, "empty", 1), ErrInvalidAck)
	if err := d.Acknowledge(ctx, bob, "empty", 0); err != nil {
		t.Errorf("acknowledging nothing on an empty queue: %v, want a no-op", err)
	}
	for i := 0; i < 3; i++ {
		if _, _, err := d.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "inbox", Payload: []byte("m")}); err != nil {
			t.Fatal(err)
		}
	}
	before := b.lastSeq(bob)
	err := d.Acknowledge(ctx, bob, "inbox", 4)
	mustErrIs(t, err, ErrInvalidAck)
	if !strings.Contains(fmt.Sprint(err), "up to 4, last enqueued 3") {
		t.Errorf("error %q does not name the sequences", err)
	}
	if after := b.lastSeq(bob); after != before {
		t.Errorf("a refused acknowledgement appended to the log (last seq %d -> %d)", before, after)
	}
	for _, upTo := range []uint64{2, 1, 2, 3} {
		if err := d.Acknowledge(ctx, bob, "inbox", upTo); err != nil {
			t.Fatalf("acknowledge up to %d: %v", upTo, err)
		}
	}
	if err := in.CatchUp(ctx); err != nil {
		t.Fatalf("the read model refuses what the service appended: %v", err)
	}
	b.checkRebuild(bob)
}

// A Deliveries holds at most MaxQueues queues between calls, dropping the
// least recently used, idle ones first; a dropped queue is read again from
// the log and behaves as if it had stayed.
func TestDeliveriesHoldAtMostMaxQueues(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	d := NewDeliveries(b.log, b.clock)
	d.MaxQueues = 2
	held := func(ch string) bool {
		_, ok := d.q[queueKey{bob, ch}]
		return ok
	}
	checkCap := func(when string) {
		t.Helper()
		if n, lists := len(d.q), d.idle.Len()+d.busy.Len(); n > d.MaxQueues || n != lists {
			t.Fatalf("%s: %d queues held (%d listed), cap %d", when, n, lists, d.MaxQueues)
		}
	}
	enq := func(ch, key string) (uint64, bool) {
		t.Helper()
		s, dup, err := d.Enqueue(ctx, Enqueue{Recipient: bob, Channel: ch, Payload: []byte(ch + "/" + key), IdempotencyKey: key})
		if err != nil {
			t.Fatal(err)
		}
		checkCap("enqueue on " + ch)
		return s, dup
	}
	// b is the least recently used, but a has nothing pending: a goes.
	enq("b", "b1")
	enq("a", "a1")
	if err := d.Acknowledge(ctx, bob, "a", 1); err != nil {
		t.Fatal(err)
	}
	enq("c", "c1")
	if held("a") || !held("b") || !held("c") {
		t.Errorf("held a %v b %v c %v, want the idle queue a dropped", held("a"), held("b"), held("c"))
	}
	// With every queue busy, the least recently used goes.
	for _, ch := range []string{"d", "e", "f", "b"} {
		enq(ch, ch+"1")
		enq(ch, ch+"2")
	}
	if held("c") || held("d") || held("e") || !held("f") || !held("b") {
		t.Errorf("held c %v d %v e %v f %v b %v, want f and b", held("c"), held("d"), held("e"), held("f"), held("b"))
	}
	// A dropped queue comes back from the log: its idempotency keys,
	// messages and acknowledgements are all there.
	if s, dup := enq("d", "d1"); s != 1 || !dup {
		t.Errorf("retried enqueue on a dropped queue: seq %d dup %v, want 1 true", s, dup)
	}
	if s, dup := enq("c", "c2"); s != 2 || dup {
		t.Errorf("new enqueue on a dropped queue: seq %d dup %v, want 2 false", s, dup)
	}
	if s, dup := enq("a", "a1"); s != 1 || !dup {
		t.Errorf("retried enqueue on a dropped, acknowledged queue: seq %d dup %v, want 1 true", s, dup)
	}
	ds, err := d.Fetch(ctx, bob, "e", 0)
	checkCap("fetch")
	if err != nil || len(ds) != 2 || string(ds[1].Payload) != "e/e2" {
		t.Fatalf("fetch of a dropped queue: %+v, %v", ds, err)
	}
	for _, ch := range []string{"f", "b", "d"} {
		enq(ch, ch+"3") // push e out again
	}
	if held("e") {
		t.Fatal("queue e still held")
	}
	if err := d.Acknowledge(ctx, bob, "e", 1); err != nil {
		t.Fatalf("acknowledge on a dropped queue: %v", err)
	}
	checkCap("acknowledge")
	mustErrIs(t, d.Acknowledge(ctx, bob, "c", 3), ErrInvalidAck)
	checkCap("refused acknowledge")
	if ds, err := d.Fetch(ctx, bob, "e", 0); err != nil || len(ds) != 1 || ds[0].Seq != 2 {
		t.Fatalf("fetch after acknowledging: %+v, %v", ds, err)
	}
	// A fan-out over more queues than the cap leaves the cap.
	var rs []events.InstallationID
	for i := 0; i < 5; i++ {
		rs = append(rs, events.InstallationID(fmt.Sprintf("fan-%d", i)))
	}
	if out, err := d.FanOut(ctx, rs, "mls", []byte("all"), time.Time{}, "fan"); err != nil || len(out) != 5 {
		t.Fatalf("fan-out: %v, %v", out, err)
	}
	checkCap("fan-out")
	if out, err := d.FanOut(ctx, rs, "mls", []byte("all"), time.Time{}, "fan"); err != nil || len(out) != 5 || out[rs[0]] != 1 {
		t.Fatalf("retried fan-out: %v, %v", out, err)
	}
	// Another process's view agrees with the sequences handed out.
	d2 := NewDeliveries(b.log, b.clock)
	for ch, want := range map[string]int{"a": 0, "b": 3, "c": 2, "d": 3, "e": 1, "f": 3} {
		if ds, err := d2.Fetch(ctx, bob, ch, 0); err != nil || len(ds) != want {
			t.Errorf("queue %s: %d pending (%v), want %d", ch, len(ds), err, want)
		}
	}
}

// An idempotency key given again with another payload is refused, by
// Enqueue and by FanOut, and nothing is queued: answering it as the first
// enqueue would drop the second message while reporting it queued. The
// same key and payload again is the first enqueue's sequence.
func TestIdempotencyKeyWithAnotherPayloadIsRefused(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	first, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, []byte("payload A"), time.Time{}, "commit-g-1")
	if err != nil {
		t.Fatal(err)
	}
	again, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, []byte("payload A"), time.Time{}, "commit-g-1")
	if err != nil || again[bob] != first[bob] {
		t.Fatalf("the same fan-out again: %v, %v; want sequence %d", again, err, first[bob])
	}
	// To bob (who has the key) and alice (who has not): refused for both.
	if _, err := b.del.FanOut(ctx, []events.InstallationID{alice, bob}, mlsChannel, []byte("payload B"), time.Time{}, "commit-g-1"); !errors.Is(err, ErrIdempotencyKeyReused) ||
		!strings.Contains(err.Error(), `"commit-g-1" names sequence 1`) {
		t.Fatalf("fan-out of another payload under the key: %v, want ErrIdempotencyKeyReused naming the key and sequence", err)
	}
	if _, dup, err := b.del.Enqueue(ctx, Enqueue{Recipient: bob, Channel: mlsChannel, Payload: []byte("payload C"), IdempotencyKey: "commit-g-1"}); !errors.Is(err, ErrIdempotencyKeyReused) || dup {
		t.Fatalf("enqueue of another payload under the key: dup %v, %v; want ErrIdempotencyKeyReused", dup, err)
	}
	// Within one call too.
	if _, err := b.del.FanOutMany(ctx, []FanOutItem{
		{Recipients: []events.InstallationID{alice}, Channel: mlsChannel, Payload: []byte("x"), IdempotencyKey: "k2"},
		{Recipients: []events.InstallationID{alice}, Channel: mlsChannel, Payload: []byte("y"), IdempotencyKey: "k2"},
	}); !errors.Is(err, ErrIdempotencyKeyReused) {
		t.Fatalf("one call with a key twice, two payloads: %v, want ErrIdempotencyKeyReused", err)
	}
	for id, want := range map[events.InstallationID][]string{bob: {"payload A"}, alice: nil} {
		ds, err := b.del.Fetch(ctx, id, mlsChannel, 0)
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, d := range ds {
			got = append(got, string(d.Payload))
		}
		if !slices.Equal(got, want) {
			t.Errorf("%s's queue holds %q, want %q", id, got, want)
		}
	}
	// A new process (the keys read back from the log) refuses it too.
	b.close()
	b.open()
	if _, _, err := b.del.Enqueue(ctx, Enqueue{Recipient: bob, Channel: mlsChannel, Payload: []byte("payload B"), IdempotencyKey: "commit-g-1"}); !errors.Is(err, ErrIdempotencyKeyReused) {
		t.Fatalf("after a restart: %v, want ErrIdempotencyKeyReused", err)
	}
}

// A recipient named twice in one fan-out (with or without an idempotency
// key) gets the message once: the returned map holds one sequence per
// recipient. Until 2026-12-06 the message was enqueued twice and the map
// kept the second sequence only.
func TestFanOutToARecipientNamedTwiceEnqueuesOnce(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	for _, key := range []string{"", "fan-twice"} {
		out, err := b.del.FanOut(ctx, []events.InstallationID{bob, carol, bob}, "twice"+key, []byte("once"), time.Time{}, key)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range []events.InstallationID{bob, carol} {
			ds, err := b.del.Fetch(ctx, id, "twice"+key, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(ds) != 1 || out[id] != ds[0].Seq {
				t.Errorf("key %q: %s has %d deliveries (fan-out returned seq %d), want one", key, id, len(ds), out[id])
			}
		}
	}
}

// MaxQueueBytes bounds the memory of the queues held as MaxQueues bounds
// their number: beyond it the least recently used go, and come back from
// the log, keys and all. A queue larger than the budget on its own stays
// held after the call that used it (else every call would read it again).
func TestDeliveriesHoldAtMostMaxQueueBytes(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	d := NewDeliveries(b.log, b.clock)
	held := func(ch string) bool {
		_, ok := d.q[queueKey{bob, ch}]
		return ok
	}
	fill := func(ch string, n int) {
		t.Helper()
		for i := range n {
			if _, _, err := d.Enqueue(ctx, Enqueue{Recipient: bob, Channel: ch, Payload: []byte(ch), IdempotencyKey: fmt.Sprint(i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	accounted := func() {
		t.Helper()
		var sum int64
		for _, q := range d.q {
			sum += q.bytes
		}
		if sum != d.bytes || sum <= 0 {
			t.Fatalf("%d bytes accounted, the held queues estimate %d", d.bytes, sum)
		}
	}
	fill("a", 20)
	accounted()
	one := d.bytes
	d.MaxQueueBytes = one * 3 / 2 // room for a queue like a, not two
	fill("b", 20)
	accounted()
	if held("a") || !held("b") {
		t.Fatalf("held a %v b %v, want b only (%d bytes a queue, budget %d)", held("a"), held("b"), one, d.MaxQueueBytes)
	}
	// Over the budget on its own: kept after the call.
	d.MaxQueueBytes = one / 2
	fill("c", 20)
	if held("b") || !held("c") {
		t.Fatalf("held b %v c %v, want c only", held("b"), held("c"))
	}
	// a comes back from the log with its keys.
	if seq, dup, err := d.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "a", Payload: []byte("a"), IdempotencyKey: "7"}); err != nil || !dup || seq != 8 {
		t.Fatalf("enqueue again on a dropped queue: sequence %d, duplicate %v, %v; want 8, true", seq, dup, err)
	}
	accounted()
}
