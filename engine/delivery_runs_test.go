package engine

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
)

// runItems returns n keyed fan-out items to recipients on channel c,
// payload "m<i>" padded to size bytes.
func runItems(n, size int, recipients ...events.InstallationID) []FanOutItem {
	items := make([]FanOutItem, n)
	for i := range items {
		p := fmt.Appendf(nil, "m%d", i)
		p = append(p, make([]byte, max(0, size-len(p)))...)
		items[i] = FanOutItem{Recipients: recipients, Channel: "c", Payload: p, IdempotencyKey: fmt.Sprintf("k%d", i)}
	}
	return items
}

// queueStreamSeqs returns the stream sequences of the events of
// recipient's queue on channel c, in order.
func (b *backend) queueStreamSeqs(recipient events.InstallationID) []uint64 {
	b.t.Helper()
	ctx := context.Background()
	subj, err := b.log.Subject(events.Aggregate{Installation: recipient, Type: events.AggDelivery, ID: "c"})
	if err != nil {
		b.t.Fatal(err)
	}
	js, err := jetstream.New(b.log.Conn())
	if err != nil {
		b.t.Fatal(err)
	}
	st, err := js.Stream(ctx, b.log.Stream())
	if err != nil {
		b.t.Fatal(err)
	}
	var seqs []uint64
	for next := uint64(1); ; {
		m, err := st.GetMsg(ctx, next, jetstream.WithGetMsgSubject(subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return seqs
		}
		if err != nil {
			b.t.Fatal(err)
		}
		seqs = append(seqs, m.Sequence)
		next = m.Sequence + 1
	}
}

// wantQueue fails unless d fetches exactly the payloads of items[:n] for
// recipient, in order, at queue sequences 1..n.
func wantQueue(t *testing.T, d *Deliveries, recipient events.InstallationID, items []FanOutItem, n int) {
	t.Helper()
	ds, err := d.Fetch(context.Background(), recipient, "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != n {
		t.Fatalf("%s's queue holds %d messages, want %d", recipient, len(ds), n)
	}
	for i, got := range ds {
		if got.Seq != uint64(i+1) || string(got.Payload) != string(items[i].Payload) {
			t.Fatalf("%s's message %d: seq %d, payload %.8q; want seq %d, %.8q", recipient, i, got.Seq, got.Payload, i+1, items[i].Payload)
		}
	}
}

// A fan-out whose enqueues all go to one queue appends them as atomic
// batches (appendEnqueues): bob's 40 enqueues are one append, stored as
// one run of stream sequences. Each enqueue is still its own: its
// sequence, its idempotency key, one delivery each, and the read model
// holds what the service holds. A call to two queues appends one
// enqueue at a time, as before.
func TestFanOutManyBatchesAQueuesRun(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(bob)
	b.create(carol)
	cfg := testConfig(b.srv)
	cfg.Metrics = telemetry.NewMetrics()
	l, err := eventlog.Open(ctx, cfg, b.ring)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	d := NewDeliveries(l, b.clock)
	appends := func() int {
		return int(telemetrytest.Value(t, cfg.Metrics, "epochlog_append_duration_seconds"))
	}

	items := runItems(40, 0, bob)
	out, err := d.FanOutMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range out {
		if m[bob] != uint64(i+1) {
			t.Fatalf("item %d enqueued at %v, want bob at %d", i, m, i+1)
		}
	}
	if n := appends(); n != 1 {
		t.Fatalf("40 enqueues to one queue took %d appends, want 1 (one atomic batch)", n)
	}
	seqs := b.queueStreamSeqs(bob)
	if len(seqs) != 40 || seqs[39]-seqs[0] != 39 {
		t.Fatalf("bob's 40 enqueues stored at stream seqs %v, want one run of 40", seqs)
	}
	// The same keyed items again: every one found, nothing appended.
	again, err := d.FanOutMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(again) != fmt.Sprint(out) || appends() != 1 {
		t.Fatalf("the same items again enqueued at %v with %d appends in all, want %v and still 1", again, appends(), out)
	}
	// Two queues: one append per enqueue.
	both := runItems(20, 0, bob, carol)
	for i := range both {
		both[i].IdempotencyKey = fmt.Sprintf("both%d", i)
	}
	if _, err := d.FanOutMany(ctx, both); err != nil {
		t.Fatal(err)
	}
	if n := appends(); n != 1+40 {
		t.Fatalf("20 items to two queues took %d appends, want 40 (one per enqueue)", n-1)
	}
	for _, dd := range []*Deliveries{d, NewDeliveries(b.log, b.clock)} { // the service, and one loading from the stream
		wantQueue(t, dd, bob, append(slices.Clone(items), both...), 60)
		wantQueue(t, dd, carol, both, 20)
	}
	b.checkRebuild(bob)
	b.checkRebuild(carol)
}

// A queue another service moved since this one loaded it: the batch is
// refused whole (its first event's expected sequence), and every one of
// its enqueues is made again after the other service's, in order.
func TestFanOutManyBatchAfterAnotherWriter(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(bob)
	if _, err := b.del.Fetch(ctx, bob, "c", 0); err != nil { // loads the empty queue
		t.Fatal(err)
	}
	other := NewDeliveries(b.log, b.clock)
	first := FanOutItem{Recipients: ids(bob), Channel: "c", Payload: []byte("m-other")}
	if _, err := other.FanOutMany(ctx, []FanOutItem{first}); err != nil {
		t.Fatal(err)
	}
	items := runItems(20, 0, bob)
	out, err := b.del.FanOutMany(ctx, items)
	if err != nil {
		t.Fatal(err)
	}
	for i, m := range out {
		if m[bob] != uint64(i+2) {
			t.Fatalf("item %d enqueued at %d, want %d (after the other service's)", i, m[bob], i+2)
		}
	}
	wantQueue(t, b.del, bob, append([]FanOutItem{first}, items...), 21)
	b.checkRebuild(bob)
}

// A stream that fills up in the middle of a batch: the fan-out fails
// with ErrStreamFull (an answer, not ErrOutcomeUnknown), the queue holds
// a prefix of the items in order, as the service and a fresh one both
// see it, and once the limit is raised the same keyed items complete
// it: every item once, in order.
func TestFanOutManyBatchOnAFullStream(t *testing.T) {
	bg := context.Background()
	b := newBackend(t)
	b.create(bob)
	bytes, setMax := b.streamLimit()
	items := runItems(30, 1024, bob)
	setMax(bytes() + 10*1500) // room for about ten of them
	ctx, cancel := context.WithTimeout(bg, 30*time.Second)
	defer cancel()
	_, err := b.del.FanOutMany(ctx, items)
	if !errors.Is(err, eventlog.ErrStreamFull) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("fan-out of 30 onto a stream with room for 10: %v; want eventlog.ErrStreamFull, not ErrOutcomeUnknown", err)
	}
	stored := len(b.queueStreamSeqs(bob))
	t.Logf("%d of 30 enqueues stored before the stream was full", stored)
	if stored >= 30 {
		t.Fatalf("%d of 30 enqueues stored on a stream with room for about 10", stored)
	}
	for _, d := range []*Deliveries{b.del, NewDeliveries(b.log, b.clock)} {
		wantQueue(t, d, bob, items, stored)
	}

	setMax(-1)
	out, err := b.del.FanOutMany(bg, items)
	if err != nil {
		t.Fatalf("the same items once the limit was raised: %v", err)
	}
	got := make([]uint64, len(out))
	for i, m := range out {
		got[i] = m[bob]
	}
	want := make([]uint64, len(items))
	for i := range want {
		want[i] = uint64(i + 1)
	}
	if !slices.Equal(got, want) {
		t.Fatalf("items enqueued at %v, want 1..30", got)
	}
	if n := len(b.queueStreamSeqs(bob)); n != 30 {
		t.Fatalf("bob's queue has %d events, want 30 (each item once)", n)
	}
	wantQueue(t, NewDeliveries(b.log, b.clock), bob, items, 30)
	b.checkRebuild(bob)
}

// A batch whose answer is lost for a while is decided before the call
// returns: each of its enqueues lands once, unkeyed as they are (only
// their message ids keep them from landing twice), in order.
func TestFanOutManyBatchWhoseAnswerWasLost(t *testing.T) {
	ctx := context.Background()
	b, proxy, direct := lossyBackend(t)
	if _, err := b.del.Fetch(ctx, bob, "c", 0); err != nil { // loaded: the call below only appends
		t.Fatal(err)
	}
	items := runItems(20, 0, bob)
	for i := range items {
		items[i].IdempotencyKey = ""
	}
	unmuteLater(proxy)
	out, err := b.del.FanOutMany(ctx, items)
	if err != nil {
		t.Fatalf("FanOutMany with its answers lost for a while: %v", err)
	}
	for i, m := range out {
		if m[bob] != uint64(i+1) {
			t.Fatalf("item %d enqueued at %d, want %d", i, m[bob], i+1)
		}
	}
	if got := queueEvents(t, direct, bob, "c"); got[events.KindDeliveryEnqueued] != 20 {
		t.Fatalf("%d enqueues on the stream, want 20 (each once; all: %v)", got[events.KindDeliveryEnqueued], got)
	}
	wantQueue(t, NewDeliveries(direct, nil), bob, items, 20)
}

// Two services fanning runs out to one queue at once, each on its own
// connection: their batches race for the queue's position; the loser's
// is refused whole and made again after the winner's. On a server that
// stages one batch per stream at a time, a batch is also refused for
// the other one in flight (at its first message, which asks no answer,
// so its commit is answered as an incomplete batch), and its enqueues
// are made one by one. Every item lands once, each service's in its
// order, and the read model agrees.
func TestFanOutManyBatchesOfTwoServicesAtOnce(t *testing.T) {
	t.Run("default", func(t *testing.T) { fanOutBatchesAtOnce(t, natstest.Options{}, 24, 0) })
	// Runs of 800 KiB, so that the two services' batches are staged at
	// the same time.
	t.Run("one-batch-in-flight", func(t *testing.T) { fanOutBatchesAtOnce(t, natstest.Options{MaxBatchInflight: 1}, 200, 4<<10) })
}

// fanOutBatchesAtOnce runs the test above on a server started with opts,
// with runs of n items of size bytes.
func fanOutBatchesAtOnce(t *testing.T, opts natstest.Options, n, size int) {
	ctx := context.Background()
	b := newBackendOn(t, opts)
	b.create(bob)
	const rounds = 5
	var services [2]*Deliveries
	metrics := telemetry.NewMetrics()
	for i := range services {
		cfg := testConfig(b.srv)
		cfg.Metrics = metrics
		l, err := eventlog.Open(ctx, cfg, b.ring)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Close()
		services[i] = NewDeliveries(l, b.clock)
	}
	for r := range rounds {
		errs := make(chan error, len(services))
		for i, d := range services {
			items := runItems(n, size, bob)
			for j := range items {
				key := fmt.Sprintf("s%d-r%d-%d", i, r, j)
				items[j].IdempotencyKey = key
				items[j].Payload = append([]byte(key+" "), items[j].Payload...)
			}
			go func() {
				_, err := d.FanOutMany(ctx, items)
				errs <- err
			}()
		}
		for range services {
			if err := <-errs; err != nil {
				t.Fatalf("round %d: %v", r, err)
			}
		}
	}
	t.Logf("%v appends refused for the queue's position", telemetrytest.Value(t, metrics, "epochlog_append_conflicts_total"))
	ds, err := NewDeliveries(b.log, b.clock).Fetch(ctx, bob, "c", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 2*rounds*n {
		t.Fatalf("bob's queue holds %d messages, want %d (each item once)", len(ds), 2*rounds*n)
	}
	next := map[string]int{} // by service and round: the next item expected
	for _, d := range ds {
		var s, r, j int
		if _, err := fmt.Sscanf(string(d.Payload), "s%d-r%d-%d ", &s, &r, &j); err != nil {
			t.Fatalf("payload %q: %v", d.Payload, err)
		}
		k := fmt.Sprint(s, r)
		if j != next[k] {
			t.Fatalf("service %d's round %d: item %d queued where %d was due", s, r, j, next[k])
		}
		next[k]++
	}
	b.checkRebuild(bob)
}
