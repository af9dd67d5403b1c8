package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// BenchmarkFollowReadyz: a follow process keeping $EPOCHLOG_BENCH_FOLLOW
// read models current (default 200; each an installation with its
// creation event), probed on /readyz. It reports how long follow took to
// have them all ready (ready-s), the time of one probe (ns/op), and, in
// the same run, the time of asking the stream how far each read model is
// behind (Log.Pending, eight at a time, as /readyz did for every read
// model at every probe until 2026-12-07; asking-ms) with the probe's
// share of it (of-asking); and the process's open descriptors and
// resident memory per read model once they were ready (Linux /proc).
func BenchmarkFollowReadyz(b *testing.B) {
	n := 200
	if s := os.Getenv("EPOCHLOG_BENCH_FOLLOW"); s != "" {
		var err error
		if n, err = strconv.Atoi(s); err != nil || n < 1 {
			b.Fatalf("EPOCHLOG_BENCH_FOLLOW=%q: want a positive count", s)
		}
	}
	srv, l := startLog(b)
	dir := b.TempDir()
	ids := make([]events.InstallationID, n)
	var wg sync.WaitGroup
	sem := make(chan struct{}, 8)
	for i := range ids {
		ids[i] = events.InstallationID(fmt.Sprintf("follow-%05d", i))
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			createInstallation(b, l, dir, ids[i])
		})
	}
	wg.Wait()

	start := time.Now()
	f := startFollow(b, srv.URL(), dir, "--db-keys-beside", "--metrics", "127.0.0.1:0", "--log-format", "json")
	addr := f.metricsAddr(b)
	for deadline := start.Add(10 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if code, _ := get(b, addr, "/readyz"); code == http.StatusOK {
			break
		}
		if time.Now().After(deadline) {
			b.Fatalf("%d read models not ready after 10 minutes: %s", n, f.stderr.String())
		}
	}
	ready := time.Since(start)
	// What the followed read models hold (the server's consumers, in
	// this process too, included): descriptors and resident memory.
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		b.Fatal(err)
	}
	rss := residentBytes(b)

	// What the probe did before: the stream asked for each read model,
	// at its checkpoint (its installation's last event: caught up).
	ctx := context.Background()
	cps := make([]uint64, n)
	for i, id := range ids {
		var err error
		if cps[i], err = l.LastSeq(ctx, id); err != nil {
			b.Fatal(err)
		}
	}
	askStart := time.Now()
	for i := range ids {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			if p, err := l.Pending(ctx, ids[i], cps[i]); err != nil || p.Events != 0 {
				b.Errorf("%s: %+v, %v", ids[i], p, err)
			}
		})
	}
	wg.Wait()
	asking := time.Since(askStart)

	b.ResetTimer()
	for b.Loop() {
		if code, body := get(b, addr, "/readyz"); code != http.StatusOK {
			b.Fatalf("/readyz: %d %s", code, body)
		}
	}
	b.StopTimer()
	perProbe := b.Elapsed() / time.Duration(b.N)
	b.ReportMetric(ready.Seconds(), "ready-s")
	b.ReportMetric(float64(asking)/1e6, "asking-ms")
	b.ReportMetric(float64(perProbe)/float64(asking), "of-asking")
	b.ReportMetric(float64(n), "read-models")
	b.ReportMetric(float64(len(fds))/float64(n), "fds/read-model")
	b.ReportMetric(float64(rss)/float64(n)/(1<<20), "rss-MiB/read-model")
	f.stop()
}

// residentBytes is the process's resident memory (VmRSS, Linux).
func residentBytes(b *testing.B) uint64 {
	b.Helper()
	st, err := os.ReadFile("/proc/self/status")
	if err != nil {
		b.Fatal(err)
	}
	for line := range strings.Lines(string(st)) {
		if rest, ok := strings.CutPrefix(line, "VmRSS:"); ok {
			kib, err := strconv.ParseUint(strings.TrimSuffix(strings.TrimSpace(rest), " kB"), 10, 64)
			if err != nil {
				b.Fatalf("VmRSS %q: %v", rest, err)
			}
			return kib << 10
		}
	}
	b.Fatal("no VmRSS in /proc/self/status")
	return 0
}
