package engine

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// sameOutputs fails unless got (OwnCommits) is want (what the operations
// returned), output by output.
func sameOutputs(t *testing.T, what string, got, want []*CommitOutput) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d own commits handed back, want %d", what, len(got), len(want))
	}
	for i := range want {
		w := *want[i]
		w.ProjectionErr = nil
		if !reflect.DeepEqual(*got[i], w) {
			t.Fatalf("%s: own commit %d (epoch %d) handed back as\n%+v\nthe operation returned\n%+v", what, i, w.Epoch, *got[i], w)
		}
	}
}

// ownCommits is in's OwnCommits, which must not fail.
func ownCommits(t *testing.T, in *Installation, gid []byte, from uint64) []*CommitOutput {
	t.Helper()
	out, err := in.OwnCommits(context.Background(), gid, from)
	if err != nil {
		t.Fatalf("own commits of group %x from %d: %v", gid, from, err)
	}
	return out
}

// OwnCommits hands back what the own commits returned: a commit adding
// and removing at once (dave takes the leaf carol leaves: carol is still
// among whom it is for), an update, a join by external commit and a
// resync (which starts a new membership: the own commits of the one it
// left are not handed back), and a successor group's first commit; not
// the commits of other members.
func TestOwnCommitsEqualWhatTheOperationsReturned(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice, bob := b.create("alice"), b.create("bob")
	b.create("carol")
	b.create("dave")
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	var want []*CommitOutput
	commit := func(co *CommitOutput, err error) *CommitOutput {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b.deliverCommit(co)
		b.drainAll()
		return co
	}
	want = append(want, commit(alice.AddMembers(ctx, gid, b.keyPackage("bob"), b.keyPackage("carol"))))
	// One commit that removes carol and adds dave (into carol's leaf).
	p, err := alice.ProposeRemove(ctx, gid, "carol")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.del.FanOut(ctx, p.Recipients, mlsChannel, p.Proposal, time.Time{}, fmt.Sprintf("proposal-%x", p.MessageID)); err != nil {
		t.Fatal(err)
	}
	b.drainAll()
	both := commit(alice.AddMembers(ctx, gid, b.keyPackage("dave")))
	if !reflect.DeepEqual(both.Recipients, []events.InstallationID{"bob", "carol"}) || !reflect.DeepEqual(both.Added, []events.InstallationID{"dave"}) {
		t.Fatalf("remove and add: recipients %v, added %v", both.Recipients, both.Added)
	}
	want = append(want, both)
	commit(bob.Update(ctx, gid)) // another member's: not handed back
	want = append(want, commit(alice.Update(ctx, gid)))

	sameOutputs(t, "group", ownCommits(t, alice, gid, 0), want)
	sameOutputs(t, "group from epoch 2", ownCommits(t, alice, gid, 2), want[1:])
	sameOutputs(t, "group after its last epoch", ownCommits(t, alice, gid, want[2].Epoch+1), nil)
	if got := ownCommits(t, bob, gid, 0); len(got) != 1 || got[0].Epoch != 3 {
		t.Fatalf("bob's own commits: %+v, want his update of epoch 3", got)
	}

	// An external join: its commit is for the other members, sorted.
	erin := b.create("erin")
	gio, err := alice.GroupInfo(ctx, gid, true)
	if err != nil {
		t.Fatal(err)
	}
	joined := commit(erin.JoinExternal(ctx, gio.GroupInfo, nil))
	if len(joined.Recipients) != 3 {
		t.Fatalf("external join for %v, want alice, bob and dave", joined.Recipients)
	}
	sameOutputs(t, "external join", ownCommits(t, erin, gid, 0), []*CommitOutput{joined})
	// A resync starts a new membership: its join, and the own commits
	// after it, are handed back; not those of the membership it left.
	erinUpdate := commit(erin.Update(ctx, gid))
	sameOutputs(t, "external join and update", ownCommits(t, erin, gid, 0), []*CommitOutput{joined, erinUpdate})
	gio, err = bob.GroupInfo(ctx, gid, true)
	if err != nil {
		t.Fatal(err)
	}
	resynced := commit(erin.Resync(ctx, gid, gio.GroupInfo, nil, ResyncLost))
	sameOutputs(t, "resync", ownCommits(t, erin, gid, 0), []*CommitOutput{resynced})
	sameOutputs(t, "group after the joins", ownCommits(t, alice, gid, 0), want)

	branch, err := alice.Branch(ctx, gid, nil, b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	sameOutputs(t, "branch", ownCommits(t, alice, branch.GroupID, 0), []*CommitOutput{branch})
	if _, err := alice.OwnCommits(ctx, []byte("no such group"), 0); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("own commits of an unknown group: %v, want ErrUnknownGroup", err)
	}
	b.checkRebuild("alice")
}

// A process that recorded its own commits and died before it fanned
// their outputs out (the whole process: installations, log connection,
// delivery service) leaves them recorded: once restarted, it fans out
// again what OwnCommits hands back, with the live path's idempotency
// keys. The commit queued before the crash is not queued twice, bob
// follows the lost commits, carol joins from the lost Welcome, and a
// later commit is followed by all. A read model rebuilt by replay hands
// back the same outputs.
func TestOwnCommitsDeliveredAfterACrash(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice := b.create("alice")
	b.create("bob")
	b.create("carol")
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	queued, err := alice.AddMembers(ctx, gid, b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(queued)
	b.drainAll()
	// Recorded, never queued: the process dies with the outputs.
	lost1, err := alice.AddMembers(ctx, gid, b.keyPackage("carol"))
	if err != nil {
		t.Fatal(err)
	}
	lost2, err := alice.Update(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	b.close()
	b.open()
	b.reopen()

	// Stranded: nothing reached bob or carol.
	for _, id := range []events.InstallationID{"bob", "carol"} {
		if ds, err := b.del.Fetch(ctx, id, mlsChannel, 0); err != nil || len(ds) != 0 {
			t.Fatalf("%s before the recovery: %d deliveries queued, %v", id, len(ds), err)
		}
	}

	// The recovery at startup.
	alice = b.insts["alice"]
	outs := ownCommits(t, alice, gid, 0)
	sameOutputs(t, "after the restart", outs, []*CommitOutput{queued, lost1, lost2})
	for _, co := range outs {
		b.deliverCommit(co)
	}
	b.drainAll() // fails on any refusal, a duplicate Welcome or commit included
	for _, id := range []events.InstallationID{"bob", "carol"} {
		if e, err := b.insts[id].Epoch(ctx, gid); err != nil || e != lost2.Epoch {
			t.Fatalf("%s after the recovery: epoch %d, %v; want %d", id, e, err, lost2.Epoch)
		}
	}
	later, err := b.insts["carol"].Update(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(later)
	b.drainAll()
	agreeOn(t, gid, later.Epoch, b.insts["alice"], b.insts["bob"], b.insts["carol"])

	// A second recovery queues nothing: every key was used.
	for _, co := range ownCommits(t, alice, gid, 0) {
		b.deliverCommit(co)
	}
	for _, id := range []events.InstallationID{"alice", "bob", "carol"} {
		if ds, err := b.del.Fetch(ctx, id, mlsChannel, 0); err != nil || len(ds) != 0 {
			t.Fatalf("%s after a second recovery: %d deliveries queued, %v", id, len(ds), err)
		}
	}

	// Rebuilt by replay: the same outputs (the Welcome is in the event).
	alice = b.rebuildAndRestart("alice")
	sameOutputs(t, "rebuilt by replay", ownCommits(t, alice, gid, 0), []*CommitOutput{queued, lost1, lost2})
}

// agreeOn fails unless every installation is at epoch with one epoch
// authenticator.
func agreeOn(t *testing.T, gid []byte, epoch uint64, ins ...*Installation) {
	t.Helper()
	var first []byte
	for i, in := range ins {
		e, auth, err := in.EpochAuthenticator(context.Background(), gid)
		if err != nil || e != epoch {
			t.Fatalf("installation %d: epoch %d, %v; want %d", i, e, err, epoch)
		}
		if i == 0 {
			first = auth
		} else if !reflect.DeepEqual(auth, first) {
			t.Fatalf("installation %d: epoch authenticator differs from the first's", i)
		}
	}
}

// A read model of schema 8 that applied an own commit recording its
// output is migrated by replay as its installation opens at the latest
// schema, not in place: it hands back the output of the own commit
// projected before (its event recorded it) and of those recorded after.
// Until 2026-12-06 it was migrated in place and the first was lost.
func TestOwnCommitsAfterMigrationFromSchema8(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	v8 := b.opts()
	v8.DB.SchemaVersion = 8
	alice := b.createWith("alice", v8)
	b.create("bob")
	b.create("carol")
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	before, err := alice.AddMembers(ctx, gid, b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(before)
	b.drainAll()
	if got := ownCommits(t, alice, gid, 0); len(got) != 0 {
		t.Fatalf("schema 8: %d own commits handed back, want none", len(got))
	}

	alice = b.restart("alice") // b.opts(): the latest schema, migrated by replay
	if v := alice.DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("reopened at schema %d, want %d", v, projections.LatestSchema)
	}
	sameOutputs(t, "migrated", ownCommits(t, alice, gid, 0), []*CommitOutput{before})
	after, err := alice.AddMembers(ctx, gid, b.keyPackage("carol"))
	if err != nil {
		t.Fatal(err)
	}
	sameOutputs(t, "after the migration", ownCommits(t, alice, gid, 0), []*CommitOutput{before, after})
	b.deliverCommit(after)
	b.drainAll()
	agreeOn(t, gid, after.Epoch, alice, b.insts["bob"], b.insts["carol"])
}
