package natstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// MoveMsg republishes the message at sequence seq of stream (its subject
// and body, as a copied or repaired stream would hold it) at the stream's
// end, deletes the original, and returns the new sequence: the stream of
// an event moved later.
func MoveMsg(tb testing.TB, nc *nats.Conn, stream string, seq uint64) uint64 {
	tb.Helper()
	ctx := context.Background()
	js, err := jetstream.New(nc)
	if err != nil {
		tb.Fatal(err)
	}
	st, err := js.Stream(ctx, stream)
	if err != nil {
		tb.Fatal(err)
	}
	m, err := st.GetMsg(ctx, seq)
	if err != nil {
		tb.Fatalf("get stream seq %d: %v", seq, err)
	}
	ack, err := js.Publish(ctx, m.Subject, m.Data)
	if err != nil {
		tb.Fatalf("republish stream seq %d: %v", seq, err)
	}
	if err := st.DeleteMsg(ctx, seq); err != nil {
		tb.Fatalf("delete stream seq %d: %v", seq, err)
	}
	return ack.Sequence
}
