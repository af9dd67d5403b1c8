package eventlog

import (
	"os"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// A delivery.enqueued event stored by a v1 writer (testdata) is read back
// through Read as version 2, and appending after it works (the tail lookup
// opens and upcasts it too).
func TestUpcastThroughRead(t *testing.T) {
	l, _ := newLog(t)
	env, err := os.ReadFile("testdata/delivery_enqueued_v1.envelope")
	if err != nil {
		t.Fatal(err)
	}
	agg := events.Aggregate{Installation: instA, Type: events.AggDelivery, ID: "inbox"}
	subj, err := l.Subject(agg)
	if err != nil {
		t.Fatal(err)
	}
	seq := rawPublish(t, l, subj, env)

	at := time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)
	next := events.Event{Aggregate: agg, Position: 2, Time: at.Add(time.Minute), Body: events.DeliveryAcknowledged{
		Recipient: "inst-bob", Channel: "inbox", UpTo: 1}}
	mustAppend(t, l, 1, next)

	recs := readAll(t, l, instA, 0)
	if len(recs) != 2 || recs[0].Seq != seq {
		t.Fatalf("read %d records", len(recs))
	}
	got, ok := recs[0].Event.Body.(events.DeliveryEnqueued)
	if !ok {
		t.Fatalf("v1 event read as %T", recs[0].Event.Body)
	}
	if got.SchemaVersion() != 2 || !got.ExpiresAt.Equal(at.Add(time.Hour)) || got.Sequence != 1 ||
		string(got.Payload) != "mls ciphertext" || got.IdempotencyKey != "idem-1" || recs[0].Event.Position != 1 {
		t.Fatalf("upcast body %+v at position %d", got, recs[0].Event.Position)
	}
	if _, ok := recs[1].Event.Body.(events.DeliveryAcknowledged); !ok {
		t.Fatalf("second event %T", recs[1].Event.Body)
	}
}
