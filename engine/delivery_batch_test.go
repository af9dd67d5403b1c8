package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// FanOutMany queues each item for its recipients in item order, one
// enqueue per (item, recipient), idempotent by key within a call and
// across calls; FetchMany lists what Fetch lists; AcknowledgeMany
// acknowledges each queue, refusing what Acknowledge refuses.
func TestBatchedDeliveries(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	for _, id := range []string{"r1", "r2", "r3"} {
		b.create(events.InstallationID(id))
	}
	r1, r2, r3 := events.InstallationID("r1"), events.InstallationID("r2"), events.InstallationID("r3")
	items := []FanOutItem{
		{Recipients: ids(r1, r2), Channel: "c", Payload: []byte("a"), IdempotencyKey: "ka"},
		{Recipients: ids(r2, r3), Channel: "c", Payload: []byte("b"), IdempotencyKey: "kb"},
		{Recipients: ids(r1), Channel: "c", Payload: []byte("a"), IdempotencyKey: "ka"}, // the same message again: r1 has it
		{Recipients: ids(r1, r2, r3), Channel: "c", Payload: []byte("c")},
	}
	out, err := b.del.FanOutMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	want := []map[string]uint64{{"r1": 1, "r2": 1}, {"r2": 2, "r3": 1}, {"r1": 1}, {"r1": 2, "r2": 3, "r3": 2}}
	if fmt.Sprint(out) != fmt.Sprint(convert(want)) {
		t.Fatalf("sequences %v, want %v", out, want)
	}
	// Again: every keyed enqueue is found, the unkeyed one queued again.
	again, err := b.del.FanOutMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	want = []map[string]uint64{{"r1": 1, "r2": 1}, {"r2": 2, "r3": 1}, {"r1": 1}, {"r1": 3, "r2": 4, "r3": 3}}
	if fmt.Sprint(again) != fmt.Sprint(convert(want)) {
		t.Fatalf("sequences again %v, want %v", again, want)
	}
	got, err := b.del.FetchMany(ctx, ids(r1, r2, r3, r2), "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range ids(r1, r2, r3) {
		one, err := b.del.Fetch(ctx, r, "c", 0)
		if err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(payloads(got[r])) != fmt.Sprint(payloads(one)) {
			t.Fatalf("%s: FetchMany %q, Fetch %q", r, payloads(got[r]), payloads(one))
		}
	}
	if fmt.Sprint(payloads(got[r2])) != "[a b c c]" {
		t.Fatalf("r2's queue %q, want a b c c", payloads(got[r2]))
	}
	errs := b.del.AcknowledgeMany(ctx, "c", map[events.InstallationID]uint64{r1: 2, r2: 9, r3: 3})
	if len(errs) != 1 || !errors.Is(errs[r2], ErrInvalidAck) {
		t.Fatalf("acknowledge errors %v, want r2's ErrInvalidAck only", errs)
	}
	if errs := b.del.AcknowledgeMany(ctx, "c", map[events.InstallationID]uint64{r1: 1, r2: 4}); errs != nil {
		t.Fatalf("an older acknowledgement, and a full one: %v", errs)
	}
	got, err = b.del.FetchMany(ctx, ids(r1, r2, r3), "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(payloads(got[r1]), payloads(got[r2]), payloads(got[r3])) != "[c] [] []" {
		t.Fatalf("left after acknowledging: %q %q %q", payloads(got[r1]), payloads(got[r2]), payloads(got[r3]))
	}
	// The read models hold the queues as the service does.
	for _, r := range ids(r1, r2, r3) {
		b.checkRebuild(r)
	}
}

func ids(r ...events.InstallationID) []events.InstallationID { return r }

func convert(m []map[string]uint64) []map[events.InstallationID]uint64 {
	out := make([]map[events.InstallationID]uint64, len(m))
	for i, x := range m {
		out[i] = map[events.InstallationID]uint64{}
		for k, v := range x {
			out[i][events.InstallationID(k)] = v
		}
	}
	return out
}

func payloads(ds []Delivery) []string {
	out := []string{}
	for _, d := range ds {
		out = append(out, string(d.Payload))
	}
	return out
}

// A queue keeps its events back to the acknowledgement before the last:
// recentEvents gives them after a position within that span, and says it
// does not hold them further back.
func TestQueueKeepsRecentEvents(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	r := events.InstallationID("r1")
	b.create(r)
	k := queueKey{r, "c"}
	enqueue := func(n int) {
		for i := range n {
			if _, _, err := b.del.Enqueue(ctx, Enqueue{Recipient: r, Channel: "c", Payload: []byte(fmt.Sprint(i))}); err != nil {
				t.Fatal(err)
			}
		}
	}
	enqueue(3)                                    // positions 1-3
	mustNil(t, b.del.Acknowledge(ctx, r, "c", 2)) // 4
	enqueue(2)                                    // 5-6
	mustNil(t, b.del.Acknowledge(ctx, r, "c", 5)) // 7: back to 4 kept
	enqueue(1)                                    // 8
	if recs, ok := b.del.recentEvents(k, 3); !ok || len(recs) != 5 || recs[0].Event.Position != 4 || recs[4].Event.Position != 8 {
		t.Fatalf("after position 3: %d events (%v)", len(recs), ok)
	}
	if _, ok := b.del.recentEvents(k, 2); ok {
		t.Fatal("after position 2: the events before the acknowledgement before the last are gone, want ok false")
	}
	if recs, ok := b.del.recentEvents(k, 8); !ok || len(recs) != 0 {
		t.Fatalf("after the last position: %d events (%v)", len(recs), ok)
	}
	for _, rec := range mustRecent(t, b.del, k, 3) {
		if rec.Seq == 0 || rec.Event.Aggregate != deliveryAgg(k) {
			t.Fatalf("event %+v", rec)
		}
	}
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func mustRecent(t *testing.T, d *Deliveries, k queueKey, after uint64) []eventlog.Record {
	t.Helper()
	recs, ok := d.recentEvents(k, after)
	if !ok {
		t.Fatalf("no recent events after %d", after)
	}
	return recs
}
