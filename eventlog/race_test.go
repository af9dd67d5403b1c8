package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Two writers (two connections) race on one aggregate for 100 positions:
// exactly one wins each, the loser gets ErrConflict, and the stream holds
// exactly the winners, in order.
func TestRaceOneAggregate(t *testing.T) {
	l1, srv := newLog(t)
	l2 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	raceOneAggregate(t, l1, l2, 100)
}

// raceOneAggregate has two writers race for each of the first rounds
// positions of one aggregate and checks that exactly one wins each, the
// loser gets ErrConflict, and the stream holds exactly the winners.
func raceOneAggregate(t *testing.T, l1, l2 *Log, rounds int) {
	t.Helper()
	agg := group(instA, "race")
	writers := []*Log{l1, l2}
	var winners []string
	for round := range rounds {
		expected := uint64(round)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		start := make(chan struct{})
		for w := range writers {
			wg.Add(1)
			go func() {
				defer wg.Done()
				<-start
				_, errs[w] = writers[w].Append(context.Background(), expected, msg(agg, expected+1, fmt.Sprintf("w%d-r%d", w, round)))
			}()
		}
		close(start)
		wg.Wait()
		won := -1
		for w, err := range errs {
			switch {
			case err == nil:
				if won >= 0 {
					t.Fatalf("round %d: both writers won", round)
				}
				won = w
			case errors.Is(err, ErrConflict):
			default:
				t.Fatalf("round %d writer %d: %v, want nil or ErrConflict", round, w, err)
			}
		}
		if won < 0 {
			t.Fatalf("round %d: nobody won (%v, %v)", round, errs[0], errs[1])
		}
		winners = append(winners, fmt.Sprintf("w%d-r%d", won, round))
	}
	recs := readAll(t, l1, instA, 0)
	if len(recs) != rounds {
		t.Fatalf("stream holds %d events, want %d", len(recs), rounds)
	}
	for i, r := range recs {
		if r.Event.Position != uint64(i+1) || content(r.Event) != winners[i] {
			t.Fatalf("event %d: position %d content %s, want %d %s", i, r.Event.Position, content(r.Event), i+1, winners[i])
		}
	}
}

func TestAtomicBatch(t *testing.T) {
	l1, srv := newLog(t)
	l2 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	agg := group(instA, "batch")
	ctx := context.Background()

	// A 3-event transition lands together, contiguous.
	res := mustAppend(t, l1, 0, msg(agg, 1, "e1"), msg(agg, 2, "e2"), msg(agg, 3, "e3"))
	for i := 1; i < 3; i++ {
		if res[i].Seq != res[i-1].Seq+1 {
			t.Fatalf("batch sequences %d, %d not contiguous", res[i-1].Seq, res[i].Seq)
		}
	}
	// l1 now caches the tail (position 3); l2 appends position 4 behind its
	// back, so l1's batch goes to the server with a stale expected
	// sequence: the server refuses the whole batch.
	mustAppend(t, l2, 3, msg(agg, 4, "other writer"))
	before := streamMsgs(t, l1)
	_, err := l1.Append(ctx, 3, msg(agg, 4, "x4"), msg(agg, 5, "x5"), msg(agg, 6, "x6"))
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("stale batch: %v, want ErrConflict", err)
	}
	if after := streamMsgs(t, l1); after != before {
		t.Fatalf("failed batch left %d messages", after-before)
	}
	recs := readAll(t, l1, instA, 0)
	if len(recs) != 4 || content(recs[3].Event) != "other writer" {
		t.Fatalf("stream has %d events after the failed batch", len(recs))
	}

	// At the server level: a batch whose first message fails the expected
	// sequence check stores none of its messages, including the ones
	// staged before the commit.
	p, err := l1.prepare(context.Background(), 4, []events.Event{msg(agg, 5, "y5"), msg(agg, 6, "y6"), msg(agg, 7, "y7")})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l1.publishBatch(ctx, p, 1 /* wrong: the tail is further on */); !isRace(err) {
		t.Fatalf("raw batch with a wrong expected sequence: %v, want a wrong-last-sequence error", err)
	}
	if after := streamMsgs(t, l1); after != before {
		t.Fatalf("rejected raw batch changed the stream: %d messages, want %d", after, before)
	}
}

// A stream without atomic publish takes single events and refuses
// multi-event appends with ErrAtomicUnsupported.
func TestAtomicUnsupported(t *testing.T) {
	srv := natstestStart(t)
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, _ := jetstream.New(nc)
	ctx := context.Background()
	cfg := Config{NATSURL: srv.URL(), Stream: "NOATOMIC", SubjectPrefix: "noatomic"}
	full, _ := cfg.withDefaults()
	sc := full.streamConfig()
	sc.AllowAtomicPublish = false
	if _, err := js.CreateStream(ctx, sc); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	// Open turns it on where the server supports it (this one does).
	if !l.AtomicBatches() {
		t.Fatal("Open did not enable atomic publish on a 2.12+ server")
	}
	l.atomic = false // what Open reports against an older server
	agg := group(instA, "na")
	if _, err := l.Append(ctx, 0, msg(agg, 1, "a"), msg(agg, 2, "b")); !errors.Is(err, ErrAtomicUnsupported) {
		t.Fatalf("multi-event append without atomic batches: %v", err)
	}
	mustAppend(t, l, 0, msg(agg, 1, "a"))
}
