package engine

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
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

// TestFetchRefusesClockAhead: a delivery service whose clock is a year
// ahead of the server's left out of Fetch every message with an expiry,
// none of them due; the recipient, acknowledging what it was given,
// acknowledged past them and they were gone. Fetch refuses with
// eventlog.ErrClockAhead when its clock would leave a message out.
func TestFetchRefusesClockAhead(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	ahead := NewDeliveries(b.log, func() time.Time { return time.Now().AddDate(1, 0, 0) })
	due, _, err := ahead.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "inbox", Payload: []byte("due in an hour"), ExpiresAt: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := ahead.Enqueue(ctx, Enqueue{Recipient: bob, Channel: "inbox", Payload: []byte("no expiry")}); err != nil {
		t.Fatal(err)
	}
	if got, err := ahead.Fetch(ctx, bob, "inbox", 0); !errors.Is(err, eventlog.ErrClockAhead) {
		t.Fatalf("fetch with the clock a year ahead: %d deliveries, %v; want ErrClockAhead", len(got), err)
	}
	if got, err := ahead.FetchMany(ctx, []events.InstallationID{bob}, "inbox", 0); !errors.Is(err, eventlog.ErrClockAhead) {
		t.Fatalf("fetch many with the clock a year ahead: %d deliveries, %v; want ErrClockAhead", len(got[bob]), err)
	}
	right := NewDeliveries(b.log, nil)
	got, err := right.Fetch(ctx, bob, "inbox", 0)
	if err != nil || len(got) != 2 || got[0].Seq != due {
		t.Fatalf("fetch with the right clock: %+v, %v; want both, the first %d", got, err, due)
	}
}
