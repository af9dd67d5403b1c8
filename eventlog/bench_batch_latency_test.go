package eventlog

import (
	"context"
	"crypto/rand"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// BenchmarkAtomicBatchLatency measures what one transition of two events
// costs against one of a single event, one append at a time (the
// engine's pace for one installation: each waits for its answer), on the
// in-process server's single-replica file stream. Each iteration makes
// one single-event and one two-event transition, in alternating order:
//
//   - sealed: Log.Append of one event and of two (an atomic batch);
//   - raw: the same shape with no sealing, on the same server: one
//     publish with a Nats-Msg-Id and the expected last subject sequence,
//     waiting for its ack, and an atomic batch of two such messages (the
//     first sent without a reply, the second with the commit header).
//
// It reports single-µs, batch-µs and batch-x-single (summed times). The
// ratio is the server's: nats-server stages an atomic batch on a
// single-replica file stream in a file store of its own, created, synced
// and removed per batch (jetstream_batching.go, newBatchStore), where a
// replicated stream stages it in memory. docs/benchmarks.md, "Atomic
// batches on a single replica".
func BenchmarkAtomicBatchLatency(b *testing.B) {
	for _, size := range []int{1 << 10, 176 << 10} {
		b.Run(fmt.Sprintf("body=%d/sealed", size), func(b *testing.B) { benchBatchLatencySealed(b, size) })
		b.Run(fmt.Sprintf("body=%d/raw", size), func(b *testing.B) { benchBatchLatencyRaw(b, size) })
	}
}

func reportBatchLatency(b *testing.B, single, batch time.Duration, n int) {
	b.ReportMetric(float64(single.Microseconds())/float64(n), "single-µs")
	b.ReportMetric(float64(batch.Microseconds())/float64(n), "batch-µs")
	b.ReportMetric(float64(batch)/float64(single), "batch-x-single")
}

func benchBatchLatencySealed(b *testing.B, size int) {
	e := newBenchEnv(b, size, benchMode{})
	ctx := context.Background()
	var posOne, posTwo uint64
	var single, batch time.Duration
	n := 0
	one := func() {
		t0 := time.Now()
		if _, err := e.log.Append(ctx, posOne, e.event(0, posOne+1)); err != nil {
			b.Fatal(err)
		}
		single += time.Since(t0)
		posOne++
	}
	two := func() {
		t0 := time.Now()
		if _, err := e.log.Append(ctx, posTwo, e.event(1, posTwo+1), e.event(1, posTwo+2)); err != nil {
			b.Fatal(err)
		}
		batch += time.Since(t0)
		posTwo += 2
	}
	for b.Loop() {
		if n%2 == 0 {
			one()
			two()
		} else {
			two()
			one()
		}
		n++
	}
	reportBatchLatency(b, single, batch, n)
	e.checkStored(b, 3*n)
}

func benchBatchLatencyRaw(b *testing.B, size int) {
	e := newBenchEnv(b, size, benchMode{})
	payload := make([]byte, e.env)
	if _, err := rand.Read(payload); err != nil {
		b.Fatal(err)
	}
	nc, err := nats.Connect(e.log.cfg.NATSURL)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	var lastOne, lastTwo uint64 // the subjects' last stream sequences
	var single, batch time.Duration
	n := 0
	msg := func(subj string, id string, expected *uint64) *nats.Msg {
		h := nats.Header{hdrMsgID: []string{id}}
		if expected != nil {
			h[hdrExpectedSeq] = []string{strconv.FormatUint(*expected, 10)}
		}
		return &nats.Msg{Subject: subj, Header: h, Data: payload}
	}
	one := func() {
		t0 := time.Now()
		ack, err := js.PublishMsg(ctx, msg(e.subjs[0], fmt.Sprintf("one-%d", n), &lastOne))
		if err != nil {
			b.Fatal(err)
		}
		single += time.Since(t0)
		lastOne = ack.Sequence
	}
	two := func() {
		t0 := time.Now()
		id := nats.NewInbox()[len(nats.InboxPrefix):]
		first := msg(e.subjs[1], fmt.Sprintf("two-%d-1", n), &lastTwo)
		first.Header[hdrBatchID], first.Header[hdrBatchSeq] = []string{id}, []string{"1"}
		if err := nc.PublishMsg(first); err != nil {
			b.Fatal(err)
		}
		second := msg(e.subjs[1], fmt.Sprintf("two-%d-2", n), nil)
		second.Header[hdrBatchID], second.Header[hdrBatchSeq], second.Header[hdrBatchCommit] = []string{id}, []string{"2"}, []string{"1"}
		resp, err := nc.RequestMsg(second, 10*time.Second)
		if err != nil {
			b.Fatal(err)
		}
		var ack struct {
			Seq   uint64 `json:"seq"`
			Count int    `json:"count"`
			Error *struct {
				Description string `json:"description"`
			} `json:"error"`
		}
		if err := json.Unmarshal(resp.Data, &ack); err != nil || ack.Error != nil || ack.Count != 2 {
			b.Fatalf("atomic batch: %s (%v)", resp.Data, err)
		}
		batch += time.Since(t0)
		lastTwo = ack.Seq
	}
	for b.Loop() {
		if n%2 == 0 {
			one()
			two()
		} else {
			two()
			one()
		}
		n++
	}
	reportBatchLatency(b, single, batch, n)
	e.checkStored(b, 3*n)
}
