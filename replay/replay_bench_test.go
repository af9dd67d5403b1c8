package replay

import (
	"bufio"
	"context"
	"encoding/hex"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// envBenchEvents sizes BenchmarkRebuildPeakMemory (default 200,000 events;
// docs/benchmarks.md reports a 1,000,000-event run).
const envBenchEvents = "EPOCHLOG_BENCH_EVENTS"

// envBenchEventBytes pads every message of BenchmarkRebuildPeakMemory's
// history to that many bytes (default: a few), for a history of large
// events, where what a rebuild holds is bounded by bytes, not by events.
const envBenchEventBytes = "EPOCHLOG_BENCH_EVENT_BYTES"

// BenchmarkRebuildPeakMemory rebuilds one installation with many events in
// a child process and reports the child's peak RSS (VmHWM) and the peak Go
// heap in use, plus the RSS at each quarter of the replay: flat memory
// means the quarters stay level while the events grow. The history is the
// synthetic mix of replay_helpers_test.go (two thirds messages, one third
// deliveries): the read model does not look inside MLS payloads, so their
// realism does not change the memory profile, and a million real MLS
// messages would take most of an hour to create on two cores.
func BenchmarkRebuildPeakMemory(b *testing.B) {
	n := 200_000
	if s := os.Getenv(envBenchEvents); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1000 {
			b.Fatalf("$%s=%q: want a number of at least 1000", envBenchEvents, s)
		}
		n = v
	}
	srv := natstest.Start(b, natstest.Options{})
	ring, err := killKeyring()
	if err != nil {
		b.Fatal(err)
	}
	l := openLog(b, testConfig(srv), ring)
	h := newHistoryGen(instA)
	if s := os.Getenv(envBenchEventBytes); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 0 || v > 1<<20 {
			b.Fatalf("$%s=%q: want a size of at most 1 MiB", envBenchEventBytes, s)
		}
		h.pad = v
	}
	h.setup(8)
	for h.events < n {
		h.messages(min(20_000, n-h.events), 8)
		if _, err := h.flush(context.Background(), l); err != nil {
			b.Fatal(err)
		}
	}
	dir := b.TempDir()
	keyHex := hex.EncodeToString(fill32(0x41))
	b.ResetTimer()
	for i := range b.N {
		live := filepath.Join(dir, fmt.Sprintf("live-%d.db", i))
		cmd := exec.Command(os.Args[0], "-test.run=^$")
		cmd.Env = append(os.Environ(), envKillChild+"=rebuild-mem", envKillURL+"="+srv.URL(),
			envKillDB+"="+live, envKillKey+"="+keyHex)
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			b.Fatalf("rebuild child: %v", err)
		}
		stats := map[string]float64{}
		sc := bufio.NewScanner(strings.NewReader(string(out)))
		for sc.Scan() {
			k, v, ok := strings.Cut(sc.Text(), "=")
			if f, err := strconv.ParseFloat(v, 64); ok && err == nil {
				stats[k] = f
			}
		}
		b.ReportMetric(float64(h.events), "events")
		b.ReportMetric(stats["peak_rss_mb"], "peak-RSS-MB")
		b.ReportMetric(stats["peak_heap_mb"], "peak-heap-MB")
		for _, q := range []string{"q1", "q2", "q3", "q4"} {
			b.ReportMetric(stats["rss_"+q+"_mb"], "RSS-"+q+"-MB")
		}
		b.ReportMetric(stats["events_per_s"], "events/s")
	}
}

// rebuildMeasuringMemory is the child side of BenchmarkRebuildPeakMemory:
// it rebuilds into live (memory security off, as the replayer runs) and
// prints key=value lines.
func rebuildMeasuringMemory(ctx context.Context, l *eventlog.Log, live string, key projections.Key) error {
	if err := projections.SetMemorySecurity(false); err != nil {
		return err
	}
	last, err := l.LastSeq(ctx, instA)
	if err != nil {
		return err
	}
	var (
		mu       sync.Mutex
		peakHeap uint64
		quarters [4]float64
	)
	stop := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		var ms runtime.MemStats
		for {
			runtime.ReadMemStats(&ms)
			mu.Lock()
			peakHeap = max(peakHeap, ms.HeapInuse)
			mu.Unlock()
			select {
			case <-stop:
				return
			case <-time.After(50 * time.Millisecond):
			}
		}
	}()
	opts := &Options{SkipMLSCheck: true, Progress: func(p Progress) { // placeholder MLS states
		if p.Phase != PhaseReplay || last == 0 {
			return
		}
		q := int(4 * p.Seq / (last + 1))
		if q < 4 && quarters[q] == 0 {
			quarters[q] = procStatusMB("VmRSS")
		}
	}}
	start := time.Now()
	res, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *opts})
	elapsed := time.Since(start)
	close(stop)
	<-done
	if err != nil {
		return err
	}
	quarters[3] = max(quarters[3], procStatusMB("VmRSS"))
	mu.Lock()
	defer mu.Unlock()
	fmt.Printf("peak_rss_mb=%.1f\npeak_heap_mb=%.1f\n", procStatusMB("VmHWM"), float64(peakHeap)/(1<<20))
	for i, q := range quarters {
		fmt.Printf("rss_q%d_mb=%.1f\n", i+1, q)
	}
	fmt.Printf("events_per_s=%.0f\n", float64(res.Replayed)/elapsed.Seconds())
	return nil
}

// procStatusMB reads a kB field of /proc/self/status, in MiB (0 if absent).
func procStatusMB(field string) float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if rest, ok := strings.CutPrefix(line, field+":"); ok {
			f := strings.Fields(rest)
			if len(f) > 0 {
				kb, _ := strconv.ParseFloat(f[0], 64)
				return kb / 1024
			}
		}
	}
	return 0
}
