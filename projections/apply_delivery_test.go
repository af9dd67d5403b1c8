package projections

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// The read model's delivery rules are events.QueueState's: over a random
// history it refuses exactly the events QueueState refuses, plus a second
// expiry of one message (the rule QueueState leaves to the stores that
// keep each message's state), and what it accepts moves its counters as
// QueueState moves them.
func TestDeliveryRulesAreQueueState(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "q.db"), newKey(t), nil)
	s := newStream("inst-a")
	s.installation()
	applyAll(t, db, s.recs)
	agg := events.Aggregate{Installation: "inst-a", Type: events.AggDelivery, ID: "c"}
	rng := rand.New(rand.NewPCG(7, 9))
	var st events.QueueState
	expired := map[uint64]bool{}
	var pos uint64
	seq := s.seq
	accepted, refused, twice := 0, 0, 0
	for i := range 400 {
		var b events.Body
		switch rng.IntN(3) {
		case 0:
			off := []uint64{0, 1, 1, 1, 2}[rng.IntN(5)] // a repeat, the next one, a gap
			b = events.DeliveryEnqueued{Recipient: "inst-a", Channel: "c", Sequence: st.LastSeq + off, Payload: []byte("p"), IdempotencyKey: fmt.Sprint("k", i)}
		case 1:
			b = events.DeliveryAcknowledged{Recipient: "inst-a", Channel: "c", UpTo: uint64(rng.IntN(int(st.LastSeq) + 3))}
		default:
			b = events.DeliveryExpired{Recipient: "inst-a", Channel: "c", Sequence: uint64(rng.IntN(int(st.LastSeq) + 3))}
		}
		next, ferr := st.Next(b)
		wantOK := ferr == nil
		if e, ok := b.(events.DeliveryExpired); ok && wantOK && expired[e.Sequence] {
			wantOK = false
			twice++
		}
		rec := Record{Seq: seq + 1, Event: events.Event{Aggregate: agg, Position: pos + 1, Time: s.t0.Add(time.Duration(i) * time.Second), Body: b}}
		err := db.Apply(ctx, []Record{rec})
		if (err == nil) != wantOK {
			t.Fatalf("event %d %+v on %+v: read model says %v, QueueState says %v", i, b, st, err, ferr)
		}
		if err != nil {
			if !errors.Is(err, ErrCannotApply) || !errors.Is(err, events.ErrQueueRule) {
				t.Fatalf("event %d refused with %v, want ErrCannotApply and events.ErrQueueRule", i, err)
			}
			refused++
			continue
		}
		accepted++
		seq, pos, st = seq+1, pos+1, next
		if e, ok := b.(events.DeliveryExpired); ok {
			expired[e.Sequence] = true
		}
		var got events.QueueState
		if err := db.sql.QueryRow(`SELECT last_seq, acked_seq FROM delivery_queues WHERE recipient = 'inst-a' AND channel = 'c'`).Scan(&got.LastSeq, &got.AckedUpTo); err != nil {
			t.Fatal(err)
		}
		if got != st {
			t.Fatalf("event %d: read model's counters %+v, QueueState's %+v", i, got, st)
		}
	}
	if accepted < 100 || refused < 100 || len(expired) < 10 || twice == 0 {
		t.Fatalf("the history tested little: %d accepted, %d refused, %d expired, %d expired twice", accepted, refused, len(expired), twice)
	}
}
