package eventlog

import (
	"context"
	"crypto/rand"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
)

// appendRound is how many events each side of a BenchmarkAppendOfRaw
// round publishes.
const appendRound = 50_000

// BenchmarkAppendOfRaw measures sealed append against its raw baseline in
// one run, interleaved, and reports the ratio itself (of-rawheaders). Each
// iteration is one round on one server: appendRound events published raw
// with the two headers every sealed append carries (rawheaders: a
// Nats-Msg-Id and the expected last subject sequence, computed, no
// sealing), and appendRound events appended sealed (Log.AppendBulk of
// single-event transitions: seal, message id, expected sequence from the
// aggregate's previous ack, every ack checked), each side on a stream of
// its own created for the round and warmed, untimed, with each
// aggregate's first event (on the sealed side that creates the
// aggregate's data key, once per group and day: until 2026-12-05 the
// timed events included the creation of benchAggregates data keys), the
// sides' order alternating from round to round; both with at most
// benchInFlight publishes unacknowledged,
// events spread round-robin over benchAggregates aggregates, raw payloads
// the size of a sealed envelope. of-rawheaders is the median over rounds
// of (sealed events/s) / (rawheaders events/s) of the round; the rates,
// and the CPU time the process (client and in-process server) spent per
// event on each side, are medians too. Run it with -benchtime Nx for N
// rounds.
//
// The server is in the test process, sharing the cores with the client,
// or the one at $EPOCHLOG_BENCH_NATS (docs/bench-append-pinned.sh).
func BenchmarkAppendOfRaw(b *testing.B) {
	for _, size := range []int{256, 1024} {
		b.Run(fmt.Sprintf("body=%d", size), func(b *testing.B) { benchOfRaw(b, size) })
	}
}

func benchOfRaw(b *testing.B, size int) {
	url := benchNATS
	if url == "" {
		url = natstest.Start(b, natstest.Options{}).URL()
	}
	var ratios, rawRates, sealedRates, rawCPU, sealedCPU []float64
	round := 0
	for b.Loop() {
		b.StopTimer()
		raw := newRoundEnv(b, url, size, fmt.Sprintf("RATIO_%d_%d_RAW", size, round))
		sealed := newRoundEnv(b, url, size, fmt.Sprintf("RATIO_%d_%d_SEALED", size, round))
		// Warm-up, untimed: each aggregate's first event, which on the
		// sealed side also creates the aggregate's data key (a key-bucket
		// get, a tombstone check and a create: BenchmarkAppendDataKeys'
		// keycreate-µs/key), a cost per group and day, not per event.
		raw.publishRawHeadersFrom(b, 0, benchAggregates)
		sealed.appendFrom(b, 0, benchAggregates)
		b.StartTimer()
		var tr, ts, cr, cs time.Duration
		runRaw := func() {
			c := processCPU()
			tr = raw.publishRawHeadersFrom(b, benchAggregates, appendRound)
			cr = processCPU() - c
		}
		runSealed := func() {
			c := processCPU()
			ts = sealed.appendFrom(b, benchAggregates, appendRound)
			cs = processCPU() - c
		}
		if round%2 == 0 {
			runRaw()
			runSealed()
		} else {
			runSealed()
			runRaw()
		}
		b.StopTimer()
		raw.checkStored(b, benchAggregates+appendRound)
		sealed.checkStored(b, benchAggregates+appendRound)
		b.StartTimer()
		ratios = append(ratios, tr.Seconds()/ts.Seconds())
		rawRates = append(rawRates, appendRound/tr.Seconds())
		sealedRates = append(sealedRates, appendRound/ts.Seconds())
		rawCPU = append(rawCPU, float64(cr.Nanoseconds())/1e3/appendRound)
		sealedCPU = append(sealedCPU, float64(cs.Nanoseconds())/1e3/appendRound)
		round++
	}
	b.ReportMetric(median(rawRates), "rawheaders-ops/s")
	b.ReportMetric(median(sealedRates), "sealed-ops/s")
	b.ReportMetric(median(rawCPU), "rawheaders-cpu-µs/op")
	b.ReportMetric(median(sealedCPU), "sealed-cpu-µs/op")
	b.ReportMetric(median(ratios), "of-rawheaders")
}

// processCPU is the CPU time this process (client and in-process server)
// has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func median(xs []float64) float64 {
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

// newRoundEnv is a benchEnv on a fresh stream of its own, named stream,
// on the server at url (deleted when b ends).
func newRoundEnv(b *testing.B, url string, size int, stream string) *benchEnv {
	b.Helper()
	cfg := Config{NATSURL: url, MaxInFlight: benchInFlight, Stream: stream, SubjectPrefix: strings.ToLower(stream)}
	l := openLog(b, cfg, keyring(b, 1, 0x11))
	b.Cleanup(func() { deleteStream(b, url, stream) })
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

// publishRawHeadersFrom publishes n payloads of the envelope's size after
// the first done ones, with a message id and the expected last subject
// sequence (one publisher on a fresh stream: sequences are known in
// advance), pipelined as AppendBulk's, and returns the time it took (ids
// built before).
func (e *benchEnv) publishRawHeadersFrom(b *testing.B, done, n int) time.Duration {
	b.Helper()
	payload := make([]byte, e.env)
	if _, err := rand.Read(payload); err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(e.log.cfg.NATSURL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(benchInFlight))
	if err != nil {
		b.Fatal(err)
	}
	ids := make([]string, n)
	for k := range ids {
		i := done + k
		ids[k] = fmt.Sprintf("%d-%026x", i/benchAggregates+1, i)
	}
	start := time.Now()
	for k := range n {
		i := done + k
		var last uint64
		if i >= benchAggregates {
			last = uint64(i - benchAggregates + 1)
		}
		pm := &nats.Msg{Subject: e.subjs[i%benchAggregates], Data: payload,
			Header: nats.Header{hdrMsgID: []string{ids[k]}, hdrExpectedSeq: []string{strconv.FormatUint(last, 10)}}}
		if _, err := js.PublishMsgAsync(pm, jetstream.WithStallWait(time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("raw publishes not acknowledged")
	}
	return time.Since(start)
}

// batchEvents is the size of BenchmarkAppendBatchHeaders' transitions.
const batchEvents = 10

// batchInFlight bounds the atomic batches in flight (nats-server allows
// 50 per stream).
const batchInFlight = 32

// BenchmarkAppendBatchHeaders measures what the headers cost per event of
// a multi-event transition (one atomic batch): raw atomic batches of
// batchEvents messages with a Nats-Msg-Id on every message (ids=each, as
// Append sends them) or on the first only (ids=first, what an id per
// transition would send), the expected last subject sequence on the first
// either way, at most batchInFlight batches in flight, spread over
// benchAggregates aggregates; sealed is AppendBulk of transitions of
// batchEvents events. Each iteration is one event.
func BenchmarkAppendBatchHeaders(b *testing.B) {
	const size = 256
	b.Run("raw/ids=each", func(b *testing.B) { benchRawBatches(b, size, true) })
	b.Run("raw/ids=first", func(b *testing.B) { benchRawBatches(b, size, false) })
	b.Run("sealed", func(b *testing.B) {
		e := newBenchEnv(b, size, benchMode{})
		n := (b.N + batchEvents - 1) / batchEvents
		ts := make([]Transition, n)
		for i := range ts {
			a := i % benchAggregates
			pos := uint64(i/benchAggregates) * batchEvents
			evs := make([]events.Event, batchEvents)
			for j := range evs {
				evs[j] = e.event(a, pos+uint64(j)+1)
			}
			ts[i] = Transition{Expected: pos, Events: evs}
		}
		b.ResetTimer()
		if _, err := e.log.AppendBulk(context.Background(), ts); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		b.ReportMetric(float64(n*batchEvents)/b.Elapsed().Seconds(), "ops/s")
	})
}

func benchRawBatches(b *testing.B, size int, idsOnEach bool) {
	e := newBenchEnv(b, size, benchMode{})
	payload, nc, js := e.rawClient(b, jetstream.WithPublishAsyncMaxPending(batchInFlight))
	n := (b.N + batchEvents - 1) / batchEvents
	b.ResetTimer()
	for i := range n {
		a := i % benchAggregates
		var last uint64 // one publisher on a fresh stream: batch i is stored at i*batchEvents+1...
		if i >= benchAggregates {
			last = uint64((i - benchAggregates + 1) * batchEvents)
		}
		id := nats.NewInbox()[len(nats.InboxPrefix):]
		for j := range batchEvents {
			h := nats.Header{hdrBatchID: []string{id}, hdrBatchSeq: []string{strconv.Itoa(j + 1)}}
			if j == 0 || idsOnEach {
				h[hdrMsgID] = []string{fmt.Sprintf("%d-%d-%026x", i/benchAggregates*batchEvents+j+1, a, i)}
			}
			if j == 0 {
				h[hdrExpectedSeq] = []string{strconv.FormatUint(last, 10)}
			}
			m := &nats.Msg{Subject: e.subjs[a], Header: h, Data: payload}
			if j < batchEvents-1 {
				if err := nc.PublishMsg(m); err != nil {
					b.Fatal(err)
				}
				continue
			}
			h[hdrBatchCommit] = []string{"1"}
			if _, err := js.PublishMsgAsync(m, jetstream.WithStallWait(time.Minute)); err != nil {
				b.Fatal(err)
			}
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(time.Minute):
		b.Fatal("raw batches not acknowledged")
	}
	b.StopTimer()
	b.ReportMetric(float64(n*batchEvents)/b.Elapsed().Seconds(), "ops/s")
	e.checkStored(b, n*batchEvents)
}
