package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// Resync after a fork and after a loss. alice commits while a foreign
// member commits the same epoch, and the group takes the foreign commit:
// alice is forked, which a peer's reported epoch authenticator and the
// group's commit both show (ErrForked, with both authenticators); she
// rejoins by an external commit that removes her old leaf. carol misses a
// commit the delivery service lost: she cannot process the next one, and
// rejoins too. Both keep their old membership's history; every member
// agrees afterwards, and every history re-derives.
func TestResyncAfterLossOrFork(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	bob := b.create("bob")
	carol := b.create("carol")
	fx := w.addForeign("fx", true)
	fy := w.addForeign("fy", false)
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("carol"), w.keyPackage("fx"), w.keyPackage("fy"))
	w.engineCommitted("alice", co, err)

	// The fork: alice's update is never delivered; fx's commit of the same
	// epoch is.
	mine, err := alice.Update(ctx, w.gid)
	if err != nil {
		t.Fatal(err)
	}
	theirs, _ := fx.commit(mls.CommitOptions{ForcePath: true})
	for _, id := range []string{"bob", "carol", "fy"} {
		w.receive(eventsID(id), theirs)
	}
	// A peer reports its epoch authenticator: alice's differs.
	fe, fa := fx.g.Epoch(), fx.g.EpochAuthenticator()
	err = alice.CheckEpochAuthenticator(ctx, w.gid, fe, fa)
	var fork *ForkError
	if !errors.Is(err, ErrForked) || !errors.As(err, &fork) || fork.Epoch != fe || !bytes.Equal(fork.Theirs, fa) || bytes.Equal(fork.Ours, fa) {
		t.Fatalf("alice checks fx's authenticator: %v", err)
	}
	if err := bob.CheckEpochAuthenticator(ctx, w.gid, fe, fa); err != nil {
		t.Fatalf("bob checks fx's authenticator: %v", err)
	}
	if err := bob.CheckEpochAuthenticator(ctx, w.gid, fe+1, fa); !errors.Is(err, mls.ErrWrongEpoch) {
		t.Fatalf("an epoch bob has not reached: %v", err)
	}
	// The group's commit shows it too, with the authenticator it derives.
	before := b.lastSeq("alice")
	_, err = alice.Receive(ctx, theirs)
	fork = nil
	if !errors.As(err, &fork) || fork.Epoch != fe || !bytes.Equal(fork.Theirs, fa) || fork.Evidence != "commit" {
		t.Fatalf("alice receives the group's commit of the epoch she left: %v", err)
	}
	if b.lastSeq("alice") != before {
		t.Fatal("the fork was recorded as a transition")
	}
	_ = mine
	w.stale["alice"] = true
	w.check("the group, alice forked")
	// alice resyncs from bob's GroupInfo: her old leaf goes.
	gio, err := bob.GroupInfo(ctx, w.gid, true)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Resync(ctx, w.gid, gio.GroupInfo, nil, "bored"); err == nil {
		t.Fatal("a resync for no reason is accepted")
	}
	co, err = alice.Resync(ctx, w.gid, gio.GroupInfo, nil, ResyncForked)
	if err != nil {
		t.Fatal(err)
	}
	delete(w.stale, "alice")
	w.deliver("alice", co.Commit)
	w.check("alice resynced")
	if n := len(w.identities("bob")); n != 5 {
		t.Fatalf("%d members after alice's resync, want 5 (her old leaf removed)", n)
	}
	ms, err := alice.DB().Memberships(ctx, w.gid)
	if err != nil || len(ms) != 2 || ms[0].Left != "abandoned" || ms[1].JoinedVia != "external" {
		t.Fatalf("alice's memberships %+v, %v", ms, err)
	}
	e, a := w.state("bob")
	if err := alice.CheckEpochAuthenticator(ctx, w.gid, e, a); err != nil {
		t.Fatalf("alice after her resync: %v", err)
	}

	// The loss: carol misses bob's commit, and cannot take the next one.
	lost, err := bob.Update(ctx, w.gid)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []string{"alice", "fx", "fy"} {
		w.receive(eventsID(id), lost.Commit)
	}
	next, _ := fy.commit(mls.CommitOptions{ForcePath: true})
	for _, id := range []string{"alice", "bob", "fx"} {
		w.receive(eventsID(id), next)
	}
	if _, err := carol.Receive(ctx, next); !errors.Is(err, mls.ErrWrongEpoch) {
		t.Fatalf("carol receives a commit two epochs ahead: %v", err)
	}
	w.stale["carol"] = true
	w.check("the group, carol behind")
	fgi, ftree := fx.groupInfo(false)
	co, err = carol.Resync(ctx, w.gid, fgi, ftree, ResyncLost)
	if err != nil {
		t.Fatal(err)
	}
	delete(w.stale, "carol")
	w.deliver("carol", co.Commit)
	w.check("carol resynced")
	// A resync of a group this installation is not in is refused.
	if _, err := b.create("dave").Resync(ctx, w.gid, fgi, ftree, ResyncLost); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("dave resyncs a group he is not in: %v", err)
	}
	delete(b.insts, "dave")
	w.update("alice")
	w.update("carol")
	w.verifyAll()
	w.rebuildAndReopen("alice")
	w.update("alice")
}

func eventsID(s string) events.InstallationID { return events.InstallationID(s) }

// Competing commits of one epoch, as each member sees them. Alice and
// carol both commit epoch 1; bob takes alice's first. Carol, who left
// epoch 1 by her own commit, is forked (both authenticators in the
// error). Bob, who followed alice's, is not: carol's reaches him second
// (ErrStaleCommit). Bytes that do not authenticate in the epoch, or a
// commit of an epoch whose state is retired, prove nothing and are no
// fork either. None of them records anything.
func TestCompetingCommitsForkOnlyTheirCommitter(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	coA, err := b.insts[alice].Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	coC, err := b.insts[carol].Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[bob].Receive(ctx, coA.Commit); err != nil {
		t.Fatal(err)
	}
	_, groupAuth, err := b.insts[bob].EpochAuthenticator(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	refused := func(who events.InstallationID, what string, wire []byte) error {
		t.Helper()
		before := b.lastSeq(who)
		_, err := b.insts[who].Receive(ctx, wire)
		t.Logf("%s receives %s: %v", who, what, err)
		if err == nil {
			t.Fatalf("%s received %s", who, what)
		}
		if b.lastSeq(who) != before {
			t.Fatalf("%s recorded %s", who, what)
		}
		return err
	}

	err = refused(bob, "carol's commit of epoch 1, after alice's", coC.Commit)
	if !errors.Is(err, ErrStaleCommit) || errors.Is(err, ErrForked) {
		t.Fatalf("bob: %v, want ErrStaleCommit, not ErrForked", err)
	}
	// Delivered so, the stale commit is acknowledged, not left to block
	// bob's queue; the message after it is received.
	if _, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, coC.Commit, time.Time{}, "carol's losing commit"); err != nil {
		t.Fatal(err)
	}
	b.send(alice, g1, "after the race")
	res := NewHost(b.log, b.del, nil).Deliver(ctx, mlsChannel, []*Installation{b.insts[bob]}, 0)
	if r := res[0]; r.Err != nil || len(r.Delivered) != 2 || !errors.Is(r.Delivered[0].Err, ErrStaleCommit) ||
		r.Delivered[1].Err != nil || string(r.Delivered[1].Received.Content.Bytes()) != "after the race" || r.Acked != r.Delivered[1].Delivery.Seq {
		t.Fatalf("Host.Deliver of the stale commit and a message: %+v", r)
	}
	err = refused(carol, "alice's commit of epoch 1, after her own", coA.Commit)
	var fork *ForkError
	if !errors.As(err, &fork) || fork.Epoch != 2 || !bytes.Equal(fork.Theirs, groupAuth) || bytes.Equal(fork.Ours, groupAuth) || fork.Evidence != "commit" {
		t.Fatalf("carol: %v, want a *ForkError at epoch 2 with the group's authenticator as Theirs", err)
	}
	for i := range coC.Commit {
		if i%7 != 0 {
			continue
		}
		forged := bytes.Clone(coC.Commit)
		forged[i] ^= 0x01
		if err := refused(bob, fmt.Sprintf("carol's commit with byte %d flipped", i), forged); errors.Is(err, ErrForked) {
			t.Fatalf("bytes that do not authenticate made bob forked: %v", err)
		}
	}

	// Alice moves the group on until bob retires the state of epoch 1.
	for range 4 {
		co, err := b.insts[alice].Update(ctx, g1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.insts[bob].Receive(ctx, co.Commit); err != nil {
			t.Fatal(err)
		}
	}
	for _, c := range []struct {
		what string
		wire []byte
	}{{"carol's commit of epoch 1, its state retired", coC.Commit}, {"garbage naming epoch 1", flipLast(coC.Commit)}} {
		if err := refused(bob, c.what, c.wire); !errors.Is(err, ErrEpochRetired) || errors.Is(err, ErrForked) {
			t.Fatalf("bob: %v, want ErrEpochRetired, not ErrForked", err)
		}
	}
}

// flipLast returns b with its last byte flipped.
func flipLast(b []byte) []byte {
	out := bytes.Clone(b)
	out[len(out)-1] ^= 0xff
	return out
}

// Resync of one group given another group's GroupInfo (mixed up, or
// handed over by a hostile peer or delivery service) is refused before
// anything is recorded. Until 2026-12-06 the group was checked after the
// append: when the installation was a member of the other group too, a
// resync of that group was recorded (its membership abandoned for an
// external commit nobody would receive) and an error returned.
func TestResyncWithAnotherGroupsGroupInfoRecordsNothing(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, g2 := setupGroups(t, b) // bob and carol are in both
	_, auth2Before, err := b.insts[carol].EpochAuthenticator(ctx, g2)
	if err != nil {
		t.Fatal(err)
	}
	gi2, err := b.insts[bob].GroupInfo(ctx, g2, true)
	if err != nil {
		t.Fatal(err)
	}
	before := b.lastSeq(carol)
	_, err = b.insts[carol].Resync(ctx, g1, gi2.GroupInfo, gi2.RatchetTree, ResyncForked)
	if err == nil {
		t.Fatal("resync of g1 with g2's GroupInfo accepted")
	}
	if !errors.Is(err, mls.ErrWrongGroup) {
		t.Errorf("error %v, want mls.ErrWrongGroup", err)
	}
	if after := b.lastSeq(carol); after != before {
		t.Errorf("the refused resync appended to carol's log (last seq %d -> %d)", before, after)
	}
	_, auth2After, err := b.insts[carol].EpochAuthenticator(ctx, g2)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(auth2Before, auth2After) {
		ms, _ := b.insts[carol].DB().Memberships(ctx, g2)
		t.Errorf("carol's membership of g2 was replaced by an external commit nobody will receive; memberships now: %+v", ms)
	}
}

// Two members commit the same epoch, each adding carol with a key package
// of hers. She joins from one Welcome; the other is not a redelivery:
// ErrStaleCommit, nothing recorded, its key package not consumed. (A
// *ForkError it cannot be: anyone with one of her key packages can forge
// a Welcome to any group id, and ErrForked stops her queue.) Until
// 2026-12-06 it was ErrDuplicateMessage and consumed its key package.
func TestCompetingWelcomeIsNotADuplicate(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	carol := b.create("carol")
	fx := w.addForeign("fx", true)
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("fx"))
	w.engineCommitted("alice", co, err)

	// alice and fx both commit epoch 1 -> 2, each adding carol.
	coA, err := alice.AddMembers(ctx, w.gid, b.keyPackage("carol"))
	if err != nil {
		t.Fatal(err)
	}
	var kp mls.KeyPackage
	if err := kp.Unmarshal(b.keyPackage("carol")); err != nil {
		t.Fatal(err)
	}
	_, welcomeB := fx.commit(mls.CommitOptions{Add: []*mls.KeyPackage{&kp}}) // the group's commit
	if _, err := carol.Receive(ctx, coA.Welcome); err != nil {
		t.Fatal(err)
	}
	before := b.lastSeq("carol")
	_, err = carol.Receive(ctx, welcomeB)
	after := b.lastSeq("carol")
	if !errors.Is(err, ErrStaleCommit) || errors.Is(err, ErrDuplicateMessage) || !Settled(err) {
		t.Errorf("a different Welcome to the same group and epoch (a competing commit's): %v, want ErrStaleCommit, not a duplicate", err)
	}
	if after != before {
		t.Errorf("the refused Welcome appended to carol's log (seq %d -> %d)", before, after)
	}
	// The Welcome she joined with, delivered again, is still a duplicate.
	if _, err := carol.Receive(ctx, coA.Welcome); !errors.Is(err, ErrDuplicateMessage) {
		t.Errorf("the Welcome carol joined with, again: %v, want ErrDuplicateMessage", err)
	}
}
