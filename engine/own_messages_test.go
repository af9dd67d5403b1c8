package engine

import (
	"context"
	"errors"
	"reflect"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// sameSends fails unless got (OwnMessages) is want (what Send returned,
// less the path update, which OwnCommits hands back), output by output.
func sameSends(t *testing.T, what string, got, want []*SendOutput) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d own messages handed back, want %d", what, len(got), len(want))
	}
	for i := range want {
		w := *want[i]
		w.Update, w.ProjectionErr = nil, nil
		if !reflect.DeepEqual(*got[i], w) {
			t.Fatalf("%s: own message %d (epoch %d) handed back as\n%+v\nSend returned\n%+v", what, i, w.Epoch, *got[i], w)
		}
	}
}

// ownMessages is in's OwnMessages, which must not fail.
func ownMessages(t *testing.T, in *Installation, gid []byte, from uint64, limit int) []*SendOutput {
	t.Helper()
	out, err := in.OwnMessages(context.Background(), gid, from, limit)
	if err != nil {
		t.Fatalf("own messages of group %x from %d, limit %d: %v", gid, from, limit, err)
	}
	return out
}

// groupOf has creator create a group and add members by key package,
// the commit and the Welcome delivered and received.
func (b *backend) groupOf(creator *Installation, members ...events.InstallationID) []byte {
	b.t.Helper()
	ctx := context.Background()
	created, err := creator.CreateGroup(ctx, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	kps := make([][]byte, len(members))
	for i, m := range members {
		kps[i] = b.keyPackage(m)
	}
	add, err := creator.AddMembers(ctx, created.GroupID, kps...)
	if err != nil {
		b.t.Fatal(err)
	}
	b.deliverCommit(add)
	b.drainAll()
	return created.GroupID
}

// hostSend sends through a Host (the batched path) and fans out.
func (b *backend) hostSend(from events.InstallationID, gid []byte, texts ...string) []*SendOutput {
	b.t.Helper()
	var reqs []SendRequest
	for _, s := range texts {
		reqs = append(reqs, SendRequest{Installation: b.insts[from], GroupID: gid, Content: []byte(s)})
	}
	var outs []*SendOutput
	for i, r := range NewHost(b.log, b.del, nil).Send(context.Background(), reqs) {
		if r.Err != nil {
			b.t.Fatalf("%s host send %d: %v", from, i, r.Err)
		}
		b.deliverSend(r.Output)
		outs = append(outs, r.Output)
	}
	return outs
}

// OwnMessages hands back what Send and Host.Send returned (a Send that
// committed a path update first included, without it), bounded by epoch
// and count; whom a message was for stays what it was when a later
// commit removed one of them and gave the leaf to another; not other
// members' messages, nor those of an epoch retired since.
func TestOwnMessagesEqualWhatSendReturned(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice, bob := b.create("alice"), b.create("bob")
	b.create("carol")
	b.create("dave")
	gid := b.groupOf(alice, "bob", "carol")
	fromBob := b.send("bob", gid, "hello from bob") // his first since the Welcome: a path update first
	if fromBob.Update == nil {
		t.Fatal("bob's first message made no path update")
	}
	b.drainAll()
	want := []*SendOutput{b.send("alice", gid, "one")}
	want = append(want, b.hostSend("alice", gid, "two", "three")...)
	b.drainAll()
	if !reflect.DeepEqual(want[0].Recipients, []events.InstallationID{"bob", "carol"}) {
		t.Fatalf("recipients %v, want bob and carol", want[0].Recipients)
	}
	// carol goes, dave takes her leaf.
	for _, co := range []func() (*CommitOutput, error){
		func() (*CommitOutput, error) { return alice.RemoveMembers(ctx, gid, "carol") },
		func() (*CommitOutput, error) { return alice.AddMembers(ctx, gid, b.keyPackage("dave")) },
	} {
		out, err := co()
		if err != nil {
			t.Fatal(err)
		}
		b.deliverCommit(out)
		b.drainAll()
	}
	four := b.send("alice", gid, "four")
	b.drainAll()
	if !reflect.DeepEqual(four.Recipients, []events.InstallationID{"bob", "dave"}) {
		t.Fatalf("recipients %v, want bob and dave", four.Recipients)
	}
	want = append(want, four)

	sameSends(t, "group", ownMessages(t, alice, gid, 0, 0), want)
	sameSends(t, "newest two", ownMessages(t, alice, gid, 0, 2), want[2:])
	sameSends(t, "from the last epoch", ownMessages(t, alice, gid, four.Epoch, 0), want[3:])
	sameSends(t, "after the last epoch", ownMessages(t, alice, gid, four.Epoch+1, 10), nil)
	sameSends(t, "bob", ownMessages(t, bob, gid, 0, 0), []*SendOutput{fromBob})
	if _, err := alice.OwnMessages(ctx, []byte("no such group"), 0, 0); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("own messages of an unknown group: %v, want ErrUnknownGroup", err)
	}
	if _, err := alice.OwnMessages(ctx, gid, 0, -1); err == nil {
		t.Fatal("own messages with a negative limit: no error")
	}

	// Two more commits: the epoch of one, two and three is retired
	// (maximum_past_epochs 3), no member can decrypt them any more.
	for range 2 {
		up, err := alice.Update(ctx, gid)
		if err != nil {
			t.Fatal(err)
		}
		b.deliverCommit(up)
		b.drainAll()
	}
	if retired, err := alice.DB().EpochRetired(ctx, gid, want[0].Epoch); err != nil || !retired {
		t.Fatalf("epoch %d retired: %v, %v", want[0].Epoch, retired, err)
	}
	sameSends(t, "after retiring the first messages' epoch", ownMessages(t, alice, gid, 0, 0), want[3:])
	b.checkRebuild("alice")
}

// redeliver is the recovery at startup (docs/engine.md, "After a
// crash"): the own commits and messages of the group fanned out again in
// the live order, an epoch's messages after the commit that started it.
func (b *backend) redeliver(in *Installation, gid []byte) {
	b.t.Helper()
	commits, err := in.OwnCommits(context.Background(), gid, 0)
	if err != nil {
		b.t.Fatal(err)
	}
	msgs, err := in.OwnMessages(context.Background(), gid, 0, 100)
	if err != nil {
		b.t.Fatal(err)
	}
	for _, m := range msgs {
		for len(commits) > 0 && commits[0].Epoch <= m.Epoch {
			b.deliverCommit(commits[0])
			commits = commits[1:]
		}
		b.deliverSend(m)
	}
	for _, co := range commits {
		b.deliverCommit(co)
	}
}

// A process that recorded own messages and died before it fanned their
// outputs out (the whole process) leaves them recorded: once restarted,
// it fans out again what OwnMessages and OwnCommits hand back, with the
// live path's idempotency keys, and the members receive every message
// exactly once, in the order sent: one queued before the crash is not
// queued twice, the lost ones (by Send and by Host.Send, before and
// after a lost commit) arrive. A read model rebuilt by replay hands back
// the same.
func TestOwnMessagesDeliveredAfterACrash(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice := b.create("alice")
	b.create("bob")
	b.create("carol")
	gid := b.groupOf(alice, "bob", "carol")
	delivered := b.send("alice", gid, "delivered")
	b.drainAll()
	queued := b.send("alice", gid, "queued") // queued, not yet received
	// Recorded, never queued: the process dies with the outputs.
	lost := []*SendOutput{}
	m, err := alice.Send(ctx, gid, []byte("lost by Send"), nil)
	if err != nil {
		t.Fatal(err)
	}
	lost = append(lost, m)
	for _, r := range NewHost(b.log, b.del, nil).Send(ctx, []SendRequest{{Installation: alice, GroupID: gid, Content: []byte("lost by Host.Send")}}) {
		if r.Err != nil {
			t.Fatal(r.Err)
		}
		lost = append(lost, r.Output)
	}
	update, err := alice.Update(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	if m, err = alice.Send(ctx, gid, []byte("lost after the update"), nil); err != nil {
		t.Fatal(err)
	}
	lost = append(lost, m)
	b.close()
	b.open()
	b.reopen()

	alice = b.insts["alice"]
	all := append([]*SendOutput{delivered, queued}, lost...)
	sameSends(t, "after the restart", ownMessages(t, alice, gid, 0, 0), all)
	b.redeliver(alice, gid)
	got := b.drainAll() // fails on any refusal: a message twice, or one before its epoch's commit
	for _, id := range []events.InstallationID{"bob", "carol"} {
		var texts []string
		for _, r := range got[id] {
			texts = append(texts, string(r.Content.Bytes()))
		}
		if w := []string{"queued", "lost by Send", "lost by Host.Send", "lost after the update"}; !reflect.DeepEqual(texts, w) {
			t.Fatalf("%s after the recovery received %q, want %q", id, texts, w)
		}
	}
	agreeOn(t, gid, update.Epoch, b.insts["alice"], b.insts["bob"], b.insts["carol"])

	// A second recovery queues nothing: every key was used.
	b.redeliver(alice, gid)
	for _, id := range []events.InstallationID{"alice", "bob", "carol"} {
		if ds, err := b.del.Fetch(ctx, id, mlsChannel, 0); err != nil || len(ds) != 0 {
			t.Fatalf("%s after a second recovery: %d deliveries queued, %v", id, len(ds), err)
		}
	}

	// Rebuilt by replay: the same outputs (the message is in the event).
	alice = b.rebuildAndRestart("alice")
	sameSends(t, "rebuilt by replay", ownMessages(t, alice, gid, 0, 0), all)
}

// A read model of schema 9 that applied an own message recording its
// output is migrated by replay as its installation opens at the latest
// schema, not in place: it hands back the own message projected before
// (its event recorded it) and those recorded after. Until 2026-12-06 it
// was migrated in place and the first was lost until a rebuild.
func TestOwnMessagesAfterMigrationFromSchema9(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	v9 := b.opts()
	v9.DB.SchemaVersion = 9
	alice := b.createWith("alice", v9)
	b.create("bob")
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	add, err := alice.AddMembers(ctx, gid, b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(add)
	b.drainAll()
	before := b.send("alice", gid, "at schema 9")
	if got := ownMessages(t, alice, gid, 0, 0); len(got) != 0 {
		t.Fatalf("schema 9: %d own messages handed back, want none", len(got))
	}
	if err := alice.DB().OutputsKept(ctx, projections.LatestSchema); !errors.Is(err, projections.ErrOutputsNotKept) {
		t.Fatalf("schema 9 after a v2 message: outputs kept %v, want ErrOutputsNotKept", err)
	}

	alice = b.restart("alice") // b.opts(): the latest schema, migrated by replay
	if v := alice.DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("reopened at schema %d, want %d", v, projections.LatestSchema)
	}
	sameSends(t, "migrated", ownMessages(t, alice, gid, 0, 0), []*SendOutput{before})
	after := b.send("alice", gid, "at schema 10")
	sameSends(t, "after the migration", ownMessages(t, alice, gid, 0, 0), []*SendOutput{before, after})
	if got := b.drain("bob"); len(got) != 2 {
		t.Fatalf("bob received %d messages, want 2", len(got))
	}

	alice = b.rebuildAndRestart("alice")
	sameSends(t, "migrated by replay", ownMessages(t, alice, gid, 0, 0), []*SendOutput{before, after})
}
