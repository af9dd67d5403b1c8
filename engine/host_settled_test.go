package engine

// Host.Deliver acknowledges a payload that every try would refuse the same
// way. Until 2026-12-06 only redeliveries, stale handshakes and bytes that
// did not decode were; a payload that decodes but can never be received
// (a copy of a message with a byte flipped, which anyone who can enqueue
// can send; a message of a group the installation does not hold; a late
// message of a retired epoch) stopped the recipient's queue on every
// Deliver, for good, and what was behind it was never received.

import (
	"context"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

func TestDeliverAcknowledgesWhatNoTryCanReceive(t *testing.T) {
	cases := map[string]func(t *testing.T, b *backend, g1 []byte) []byte{
		// anyone who can enqueue: a real message with its last byte flipped
		"flipped-copy": func(t *testing.T, b *backend, g1 []byte) []byte {
			out, err := b.insts[alice].Send(context.Background(), g1, []byte("real"), nil)
			if err != nil {
				t.Fatal(err)
			}
			bad := append([]byte(nil), out.Message...)
			bad[len(bad)-1] ^= 1
			return bad
		},
		// anyone who can enqueue: a real message with its group id changed
		"unknown-group": func(t *testing.T, b *backend, g1 []byte) []byte {
			out, err := b.insts[alice].Send(context.Background(), g1, []byte("real"), nil)
			if err != nil {
				t.Fatal(err)
			}
			bad := append([]byte(nil), out.Message...)
			bad[6] ^= 1 // first byte of the group id
			return bad
		},
		// a legitimate member whose message is late: sealed in an epoch the
		// recipient retired since (MaxPastEpochs commits happened meanwhile)
		"retired-epoch": func(t *testing.T, b *backend, g1 []byte) []byte {
			ctx := context.Background()
			out, err := b.insts[alice].Send(ctx, g1, []byte("late"), nil)
			if err != nil {
				t.Fatal(err)
			}
			for i := 0; i < 5; i++ {
				co, err := b.insts[carol].Update(ctx, g1)
				if err != nil {
					t.Fatal(err)
				}
				b.deliverCommit(co)
			}
			// bob catches up on the commits first
			NewHost(b.log, b.del, nil).Deliver(ctx, mlsChannel, []*Installation{b.insts[bob]}, 0)
			b.drain(alice)
			return out.Message
		},
		// a message sent to bob in the epoch before his removal, queued
		// after the commit that removed him (the sender had not seen it)
		"after-own-removal": func(t *testing.T, b *backend, g1 []byte) []byte {
			ctx := context.Background()
			out, err := b.insts[alice].Send(ctx, g1, []byte("late"), nil)
			if err != nil {
				t.Fatal(err)
			}
			co, err := b.insts[carol].RemoveMembers(ctx, g1, bob)
			if err != nil {
				t.Fatal(err)
			}
			b.deliverCommit(co)
			return out.Message
		},
	}
	for name, mk := range cases {
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			b := newBackend(t)
			g1, g2 := setupGroups(t, b)
			bad := mk(t, b, g1)
			if _, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, bad, time.Time{}, "bad-"+name); err != nil {
				t.Fatal(err)
			}
			b.send(carol, g2, "after it") // another group's message, behind it in bob's queue
			h := NewHost(b.log, b.del, nil)
			r := h.Deliver(ctx, mlsChannel, []*Installation{b.insts[bob]}, 0)[0]
			if r.Err != nil {
				t.Fatalf("%s: bob's deliveries stopped: %v", name, r.Err)
			}
			refused, got := 0, false
			for _, d := range r.Delivered {
				switch {
				case d.Err != nil:
					refused++
					t.Logf("delivery %d refused: %v", d.Delivery.Seq, d.Err)
				case d.Received.Kind == "application" && string(d.Received.Content) == "after it":
					got = true
				}
			}
			last := r.Delivered[len(r.Delivered)-1].Delivery.Seq
			if refused != 1 || !got || r.Acked != last {
				t.Fatalf("%s: %d refused (want 1), the message behind it received: %v, acknowledged up to %d of %d", name, refused, got, r.Acked, last)
			}
		})
	}
}

// A delivery service that broadcasts a commit to the group's new roster
// (RFC 9420 does not forbid it) queues the commit that added an
// installation ahead of its Welcome: the commit is refused (no group yet),
// Host.Deliver stops there, and the Welcome behind it is never processed.
func TestDeliverCommitQueuedAheadOfItsWelcome(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	b.create(carol)
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	co, err := b.insts[alice].AddMembers(ctx, created.GroupID, b.keyPackage(bob))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drain(bob)
	co, err = b.insts[alice].AddMembers(ctx, created.GroupID, b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	// the DS sends the commit to everyone in the new roster, then the Welcome
	if _, err := b.del.FanOut(ctx, []events.InstallationID{bob, carol}, mlsChannel, co.Commit, time.Time{}, "commit"); err != nil {
		t.Fatal(err)
	}
	if _, err := b.del.FanOut(ctx, co.Added, mlsChannel, co.Welcome, time.Time{}, "welcome"); err != nil {
		t.Fatal(err)
	}
	h := NewHost(b.log, b.del, nil)
	for round := 0; round < 3; round++ {
		for _, r := range h.Deliver(ctx, mlsChannel, []*Installation{b.insts[carol]}, 0) {
			for _, d := range r.Delivered {
				t.Logf("round %d: delivery %d: err=%v", round, d.Delivery.Seq, d.Err)
			}
		}
	}
	if _, err := b.insts[carol].Epoch(ctx, created.GroupID); err != nil {
		t.Fatalf("carol never joins: the commit queued ahead of her Welcome stops her queue for good: %v", err)
	}
}
