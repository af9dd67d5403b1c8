package engine

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// sendInOneEpoch sends n messages from alice to g1 without a path
// update (the tests need the messages in one epoch) and has bob
// receive them.
func sendInOneEpoch(t *testing.T, b *backend, g1 []byte, n int, what string) []*SendOutput {
	t.Helper()
	var sent []*SendOutput
	for i := range n {
		out := b.send(alice, g1, fmt.Sprintf("%s %d", what, i))
		if out.Update != nil {
			t.Fatal("alice's send made a path update: the test needs one epoch")
		}
		sent = append(sent, out)
	}
	if got := b.drain(bob); len(got) != n {
		t.Fatalf("bob received %d, want %d", len(got), n)
	}
	return sent
}

// commitByCarol has carol commit an update to g1 and bob apply it: the
// epoch of the messages before it becomes a past one bob still holds.
func commitByCarol(t *testing.T, b *backend, g1 []byte) {
	t.Helper()
	ctx := context.Background()
	co, err := b.insts[carol].Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[bob].Receive(ctx, co.Commit); err != nil {
		t.Fatal(err)
	}
}

// Retention interrupted (a kill) after it recorded the state and deleted
// the rows, before its snapshot, then a commit of the group, then
// retention again: it completes. Its snapshot check replays the
// history, which reaches the commit before it deletes, and the epoch of
// the deleted messages is then a past one still held; the state kept for
// it is the one recorded before the deletion, so the check deletes them
// too (schema 12, epochs.end_state_ordinal) where until then it kept
// them and failed (replay.ErrSnapshotMismatch, "table messages: 1 rows
// vs 4") every time it ran. A rebuild equals the live read model, and a
// deleted message delivered again after a restart is refused.
func TestRetentionInterruptedBeforeItsSnapshotThenACommit(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	sent := sendInOneEpoch(t, b, g1, 3, "before retention")
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	cut, _ := replay.RetentionPolicy{Messages: replay.KeepNone}.MessagesCutoff(b.now)
	b.retentionKilledBeforeSnapshot(bob, cut, 3)
	commitByCarol(t, b, g1)
	res, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil)
	if err != nil || res.Snapshot == nil {
		t.Fatalf("retain again after the commit: %+v, %v", res, err)
	}
	if n := countMessages(t, b.insts[bob], g1, func(projections.Message) bool { return true }); n != 0 {
		t.Fatalf("bob holds %d messages after retention, want 0", n)
	}
	b.rebuiltAsLive(bob)
	_, err = b.insts[bob].Receive(ctx, sent[1].Message)
	mustErrIs(t, err, mls.ErrGenerationReused)
	b.restart(bob)
	_, err = b.insts[bob].Receive(ctx, sent[2].Message)
	mustErrIs(t, err, mls.ErrGenerationReused)
}

// A message of a past epoch received after the state was recorded and
// before the commit that ended its epoch is not behind the state kept
// for that epoch: retention without a new state (DeleteMessagesBefore
// alone) keeps it while deleting those the state covers, and after a
// restart it and they are refused as replays (it as a message held,
// they by their generations). Retention through the
// engine then records a state and deletes it too, and a rebuild equals
// the live read model.
func TestRetentionKeepsAPastEpochMessageReceivedAfterItsState(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	before := sendInOneEpoch(t, b, g1, 3, "before the state")
	cut, _ := replay.RetentionPolicy{Messages: replay.KeepNone}.MessagesCutoff(time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC))
	b.recordStates(bob, cut)
	after := sendInOneEpoch(t, b, g1, 1, "after the state")[0]
	commitByCarol(t, b, g1)
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	if n, err := b.insts[bob].DB().DeleteMessagesBefore(ctx, cut); err != nil || n != 3 {
		t.Fatalf("delete messages: %d, %v; want the 3 the recorded state covers", n, err)
	}
	if n := countMessages(t, b.insts[bob], g1, func(m projections.Message) bool { return bytes.Equal(m.ID, after.MessageID) }); n != 1 {
		t.Fatal("the message received after the state was deleted")
	}
	if n := countMessages(t, b.insts[bob], g1, func(projections.Message) bool { return true }); n != 1 {
		t.Fatalf("bob holds %d messages, want 1", n)
	}
	b.restart(bob)
	// Its row kept, it is refused as one held; those deleted, by their
	// generations, which the recorded state consumed.
	_, err := b.insts[bob].Receive(ctx, after.Message)
	mustErrIs(t, err, ErrDuplicateMessage)
	_, err = b.insts[bob].Receive(ctx, before[0].Message)
	mustErrIs(t, err, mls.ErrGenerationReused)

	res, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil)
	if err != nil || res.RowsDeleted != 1 || res.GroupsKept != 0 {
		t.Fatalf("retain: %+v, %v", res, err)
	}
	b.rebuiltAsLive(bob)
	_, err = b.insts[bob].Receive(ctx, after.Message)
	mustErrIs(t, err, mls.ErrGenerationReused)
}

// A read model kept at schema 11 whose epoch ended with a state a
// proposal left (state_ordinal above 0 at the commit), migrated in place
// to 12 when opened without a snapshot, has what a fresh build of its
// history has: verify passes and retention's snapshot check (a replay
// from the start) agrees with it. Schema 12 judges a held epoch's
// received messages by the states recorded (group.state_recorded), which
// history before 12 does not hold, not by the state ordinal a commit
// left, which the step to 12 could not know for the commits applied
// before it.
func TestRetentionAfterTheMigrationFrom11OfAnEpochWithAProposal(t *testing.T) {
	ctx := context.Background()
	b, g1 := bobAtSchema11InAGroup(t)
	sent := sendInOneEpoch(t, b, g1, 3, "at 11")
	if _, err := b.insts[bob].ProposeUpdate(ctx, g1); err != nil {
		t.Fatal(err)
	}
	commitByCarol(t, b, g1)
	in := b.restart(bob)
	if v := in.DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("opened at schema %d, want %d", v, projections.LatestSchema)
	}
	if _, err := replay.Verify(ctx, b.log, bob, b.dbPath(bob), b.keys[bob], nil); err != nil {
		t.Fatalf("verify after the migration in place: %v", err)
	}
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	res, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil)
	if err != nil || res.Snapshot == nil || res.RowsDeleted != 3 {
		t.Fatalf("retain after the migration in place: %+v, %v", res, err)
	}
	b.restart(bob)
	_, err = b.insts[bob].Receive(ctx, sent[0].Message)
	mustErrIs(t, err, mls.ErrGenerationReused)
}

// bobAtSchema11InAGroup makes a backend whose bob keeps its read model at
// schema 11, in a group alice created with bob and carol, everything
// delivered.
func bobAtSchema11InAGroup(t *testing.T) (*backend, []byte) {
	t.Helper()
	ctx := context.Background()
	b := newBackend(t)
	o11 := b.opts()
	o11.DB.SchemaVersion = 11
	b.create(alice)
	b.create(carol)
	b.createWith(bob, o11)
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	g1 := created.GroupID
	co, err := b.insts[alice].AddMembers(ctx, g1, b.keyPackage(bob), b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drainAll()
	return b, g1
}
