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
	"errors"
	"fmt"
	"slices"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
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
				case d.Received.Kind == "application" && string(d.Received.Content.Bytes()) == "after it":
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

// A payload naming one of the recipient's groups and a later epoch (a
// real message with its cleartext epoch changed: a PrivateMessage's epoch
// is authenticated only by decryption) is mls.ErrWrongEpoch, and
// acknowledged: a queue stopped at it would stay stopped, and anyone who
// can enqueue can send one. Until later on 2026-12-06 it stopped the
// queue for good.
func TestDeliverAcknowledgesAMessageOfAFutureEpoch(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, g2 := setupGroups(t, b)
	out, err := b.insts[alice].Send(ctx, g1, []byte("real"), nil)
	if err != nil {
		t.Fatal(err)
	}
	var m mls.MLSMessage
	if err := m.Unmarshal(out.Message); err != nil {
		t.Fatal(err)
	}
	m.PrivateMessage.Epoch++
	bad, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, bad, time.Time{}, "bad"); err != nil {
		t.Fatal(err)
	}
	b.send(carol, g2, "after it")
	if got, _ := deliveredWithin(t, NewHost(b.log, b.del, nil), b.insts[bob], "after it"); !got {
		t.Fatalf("one unauthenticated payload (a message with its cleartext epoch set one ahead) stops bob's queue for good: the other group's message behind it is never received")
	}
}

// A Welcome to a group the recipient is in, leading elsewhere (here
// forged: mallory made a group with bob's group id and one of his key
// packages; both are in clear), is acknowledged, at the epoch bob holds
// and one ahead. For a few hours on 2026-12-06 it was a *ForkError, which
// stops the queue.
func TestDeliverAcknowledgesAForgedWelcome(t *testing.T) {
	// ahead=0: the forged Welcome is at bob's epoch (ErrStaleCommit);
	// ahead=1: one epoch past bob's (mls.ErrWrongEpoch "commits are
	// missing").
	for _, ahead := range []uint64{0, 1} {
		t.Run(map[uint64]string{0: "same-epoch", 1: "later-epoch"}[ahead], func(t *testing.T) {
			forgedWelcome(t, ahead)
		})
	}
}

func forgedWelcome(t *testing.T, ahead uint64) {
	ctx := context.Background()
	b := newBackend(t)
	const mallory events.InstallationID = "mallory-phone"
	b.create(alice)
	b.create(bob)
	b.create(mallory)
	g, welcome := b.invite(alice, b.keyPackage(bob))
	if _, err := b.insts[bob].Receive(ctx, welcome); err != nil {
		t.Fatal(err)
	}
	ep, err := b.insts[bob].Epoch(ctx, g)
	if err != nil {
		t.Fatal(err)
	}

	// mallory: a group of her own under bob's group id, at the same epoch,
	// with one of bob's key packages from the directory
	if _, err := b.insts[mallory].CreateGroup(ctx, g); err != nil {
		t.Fatal(err)
	}
	for i := uint64(0); i < ahead; i++ {
		if _, err := b.insts[mallory].Update(ctx, g); err != nil {
			t.Fatal(err)
		}
	}
	co, err := b.insts[mallory].AddMembers(ctx, g, b.keyPackage(bob))
	if err != nil {
		t.Fatal(err)
	}
	if co.Epoch != ep+ahead {
		t.Fatalf("setup: mallory's group at epoch %d, bob's at %d", co.Epoch, ep)
	}
	if _, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, co.Welcome, time.Time{}, "forged-welcome"); err != nil {
		t.Fatal(err)
	}
	b.send(alice, g, "a real message behind it")

	if got, _ := deliveredWithin(t, NewHost(b.log, b.del, nil), b.insts[bob], "a real message behind it"); !got {
		t.Fatalf("one forged Welcome (not Settled) stops bob's queue for good: the real message behind it is never received")
	}
}

// A commit the recipient refuses for what it is (here its CheckMember
// refuses the member it adds) is acknowledged; the group goes on without
// the recipient, and its next message (of an epoch not reached) does not
// stop the queue either: the other group's messages behind it arrive.
func TestDeliverGoesOnAfterARefusedCommit(t *testing.T) {
	ctx := context.Background()
	b, g := groupOfBobChecking(t, func(ctx context.Context, id events.InstallationID, key []byte) error {
		if id == carol {
			return fmt.Errorf("%w: carol's key is not the one the directory knows", ErrMemberRefused)
		}
		return nil
	})
	// a second group, bob's, with alice
	created, err := b.insts[bob].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	g2 := created.GroupID
	co, err := b.insts[bob].AddMembers(ctx, g2, b.keyPackage(alice))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drain(alice)

	// alice adds carol to g (bob refuses carol), then speaks in g, then in g2
	co, err = b.insts[alice].AddMembers(ctx, g, b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.send(alice, g, "in the new epoch")
	b.send(alice, g2, "another group, behind it")

	if got, _ := deliveredWithin(t, NewHost(b.log, b.del, nil), b.insts[bob], "another group, behind it"); !got {
		t.Fatalf("bob's queue is stopped for good by a commit he refused plus one message of the next epoch: the other group's message behind it is never received")
	}
}

// deliveredWithin runs up to three rounds of h.Deliver for in and reports
// whether a message with content was received, and the last error that
// stopped its deliveries.
func deliveredWithin(t *testing.T, h *Host, in *Installation, content string) (got bool, stopErr error) {
	t.Helper()
	for round := 0; round < 3 && !got; round++ {
		r := h.Deliver(context.Background(), mlsChannel, []*Installation{in}, 0)[0]
		for _, d := range r.Delivered {
			t.Logf("round %d: delivery %d err=%v", round, d.Delivery.Seq, d.Err)
			if d.Err == nil && d.Received != nil && string(d.Received.Content.Bytes()) == content {
				got = true
			}
		}
		if r.Err != nil {
			stopErr = r.Err
		}
	}
	return got, stopErr
}

// groupOfBobChecking is a backend with alice, bob (whose CheckMember is
// check) and carol, and a group of alice's that bob is in.
func groupOfBobChecking(t *testing.T, check func(context.Context, events.InstallationID, []byte) error) (*backend, []byte) {
	t.Helper()
	ctx := context.Background()
	b := newBackend(t)
	bobOpts := b.opts()
	bobOpts.CheckMember = check
	b.create(alice)
	b.createWith(bob, bobOpts)
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
	return b, created.GroupID
}

// A delivery service that does not keep one member's order can queue a
// message ahead of what makes it receivable: bob's message to the group
// ahead of carol's Welcome, alice's message of the next epoch ahead of
// her commit. Host.Deliver tries such a message again once a later
// delivery of the same call moved its group, so nothing the queue holds
// is lost. Until 2026-12-06 it was acknowledged as ErrUnknownGroup or
// mls.ErrWrongEpoch, and lost.
func TestDeliverReceivesAMessageQueuedAheadOfWhatItNeeds(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	b.create(carol)
	gid := b.pair(alice, bob)
	co, err := b.insts[alice].AddMembers(ctx, gid, b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, co.Commit, time.Time{}, "commit-carol"); err != nil {
		t.Fatal(err)
	}
	b.drain(bob)
	b.send(alice, gid, "hello carol") // queued to carol ahead of her Welcome
	if _, err := b.del.FanOut(ctx, co.Added, mlsChannel, co.Welcome, time.Time{}, "welcome-carol"); err != nil {
		t.Fatal(err)
	}
	// alice moves the group on and writes in the new epoch; the queues
	// get the message first.
	up, err := b.insts[alice].Update(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	b.send(alice, gid, "new epoch") // queued ahead of the commit
	if _, err := b.del.FanOut(ctx, []events.InstallationID{bob, carol}, mlsChannel, up.Commit, time.Time{}, "commit-update"); err != nil {
		t.Fatal(err)
	}

	h := NewHost(b.log, b.del, nil)
	res := h.Deliver(ctx, mlsChannel, []*Installation{b.insts[bob], b.insts[carol]}, 0)
	want := map[events.InstallationID][]string{bob: {"hello carol", "new epoch"}, carol: {"hello carol", "new epoch"}}
	for _, r := range res {
		if r.Err != nil {
			t.Fatalf("%s: %v", r.Installation, r.Err)
		}
		var got []string
		for _, d := range r.Delivered {
			if d.Err != nil {
				t.Errorf("%s: delivery %d: %v, want it received once what it needs was", r.Installation, d.Delivery.Seq, d.Err)
				continue
			}
			if d.Received.Kind == "application" {
				got = append(got, string(d.Received.Content.Bytes()))
			}
		}
		if !slices.Equal(got, want[r.Installation]) {
			t.Errorf("%s received %q, want %q", r.Installation, got, want[r.Installation])
		}
		if last := r.Delivered[len(r.Delivered)-1].Delivery.Seq; r.Acked != last {
			t.Errorf("%s: acked %d, want %d", r.Installation, r.Acked, last)
		}
	}
	// The read models hold the messages too.
	for id, texts := range want {
		page, err := b.insts[id].DB().Messages(ctx, gid, projections.Page{Limit: 1000})
		if err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, m := range page.Messages {
			got = append(got, string(m.Content.Bytes()))
		}
		for _, text := range texts {
			if !slices.Contains(got, text) {
				t.Errorf("%s's read model lacks %q: %q", id, text, got)
			}
		}
	}
}

// A message queued ahead of the commit it needs waits for that commit;
// when the commit then stops the installation's deliveries (a pre-shared
// key not registered yet: a later try receives it), the message must
// stay queued with it, not be acknowledged as refused: once the key is
// registered, the next Deliver receives the commit and the message.
func TestDeliverKeepsAWaitingMessageQueuedWhenItsCommitStops(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	gid := b.pair(alice, bob)
	id, secret := []byte("late-psk"), []byte("a pre-shared secret, 32 bytes..")
	if err := b.insts[alice].RegisterExternalPSK(ctx, id, secret); err != nil {
		t.Fatal(err)
	}
	pco, err := b.insts[alice].CommitPreSharedKeys(ctx, gid, ExternalPSK(id))
	if err != nil {
		t.Fatal(err)
	}
	b.send(alice, gid, "after the psk") // queued ahead of the commit
	if _, err := b.del.FanOut(ctx, pco.Recipients, mlsChannel, pco.Commit, time.Time{}, "commit-psk"); err != nil {
		t.Fatal(err)
	}
	h := NewHost(b.log, b.del, nil)
	res := h.Deliver(ctx, mlsChannel, []*Installation{b.insts[bob]}, 0)
	if !errors.Is(res[0].Err, mls.ErrUnknownPSK) {
		t.Fatalf("deliver without the PSK: %v, want mls.ErrUnknownPSK", res[0].Err)
	}
	if err := b.insts[bob].RegisterExternalPSK(ctx, id, secret); err != nil {
		t.Fatal(err)
	}
	res = h.Deliver(ctx, mlsChannel, []*Installation{b.insts[bob]}, 0)
	if res[0].Err != nil {
		t.Fatal(res[0].Err)
	}
	page, err := b.insts[bob].DB().Messages(ctx, gid, projections.Page{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range page.Messages {
		if string(m.Content.Bytes()) == "after the psk" {
			return
		}
	}
	t.Fatalf("bob never received the message queued ahead of the commit that stopped his deliveries (%d messages)", len(page.Messages))
}
