package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// A message a member received, then retention deleted (KeepNone, the
// next day: the current epoch's messages included), is refused when the
// delivery service hands it to the member again after the member's
// process restarted, or its read model was rebuilt: as a replay
// (mls.ErrGenerationReused, which a Host settles: dropped), not handed
// to the application a second time. The sender's next message is still
// received. Retention records the group's state (its ratchets as
// receiving the deleted messages left them) before it deletes them.
func TestRetentionDeletedMessageNotReceivedAgain(t *testing.T) {
	for _, reload := range []string{"restart", "rebuild"} {
		t.Run(reload, func(t *testing.T) {
			b := newBackend(t)
			g1, g2 := setupGroups(t, b)
			ctx := context.Background()
			positions := func() (uint64, uint64) {
				t.Helper()
				p1, err := b.insts[bob].position(ctx, events.AggGroup, groupKey(g1))
				if err != nil {
					t.Fatal(err)
				}
				p2, err := b.insts[bob].position(ctx, events.AggGroup, groupKey(g2))
				if err != nil {
					t.Fatal(err)
				}
				return p1, p2
			}
			var sent []*SendOutput
			for i := range 3 {
				out := b.send(alice, g1, fmt.Sprintf("before retention %d", i))
				if out.Update != nil {
					t.Fatal("the send made a path update: the test needs one epoch")
				}
				sent = append(sent, out)
			}
			if got := b.drain(bob); len(got) != 3 {
				t.Fatalf("bob received %d, want 3", len(got))
			}
			b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
			before1, before2 := positions()
			res, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil)
			if err != nil || res.RowsDeleted < 3 || res.GroupsKept != 0 {
				t.Fatalf("retain: %+v, %v", res, err)
			}
			// One event for the group whose messages it deleted, none for
			// the group without messages.
			if after1, after2 := positions(); after1 != before1+1 || after2 != before2 {
				t.Fatalf("group positions %d, %d after retention; want %d, %d", after1, after2, before1+1, before2)
			}
			if n := countMessages(t, b.insts[bob], g1, func(projections.Message) bool { return true }); n != 0 {
				t.Fatalf("bob holds %d messages after retention, want 0", n)
			}
			switch reload {
			case "restart":
				b.restart(bob)
			case "rebuild":
				b.rebuiltAsLive(bob)
			}
			_, err = b.insts[bob].Receive(ctx, sent[1].Message)
			mustErrIs(t, err, mls.ErrGenerationReused)
			if !Settled(err) {
				t.Fatalf("a Host does not settle %v", err)
			}
			if n := countMessages(t, b.insts[bob], g1, func(projections.Message) bool { return true }); n != 0 {
				t.Fatalf("bob holds %d messages after the replay, want 0", n)
			}
			b.send(alice, g1, "after retention")
			if got := b.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != "after retention" {
				t.Fatalf("bob after retention: %d messages", len(got))
			}
			// The deleted message's epoch is a past one now (alice's send
			// refreshed her path), still held: refused there too.
			b.restart(bob)
			_, err = b.insts[bob].Receive(ctx, sent[2].Message)
			mustErrIs(t, err, mls.ErrGenerationReused)
		})
	}
}

// A group state recorded before retention (group.state_recorded) is
// what a reload starts from, with no message left to mark, and a replay
// of the history applies it as the live read model did: the same
// digest, and the MLS check passes it.
func TestStateRecordedReplaysAsLive(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	b.send(alice, g1, "first")
	b.send(bob, g1, "second")
	if got := b.drain(bob); len(got) != 1 {
		t.Fatalf("bob received %d, want 1", len(got))
	}
	in := b.insts[bob]
	b.recordStates(bob, b.now.Add(time.Hour))
	if ids, err := in.DB().GroupsToRecordBefore(ctx, b.now.Add(time.Hour)); err != nil || len(ids) != 0 {
		t.Fatalf("groups still to record: %d, %v", len(ids), err)
	}
	if rs, err := in.DB().MessagesReceivedSinceState(ctx, g1); err != nil || len(rs) != 0 {
		t.Fatalf("messages received since the recorded state: %d, %v", len(rs), err)
	}
	if n, err := in.DB().SentSinceState(ctx, g1, 1); err != nil || n != 0 {
		t.Fatalf("messages sent since the recorded state: %d, %v", n, err)
	}
	b.checkRebuild(bob)
	b.restart(bob)
	b.send(alice, g1, "third")
	b.send(bob, g1, "fourth")
	if got := b.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != "third" {
		t.Fatalf("bob after the recorded state and a restart: %d messages", len(got))
	}
	if got := b.drain(alice); len(got) != 2 {
		t.Fatalf("alice received %d of bob's messages, want 2", len(got))
	}
}

// A second process of the installation whose cached group another
// process has moved on (it received messages) records the group's state
// after catching up (a lost race, decided again): the state it records
// has the other process's messages consumed, so a replay of one is
// refused after retention deleted it.
func TestRetentionRecordsStateOfAStaleProcess(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	p2 := b.secondProcess(bob, nil)
	if _, err := p2.Epoch(ctx, g1); err != nil { // cached at the group's position now
		t.Fatal(err)
	}
	var sent []*SendOutput
	for i := range 3 {
		sent = append(sent, b.send(alice, g1, fmt.Sprintf("m%d", i)))
	}
	if got := b.drain(bob); len(got) != 3 {
		t.Fatalf("bob received %d, want 3", len(got))
	}
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	if res, err := p2.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil || res.RowsDeleted < 3 || res.GroupsKept != 0 {
		t.Fatalf("retain: %+v, %v", res, err)
	}
	if err := p2.Close(); err != nil {
		t.Fatal(err)
	}
	p2 = b.secondProcess(bob, nil)
	_, err := p2.Receive(ctx, sent[0].Message)
	mustErrIs(t, err, mls.ErrGenerationReused)
	// The first process catches up with the recorded state and goes on.
	b.send(alice, g1, "after")
	if got := b.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != "after" {
		t.Fatalf("the first process after retention: %d messages", len(got))
	}
}

// Retention without the engine (replay.Retain on the read model, as
// replayer retain runs it) cannot record a group's state: it keeps the
// messages a reload still needs (GroupsKept), so a replay stays refused
// (as a duplicate: the message is still held). The engine's retention
// then records the state and deletes them.
func TestRetentionWithoutTheEngineKeepsWhatAReloadNeeds(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	first := b.send(alice, g1, "first")
	if got := b.drain(bob); len(got) != 1 {
		t.Fatalf("bob received %d, want 1", len(got))
	}
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	policy := replay.RetentionPolicy{Messages: replay.KeepNone}
	res, err := replay.Retain(ctx, b.log, bob, b.insts[bob].DB(), policy, &replay.RetainOptions{Now: b.clock})
	if err != nil || res.GroupsKept != 1 {
		t.Fatalf("retain without the engine: %+v, %v; want group 1 kept", res, err)
	}
	if n := countMessages(t, b.insts[bob], g1, func(projections.Message) bool { return true }); n != 1 {
		t.Fatalf("bob holds %d messages after retention without the engine, want 1", n)
	}
	b.restart(bob)
	_, err = b.insts[bob].Receive(ctx, first.Message)
	mustErrIs(t, err, ErrDuplicateMessage)
	got, err := b.insts[bob].Retain(ctx, policy, nil)
	if err != nil || got.RowsDeleted != 1 || got.GroupsKept != 0 {
		t.Fatalf("retain through the engine: %+v, %v; want the message deleted", got, err)
	}
	b.restart(bob)
	_, err = b.insts[bob].Receive(ctx, first.Message)
	mustErrIs(t, err, mls.ErrGenerationReused)
}

// A message of a past epoch the member still holds, received late
// (after the commit that ended its epoch), then deleted by retention, is
// refused as a replay after a restart too: the state retention records
// has that epoch's ratchet moved on.
func TestRetentionDeletedLateMessageNotReceivedAgain(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	late, err := b.insts[alice].Send(ctx, g1, []byte("late"), nil)
	if err != nil || late.Update != nil {
		t.Fatalf("alice's send: %+v, %v; want one message of epoch 1", late, err)
	}
	co, err := b.insts[carol].Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[bob].Receive(ctx, co.Commit); err != nil {
		t.Fatal(err)
	}
	if r, err := b.insts[bob].Receive(ctx, late.Message); err != nil || string(r.Content.Bytes()) != "late" {
		t.Fatalf("bob receives the late message: %v", err)
	}
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	res, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil)
	if err != nil || res.RowsDeleted != 1 || res.GroupsKept != 0 {
		t.Fatalf("retain: %+v, %v", res, err)
	}
	b.restart(bob)
	_, err = b.insts[bob].Receive(ctx, late.Message)
	mustErrIs(t, err, mls.ErrGenerationReused)
}

// A state retention records while the group caches a proposal (another
// member's, received) caches it too; the commit that carries it by
// reference is received after a restart from the recorded state, a
// deleted message stays refused, and VerifyMLS and a rebuild agree
// with the live read model.
func TestRetentionRecordsStateWithACachedProposal(t *testing.T) {
	for _, verify := range []bool{false, true} {
		t.Run(map[bool]string{false: "retain", true: "verify"}[verify], func(t *testing.T) {
			testStateRecordedWithACachedProposal(t, verify)
		})
	}
}

func testStateRecordedWithACachedProposal(t *testing.T, verify bool) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	sent := b.send(alice, g1, "before the proposal")
	p, err := b.insts[carol].ProposeUpdate(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []events.InstallationID{alice, bob} {
		if r, err := b.insts[id].Receive(ctx, p.Proposal); err != nil || r.Kind != "proposal" {
			t.Fatalf("%s receives carol's proposal: %+v, %v", id, r, err)
		}
	}
	if got := b.drain(bob); len(got) != 1 {
		t.Fatalf("bob received %d, want 1", len(got))
	}
	if verify {
		// The state recorded as retention would, without its shred: the
		// history stays whole for VerifyMLS.
		b.recordStates(bob, b.now.Add(time.Hour))
		b.restart(bob)
	} else {
		b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
		if res, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil || res.RowsDeleted == 0 || res.GroupsKept != 0 {
			t.Fatalf("retain: %+v, %v", res, err)
		}
		b.restart(bob)
		_, err = b.insts[bob].Receive(ctx, sent.Message)
		mustErrIs(t, err, mls.ErrGenerationReused)
	}
	co, err := b.insts[alice].CommitProposals(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := b.insts[bob].Receive(ctx, co.Commit); err != nil || r.Kind != "commit" {
		t.Fatalf("bob receives the commit of the cached proposal after the restart: %+v, %v", r, err)
	}
	if e, err := b.insts[bob].Epoch(ctx, g1); err != nil || e != co.Epoch {
		t.Fatalf("bob at epoch %d (%v), want %d", e, err, co.Epoch)
	}
	if verify {
		b.checkRebuild(bob)
		return
	}
	b.rebuiltAsLive(bob)
}
