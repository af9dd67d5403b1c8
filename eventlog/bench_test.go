package eventlog

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// benchAggregates is how many aggregates the appends are spread over
// (round-robin), so that consecutive appends to one aggregate are far apart,
// as in a bulk load of many groups.
const benchAggregates = 1024

var benchInFlight = DefaultMaxInFlight

// benchNATS, from $EPOCHLOG_BENCH_NATS, is the URL of an external server to
// run BenchmarkAppend against instead of one in the test process: one
// started by docs/bench-append-pinned.sh on a core of its own, so that
// the client's work does not compete with the server's for CPU.
var benchNATS = os.Getenv("EPOCHLOG_BENCH_NATS")

// benchStreams counts the streams created on benchNATS.
var benchStreams int

// deleteStream deletes the stream name on the server at url, if it exists.
func deleteStream(b *testing.B, url, name string) {
	b.Helper()
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
		b.Fatalf("delete stream %s on %s: %v", name, url, err)
	}
}

// BenchmarkAppend compares, in one run, on the same server configuration and
// with the same payload size on the wire:
//
//	raw:    jetstream PublishAsync of opaque payloads the size of a sealed
//	        envelope, bounded in flight, waiting for all acks;
//	sealed: Log.AppendBulk of single-event transitions: seal (msgpack +
//	        XChaCha20-Poly1305), deterministic Nats-Msg-Id, expected last
//	        subject sequence, pipelined with the same in-flight bound;
//	rawheaders: raw, plus a Nats-Msg-Id and the expected last subject
//	        sequence (computed: one publisher on a fresh stream gets
//	        sequences in publish order), i.e. sealed minus the sealing.
//
// Each iteration is one event; b.SetBytes is the envelope size.
//
// The -followed variants (diagnostic) run raw and sealed with a consumer
// reading the stream's tail meanwhile, as the engine's followers do in
// production: the server then keeps the written block cached for raw
// publishes too (docs/benchmarks.md explains why that matters).
func BenchmarkAppend(b *testing.B) {
	for _, size := range []int{256, 1024} {
		b.Run(fmt.Sprintf("raw/body=%d", size), func(b *testing.B) { benchRaw(b, size, benchMode{}) })
		b.Run(fmt.Sprintf("sealed/body=%d", size), func(b *testing.B) { benchSealed(b, size, benchMode{}) })
		// Diagnostic: raw payloads with the two headers sealed appends
		// carry, to separate the server's cost of deduplication and the
		// per-subject check from the client's cost of sealing.
		b.Run(fmt.Sprintf("rawheaders/body=%d", size), func(b *testing.B) { benchRaw(b, size, benchMode{headers: true}) })
		b.Run(fmt.Sprintf("raw-followed/body=%d", size), func(b *testing.B) { benchRaw(b, size, benchMode{followed: true}) })
		b.Run(fmt.Sprintf("sealed-followed/body=%d", size), func(b *testing.B) { benchSealed(b, size, benchMode{followed: true}) })
	}
}

// BenchmarkAppendR3 is BenchmarkAppend's raw, rawheaders and sealed on a
// three-node cluster in this process (an R3 stream, as in staging): every
// publish is replicated through the stream's Raft group before its ack.
// All three servers and the client share this machine's cores.
func BenchmarkAppendR3(b *testing.B) {
	for _, size := range []int{256, 1024} {
		b.Run(fmt.Sprintf("raw/body=%d", size), func(b *testing.B) { benchRaw(b, size, benchMode{r3: true}) })
		b.Run(fmt.Sprintf("sealed/body=%d", size), func(b *testing.B) { benchSealed(b, size, benchMode{r3: true}) })
		b.Run(fmt.Sprintf("rawheaders/body=%d", size), func(b *testing.B) { benchRaw(b, size, benchMode{headers: true, r3: true}) })
	}
}

// benchMode varies the append benchmarks: headers adds the engine's two
// headers to raw publishes, followed runs a tail consumer meanwhile, r3
// runs on a three-node cluster, warm appends each aggregate's first
// event before the timing (on the sealed side that creates the
// aggregate's data key, a cost per group and day, not per event; as
// BenchmarkAppendOfRaw does).
type benchMode struct{ headers, followed, r3, warm bool }

// followTail starts a consumer that reads the whole stream as it grows and
// returns a function that waits until it has read n messages.
func (e *benchEnv) followTail(b *testing.B) (waitRead func(n int)) {
	b.Helper()
	nc, err := nats.Connect(e.log.cfg.NATSURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	cons, err := js.OrderedConsumer(context.Background(), e.log.cfg.Stream, jetstream.OrderedConsumerConfig{})
	if err != nil {
		b.Fatal(err)
	}
	var read atomic.Int64
	cc, err := cons.Consume(func(jetstream.Msg) { read.Add(1) })
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(cc.Stop)
	return func(n int) {
		for deadline := time.Now().Add(time.Minute); read.Load() < int64(n); time.Sleep(time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatalf("follower read %d of %d messages", read.Load(), n)
			}
		}
	}
}

type benchEnv struct {
	log   *Log
	aggs  []events.Aggregate
	subjs []string
	body  []byte
	env   int // sealed envelope size for this body
}

func newBenchEnv(b *testing.B, size int, m benchMode) *benchEnv {
	b.Helper()
	cfg := Config{MaxInFlight: benchInFlight}
	switch {
	case m.r3:
		cfg.NATSURL, cfg.Replicas = natstest.StartCluster(b, 3).URL(), 3
	case benchNATS != "":
		// A fresh stream on the external server for every invocation, as
		// the in-process server gives, under a name of its own: a stream
		// deleted and at once created again under the same name sometimes
		// came back holding the old one's last message (nats-server
		// 2.15.2).
		benchStreams++
		cfg.NATSURL = benchNATS
		cfg.Stream = fmt.Sprintf("EPOCHLOG_BENCH_%d_%d", os.Getpid(), benchStreams)
		cfg.SubjectPrefix = strings.ToLower(cfg.Stream)
		b.Cleanup(func() { deleteStream(b, benchNATS, cfg.Stream) })
	default:
		cfg.NATSURL = natstest.Start(b, natstest.Options{}).URL()
	}
	l := openLog(b, cfg, keyring(b, 1, 0x11))
	e := &benchEnv{log: l, body: make([]byte, size)}
	if _, err := rand.Read(e.body); err != nil {
		b.Fatal(err)
	}
	for i := range benchAggregates {
		a := group(instA, fmt.Sprintf("%064x", i)) // a group id is 32 bytes of hex
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

// event is the i-th benchmark event: aggregate i%K at its next position.
func (e *benchEnv) event(i int, pos uint64) events.Event {
	return events.Event{
		Aggregate: e.aggs[i%benchAggregates],
		Position:  pos,
		Time:      baseTime.Add(time.Duration(i) * time.Millisecond),
		Body: events.ApplicationMessageSent{
			GroupID:   []byte(e.aggs[i%benchAggregates].ID),
			Epoch:     7,
			Sender:    instA,
			MessageID: []byte(fmt.Sprintf("%016x", i)),
			Content:   events.NewSecret(e.body),
		},
	}
}

func (e *benchEnv) checkStored(b *testing.B, want int) {
	b.Helper()
	if n := streamMsgs(b, e.log); n != uint64(want) {
		b.Fatalf("stream holds %d messages, want %d", n, want)
	}
}

func benchSealed(b *testing.B, size int, m benchMode) {
	e := newBenchEnv(b, size, m)
	waitRead := func(int) {}
	if m.followed {
		waitRead = e.followTail(b)
	}
	start := 0
	if m.warm {
		e.appendFrom(b, 0, benchAggregates)
		start = benchAggregates
	}
	ts := e.singlesFrom(start, b.N)
	b.SetBytes(int64(e.env))
	b.ReportAllocs()
	b.ResetTimer()
	if _, err := e.log.AppendBulk(context.Background(), ts); err != nil {
		b.Fatal(err)
	}
	b.StopTimer()
	waitRead(start + b.N)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	e.checkStored(b, start+b.N)
}

func benchRaw(b *testing.B, size int, m benchMode) {
	e := newBenchEnv(b, size, m)
	waitRead := func(int) {}
	if m.followed {
		waitRead = e.followTail(b)
	}
	payload, _, js := e.rawClient(b, jetstream.WithPublishAsyncMaxPending(benchInFlight))
	start := 0
	if m.warm {
		start = benchAggregates
	}
	var ids []string
	if m.headers {
		ids = make([]string, start+b.N)
		for i := range ids {
			ids[i] = fmt.Sprintf("%d-%026x", i/benchAggregates+1, i)
		}
	}
	publish := func(i int) {
		pm := &nats.Msg{Subject: e.subjs[i%benchAggregates], Data: payload}
		if m.headers {
			var last uint64
			if i >= benchAggregates {
				last = uint64(i - benchAggregates + 1)
			}
			pm.Header = nats.Header{hdrMsgID: []string{ids[i]}, hdrExpectedSeq: []string{strconv.FormatUint(last, 10)}}
		}
		if _, err := js.PublishMsgAsync(pm, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	complete := func() {
		select {
		case <-js.PublishAsyncComplete():
		case <-time.After(time.Minute):
			b.Fatal("raw publishes not acknowledged")
		}
	}
	for i := range start {
		publish(i)
	}
	complete()
	b.SetBytes(int64(e.env))
	b.ReportAllocs()
	b.ResetTimer()
	for i := start; i < start+b.N; i++ {
		publish(i)
	}
	complete()
	b.StopTimer()
	waitRead(start + b.N)
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
	e.checkStored(b, start+b.N)
}

func init() {
	if v := os.Getenv("EPOCHLOG_BENCH_INFLIGHT"); v != "" {
		benchInFlight, _ = strconv.Atoi(v)
	}
}

// rawClient returns a random payload the size of e's sealed envelopes and
// a connection of its own to e's server (closed with b), for the raw side
// of a benchmark: publishes that skip the Log.
func (e *benchEnv) rawClient(b *testing.B, opts ...jetstream.JetStreamOpt) ([]byte, *nats.Conn, jetstream.JetStream) {
	b.Helper()
	payload := make([]byte, e.env)
	if _, err := rand.Read(payload); err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(e.log.cfg.NATSURL)
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(nc.Close)
	js, err := jetstream.New(nc, opts...)
	if err != nil {
		b.Fatal(err)
	}
	return payload, nc, js
}
