package engine

import (
	"context"
	"fmt"
	"runtime"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// BenchmarkDeliveryColdQueue measures what a process pays the first time
// it serves a queue with a long history: Deliveries reads the queue's
// whole history (one message get per event) and keeps every idempotency
// key in memory (docs/engine.md, Caveats). The queue holds acked messages,
// every one acknowledged (an acknowledgement every 999 enqueues), nothing
// pending; each iteration loads it into a new Deliveries with one Fetch.
// Reported: ms per load, events read per second, and the heap the loaded
// queue keeps (bytes per acknowledged message). Run with -benchtime=1x
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
			var heap uint64
			b.ResetTimer()
			for b.Loop() {
				d := NewDeliveries(be.log, be.clock)
				ds, err := d.Fetch(ctx, r, ch, 0)
				if err != nil || len(ds) != 0 {
					b.Fatalf("fetch: %d deliveries, %v; want none pending", len(ds), err)
				}
				b.StopTimer()
				// What the loaded queue keeps: the heap with it, less the
				// heap without it.
				with := heapAfterGC()
				runtime.KeepAlive(d)
				if without := heapAfterGC(); with > without {
					heap = with - without
				}
				b.StartTimer()
			}
			n := float64(b.N)
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/n, "ms/load")
			b.ReportMetric(float64(pos)*n/b.Elapsed().Seconds(), "events/s")
			b.ReportMetric(float64(heap)/float64(acked), "heap-B/acked")
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
