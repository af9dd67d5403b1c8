package replay

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// envSnapshotBenchEvents sizes BenchmarkSnapshotRebuild (default 100,000
// events; docs/benchmarks.md reports a 1,000,000-event run).
const envSnapshotBenchEvents = "EPOCHLOG_SNAPSHOT_BENCH_EVENTS"

// snapshotBenchTail is the tail after the snapshot: the events a rebuild
// from the snapshot replays.
const snapshotBenchTail = 10_000

// BenchmarkSnapshotRebuild compares a rebuild that starts from a snapshot
// and replays a tail of snapshotBenchTail events with a full replay of
// the same history ($EPOCHLOG_SNAPSHOT_BENCH_EVENTS events in all, the
// synthetic mix of replay_helpers_test.go: messages are kept, so the
// snapshot holds them), in the same run, memory security off as the
// replayer runs. It reports the time of each, their ratio
// (snapshot-vs-full: the target is a rebuild bounded by the tail, not the
// history), the sealed snapshot's size per installation, and how long
// making the snapshot (with its check) took.
func BenchmarkSnapshotRebuild(b *testing.B) {
	n := 100_000
	if s := os.Getenv(envSnapshotBenchEvents); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 2*snapshotBenchTail {
			b.Fatalf("$%s=%q: want a number of at least %d", envSnapshotBenchEvents, s, 2*snapshotBenchTail)
		}
		n = v
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
	dir := b.TempDir()
	h := newHistoryGen(instA)
	h.setup(8)
	for h.events < n-snapshotBenchTail {
		h.messages(min(20_000, n-snapshotBenchTail-h.events), 8)
		if _, err := h.flush(ctx, l); err != nil {
			b.Fatal(err)
		}
	}
	opts := Options{SkipMLSCheck: true} // placeholder MLS states
	live := filepath.Join(dir, "live.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: Options{SkipMLSCheck: true, FromStart: true}}); err != nil {
		b.Fatal(err)
	}
	start := time.Now()
	snap, err := Snapshot(ctx, l, instA, live, key, &SnapshotOptions{Options: opts})
	if err != nil {
		b.Fatal(err)
	}
	makeSecs := time.Since(start).Seconds()
	for h.events < n {
		h.messages(min(20_000, n-h.events), 8)
		if _, err := h.flush(ctx, l); err != nil {
			b.Fatal(err)
		}
	}
	rebuild := func(name string, fromStart bool) (time.Duration, int) {
		path := filepath.Join(dir, name)
		o := opts
		o.FromStart = fromStart
		start := time.Now()
		res, err := Rebuild(ctx, l, instA, path, key, &RebuildOptions{Options: o})
		took := time.Since(start)
		if err != nil {
			b.Fatal(err)
		}
		if !fromStart && res.FromSnapshot != snap.Checkpoint {
			b.Fatalf("rebuild started from %d, not the snapshot at %d", res.FromSnapshot, snap.Checkpoint)
		}
		_ = projections.RemoveAside(path)
		return took, res.Replayed
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		full, fullN := rebuild(fmt.Sprintf("full-%d.db", i), true)
		tail, tailN := rebuild(fmt.Sprintf("snap-%d.db", i), false)
		b.ReportMetric(float64(h.events), "events")
		b.ReportMetric(float64(fullN), "full-replayed")
		b.ReportMetric(float64(tailN), "tail-replayed")
		b.ReportMetric(full.Seconds(), "full-s")
		b.ReportMetric(tail.Seconds(), "snapshot+tail-s")
		b.ReportMetric(tail.Seconds()/full.Seconds(), "snapshot-vs-full")
		b.ReportMetric(float64(snap.Size), "snapshot-bytes/installation")
		b.ReportMetric(float64(snap.Rows), "snapshot-rows")
		b.ReportMetric(makeSecs, "make-snapshot-s")
	}
}
