package eventlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
)

// dataKeyRound is how many events each side of a BenchmarkAppendDataKeys
// round appends, after its warm-up.
const dataKeyRound = 20_000

// BenchmarkAppendDataKeys measures append sealed under per-period data
// keys (envelope format 3, the default) against the previous sealing
// under root-derived keys (format 2), in one run, interleaved, and
// reports the ratio (of-rootkeys, the median over rounds of data-key
// events/s over root-key events/s). Each iteration is one round: two
// fresh streams, each warmed up with one event per aggregate
// (benchAggregates of them, so the data-key side creates that many data
// keys: a KV get, a tombstone check and a KV create each; timed apart as
// keycreate-µs/key, net of the root side's warm-up), then dataKeyRound
// single-event transitions appended with AppendBulk on each side, the
// sides' order alternating. Run it with -benchtime Nx for N rounds.
func BenchmarkAppendDataKeys(b *testing.B) {
	for _, size := range []int{256, 1024} {
		b.Run(fmt.Sprintf("body=%d", size), func(b *testing.B) { benchDataKeys(b, size) })
	}
}

func benchDataKeys(b *testing.B, size int) {
	url := benchNATS
	if url == "" {
		url = natstest.Start(b, natstest.Options{}).URL()
	}
	var ratios, dkRates, rootRates, create []float64
	round := 0
	for b.Loop() {
		b.StopTimer()
		root := newRoundEnv(b, url, size, fmt.Sprintf("DK_%d_%d_ROOT", size, round))
		root.log.sealRoot = true
		dk := newRoundEnv(b, url, size, fmt.Sprintf("DK_%d_%d_DATA", size, round))
		for _, e := range []*benchEnv{root, dk} {
			b.Cleanup(func() { _ = e.log.js.DeleteKeyValue(context.Background(), e.log.KeyBucket()) })
		}
		warm := func(e *benchEnv) time.Duration {
			ts := make([]Transition, benchAggregates)
			for i := range ts {
				ts[i] = Transition{Expected: 0, Events: []events.Event{e.event(i, 1)}}
			}
			start := time.Now()
			if _, err := e.log.AppendBulk(context.Background(), ts); err != nil {
				b.Fatal(err)
			}
			return time.Since(start)
		}
		wr, wd := warm(root), warm(dk)
		create = append(create, float64((wd-wr).Nanoseconds())/1e3/benchAggregates)
		b.StartTimer()
		var tr, td time.Duration
		runRoot := func() { tr = root.appendFrom(b, benchAggregates, dataKeyRound) }
		runDK := func() { td = dk.appendFrom(b, benchAggregates, dataKeyRound) }
		if round%2 == 0 {
			runRoot()
			runDK()
		} else {
			runDK()
			runRoot()
		}
		b.StopTimer()
		root.checkStored(b, benchAggregates+dataKeyRound)
		dk.checkStored(b, benchAggregates+dataKeyRound)
		if got := dk.log.dkCache.len(); got != benchAggregates {
			b.Fatalf("data-key side caches %d keys, want %d", got, benchAggregates)
		}
		b.StartTimer()
		ratios = append(ratios, tr.Seconds()/td.Seconds())
		rootRates = append(rootRates, dataKeyRound/tr.Seconds())
		dkRates = append(dkRates, dataKeyRound/td.Seconds())
		round++
	}
	b.ReportMetric(median(rootRates), "rootkeys-ops/s")
	b.ReportMetric(median(dkRates), "datakeys-ops/s")
	b.ReportMetric(median(create), "keycreate-µs/key")
	b.ReportMetric(median(ratios), "of-rootkeys")
}

// singlesFrom are the n single-event transitions after the first done
// events, round-robin over the aggregates.
func (e *benchEnv) singlesFrom(done, n int) []Transition {
	ts := make([]Transition, n)
	for k := range ts {
		i := done + k
		pos := uint64(i/benchAggregates) + 1
		ts[k] = Transition{Expected: pos - 1, Events: []events.Event{e.event(i, pos)}}
	}
	return ts
}

// appendFrom appends n single-event transitions after the first done
// events (round-robin over the aggregates) and returns the time it took.
func (e *benchEnv) appendFrom(b *testing.B, done, n int) time.Duration {
	b.Helper()
	ts := e.singlesFrom(done, n)
	start := time.Now()
	if _, err := e.log.AppendBulk(context.Background(), ts); err != nil {
		b.Fatal(err)
	}
	return time.Since(start)
}
