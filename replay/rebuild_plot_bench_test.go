package replay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// envPlotMaxEvents is BenchmarkRebuildSweep's largest history (default
// 100,000 events; up to 1,000,000: each size is rebuilt -count times, and
// 300,000 events take about 20 s a rebuild on a loaded 2-vCPU machine).
const envPlotMaxEvents = "EPOCHLOG_PLOT_MAX_EVENTS"

// rebuildSweepSizes are the history sizes of BenchmarkRebuildSweep, up to
// $EPOCHLOG_PLOT_MAX_EVENTS.
var rebuildSweepSizes = []int{1_000, 3_000, 10_000, 30_000, 100_000, 300_000, 1_000_000}

// rebuildSweepDefaultMax is BenchmarkRebuildSweep's largest size without
// $EPOCHLOG_PLOT_MAX_EVENTS.
const rebuildSweepDefaultMax = 100_000

// BenchmarkRebuildSweep measures rebuild time against the number of
// events (docs/plots/rebuild.svg): one installation's history (the
// synthetic mix of replay_helpers_test.go) grows through
// rebuildSweepSizes in one stream, and at each size
//
//	rebuild: Rebuild into a fresh SQLCipher file (memory security off,
//	         as the replayer runs; no MLS re-derivation, the states being
//	         placeholders), as BenchmarkRebuildPeakMemory does in a child;
//	read:    eventlog.Log.Read of the same events (fetch, chain and
//	         sequence checks, open), the part of a rebuild before the
//	         read model.
//
// Both report events and events/s. Sizes above $EPOCHLOG_PLOT_MAX_EVENTS
// (default rebuildSweepDefaultMax) are skipped.
func BenchmarkRebuildSweep(b *testing.B) {
	limit := rebuildSweepDefaultMax
	if s := os.Getenv(envPlotMaxEvents); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < rebuildSweepSizes[0] {
			b.Fatalf("$%s=%q: want a number of at least %d", envPlotMaxEvents, s, rebuildSweepSizes[0])
		}
		limit = v
	}
	prev, err := projections.MemorySecurity()
	if err != nil {
		b.Fatal(err)
	}
	if err := projections.SetMemorySecurity(false); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = projections.SetMemorySecurity(prev) })
	ctx := context.Background()
	srv := natstest.Start(b, natstest.Options{})
	l := openLog(b, testConfig(srv), keyring(b, 1, 0x41))
	key := rawDBKey(b, 0x42)
	h := newHistoryGen(instA)
	h.setup(8)
	dir := b.TempDir()
	for _, n := range rebuildSweepSizes {
		if n > limit {
			break
		}
		for h.events < n {
			h.messages(min(20_000, n-h.events), 8)
			if _, err := h.flush(ctx, l); err != nil {
				b.Fatal(err)
			}
		}
		b.Run(fmt.Sprintf("events=%d", n), func(b *testing.B) {
			b.Run("rebuild", func(b *testing.B) {
				var replayed int
				for i := 0; b.Loop(); i++ {
					path := filepath.Join(dir, fmt.Sprintf("rebuild-%d-%d.db", n, i))
					res, err := Rebuild(ctx, l, instA, path, key, &RebuildOptions{Options: Options{SkipMLSCheck: true}})
					if err != nil {
						b.Fatal(err)
					}
					replayed = res.Replayed
					b.StopTimer()
					_ = os.Remove(path)
					b.StartTimer()
				}
				reportEvents(b, replayed)
			})
			b.Run("read", func(b *testing.B) {
				var read int
				for b.Loop() {
					read = 0
					if err := l.Read(ctx, instA, 0, func(eventlog.Record) error { read++; return nil }); err != nil {
						b.Fatal(err)
					}
				}
				reportEvents(b, read)
			})
		})
	}
}

// reportEvents reports n events per op and the rate.
func reportEvents(b *testing.B, n int) {
	b.ReportMetric(float64(n), "events")
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
