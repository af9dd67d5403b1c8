package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// A call on one queue (here: one that holds it, as a cold load of a long
// history does) holds up only the calls on that queue: the others go on,
// and a call waiting for the held queue gives up when its context ends,
// having done nothing, a fan-out to it and another queue included.
func TestQueueHeldByACallHoldsUpOnlyItsOwnCalls(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	d := b.del
	for _, ch := range []string{"slow", "fast"} {
		if _, _, err := d.Enqueue(ctx, Enqueue{Recipient: bob, Channel: ch, Payload: []byte(ch + " 1")}); err != nil {
			t.Fatal(err)
		}
	}
	slow, err := d.acquire1(ctx, queueKey{bob, "slow"})
	if err != nil {
		t.Fatal(err)
	}

	// Every call on another queue completes while "slow" is held (a
	// generous bound: these are a few round trips each).
	done := make(chan error, 1)
	go func() {
		done <- func() error {
			if _, _, err := d.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "fast", Payload: []byte("fast 2")}); err != nil {
				return err
			}
			if _, err := d.FanOut(ctx, []events.InstallationID{bob, carol}, "fast", []byte("fast 3"), time.Time{}, "k3"); err != nil {
				return err
			}
			got, err := d.FetchMany(ctx, []events.InstallationID{bob, carol}, "fast", 0)
			if err != nil {
				return err
			}
			if len(got[bob]) != 3 || len(got[carol]) != 1 {
				return fmt.Errorf("fetched %d and %d messages, want 3 and 1", len(got[bob]), len(got[carol]))
			}
			if errs := d.AcknowledgeMany(ctx, "fast", map[events.InstallationID]uint64{bob: 2, carol: 1}); errs != nil {
				return fmt.Errorf("acknowledge: %v", errs)
			}
			_, err = d.Expire(ctx, bob, "fast")
			return err
		}()
	}()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("calls on another queue while one is held: %v", err)
		}
	case <-time.After(2 * time.Minute):
		t.Fatal("calls on another queue did not complete while one queue was held")
	}

	// Calls that need the held queue wait for it, for as long as their
	// context lasts, and then fail having appended nothing.
	short := func() context.Context {
		c, cancel := context.WithTimeout(ctx, 100*time.Millisecond)
		t.Cleanup(cancel)
		return c
	}
	if _, _, err := d.Enqueue(short(), Enqueue{Recipient: bob, Channel: "slow", Payload: []byte("slow 2")}); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("enqueue on the held queue: %v, want the context's deadline", err)
	}
	_, err = d.FanOutMany(short(), []FanOutItem{{Recipients: []events.InstallationID{carol, bob}, Channel: "slow", Payload: []byte("slow 3")}})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("fan-out to the held queue and another: %v, want the context's deadline", err)
	}
	if errs := d.AcknowledgeMany(short(), "slow", map[events.InstallationID]uint64{bob: 1}); !errors.Is(errs[bob], context.DeadlineExceeded) {
		t.Fatalf("acknowledge on the held queue: %v, want the context's deadline", errs)
	}

	d.release(slow)
	got, err := d.FetchMany(ctx, []events.InstallationID{bob, carol}, "slow", 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got[bob]) != 1 || string(got[bob][0].Payload) != "slow 1" || len(got[carol]) != 0 {
		t.Fatalf("after the queue was let go: %+v, want only bob's first message (the calls that gave up appended nothing)", got)
	}
}

// Many calls at once, over queues they share, with fewer queues held than
// used (so queues are dropped and loaded again between the calls): every
// enqueue gets its own sequence, nothing is lost or queued twice, and what
// this process holds agrees with the log as another process reads it.
func TestConcurrentCallsOnSharedQueues(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	d := NewDeliveries(b.log, b.clock)
	d.MaxQueues = 2
	recipients := []events.InstallationID{alice, bob, carol}
	channels := []string{"a", "b"}

	const workers, calls = 6, 25
	var (
		mu  sync.Mutex
		got = map[queueKey]map[uint64]string{} // sequence -> payload, as the calls returned them
	)
	note := func(k queueKey, seq uint64, payload string) error {
		mu.Lock()
		defer mu.Unlock()
		if got[k] == nil {
			got[k] = map[uint64]string{}
		}
		if p, ok := got[k][seq]; ok && p != payload {
			return fmt.Errorf("%s/%s sequence %d returned for %q and %q", k.recipient, k.channel, seq, p, payload)
		}
		got[k][seq] = payload
		return nil
	}
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 1))
			errs <- func() error {
				for i := range calls {
					ch := channels[rng.IntN(len(channels))]
					payload := fmt.Sprintf("w%d-%d", w, i)
					switch rng.IntN(4) {
					case 0, 1:
						r := recipients[rng.IntN(len(recipients))]
						seq, _, err := d.Enqueue(ctx, Enqueue{Recipient: r, Channel: ch, Payload: []byte(payload), IdempotencyKey: payload})
						if err != nil {
							return err
						}
						if err := note(queueKey{r, ch}, seq, payload); err != nil {
							return err
						}
					case 2:
						seqs, err := d.FanOut(ctx, recipients, ch, []byte(payload), time.Time{}, payload)
						if err != nil {
							return err
						}
						for r, seq := range seqs {
							if err := note(queueKey{r, ch}, seq, payload); err != nil {
								return err
							}
						}
					case 3:
						pending, err := d.FetchMany(ctx, recipients, ch, 2)
						if err != nil {
							return err
						}
						upTo := map[events.InstallationID]uint64{}
						for r, ms := range pending {
							if len(ms) > 0 {
								upTo[r] = ms[len(ms)-1].Seq
							}
						}
						if errs := d.AcknowledgeMany(ctx, ch, upTo); errs != nil {
							return fmt.Errorf("acknowledge: %v", errs)
						}
					}
				}
				return nil
			}()
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// Another process reads the queues from the log: each holds exactly
	// the sequences the calls returned, contiguous from 1, each with the
	// payload returned for it, and this process agrees about what is
	// pending.
	other := NewDeliveries(b.log, b.clock)
	for _, r := range recipients {
		for _, ch := range channels {
			k := queueKey{r, ch}
			q, err := other.acquire1(ctx, k)
			if err != nil {
				t.Fatal(err)
			}
			if err := other.load(ctx, q); err != nil {
				t.Fatal(err)
			}
			last, acked := q.rules.LastSeq, q.rules.AckedUpTo
			other.release(q)
			if last != uint64(len(got[k])) {
				t.Errorf("%s/%s: %d enqueued on the log, %d returned by the calls", r, ch, last, len(got[k]))
			}
			mine, err := d.Fetch(ctx, r, ch, 0)
			if err != nil {
				t.Fatal(err)
			}
			theirs, err := other.Fetch(ctx, r, ch, 0)
			if err != nil {
				t.Fatal(err)
			}
			if len(mine) != len(theirs) || uint64(len(theirs)) != last-acked {
				t.Errorf("%s/%s: %d pending here, %d read from the log, want %d", r, ch, len(mine), len(theirs), last-acked)
			}
			for _, m := range theirs {
				if want := got[k][m.Seq]; string(m.Payload) != want {
					t.Errorf("%s/%s sequence %d: %q on the log, %q returned", r, ch, m.Seq, m.Payload, want)
				}
			}
		}
	}
	if n := len(d.q); n > d.MaxQueues {
		t.Errorf("%d queues held after the calls, cap %d", n, d.MaxQueues)
	}
}

// A queue's history longer than queueGets is read cold partly by message
// gets and partly through a consumer: both parts are folded by the same
// rules (idempotency keys and acknowledgements from either part hold),
// and an event the rules refuse in the consumer's part stops the load at
// its stream sequence as one in the first part does.
func TestLongQueueReadCold(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	const ch = "inbox"
	long := func(r events.InstallationID, extra ...events.Body) []uint64 {
		n := uint64(queueGets + 40)
		bodies := make([]events.Body, 0, n+2)
		for s := uint64(1); s <= n; s++ {
			bodies = append(bodies, events.DeliveryEnqueued{Recipient: r, Channel: ch, Sequence: s, Payload: fmt.Appendf(nil, "m%d", s), IdempotencyKey: fmt.Sprintf("k%d", s)})
		}
		bodies = append(bodies, events.DeliveryAcknowledged{Recipient: r, Channel: ch, UpTo: queueGets + 10})
		return b.rawQueue(r, ch, append(bodies, extra...)...)
	}

	long("long")
	d := NewDeliveries(b.log, b.clock)
	got, err := d.Fetch(ctx, "long", ch, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 30 || got[0].Seq != queueGets+11 || string(got[29].Payload) != fmt.Sprintf("m%d", queueGets+40) {
		t.Fatalf("fetched %d messages (first %+v), want the 30 after the acknowledgement", len(got), got[0])
	}
	for _, s := range []int{1, queueGets + 30} { // a key of each part
		key, payload := fmt.Sprintf("k%d", s), fmt.Sprintf("m%d", s)
		if seq, dup, err := d.Enqueue(ctx, Enqueue{Recipient: "long", Channel: ch, Payload: []byte(payload), IdempotencyKey: key}); err != nil || !dup || seq != uint64(s) {
			t.Errorf("enqueue again under key %s: sequence %d, duplicate %v, %v; want %d, true", key, seq, dup, err, s)
		}
	}

	seqs := long("broken", events.DeliveryEnqueued{Recipient: "broken", Channel: ch, Sequence: queueGets + 42, Payload: []byte("gap")})
	bad := seqs[len(seqs)-1]
	_, err = NewDeliveries(b.log, b.clock).Fetch(ctx, "broken", ch, 0)
	var re *eventlog.RecordError
	if !errors.Is(err, events.ErrQueueRule) || !errors.As(err, &re) || re.Seq != bad {
		t.Fatalf("loading a long queue with a gap: %v, want events.ErrQueueRule at stream sequence %d", err, bad)
	}
}

// A Host's batch holds the lock of every installation in it while it
// projects their new events; a queue of one of them held by another call
// (a fan-out deciding a lost answer holds it for up to OutcomeTimeout, a
// cold load for a long history) must not hold the batch up: the events
// are read from the log instead of taken from the queue in memory.
func TestHostBatchNotHeldUpByABusyQueue(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	gid := b.pair(alice, bob)
	b.send(bob, gid, "to alice")
	b.drainAll() // alice's read model knows her queue now
	h := NewHost(b.log, b.del, nil)
	q, err := b.del.acquire1(ctx, queueKey{alice, mlsChannel}) // another call on alice's queue
	if err != nil {
		t.Fatal(err)
	}
	sctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	res := h.Send(sctx, []SendRequest{{Installation: b.insts[alice], GroupID: gid, Content: []byte("hi")}})
	b.del.release(q)
	if res[0].Err != nil {
		t.Fatalf("Host.Send while another call held alice's queue: %v", res[0].Err)
	}
	if res[0].Output.ProjectionErr != nil {
		t.Fatalf("Host.Send while another call held alice's queue: read model not projected: %v", res[0].Output.ProjectionErr)
	}
}

// A cold load cut short by its caller's context keeps what it read: the
// next call reads only the rest and finds the queue a fresh load finds,
// so a history too long for one call's deadline loads across calls
// (until 2026-12-06 each call started over).
func TestColdLoadCutShortKeepsWhatItRead(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	const ch, n = "inbox", 400 // beyond queueGets: most of it through the consumer
	r := events.InstallationID("long")
	bodies := make([]events.Body, 0, n+1)
	for s := uint64(1); s <= n; s++ {
		bodies = append(bodies, events.DeliveryEnqueued{Recipient: r, Channel: ch, Sequence: s, Payload: fmt.Appendf(nil, "m%d", s), IdempotencyKey: fmt.Sprintf("k%d", s)})
	}
	bodies = append(bodies, events.DeliveryAcknowledged{Recipient: r, Channel: ch, UpTo: n / 2})
	b.rawQueue(r, ch, bodies...)

	var read int
	cut, cancel := context.WithCancel(ctx)
	defer cancel()
	queueRecordHook = func(eventlog.Record) {
		if read++; read == n/2 {
			cancel()
		}
	}
	defer func() { queueRecordHook = nil }()
	d := NewDeliveries(b.log, b.clock)
	if _, err := d.Fetch(cut, r, ch, 0); !errors.Is(err, context.Canceled) {
		t.Fatalf("fetch whose context ends mid-load: %v, want context.Canceled", err)
	}
	first := read
	if first < n/2 || first > n {
		t.Fatalf("the cut load read %d events, want at least %d and not all %d", first, n/2, n+1)
	}
	got, err := d.Fetch(ctx, r, ch, 0)
	if err != nil || len(got) != n/2 || got[0].Seq != n/2+1 {
		t.Fatalf("fetch after the cut: %d messages (%v), want the %d after the acknowledgement", len(got), err, n/2)
	}
	if again := read - first; again != n+1-first {
		t.Errorf("the next load read %d events, want the %d the cut one had not", again, n+1-first)
	}
	if seq, dup, err := d.Enqueue(ctx, Enqueue{Recipient: r, Channel: ch, Payload: []byte("m1"), IdempotencyKey: "k1"}); err != nil || !dup || seq != 1 {
		t.Errorf("enqueue again under the first key: sequence %d, duplicate %v, %v; want 1, true", seq, dup, err)
	}
}
