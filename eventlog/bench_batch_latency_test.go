package eventlog

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
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

// alternateBatchLatency runs one and two once per iteration, in turn
// first, and reports their summed times.
func alternateBatchLatency(b *testing.B, one, two func(i int) time.Duration) (n int) {
	var single, batch time.Duration
	for b.Loop() {
		if n%2 == 0 {
			single += one(n)
			batch += two(n)
		} else {
			batch += two(n)
			single += one(n)
		}
		n++
	}
	b.ReportMetric(float64(single.Microseconds())/float64(n), "single-µs")
	b.ReportMetric(float64(batch.Microseconds())/float64(n), "batch-µs")
	b.ReportMetric(float64(batch)/float64(single), "batch-x-single")
	return n
}

func benchBatchLatencySealed(b *testing.B, size int) {
	e := newBenchEnv(b, size, benchMode{})
	ctx := context.Background()
	var posOne, posTwo uint64
	n := alternateBatchLatency(b, func(int) time.Duration {
		t0 := time.Now()
		if _, err := e.log.Append(ctx, posOne, e.event(0, posOne+1)); err != nil {
			b.Fatal(err)
		}
		posOne++
		return time.Since(t0)
	}, func(int) time.Duration {
		t0 := time.Now()
		if _, err := e.log.Append(ctx, posTwo, e.event(1, posTwo+1), e.event(1, posTwo+2)); err != nil {
			b.Fatal(err)
		}
		posTwo += 2
		return time.Since(t0)
	})
	e.checkStored(b, 3*n)
}

func benchBatchLatencyRaw(b *testing.B, size int) {
	e := newBenchEnv(b, size, benchMode{})
	payload, nc, js := e.rawClient(b)
	ctx := context.Background()
	var lastOne, lastTwo uint64 // the subjects' last stream sequences
	msg := func(subj string, id string, expected *uint64) *nats.Msg {
		h := nats.Header{hdrMsgID: []string{id}}
		if expected != nil {
			h[hdrExpectedSeq] = []string{strconv.FormatUint(*expected, 10)}
		}
		return &nats.Msg{Subject: subj, Header: h, Data: payload}
	}
	n := alternateBatchLatency(b, func(i int) time.Duration {
		t0 := time.Now()
		ack, err := js.PublishMsg(ctx, msg(e.subjs[0], fmt.Sprintf("one-%d", i), &lastOne))
		if err != nil {
			b.Fatal(err)
		}
		lastOne = ack.Sequence
		return time.Since(t0)
	}, func(i int) time.Duration {
		t0 := time.Now()
		id := nats.NewInbox()[len(nats.InboxPrefix):]
		first := msg(e.subjs[1], fmt.Sprintf("two-%d-1", i), &lastTwo)
		first.Header[hdrBatchID], first.Header[hdrBatchSeq] = []string{id}, []string{"1"}
		if err := nc.PublishMsg(first); err != nil {
			b.Fatal(err)
		}
		second := msg(e.subjs[1], fmt.Sprintf("two-%d-2", i), nil)
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
		lastTwo = ack.Seq
		return time.Since(t0)
	})
	e.checkStored(b, 3*n)
}
