package eventlog

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchDataDir, from $EPOCHLOG_BENCH_DATA, is where BenchmarkAppendSync
// puts its stores (default: the test's temporary directory). It must be
// on the disk under test: on a tmpfs an fsync costs nothing.
var benchDataDir = os.Getenv("EPOCHLOG_BENCH_DATA")

// BenchmarkAppendSync measures what durability costs on the embedded
// server as a service runs it (Config.DataDir, file storage, listening on
// loopback), each sub-benchmark on a fresh store:
//
//	sync=always: the default, every write synced before its ack;
//	sync=off:    Config.NoSync, nats-server's own default (a sync every
//	             two minutes).
//
// raw and sealed are BenchmarkAppend's (jetstream PublishAsync of opaque
// payloads the size of a sealed envelope, and Log.AppendBulk of
// single-event transitions, both with at most benchInFlight unacknowledged).
// sealed-batch10 is AppendBulk of transitions of ten events each, i.e.
// pipelined atomic batches, which the server syncs once per batch. append
// and append-batch10 are one caller's Append of one event or of ten (one
// atomic batch) at a time, each waiting for its ack, as an engine appends a
// group's transitions. Each iteration is one event.
func BenchmarkAppendSync(b *testing.B) {
	const size = 256
	for _, sync := range []string{"always", "off"} {
		noSync := sync == "off"
		b.Run(fmt.Sprintf("raw/sync=%s/body=%d", sync, size), func(b *testing.B) { benchRawEmbedded(b, size, noSync) })
		b.Run(fmt.Sprintf("sealed/sync=%s/body=%d", sync, size), func(b *testing.B) { benchSealedEmbedded(b, size, noSync, 1) })
		b.Run(fmt.Sprintf("sealed-batch10/sync=%s/body=%d", sync, size), func(b *testing.B) { benchSealedEmbedded(b, size, noSync, 10) })
		b.Run(fmt.Sprintf("append/sync=%s/body=%d", sync, size), func(b *testing.B) { benchAppendEmbedded(b, size, noSync, 1) })
		b.Run(fmt.Sprintf("append-batch10/sync=%s/body=%d", sync, size), func(b *testing.B) { benchAppendEmbedded(b, size, noSync, 10) })
	}
}

// newEmbeddedBenchEnv is newBenchEnv on a fresh embedded server.
func newEmbeddedBenchEnv(b *testing.B, size int, noSync bool) *benchEnv {
	b.Helper()
	dir := b.TempDir()
	if benchDataDir != "" {
		var err error
		if dir, err = os.MkdirTemp(benchDataDir, "append-sync-"); err != nil {
			b.Fatal(err)
		}
		b.Cleanup(func() { os.RemoveAll(dir) })
	}
	cfg := Config{DataDir: dir, NoSync: noSync, MaxInFlight: benchInFlight}
	l := openLog(b, cfg, keyring(b, 1, 0x11))
	e := &benchEnv{log: l, body: make([]byte, size)}
	if _, err := rand.Read(e.body); err != nil {
		b.Fatal(err)
	}
	for i := range benchAggregates {
		a := group(instA, fmt.Sprintf("%064x", i))
		s, err := l.Subject(a)
		if err != nil {
			b.Fatal(err)
		}
		e.aggs, e.subjs = append(e.aggs, a), append(e.subjs, s)
	}
	env, err := events.Seal(l.keys, l.binding(e.subjs[0]), e.event(0, 1))
	if err != nil {
		b.Fatal(err)
	}
	e.env = len(env)
	return e
}

// transitions returns b.N events as transitions of per events each,
// spread round-robin over the aggregates.
func (e *benchEnv) transitions(n, per int) []Transition {
	ts := make([]Transition, 0, n/per+1)
	next := make([]uint64, benchAggregates) // each aggregate's last position
	for i := 0; i < n; {
		k := len(ts) % benchAggregates
		t := Transition{Expected: next[k]}
		for j := 0; j < per && i < n; j, i = j+1, i+1 {
			next[k]++
			t.Events = append(t.Events, e.event(k+benchAggregates*int(next[k]-1), next[k]))
		}
		ts = append(ts, t)
	}
	return ts
}

// benchSealedEmbedded appends b.N events with AppendBulk, in transitions of
// per events each.
func benchSealedEmbedded(b *testing.B, size int, noSync bool, per int) {
	e := newEmbeddedBenchEnv(b, size, noSync)
	ts := e.transitions(b.N, per)
	b.SetBytes(int64(e.env))
	b.ReportAllocs()
	b.ResetTimer()
	if _, err := e.log.AppendBulk(context.Background(), ts); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	e.checkStored(b, b.N)
}

// benchAppendEmbedded appends b.N events with Append, one call of per
// events at a time.
func benchAppendEmbedded(b *testing.B, size int, noSync bool, per int) {
	e := newEmbeddedBenchEnv(b, size, noSync)
	ts := e.transitions(b.N, per)
	b.SetBytes(int64(e.env))
	b.ReportAllocs()
	b.ResetTimer()
	for _, t := range ts {
		if _, err := e.log.Append(context.Background(), t.Expected, t.Events...); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	e.checkStored(b, b.N)
}

// benchRawEmbedded is benchRaw against the embedded server.
func benchRawEmbedded(b *testing.B, size int, noSync bool) {
	e := newEmbeddedBenchEnv(b, size, noSync)
	payload := make([]byte, e.env)
	if _, err := rand.Read(payload); err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(e.log.ClientURL())
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(benchInFlight))
	if err != nil {
		b.Fatal(err)
	}
	b.SetBytes(int64(e.env))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := js.PublishMsgAsync(&nats.Msg{Subject: e.subjs[i%benchAggregates], Data: payload}, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(5 * time.Minute):
		b.Fatal("raw publishes not acknowledged")
	}
	b.StopTimer()
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	e.checkStored(b, b.N)
}
