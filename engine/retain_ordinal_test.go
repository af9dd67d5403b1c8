package engine

import (
	"bytes"
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// ordinalsOf lists gid's messages in in's read model, oldest first, by
// paging Messages back from the newest with the Before cursor (pages of
// two, so the cursor is used).
func ordinalsOf(t *testing.T, in *Installation, gid []byte) []projections.Message {
	t.Helper()
	var out []projections.Message
	p := projections.Page{Limit: 2}
	for {
		page, err := in.DB().Messages(context.Background(), gid, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			out = append([]projections.Message{m}, out...)
		}
		if page.Next == 0 {
			break
		}
		p.Before = page.Next
	}
	for i := 1; i < len(out); i++ {
		if out[i].Ordinal <= out[i-1].Ordinal {
			t.Fatalf("paging gave ordinal %d after %d", out[i].Ordinal, out[i-1].Ordinal)
		}
	}
	return out
}

// newestOrdinal is the ordinal of gid's newest message in in's read
// model, which must be the message with id.
func newestOrdinal(t *testing.T, in *Installation, gid, id []byte) uint64 {
	t.Helper()
	page, err := in.DB().Messages(context.Background(), gid, projections.Page{Limit: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 1 || !bytes.Equal(page.Messages[0].ID, id) {
		t.Fatalf("%s: the newest message of the group is not the one just received (%d messages)", in.ID(), len(page.Messages))
	}
	return page.Messages[0].Ordinal
}

// A group whose every message retention deleted (KeepNone, the next
// day) goes on with ordinals above every one it handed out before, in
// the live read model, after a restart and after a rebuild (from the
// snapshot retention made), which gives the live read model's digest:
// an application that remembers the last ordinal it showed (the paging
// cursor) sees the new messages as new. Until schema 12 the next
// message took ordinal 1 again.
func TestRetentionOrdinalsNeverRestart(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	for i := range 3 {
		b.send(alice, g1, fmt.Sprintf("before %d", i))
	}
	b.send(bob, g1, "bob before")
	b.drainAll()
	before := ordinalsOf(t, b.insts[bob], g1)
	if len(before) != 4 {
		t.Fatalf("bob holds %d messages, want 4", len(before))
	}
	highest := before[len(before)-1].Ordinal

	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	if res, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil || res.RowsDeleted != 4 || res.GroupsKept != 0 {
		t.Fatalf("retain: %+v, %v", res, err)
	}
	if n := len(ordinalsOf(t, b.insts[bob], g1)); n != 0 {
		t.Fatalf("bob holds %d messages after retention, want 0", n)
	}

	// next sends one message from alice, has bob receive it, and checks
	// that its ordinal is above every one bob handed out before.
	next := func(when string) {
		t.Helper()
		out := b.send(alice, g1, when)
		if got := b.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != when {
			t.Fatalf("%s: bob received %d messages", when, len(got))
		}
		ord := newestOrdinal(t, b.insts[bob], g1, out.MessageID)
		if ord <= highest {
			t.Fatalf("%s: the message took ordinal %d, not above %d, the highest before", when, ord, highest)
		}
		highest = ord
	}
	next("after retention")
	next("after retention, second")
	b.restart(bob)
	next("after a restart")

	// The deliveries' events of bob's queue are projected as it catches up.
	if err := b.insts[bob].CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	live, err := b.insts[bob].DB().Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	liveMsgs := ordinalsOf(t, b.insts[bob], g1)
	b.rebuildAndRestart(bob)
	got, err := b.insts[bob].DB().Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if !live.Equal(got) {
		t.Fatalf("the rebuilt read model differs from the live one: %v", projections.Compare(live, got))
	}
	rebuilt := ordinalsOf(t, b.insts[bob], g1)
	if len(rebuilt) != len(liveMsgs) {
		t.Fatalf("rebuilt: %d messages, live %d", len(rebuilt), len(liveMsgs))
	}
	for i := range rebuilt {
		if rebuilt[i].Ordinal != liveMsgs[i].Ordinal || !bytes.Equal(rebuilt[i].ID, liveMsgs[i].ID) {
			t.Fatalf("rebuilt message %d: ordinal %d, live %d", i, rebuilt[i].Ordinal, liveMsgs[i].Ordinal)
		}
	}
	next("after a rebuild")
	if _, err := replay.Verify(ctx, b.log, bob, b.dbPath(bob), b.keys[bob], nil); err != nil {
		t.Fatalf("verify after retention and new messages: %v", err)
	}
}

// Retention interrupted after it deleted the rows, before its snapshot
// (a process killed there), then a new message, then retention run
// again: the snapshot's check (the history replayed, the same rows
// deleted) gives the live read model, so retention finishes, and a
// rebuild equals the live read model. Until schema 12 the live read
// model gave the new message ordinal 1 where the check, which deletes
// the rows after replaying it, gave it the ordinal after the deleted
// ones: retention failed, every time, with replay.ErrSnapshotMismatch.
func TestRetentionInterruptedBeforeItsSnapshotThenAMessage(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	for i := range 3 {
		b.send(alice, g1, fmt.Sprintf("before %d", i))
	}
	b.drainAll()
	// Alice's next message makes no path update: a commit would make a
	// past epoch of the one whose messages were deleted, whose received
	// messages a reload needs, and the check's deletion after it would
	// keep them (see the report of this test's commit).
	if err := b.insts[alice].Close(); err != nil {
		t.Fatal(err)
	}
	ao := b.opts()
	ao.UpdateInterval = 30 * 24 * time.Hour
	a, err := OpenInstallation(ctx, b.log, alice, b.dbPath(alice), b.keys[alice], ao)
	if err != nil {
		t.Fatal(err)
	}
	b.insts[alice] = a
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	cut, _ := replay.RetentionPolicy{Messages: replay.KeepNone}.MessagesCutoff(b.now)
	b.retentionKilledBeforeSnapshot(bob, cut, 3)
	out := b.send(alice, g1, "after the interrupted retention")
	if out.Update != nil {
		t.Fatal("alice's send made a path update: the test needs the epoch of the deleted messages")
	}
	if got := b.drain(bob); len(got) != 1 {
		t.Fatalf("bob received %d, want 1", len(got))
	}
	if res, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil || res.Snapshot == nil {
		t.Fatalf("retain again: %+v, %v", res, err)
	}
	if ord := newestOrdinal(t, b.insts[bob], g1, out.MessageID); ord <= 3 {
		t.Fatalf("the message after the interrupted retention took ordinal %d, want above 3", ord)
	}
	if err := b.insts[bob].CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	b.rebuiltAsLive(bob)
}

// A read model kept at schema 11 (engine OpenInstallation with the
// schema pinned, as replayer retain opens a file at the one it has)
// keeps the old behaviour: a group that retention emptied starts its
// ordinals at 1 again, and the file still verifies against its history.
// Opened at the latest schema it is migrated in place and continues
// after the highest ordinal it holds, and a rebuild (from the schema 11
// snapshot retention made, migrated) gives its digest; from then on
// retention emptying the group again does not restart them, across a
// restart and a rebuild.
func TestRetentionOrdinalsAcrossTheMigrationFrom11(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	o11 := b.opts()
	o11.DB.SchemaVersion = 11
	bobIn := b.createWith(bob, o11)
	a := b.create(alice)
	gid := b.groupOf(a, bob)
	recv := func(text string) uint64 {
		t.Helper()
		out := b.send(alice, gid, text)
		if got := b.drain(bob); len(got) != 1 || string(got[0].Content.Bytes()) != text {
			t.Fatalf("%s: bob received %d messages", text, len(got))
		}
		return newestOrdinal(t, b.insts[bob], gid, out.MessageID)
	}
	reopen := func(o *InstallationOptions) {
		t.Helper()
		if err := b.insts[bob].Close(); err != nil {
			t.Fatal(err)
		}
		in, err := OpenInstallation(ctx, b.log, bob, b.dbPath(bob), b.keys[bob], o)
		if err != nil {
			t.Fatal(err)
		}
		b.insts[bob] = in
	}
	verify := func(when string) {
		t.Helper()
		if err := b.insts[bob].CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		if _, err := replay.Verify(ctx, b.log, bob, b.dbPath(bob), b.keys[bob], nil); err != nil {
			t.Fatalf("%s: verify: %v", when, err)
		}
	}
	for i := range 3 {
		recv(fmt.Sprint("at 11, ", i))
	}
	b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
	if res, err := bobIn.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil || res.RowsDeleted != 3 {
		t.Fatalf("retain at 11: %+v, %v", res, err)
	}
	if ord := recv("at 11 after retention"); ord != 1 {
		t.Fatalf("at schema 11 the message after retention took ordinal %d: the old behaviour starts again at 1", ord)
	}
	verify("at 11 after retention")
	reopen(o11)
	highest := recv("at 11 after a restart")
	if highest != 2 || b.insts[bob].DB().SchemaVersion() != 11 {
		t.Fatalf("at schema %d after a restart: ordinal %d, want 2 at 11", b.insts[bob].DB().SchemaVersion(), highest)
	}

	reopen(b.opts())
	if v := b.insts[bob].DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("opened at schema %d, want %d", v, projections.LatestSchema)
	}
	next := func(when string) {
		t.Helper()
		ord := recv(when)
		if ord <= highest {
			t.Fatalf("%s: the message took ordinal %d, not above %d, the highest before", when, ord, highest)
		}
		highest = ord
	}
	next("migrated")
	// sameAsRebuilt rebuilds bob's read model (from the newest snapshot:
	// first the one retention took at schema 11, migrated, the only one,
	// the history before it shredded) and requires the live one's digest.
	sameAsRebuilt := func(when string) {
		t.Helper()
		if err := b.insts[bob].CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		t.Logf("%s: rebuilt, compared with the live read model", when)
		b.rebuiltAsLive(bob)
	}
	sameAsRebuilt("migrated")
	next("migrated, after a rebuild")
	b.now = time.Date(2026, 11, 25, 1, 30, 0, 0, time.UTC)
	if res, err := b.insts[bob].Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil || res.RowsDeleted != 4 {
		t.Fatalf("retain after the migration: %+v, %v", res, err)
	}
	next("migrated, after retention")
	reopen(b.opts())
	next("migrated, after retention and a restart")
	verify("migrated, after retention")
	sameAsRebuilt("migrated, after retention")
	next("migrated, after retention and a rebuild")
	if n := len(ordinalsOf(t, b.insts[bob], gid)); n != 3 {
		t.Fatalf("bob holds %d messages, want the 3 since the second retention", n)
	}
}
