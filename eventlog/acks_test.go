package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
)

// Every PubAck form nats-server writes is read as encoding/json reads it:
// the usual ones by hand, the others (an error, a domain, a batch's
// fields, anything unexpected) in full.
func TestParsePubAck(t *testing.T) {
	ok := func(seq uint64, dup bool) func(*testing.T, uint64, bool, error) {
		return func(t *testing.T, gotSeq uint64, gotDup bool, err error) {
			t.Helper()
			if err != nil || gotSeq != seq || gotDup != dup {
				t.Errorf("got seq %d dup %v err %v, want seq %d dup %v", gotSeq, gotDup, err, seq, dup)
			}
		}
	}
	fails := func(want error) func(*testing.T, uint64, bool, error) {
		return func(t *testing.T, _ uint64, _ bool, err error) {
			t.Helper()
			if !errors.Is(err, want) {
				t.Errorf("err %v, want %v", err, want)
			}
		}
	}
	refused := func(code jetstream.ErrorCode) func(*testing.T, uint64, bool, error) {
		return func(t *testing.T, _ uint64, _ bool, err error) {
			t.Helper()
			var ae *jetstream.APIError
			if !errors.As(err, &ae) || ae.ErrorCode != code {
				t.Errorf("err %v, want an APIError with code %d", err, code)
			}
		}
	}
	// The count of a batch commit's PubAck (the others: 0).
	counts := map[string]int{`{"stream":"S","seq":9,"batch":"b1","count":3}`: 3}
	for _, c := range []struct {
		data  string
		fast  bool // read by hand
		check func(*testing.T, uint64, bool, error)
	}{
		{`{"stream":"S","seq":1}`, true, ok(1, false)},
		{`{"stream":"EPOCHLOG","seq":18446744073709551615}`, true, ok(1<<64-1, false)},
		{`{"stream":"S","seq":42,"duplicate":true}`, true, ok(42, true)},
		{`{"stream":"S","domain":"hub","seq":7}`, false, ok(7, false)},
		{`{"stream":"S","seq":9,"batch":"b1","count":3}`, false, ok(9, false)},
		{`{"stream":"S","seq":5,"duplicate":false}`, false, ok(5, false)},
		{`{"stream":"S\"x","seq":3}`, false, ok(3, false)},
		{`{"stream":"S","seq":012}`, false, fails(jetstream.ErrInvalidJSAck)},
		{`{"stream":"S","seq":18446744073709551616}`, false, fails(jetstream.ErrInvalidJSAck)},
		{`{"stream":"","seq":3}`, false, fails(jetstream.ErrInvalidJSAck)},
		{`{"seq":3}`, false, fails(jetstream.ErrInvalidJSAck)},
		{`not json`, false, fails(jetstream.ErrInvalidJSAck)},
		{`{"stream":"S","seq":1`, false, fails(jetstream.ErrInvalidJSAck)},
		{`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"S","seq":0}`, false, refused(codeWrongLastSeq)},
		{`{"error":{"code":503,"err_code":10118,"description":"stream is offline"}}`, false, refused(10118)},
	} {
		t.Run(c.data, func(t *testing.T) {
			if _, _, fast := parsePubAckFast([]byte(c.data)); fast != c.fast {
				t.Errorf("read by hand: %v, want %v", fast, c.fast)
			}
			seq, dup, count, err := parsePubAck(&nats.Msg{Data: []byte(c.data)})
			c.check(t, seq, dup, err)
			if count != counts[c.data] {
				t.Errorf("count %d, want %d", count, counts[c.data])
			}
		})
	}
	// No stream listens on the subject: the server's 503, without a body.
	_, _, _, err := parsePubAck(&nats.Msg{Header: nats.Header{"Status": []string{"503"}}})
	if !errors.Is(err, jetstream.ErrNoStreamResponse) || retryReason(err) == "" {
		t.Errorf("no responders: err %v (retry reason %q), want ErrNoStreamResponse, retried", err, retryReason(err))
	}
}

// What the hand-written reader accepts, encoding/json reads the same.
func FuzzParsePubAckFast(f *testing.F) {
	for _, s := range []string{`{"stream":"S","seq":1}`, `{"stream":"S","seq":42,"duplicate":true}`, `{"stream":"S","seq":0}`, `{"stream":"a b","seq":7}`} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		seq, dup, ok := parsePubAckFast(b)
		if !ok {
			return
		}
		var r struct {
			Error     *jetstream.APIError `json:"error"`
			Stream    string              `json:"stream"`
			Sequence  uint64              `json:"seq"`
			Duplicate bool                `json:"duplicate"`
		}
		if err := json.Unmarshal(b, &r); err != nil {
			t.Fatalf("read by hand as seq %d dup %v, but encoding/json: %v", seq, dup, err)
		}
		if r.Error != nil || r.Stream == "" || r.Sequence != seq || r.Duplicate != dup {
			t.Fatalf("read by hand as seq %d dup %v, encoding/json as %+v", seq, dup, r)
		}
	})
}

// The PubAck of a batch's commit: only an acknowledgement of the whole
// batch, ending where the batch can end, is taken.
func TestParseBatchAck(t *testing.T) {
	for _, c := range []struct {
		data string
		n    int
		ok   bool
	}{
		{`{"stream":"S","seq":9,"batch":"b1","count":3}`, 3, true},
		{`{"stream":"S","seq":3,"batch":"b1","count":3}`, 3, true},
		{`{"stream":"S","seq":9}`, 3, true}, // a server that does not count
		{`{"stream":"S","seq":9,"batch":"b1","count":2}`, 3, false},
		{`{"stream":"S","seq":2,"batch":"b1","count":3}`, 3, false}, // would start at sequence 0
		{`{"stream":"S","seq":1}`, 2, false},
		{`{"stream":"S","seq":0,"count":2}`, 2, false},
		{`{"seq":9,"count":2}`, 2, false},
		{`{"error":{"code":503,"err_code":10118,"description":"stream is offline"}}`, 2, false},
		{`{"stream":"S","seq":"9"}`, 2, false},
	} {
		a, err := parseBatchAck([]byte(c.data), c.n)
		if (err == nil) != c.ok {
			t.Errorf("%s of a batch of %d: %+v, %v; want ok %v", c.data, c.n, a, err, c.ok)
		}
	}
}

// FuzzParseBatchAck: whatever the commit's PubAck holds, parseBatchAck
// never panics, and what it takes names a stream, the batch's count (or
// none) and a last sequence the whole batch fits before, and reads the
// same once encoded again.
func FuzzParseBatchAck(f *testing.F) {
	for _, s := range []string{
		`{"stream":"S","seq":9,"batch":"b1","count":3}`,
		`{"stream":"EPOCHLOG","seq":18446744073709551615,"batch":"x","count":3}`,
		`{"stream":"S","seq":2,"batch":"b1","count":3}`,
		`{"error":{"code":400,"err_code":10071,"description":"wrong last sequence: 5"},"stream":"S","seq":0}`,
	} {
		f.Add([]byte(s), uint8(1)) // a batch of 3
	}
	f.Fuzz(func(t *testing.T, data []byte, n8 uint8) {
		n := int(n8) + 2 // a batch has 2 messages or more
		a, err := parseBatchAck(data, n)
		if err != nil {
			return
		}
		if a.Error != nil || a.Stream == "" || a.Count != 0 && a.Count != n || a.Seq < uint64(n) {
			t.Fatalf("took %+v for a batch of %d", a, n)
		}
		enc, err := json.Marshal(a)
		if err != nil {
			t.Fatal(err)
		}
		back, err := parseBatchAck(enc, n)
		if err != nil || back != a {
			t.Fatalf("re-encoded %s reads as %+v, %v; want %+v", enc, back, err, a)
		}
	})
}

// silentResponder subscribes to subject on srv and answers nothing until
// answer is closed; then it answers every request it took with a PubAck.
func silentResponder(t *testing.T, srv *natstest.Server, subject string) (answer chan struct{}) {
	t.Helper()
	nc := srv.Connect()
	answer = make(chan struct{})
	held := make(chan string, 16)
	if _, err := nc.Subscribe(subject, func(m *nats.Msg) { held <- m.Reply }); err != nil {
		t.Fatal(err)
	}
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	go func() {
		<-answer
		for {
			select {
			case reply := <-held:
				_ = nc.Publish(reply, []byte(`{"stream":"S","seq":1}`))
			case <-time.After(time.Second):
				return
			}
		}
	}()
	return answer
}

// A PubAck that does not come within the deadline settles the publish
// with jetstream.ErrAsyncPublishTimeout and frees its slot; the late
// answer is dropped. A publish waits for a slot at most its stall bound.
// Losing the connection fails what is in flight at once.
func TestAckMuxBounds(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	nc := srv.Connect()
	answer := silentResponder(t, srv, "silent")
	a := newAckMux(2)
	timer := time.NewTimer(time.Hour)
	timer.Stop()

	p1 := new(pendingAck)
	if err := a.publish(nc, &nats.Msg{Subject: "silent"}, time.Second, p1); err != nil {
		t.Fatal(err)
	}
	p2 := new(pendingAck)
	if err := a.publish(nc, &nats.Msg{Subject: "silent"}, time.Second, p2); err != nil {
		t.Fatal(err)
	}
	if err := a.publish(nc, &nats.Msg{Subject: "silent"}, 50*time.Millisecond, new(pendingAck)); !errors.Is(err, jetstream.ErrTooManyStalledMsgs) {
		t.Fatalf("a third publish with two slots: err %v, want ErrTooManyStalledMsgs", err)
	}

	if !a.wait(p1, time.Now().Add(50*time.Millisecond), timer, nil) || !errors.Is(p1.err, jetstream.ErrAsyncPublishTimeout) || retryReason(p1.err) == "" {
		t.Fatalf("unanswered publish: err %v, want ErrAsyncPublishTimeout, retried", p1.err)
	}
	close(answer) // the late PubAck of p1 (and p2's) now come: p1's is dropped
	if !a.wait(p2, time.Now().Add(time.Minute), timer, nil) || p2.err != nil || p2.seq != 1 {
		t.Fatalf("answered publish: seq %d err %v", p2.seq, p2.err)
	}
	if len(a.slots) != 0 || len(a.pending) != 0 {
		t.Fatalf("after both settled: %d slots taken, %d pending", len(a.slots), len(a.pending))
	}

	// The connection lost with a publish in flight.
	silentResponder(t, srv, "silent2")
	p3 := new(pendingAck)
	if err := a.publish(nc, &nats.Msg{Subject: "silent2"}, time.Second, p3); err != nil {
		t.Fatal(err)
	}
	a.failAll(nats.ErrDisconnected)
	if !a.wait(p3, time.Now().Add(time.Minute), timer, nil) || !errors.Is(p3.err, nats.ErrDisconnected) || !Unanswered(p3.err) {
		t.Fatalf("publish in flight at a loss: err %v, want ErrDisconnected", p3.err)
	}

	// Cancelled: the wait says so and the slot is free.
	p4 := new(pendingAck)
	if err := a.publish(nc, &nats.Msg{Subject: "silent2"}, time.Second, p4); err != nil {
		t.Fatal(err)
	}
	cancel := make(chan struct{})
	close(cancel)
	if a.wait(p4, time.Now().Add(time.Minute), timer, cancel) {
		t.Fatal("a cancelled wait reported an answer")
	}
	if len(a.slots) != 0 || len(a.pending) != 0 {
		t.Fatalf("after the loss and the cancel: %d slots taken, %d pending", len(a.slots), len(a.pending))
	}

	// No responders: nothing listens on the subject.
	p5 := new(pendingAck)
	if err := a.publish(nc, &nats.Msg{Subject: "nobody.listens"}, time.Second, p5); err != nil {
		t.Fatal(err)
	}
	if !a.wait(p5, time.Now().Add(time.Minute), timer, nil) || !errors.Is(p5.err, jetstream.ErrNoStreamResponse) {
		t.Fatalf("publish nobody answers: err %v, want ErrNoStreamResponse", p5.err)
	}
}

// A bulk append across a server restart stores every event once: the
// publishes in flight when the connection drops are appended again (their
// message ids keep the ones that had landed from landing twice), and a
// call that fails because the server was away meanwhile is retried whole,
// as AppendBulk's callers do, and reports each event at its stored
// sequence.
func TestAppendBulkAcrossRestart(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	cfg, _, logs := observed(testConfig(srv))
	cfg.MaxInFlight = 64
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	const aggs, perAgg = 40, 250
	var ts []Transition
	for pos := uint64(1); pos <= perAgg; pos++ {
		for a := range aggs {
			agg := group(instA, fmt.Sprintf("restart%02d", a))
			ts = append(ts, Transition{Expected: pos - 1, Events: []events.Event{msg(agg, pos, fmt.Sprintf("g%d-p%d", a, pos))}})
		}
	}
	type outcome struct {
		res [][]Appended
		err error
	}
	done := make(chan outcome, 1)
	go func() {
		var o outcome
		for attempt := 0; attempt < 20; attempt++ {
			if o.res, o.err = l.AppendBulk(context.Background(), ts); o.err == nil || !Unanswered(o.err) {
				break
			}
			for deadline := time.Now().Add(time.Minute); !l.Connected() && time.Now().Before(deadline); {
				time.Sleep(10 * time.Millisecond)
			}
		}
		done <- o
	}()
	waitUntil(t, "a tenth of the events stored", func() bool { return streamMsgs(t, l) >= uint64(len(ts)/10) })
	// The restart must hit the append under way, or it tests nothing.
	select {
	case o := <-done:
		t.Fatalf("AppendBulk returned (%v) before the restart: it tested nothing", o.err)
	default:
	}
	srv.Restart()
	var o outcome
	select {
	case o = <-done:
	case <-time.After(2 * time.Minute):
		t.Fatal("AppendBulk did not return within two minutes of the restart")
	}
	if o.err != nil {
		t.Fatal(o.err)
	}
	// Appended again as soon as the connection dropped (or the restarted
	// server said it had no stream yet), none a RequestTimeout later, when
	// a PubAck lost with the connection would have been given up.
	for _, r := range logs.Find(t, "WARN", "bulk append unanswered") {
		if r.Str("err") == jetstream.ErrAsyncPublishTimeout.Error() {
			t.Fatalf("a publish in flight at the loss waited out its timeout:\n%s", logs.String())
		}
	}
	seqs := map[uint64]int{}
	for i, r := range o.res {
		if len(r) != 1 || r[0].Position != ts[i].Expected+1 {
			t.Fatalf("transition %d: %+v", i, r)
		}
		if j, dup := seqs[r[0].Seq]; dup {
			t.Fatalf("transitions %d and %d both reported at seq %d", j, i, r[0].Seq)
		}
		seqs[r[0].Seq] = i
	}
	if n := streamMsgs(t, l); n != uint64(len(ts)) {
		t.Fatalf("stream holds %d events, want %d (each once)", n, len(ts))
	}
	next := map[string]uint64{}
	for _, r := range readAll(t, l, instA, 0) {
		id := r.Event.Aggregate.ID
		next[id]++
		var a int
		if _, err := fmt.Sscanf(id, "restart%d", &a); err != nil {
			t.Fatal(err)
		}
		if want := int(r.Event.Position-1)*aggs + a; r.Event.Position != next[id] || seqs[r.Seq] != want {
			t.Fatalf("seq %d: %s at position %d reported by transition %d, want position %d of transition %d", r.Seq, id, r.Event.Position, seqs[r.Seq], next[id], want)
		}
	}
}

// Closing the Log under a bulk append ends it with ErrClosed (or the
// connection's closing), and is no loss: nothing is counted as a retry or
// logged as a warning.
func TestAppendBulkClosedUnderIt(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	cfg, m, logs := observed(testConfig(srv))
	l, err := Open(context.Background(), cfg, keyring(t, 1, 0x11))
	if err != nil {
		t.Fatal(err)
	}
	var ts []Transition
	for pos := uint64(1); pos <= 1000; pos++ {
		for a := range 40 {
			agg := group(instA, fmt.Sprintf("closed%02d", a))
			ts = append(ts, Transition{Expected: pos - 1, Events: []events.Event{msg(agg, pos, "x")}})
		}
	}
	done := make(chan error, 1)
	go func() {
		_, err := l.AppendBulk(context.Background(), ts)
		done <- err
	}()
	waitUntil(t, "some events stored", func() bool { return streamMsgs(t, l) >= 1000 })
	l.Close()
	select {
	case err = <-done:
	case <-time.After(time.Minute):
		t.Fatal("AppendBulk did not return within a minute of Close")
	}
	if !errors.Is(err, ErrClosed) && !errors.Is(err, nats.ErrConnectionClosed) {
		t.Fatalf("AppendBulk under Close: %v, want ErrClosed or the connection closed", err)
	}
	if got := telemetrytest.Value(t, m, "epochlog_append_retries_total", "reason", "lost_answer"); got != 0 {
		t.Errorf("Close counted %v retries", got)
	}
	if w := logs.Find(t, "WARN", ""); len(w) != 0 {
		t.Errorf("Close logged warnings:\n%s", logs.String())
	}
}
