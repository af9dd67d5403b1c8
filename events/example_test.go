package events_test

import (
	"bytes"
	"errors"
	"fmt"
	"log"
	"time"

	"github.com/epochlog/epochlog/events"
)

// Seal an event of an installation's delivery queue with its message id,
// seal it again as a retry would, and open the envelope.
func Example() {
	// The root key belongs in a secret store; a ring may hold several.
	root, err := events.GenerateRootKey()
	if err != nil {
		log.Fatal(err)
	}
	ring, err := events.NewKeyring(1, root)
	if err != nil {
		log.Fatal(err)
	}
	ids, err := events.NewMessageIDs(ring)
	if err != nil {
		log.Fatal(err)
	}

	inst := events.InstallationID("inst-alice-01")
	agg := events.Aggregate{Installation: inst, Type: events.AggDelivery, ID: "inbox"}
	// The subject names the aggregate by a pseudonym, never by its id.
	pseudo := ring.Pseudonym("aggregate", string(inst), string(agg.Type), agg.ID)
	where := events.Binding{Stream: "EPOCHLOG", Subject: "el.ev." + pseudo}
	e := events.Event{Aggregate: agg, Position: 1, Body: events.DeliveryEnqueued{
		Recipient: "inst-bob-02", Channel: "inbox", Sequence: 1, Payload: []byte("mls ciphertext")}}

	// The event has no Time: it is sealed as now, and a retry (another
	// now) gets the same message id in a fresh envelope.
	now := time.Date(2026, 11, 23, 2, 30, 0, 0, time.UTC)
	id, env, err := ids.Seal(where, pseudo, e, now)
	if err != nil {
		log.Fatal(err)
	}
	retryID, retryEnv, err := ids.Seal(where, pseudo, e, now.Add(time.Second))
	if err != nil {
		log.Fatal(err)
	}
	pos, _ := events.MessageIDPosition(id)
	fmt.Println("message id position:", pos)
	fmt.Println("retry: same id:", retryID == id, "same envelope:", bytes.Equal(retryEnv, env))

	opened, err := events.Open(ring, inst, where, env)
	if err != nil {
		log.Fatal(err)
	}
	d := opened.Body.(events.DeliveryEnqueued)
	fmt.Println(opened.Body.Kind(), opened.Position, opened.Time.Format(time.RFC3339))
	fmt.Println(d.Recipient, d.Channel, d.Sequence, string(d.Payload))

	// Read at another subject, the envelope does not open.
	_, err = events.Open(ring, inst, events.Binding{Stream: "EPOCHLOG", Subject: "el.ev.other"}, env)
	fmt.Println("opens elsewhere:", err == nil, errors.Is(err, events.ErrMoved))
	// Output:
	// message id position: 1
	// retry: same id: true same envelope: false
	// delivery.enqueued 1 2026-11-23T02:30:00Z
	// inst-bob-02 inbox 1 mls ciphertext
	// opens elsewhere: false true
}
