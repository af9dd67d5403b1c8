package engine

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// A member that received more of one sender's messages in an epoch than
// its ratchet reaches ahead (maximum_forward_ratchets) receives that
// sender's next message after its process restarts, and after a rebuild
// of its read model: the reloaded state is marked with the messages
// received since it was recorded. Before, every later message of the
// epoch from that sender was refused (ErrTooFarAhead, settled: dropped by
// a Host), from any restart or Pool eviction on.
func TestReceivingRatchetSurvivesAReload(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	const n = keyschedule.DefaultMaxForwardRatchets + 3
	for i := range n {
		out, err := b.insts[alice].Send(ctx, g1, fmt.Appendf(nil, "m%d", i), nil)
		if err != nil {
			t.Fatal(err)
		}
		if out.Update != nil {
			t.Fatalf("send %d made a path update: the test needs one epoch", i)
		}
		b.deliverSend(out)
	}
	if got := b.drain(bob); len(got) != n {
		t.Fatalf("bob received %d messages, want %d", len(got), n)
	}
	b.restart(bob)
	b.send(alice, g1, "after a restart")
	if got := b.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != "after a restart" {
		t.Fatalf("bob after a restart: %d messages", len(got))
	}
	b.rebuildAndRestart(bob)
	b.send(alice, g1, "after a rebuild")
	if got := b.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != "after a rebuild" {
		t.Fatalf("bob after a rebuild: %d messages", len(got))
	}
	// Rebuilt for an older reader (schema 10 keeps no generation), then
	// opened at the latest schema: the open migrates it by replay, which
	// keeps them, rather than in place.
	if err := b.insts[bob].Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Rebuild(ctx, b.log, bob, b.dbPath(bob), b.keys[bob], &replay.RebuildOptions{SchemaVersion: 10}); err != nil {
		t.Fatal(err)
	}
	in, err := OpenInstallation(ctx, b.log, bob, b.dbPath(bob), b.keys[bob], b.opts())
	if err != nil {
		t.Fatal(err)
	}
	b.insts[bob] = in
	if v := in.DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("opened at schema %d", v)
	}
	b.send(alice, g1, "after a downgrade")
	if got := b.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != "after a downgrade" {
		t.Fatalf("bob after a downgrade: %d messages", len(got))
	}
}

// A sender that seals two messages under one generation (which MLS
// forbids) has the second refused by a member that received the first,
// whether or not the member's process restarted in between. Before, a
// reloaded member accepted it: its ratchet was back at the saved state.
func TestGenerationReuseRefusedAfterAReload(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	st, _, err := b.insts[alice].DB().GroupStates(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	forger, err := mls.UnmarshalState(st.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	seal := func(text string) []byte {
		_, m, err := forger.SealApplication([]byte(text), nil) // the same state each time: the same generation
		if err != nil {
			t.Fatal(err)
		}
		raw, err := m.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		return raw
	}
	first, second := seal("first"), seal("second")
	if r, err := b.insts[bob].Receive(ctx, first); err != nil || string(r.Content.Bytes()) != "first" {
		t.Fatalf("bob receives the first: %v", err)
	}
	b.restart(bob)
	_, err = b.insts[bob].Receive(ctx, second)
	mustErrIs(t, err, mls.ErrGenerationReused)
	if n := countMessages(t, b.insts[bob], g1, func(m projections.Message) bool { return m.Direction == "received" }); n != 1 {
		t.Fatalf("bob holds %d received messages, want 1", n)
	}
}

// Retention that deletes a sender's own messages of the current epoch
// (a day an hour old with --messages none) does not make it reuse their
// generations after a reload: its peers, who received them, would refuse
// the new messages as reused (and drop them). The read model keeps the
// own messages sent since the group's state (a reload moves the sending
// ratchet past them) until a state recorded after them makes them
// unneeded: the engine's Retain records it first
// (TestRetentionKeepsSentGenerations). Until 2026-12-07 it deleted them
// and counted them (groups.sent_deleted).
func TestOwnMessagesRetentionDeletedAreNotReused(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	for i := range 3 {
		b.send(alice, g1, fmt.Sprintf("before retention %d", i))
	}
	if got := b.drain(bob); len(got) != 3 {
		t.Fatalf("bob received %d, want 3", len(got))
	}
	if n, err := b.insts[alice].DB().DeleteMessagesBefore(ctx, b.now.Add(time.Hour)); err != nil || n != 0 {
		t.Fatalf("retention deleted %d of alice's messages, %v; want 0 (a reload needs them)", n, err)
	}
	if ids, err := b.insts[alice].DB().GroupsToRecordBefore(ctx, b.now.Add(time.Hour)); err != nil || len(ids) != 1 || !bytes.Equal(ids[0], g1) {
		t.Fatalf("groups to record: %x, %v; want group 1", ids, err)
	}
	b.restart(alice)
	out := b.send(alice, g1, "after retention")
	if out.Update != nil {
		t.Fatal("the send made a path update: the test needs the epoch of the deleted messages")
	}
	if got := b.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != "after retention" {
		t.Fatalf("bob after alice's reload: %d messages", len(got))
	}
}
