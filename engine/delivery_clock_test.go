package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
)

// TestExpireRefusesClockAhead: a delivery service whose clock is a year
// ahead of the server's would record every message with an expiry as
// expired, for good, though none is due. Expire refuses with
// eventlog.ErrClockAhead and records nothing; a service with the right
// clock still fetches the message.
func TestExpireRefusesClockAhead(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	ahead := NewDeliveries(b.log, func() time.Time { return time.Now().AddDate(1, 0, 0) })
	s, _, err := ahead.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "inbox", Payload: []byte("due in an hour"), ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	seqs, err := ahead.Expire(ctx, bob, "inbox")
	if !errors.Is(err, eventlog.ErrClockAhead) || len(seqs) != 0 {
		t.Fatalf("expire with the clock a year ahead: %v, %v; want ErrClockAhead and nothing expired", seqs, err)
	}
	right := NewDeliveries(b.log, nil)
	got, err := right.Fetch(ctx, bob, "inbox", 0)
	if err != nil || len(got) != 1 || got[0].Seq != s {
		t.Fatalf("fetch with the right clock after the refused expiry: %+v, %v; want sequence %d", got, err, s)
	}
}
