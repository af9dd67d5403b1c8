package lease

import (
	"context"
	"log/slog"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/internal/syncbuf"
	"github.com/epochlog/epochlog/telemetry"
)

// testTTL is the bucket TTL of the tests: short, so expiry is quick, and
// long enough that a loaded 2-core machine renews in time.
const testTTL = 3 * time.Second

// waitLimit bounds every wait of the tests: generous, since CI shares
// two cores.
const waitLimit = 60 * time.Second

// syncBuffer collects a process's log records; shown when a test fails.
type syncBuffer = syncbuf.Buffer

// proc is one process of a test: its own connection (Log), metrics and
// logs, and the lease bucket opened on them.
type proc struct {
	name    string
	log     *eventlog.Log
	metrics *telemetry.Metrics
	logs    *syncBuffer
	bucket  *Bucket
}

// newProc opens a Log on cfg as process name and the bucket of group
// group with ttl (0: the bucket's own).
func newProc(t *testing.T, cfg eventlog.Config, name, group string, ttl time.Duration) *proc {
	t.Helper()
	p := &proc{name: name, metrics: telemetry.NewMetrics(), logs: &syncBuffer{}}
	cfg.Metrics = p.metrics
	cfg.Logger = slog.New(slog.NewTextHandler(p.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	p.log = logtest.Open(t, cfg, logtest.Keyring(t, 1, 0x11))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("logs of %s:\n%s", name, p.logs.String())
		}
	})
	b, err := Open(context.Background(), p.log, Config{Group: group, TTL: ttl, Holder: "holder " + name})
	if err != nil {
		t.Fatalf("%s: open bucket: %v", name, err)
	}
	p.bucket = b
	return p
}

// startServer starts a server and returns the Log config for it.
func startServer(t *testing.T) eventlog.Config {
	t.Helper()
	return logtest.Config(natstest.Start(t, natstest.Options{}))
}

// eventually polls cond every 20 ms until it holds, failing the test
// after waitLimit with what.
func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(waitLimit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", waitLimit, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// cutOff makes every request of b go unanswered, as when the process
// is cut off from the bucket (or paused), until the returned function is
// called. (Its watch of the bucket goes on.)
func cutOff(b *Bucket) (restore func()) {
	f := func(string, string) error { return context.DeadlineExceeded }
	b.fault.Store(&f)
	return func() { b.fault.Store(nil) }
}

// jumpClock makes b's lease clock run ahead by what jump is given, as a
// system suspend moves CLOCK_BOOTTIME while Go's monotonic clock stands
// still. Call it before b takes a lease.
func jumpClock(b *Bucket) (jump func(time.Duration)) {
	var ahead atomic.Int64
	b.now = func() instant { return leaseClock().add(time.Duration(ahead.Load())) }
	return func(d time.Duration) { ahead.Add(int64(d)) }
}
