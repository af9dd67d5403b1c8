package engine

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// lastSeq returns the stream sequence of id's last event.
func (b *backend) lastSeq(id events.InstallationID) uint64 {
	b.t.Helper()
	s, err := b.log.LastSeq(context.Background(), id)
	if err != nil {
		b.t.Fatalf("last seq of %s: %v", id, err)
	}
	return s
}

// invite creates a group of creator's and adds the client of key package
// kp. It returns the group id and the Welcome, not yet delivered.
func (b *backend) invite(creator events.InstallationID, kp []byte) (gid, welcome []byte) {
	b.t.Helper()
	ctx := context.Background()
	created, err := b.insts[creator].CreateGroup(ctx, nil)
	if err != nil {
		b.t.Fatal(err)
	}
	gid = created.GroupID
	co, err := b.insts[creator].AddMembers(ctx, gid, kp)
	if err != nil {
		b.t.Fatal(err)
	}
	return gid, co.Welcome
}

// pair creates a group of creator's and adds member (by a last-resort key
// package), who joins from the Welcome. It returns the group id.
func (b *backend) pair(creator, member events.InstallationID) []byte {
	b.t.Helper()
	gid, welcome := b.invite(creator, b.keyPackage(member))
	if _, err := b.insts[member].Receive(context.Background(), welcome); err != nil {
		b.t.Fatalf("%s joins: %v", member, err)
	}
	return gid
}

// secondProcess opens id a second time, with a read model of its own, as
// another process of the installation would. opts nil: the backend's.
func (b *backend) secondProcess(id events.InstallationID, opts *InstallationOptions) *Installation {
	b.t.Helper()
	if opts == nil {
		opts = b.opts()
	}
	in, err := OpenInstallation(context.Background(), b.log, id, b.dir+"/"+string(id)+"-2.db", b.keys[id], opts)
	if err != nil {
		b.t.Fatal(err)
	}
	b.t.Cleanup(func() { in.Close() })
	return in
}

// removeAndReceive has by remove member from gid, and member process
// the commit; it returns the commit.
func (b *backend) removeAndReceive(by events.InstallationID, gid []byte, member events.InstallationID) *CommitOutput {
	b.t.Helper()
	ctx := context.Background()
	rm, err := b.insts[by].RemoveMembers(ctx, gid, member)
	if err != nil {
		b.t.Fatal(err)
	}
	if r, err := b.insts[member].Receive(ctx, rm.Commit); err != nil || !r.Removed {
		b.t.Fatalf("%s receives its removal: %+v, %v", member, r, err)
	}
	return rm
}

// receiveAgain delivers wire to in a second time (a redelivery, or another
// process of the installation taking the same message) and checks that it
// is refused with want and that nothing is appended to id's log; id's read
// model and a rebuild from its history must still apply every event.
func (b *backend) receiveAgain(in *Installation, id events.InstallationID, wire []byte, want ...error) {
	b.t.Helper()
	ctx := context.Background()
	before := b.lastSeq(id)
	_, err := in.Receive(ctx, wire)
	for _, w := range want {
		if !errors.Is(err, w) {
			b.t.Errorf("receiving again: %v, want %v", err, w)
		}
	}
	if after := b.lastSeq(id); after != before {
		b.t.Errorf("receiving again appended to %s's log (last seq %d -> %d)", id, before, after)
	}
	if err := in.CatchUp(ctx); err != nil {
		b.t.Errorf("%s's read model can no longer catch up: %v", id, err)
	}
	fresh, err := projections.Open(b.dir+"/fresh-"+string(id)+".db", rawDBKey(b.t, 7), nil)
	if err != nil {
		b.t.Fatal(err)
	}
	defer fresh.Close()
	if _, _, err := replay.CatchUp(ctx, b.log, id, fresh, nil); err != nil {
		b.t.Errorf("rebuild of %s from its log: %v", id, err)
	}
}

// A Welcome delivered again (the service stopped between Receive and
// Acknowledge) is refused as a duplicate and records nothing: a second
// join would be an event the read model can never apply.
func TestRedeliveredWelcomeIsDuplicate(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	for _, lastResort := range []bool{true, false} {
		published, err := b.insts[bob].PublishKeyPackage(ctx, "directory", lastResort)
		if err != nil {
			t.Fatal(err)
		}
		kp := published.KeyPackage
		_, welcome := b.invite(alice, kp)
		if _, err := b.insts[bob].Receive(ctx, welcome); err != nil {
			t.Fatalf("first delivery: %v", err)
		}
		if lastResort {
			// A last-resort package keeps its keys: the join runs again.
			b.receiveAgain(b.insts[bob], bob, welcome, ErrDuplicateMessage)
		} else {
			// A one-time package's keys are gone after its join.
			b.receiveAgain(b.insts[bob], bob, welcome, ErrDuplicateMessage, ErrNoKeyPackage)
		}
	}
}

// A commit delivered again after it was applied is a duplicate, not an
// MLS error.
func TestRedeliveredCommitIsDuplicate(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(carol)
	gid := b.pair(alice, carol)
	up, err := b.insts[alice].Update(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[carol].Receive(ctx, up.Commit); err != nil {
		t.Fatal(err)
	}
	b.receiveAgain(b.insts[carol], carol, up.Commit, ErrDuplicateMessage)
	// Also from a reloaded group (a restart).
	b.restart(carol)
	b.receiveAgain(b.insts[carol], carol, up.Commit, ErrDuplicateMessage)
}

// A Welcome back into a group this installation was removed from starts
// a new membership; delivered again it is a duplicate, and so are the
// Welcome of the first membership and the commit that ended it.
func TestWelcomeAfterRemovalRejoins(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(carol)
	gid, first := b.invite(alice, b.keyPackage(carol))
	if _, err := b.insts[carol].Receive(ctx, first); err != nil {
		t.Fatal(err)
	}
	rm := b.removeAndReceive(alice, gid, carol)
	// The first Welcome again, its key package's keys still held: a past
	// membership's, not an invitation back.
	b.receiveAgain(b.insts[carol], carol, first, ErrDuplicateMessage)
	back, err := b.insts[alice].AddMembers(ctx, gid, b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	r, err := b.insts[carol].Receive(ctx, back.Welcome)
	if err != nil || r.Kind != "welcome" || r.Epoch != back.Epoch {
		t.Fatalf("carol receives the Welcome back: %+v, %v", r, err)
	}
	b.receiveAgain(b.insts[carol], carol, back.Welcome, ErrDuplicateMessage)
	b.receiveAgain(b.insts[carol], carol, rm.Commit, ErrDuplicateMessage)
	b.checkRebuild(carol)
}

// "Two processes, one installation": bob runs in two processes with read
// models of their own. Alice adds bob's one last-resort key package to two
// groups and each process takes one Welcome: the package is consumed and
// rotated once, and both read models keep applying bob's events.
func TestTwoProcessesConsumeOneLastResortKeyPackage(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	kp := b.keyPackage(bob)
	bob2 := b.secondProcess(bob, nil)
	var welcomes [][]byte
	var gids [][]byte
	for i := 0; i < 2; i++ {
		gid, welcome := b.invite(alice, kp)
		welcomes, gids = append(welcomes, welcome), append(gids, gid)
	}
	if _, err := b.insts[bob].Receive(ctx, welcomes[0]); err != nil {
		t.Fatalf("process 1, welcome 1: %v", err)
	}
	if _, err := bob2.Receive(ctx, welcomes[1]); err != nil {
		t.Fatalf("process 2, welcome 2: %v", err)
	}
	for i, in := range []*Installation{b.insts[bob], bob2} {
		if err := in.CatchUp(ctx); err != nil {
			t.Fatalf("process %d can no longer catch up: %v", i+1, err)
		}
		for _, gid := range gids {
			if e, err := in.Epoch(ctx, gid); err != nil || e != 1 {
				t.Errorf("process %d: group %x at epoch %d (%v), want 1", i+1, gid, e, err)
			}
		}
	}
	// The package both Welcomes used is rotated; the rotation packages
	// published for it (one per process that got that far) are not.
	db := b.insts[bob].DB()
	if state, _, err := db.KeyPackageState(ctx, keyPackageRef(t, kp)); err != nil || state != projections.KeyPackageRotated {
		t.Errorf("the key package both Welcomes used is %q (%v), want rotated", state, err)
	}
	avail, err := db.AvailableKeyPackages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(avail) == 0 || len(avail) > 2 {
		t.Errorf("%d key packages available after the rotation, want 1 or 2", len(avail))
	}
	for _, k := range avail {
		if k.State != projections.KeyPackagePublished {
			t.Errorf("rotation package %x is %q, want published", k.Ref, k.State)
		}
	}
}

// The same Welcome taken by both of bob's processes: the second finds the
// join recorded by the first (its read model was behind) and refuses it.
func TestTwoProcessesProcessOneWelcome(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	bob2 := b.secondProcess(bob, nil)
	_, welcome := b.invite(alice, b.keyPackage(bob))
	if _, err := b.insts[bob].Receive(ctx, welcome); err != nil {
		t.Fatal(err)
	}
	b.receiveAgain(bob2, bob, welcome, ErrDuplicateMessage)
}

// The same application message received by both of carol's processes:
// the second is a duplicate, although its reloaded group could decrypt it
// again.
func TestTwoProcessesReceiveOneMessage(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(carol)
	gid := b.pair(alice, carol)
	carol2 := b.secondProcess(carol, nil)
	out, err := b.insts[alice].Send(ctx, gid, []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Update != nil {
		t.Fatal("unexpected update commit")
	}
	if _, err := b.insts[carol].Receive(ctx, out.Message); err != nil {
		t.Fatalf("process 1: %v", err)
	}
	// A second later: with the same clock the two receipts would be the
	// same event, and Append would take the second for a retry of the first.
	b.now = b.now.Add(time.Second)
	b.receiveAgain(carol2, carol, out.Message, ErrDuplicateMessage)
}

// Two processes of bob take two Welcomes that use one last-resort key
// package at the same moment: process 1 consumes and rotates it while
// process 2 is publishing its rotation package (the clock hook runs
// process 1 there). Process 2's consumption must then lose the race for
// the package's position and find it rotated, not record it a second time,
// which the read model could never apply.
func TestTwoProcessesRotateOneLastResortKeyPackageAtOnce(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	kp := b.keyPackage(bob)
	var welcomes [][]byte
	for i := 0; i < 2; i++ {
		_, welcome := b.invite(alice, kp)
		welcomes = append(welcomes, welcome)
	}
	var calls atomic.Int32
	var armed atomic.Bool
	var p1Err error
	opts := b.opts()
	opts.Now = func() time.Time {
		if armed.Load() && calls.Add(1) == 2 {
			// Process 1 takes the other Welcome right now.
			_, p1Err = b.insts[bob].Receive(ctx, welcomes[0])
		}
		return b.now
	}
	bob2 := b.secondProcess(bob, opts)
	armed.Store(true)
	_, err2 := bob2.Receive(ctx, welcomes[1])
	if p1Err != nil {
		t.Fatalf("process 1: %v", p1Err)
	}
	if err2 != nil {
		t.Errorf("process 2: %v", err2)
	}
	for i, in := range []*Installation{b.insts[bob], bob2} {
		if err := in.CatchUp(ctx); err != nil {
			t.Errorf("process %d can no longer catch up: %v", i+1, err)
		}
	}
}

// After carol's removal, the commit that removed her and a message she
// received before it, delivered again, are duplicates (which a service
// acknowledges), not errors that would stop her queue: she has no group
// state left to process them with.
func TestRedeliveredRemovalIsDuplicate(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(carol)
	gid := b.pair(alice, carol)
	msg := b.send(alice, gid, "before")
	if _, err := b.insts[carol].Receive(ctx, msg.Message); err != nil {
		t.Fatal(err)
	}
	rm := b.removeAndReceive(alice, gid, carol)
	b.receiveAgain(b.insts[carol], carol, rm.Commit, ErrDuplicateMessage)
	b.receiveAgain(b.insts[carol], carol, msg.Message, ErrDuplicateMessage)
}
