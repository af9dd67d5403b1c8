package engine

import (
	"context"
	"testing"
	"time"

	"github.com/epochlog/epochlog/replay"
)

// A member that sent a message in the current epoch, then had retention
// delete its row (KeepNone, the next day) and restarted, sends its next
// message under the next generation, not the first message's again (the
// same key and nonce), which the other members would refuse. Retention
// counts the own messages it deletes since the group's state
// (groups.sent_deleted).
func TestRetentionKeepsSentGenerations(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	opts := b.opts()
	opts.UpdateInterval = 0 // DefaultUpdateInterval
	reopen := func() *Installation {
		if err := b.insts[bob].Close(); err != nil {
			t.Fatal(err)
		}
		in, err := OpenInstallation(ctx, b.log, bob, b.dbPath(bob), b.keys[bob], opts)
		if err != nil {
			t.Fatal(err)
		}
		b.insts[bob] = in
		return in
	}
	in := reopen()
	b.now = time.Date(2026, 11, 23, 22, 0, 0, 0, time.UTC)
	co, err := in.Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drainAll()
	b.now = b.now.Add(30 * time.Minute)
	b.send(bob, g1, "first")
	if got := b.drain(alice); len(got) != 1 {
		t.Fatalf("alice received %d messages", len(got))
	}
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	if res, err := in.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil || res.RowsDeleted == 0 {
		t.Fatalf("retain: %+v, %v", res, err)
	}
	in = reopen()
	second, err := in.Send(ctx, g1, []byte("second"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if second.Update != nil {
		t.Fatal("the send made a path update: the test needs the epoch of the first")
	}
	b.deliverSend(second)
	ds, err := b.del.Fetch(ctx, alice, mlsChannel, 0)
	if err != nil {
		t.Fatal(err)
	}
	if len(ds) != 1 {
		t.Fatalf("alice has %d deliveries", len(ds))
	}
	if r, err := b.insts[alice].Receive(ctx, ds[0].Payload); err != nil || string(r.Content.Bytes()) != "second" {
		t.Fatalf("alice receives bob's message sent after retention and a restart: %v", err)
	}
	// The message sent after retention counts as sent since the state
	// retention recorded, though it took the ordinal of a deleted one:
	// after another restart, the next one is not sealed under its
	// generation.
	in = reopen()
	third, err := in.Send(ctx, g1, []byte("third"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverSend(third)
	if r, err := b.insts[alice].Receive(ctx, third.Message); err != nil || string(r.Content.Bytes()) != "third" {
		t.Fatalf("alice receives bob's message sent after retention and two restarts: %v", err)
	}
}
