package engine

import (
	"context"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// BenchmarkDeliveryColdQueue measures what a process pays the first time
// it serves a queue with a long history: Deliveries reads the queue's
// whole history (one message get per event) and keeps every idempotency
// key in memory (docs/engine.md, Caveats). The queue holds acked messages,
// every one acknowledged (an acknowledgement every 999 enqueues), nothing
// pending; each iteration loads it into a new Deliveries with one Fetch.
// Meanwhile another goroutine fetches from another queue of the same
// Deliveries, already loaded, every millisecond: the longest of those
// fetches, over the load's time, is how much of the load a call on
// another queue can be made to wait (1: all of it). Reported: ms per
// load, events read per second, that share, the heap the loaded
// queue keeps (bytes per acknowledged message), and what the Deliveries
// estimates it takes (MaxQueueBytes). Run with -benchtime=1x
// for the 100k case.
func BenchmarkDeliveryColdQueue(b *testing.B) {
	for _, acked := range []int{10_000, 100_000} {
		b.Run(fmt.Sprintf("acked=%d", acked), func(b *testing.B) {
			be := newBackend(b)
			ctx := context.Background()
			const ch = "inbox"
			r := events.InstallationID("cold")
			agg := events.Aggregate{Installation: r, Type: events.AggDelivery, ID: ch}
			payload := make([]byte, 256) // about an application message's ciphertext
			var pos uint64
			for seq := uint64(1); seq <= uint64(acked); {
				evs := make([]events.Event, 0, eventsPerAppend)
				for len(evs) < eventsPerAppend-1 && seq <= uint64(acked) {
					evs = append(evs, events.Event{Aggregate: agg, Time: be.now, Body: events.DeliveryEnqueued{Recipient: r, Channel: ch, Sequence: seq,
						Payload: payload, IdempotencyKey: fmt.Sprintf("msg-%032x", seq)}})
					seq++
				}
				evs = append(evs, events.Event{Aggregate: agg, Time: be.now, Body: events.DeliveryAcknowledged{Recipient: r, Channel: ch, UpTo: seq - 1}})
				if _, err := be.log.Append(ctx, pos, evs...); err != nil {
					b.Fatalf("append at position %d: %v", pos, err)
				}
				pos += uint64(len(evs))
			}
			const warm = events.InstallationID("warm")
			if _, _, err := be.del.Enqueue(ctx, Enqueue{Recipient: warm, Channel: ch, Payload: payload}); err != nil {
				b.Fatal(err)
			}
			var heap uint64
			var estimate int64
			var waited time.Duration // the longest warm fetch, over all loads
			b.ResetTimer()
			for b.Loop() {
				d := NewDeliveries(be.log, be.clock)
				b.StopTimer()
				if _, err := d.Fetch(ctx, warm, ch, 0); err != nil {
					b.Fatal(err)
				}
				b.StartTimer()
				stop, warmDone := make(chan struct{}), make(chan error, 1)
				go func() {
					for {
						select {
						case <-stop:
							warmDone <- nil
							return
						case <-time.After(time.Millisecond):
						}
						start := time.Now()
						if _, err := d.Fetch(ctx, warm, ch, 0); err != nil {
							warmDone <- err
							return
						}
						waited = max(waited, time.Since(start))
					}
				}()
				ds, err := d.Fetch(ctx, r, ch, 0)
				close(stop)
				if werr := <-warmDone; werr != nil {
					b.Fatalf("fetch from the warm queue: %v", werr)
				}
				if err != nil || len(ds) != 0 {
					b.Fatalf("fetch: %d deliveries, %v; want none pending", len(ds), err)
				}
				b.StopTimer()
				// What the loaded queue keeps: the heap with it, less the
				// heap without it.
				with := heapAfterGC()
				d.mu.Lock()
				estimate = d.bytes
				d.mu.Unlock()
				runtime.KeepAlive(d)
				if without := heapAfterGC(); with > without {
					heap = with - without
				}
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/n, "ms/load")
			b.ReportMetric(float64(pos)*n/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(waited.Seconds()*n/b.Elapsed().Seconds(), "waited-x-load")
			b.ReportMetric(float64(heap)/float64(acked), "heap-B/acked")
			b.ReportMetric(float64(estimate)/float64(acked), "estimate-B/acked")
		})
	}
}

// eventsPerAppend stays below the server's atomic batch limit.
const eventsPerAppend = 1000

func heapAfterGC() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkDeliveriesConcurrentQueues measures enqueues to different
// queues from several goroutines at once (a service's request handlers),
// one Deliveries: each enqueue is an append that waits for its answer, so
// calls that run side by side keep several appends in flight. Reported:
// enqueues per second, and the same over one goroutine's rate measured
// in the same run, as many enqueues one after the other (the gain from
// running calls side by side). An op is one enqueue of each run.
func BenchmarkDeliveriesConcurrentQueues(b *testing.B) {
	be := newBackend(b)
	ctx := context.Background()
	payload := make([]byte, 256)
	// run makes n enqueues from callers goroutines, each to a queue of
	// its own, and returns the enqueues per second.
	run := func(d *Deliveries, name string, callers, n int) float64 {
		var wg sync.WaitGroup
		start := time.Now()
		for c := range callers {
			wg.Go(func() {
				r := events.InstallationID(fmt.Sprintf("%s-%d", name, c))
				for range n / callers {
					if _, _, err := d.Enqueue(ctx, Enqueue{Recipient: r, Channel: "inbox", Payload: payload}); err != nil {
						b.Error(err)
						return
					}
				}
			})
		}
		wg.Wait()
		return float64(n/callers*callers) / time.Since(start).Seconds()
	}
	for _, callers := range []int{8, 32} {
		b.Run(fmt.Sprintf("callers=%d", callers), func(b *testing.B) {
			d := NewDeliveries(be.log, be.clock)
			n := max(b.N, callers)
			b.ResetTimer()
			one := run(d, fmt.Sprintf("one-%d", callers), 1, n)
			many := run(d, fmt.Sprintf("many-%d", callers), callers, n)
			b.ReportMetric(many, "enqueues/s")
			b.ReportMetric(many/one, "x-one-caller")
		})
	}
}
