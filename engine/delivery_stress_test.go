package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// Two Deliveries on one stream (two processes), each holding at most two
// queues in a few bytes, serve overlapping multi-queue calls, some of
// them cancelled while waiting for a queue or in the middle of their
// appends, and recentEvents (a Host's read) beside them. Afterwards no
// queue is left locked or counted as in use, the byte accounting adds up,
// and every queue on the log is a valid history both processes agree on.
func TestDeliveriesUnderCancelledOverlappingCalls(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	ds := []*Deliveries{NewDeliveries(b.log, b.clock), NewDeliveries(openLog(t, testConfig(b.srv), b.ring), b.clock)}
	for _, d := range ds {
		d.MaxQueues, d.MaxQueueBytes = 2, 1
	}
	recipients := []events.InstallationID{alice, bob, carol, "dave"}
	channels := []string{"a", "b"}
	const workers, calls = 8, 30
	var wg sync.WaitGroup
	errs := make(chan error, workers)
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(uint64(w), 7))
			d := ds[w%2]
			errs <- func() error {
				for i := range calls {
					cctx, cancel := context.WithCancel(ctx)
					if rng.IntN(3) == 0 {
						// Cancelled at some point of the call: waiting for a
						// queue, reading it or appending.
						time.AfterFunc(time.Duration(rng.IntN(3000))*time.Microsecond, cancel)
					}
					ch := channels[rng.IntN(len(channels))]
					rs := make([]events.InstallationID, 0, len(recipients))
					for _, r := range recipients {
						if rng.IntN(2) == 0 {
							rs = append(rs, r)
						}
					}
					payload := fmt.Sprintf("w%d-%d", w, i)
					var err error
					switch rng.IntN(5) {
					case 0:
						_, err = d.FanOutMany(cctx, []FanOutItem{
							{Recipients: rs, Channel: ch, Payload: []byte(payload), IdempotencyKey: payload},
							{Recipients: recipients, Channel: channels[0], Payload: []byte(payload + "x"), IdempotencyKey: payload + "x"},
						})
					case 1:
						_, _, err = d.Enqueue(cctx, Enqueue{Recipient: recipients[rng.IntN(len(recipients))], Channel: ch, Payload: []byte(payload)})
					case 2:
						var pending map[events.InstallationID][]Delivery
						pending, err = d.FetchMany(cctx, rs, ch, 3)
						if err == nil {
							upTo := map[events.InstallationID]uint64{}
							for r, ms := range pending {
								if len(ms) > 0 {
									upTo[r] = ms[len(ms)-1].Seq
								}
							}
							for _, e := range d.AcknowledgeMany(cctx, ch, upTo) {
								err = e
							}
						}
					case 3:
						d.recentEvents(queueKey{recipients[rng.IntN(len(recipients))], ch}, 0)
					case 4:
						_, err = d.Fetch(cctx, recipients[rng.IntN(len(recipients))], ch, 0)
					}
					cancelled := cctx.Err() != nil
					cancel()
					if err != nil && !cancelled && !errors.Is(err, ErrTooManyConflicts) {
						return fmt.Errorf("worker %d call %d: %w", w, i, err)
					}
				}
				return nil
			}()
		}()
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(3 * time.Minute):
		t.Fatal("calls still running after 3 minutes: a deadlock?")
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	for i, d := range ds {
		d.mu.Lock()
		var sum int64
		for k, q := range d.q {
			if q.refs != 0 || len(q.lock) != 0 {
				t.Errorf("deliveries %d: queue %s/%s left with %d refs, locked %v", i, k.recipient, k.channel, q.refs, len(q.lock) != 0)
			}
			sum += q.accounted
		}
		if sum != d.bytes {
			t.Errorf("deliveries %d: %d bytes accounted for the held queues, the total says %d", i, sum, d.bytes)
		}
		if n := d.idle.Len() + d.busy.Len(); n != len(d.q) {
			t.Errorf("deliveries %d: %d queues filed, %d held", i, n, len(d.q))
		}
		if len(d.q) > d.MaxQueues {
			t.Errorf("deliveries %d: %d queues held, cap %d", i, len(d.q), d.MaxQueues)
		}
		d.mu.Unlock()
	}
	for _, r := range recipients {
		for _, ch := range channels {
			a, err := ds[0].Fetch(ctx, r, ch, 0)
			if err != nil {
				t.Fatal(err)
			}
			c, err := ds[1].Fetch(ctx, r, ch, 0)
			if err != nil {
				t.Fatal(err)
			}
			if fmt.Sprint(seqsOf(a)) != fmt.Sprint(seqsOf(c)) {
				t.Errorf("%s/%s: pending %v in one process, %v in the other", r, ch, seqsOf(a), seqsOf(c))
			}
		}
	}
}

func seqsOf(ms []Delivery) []uint64 {
	out := make([]uint64, len(ms))
	for i, m := range ms {
		out[i] = m.Seq
	}
	return out
}

// A queue with a long history loaded cold (message gets, then a consumer)
// while another process keeps enqueuing to it: each load succeeds and
// holds a contiguous prefix of the queue, every message pending with the
// payload enqueued at its sequence.
func TestColdQueueLoadedWhileAnotherProcessAppends(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	writer := NewDeliveries(openLog(t, testConfig(b.srv), b.ring), b.clock)
	const ch = "inbox"
	enqueue := func(i int) error {
		seq, _, err := writer.Enqueue(ctx, Enqueue{Recipient: bob, Channel: ch, Payload: []byte(fmt.Sprint(i)), IdempotencyKey: fmt.Sprint("k", i)})
		if err == nil && seq != uint64(i) {
			err = fmt.Errorf("enqueue %d got sequence %d", i, seq)
		}
		return err
	}
	const before = 3 * queueGets
	for i := 1; i <= before; i++ {
		if err := enqueue(i); err != nil {
			t.Fatal(err)
		}
	}
	stop := make(chan struct{})
	werr := make(chan error, 1)
	go func() {
		for i := before + 1; ; i++ {
			select {
			case <-stop:
				werr <- nil
				return
			default:
			}
			if err := enqueue(i); err != nil {
				werr <- err
				return
			}
		}
	}()
	for range 20 {
		got, err := NewDeliveries(b.log, b.clock).Fetch(ctx, bob, ch, 0)
		if err != nil {
			close(stop)
			t.Fatalf("cold load while another process appends: %v", err)
		}
		if len(got) < before {
			t.Fatalf("cold load: %d messages, want at least %d", len(got), before)
		}
		for i, m := range got {
			if m.Seq != uint64(i+1) || string(m.Payload) != fmt.Sprint(i+1) {
				t.Fatalf("cold load: message %d is sequence %d %q", i, m.Seq, m.Payload)
			}
		}
	}
	close(stop)
	if err := <-werr; err != nil {
		t.Fatal(err)
	}
}
