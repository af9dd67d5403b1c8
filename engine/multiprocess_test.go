package engine

import (
	"context"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// twoProcessCommits has two processes of alice commit in g1 one after
// the other (the second decided on top of the first) and returns both.
func twoProcessCommits(t *testing.T, b *backend, g1 []byte) (first, second *CommitOutput) {
	t.Helper()
	ctx := context.Background()
	other := b.secondProcess(alice, nil)
	first, err := b.insts[alice].Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	second, err = other.Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	if second.Epoch != first.Epoch+1 {
		t.Fatalf("second commit at epoch %d, want %d", second.Epoch, first.Epoch+1)
	}
	return first, second
}

func checkEpoch(t *testing.T, b *backend, gid []byte, want uint64, ids ...events.InstallationID) {
	t.Helper()
	for _, id := range ids {
		ep, err := b.insts[id].Epoch(context.Background(), gid)
		if err != nil {
			t.Fatal(err)
		}
		if ep != want {
			t.Errorf("%s at epoch %d, want %d", id, ep, want)
		}
	}
}

// Two processes of alice commit in one group, one right after the other:
// the first (slow, or killed and redoing its fan-out after a restart)
// queues its commit after the second queued the next one. With
// HoldNotYet, the members keep the early commit queued and reach the
// group's epoch once both are there. (Before HostOptions.HoldNotYet,
// Deliver acknowledged the early commit as settled and the members
// stayed one epoch behind for good.)
func TestCommitsOfTwoProcessesQueuedOutOfOrder(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	first, second := twoProcessCommits(t, b, g1)
	h := NewHost(b.log, b.del, &HostOptions{HoldNotYet: time.Minute})
	members := []*Installation{b.insts[bob], b.insts[carol]}
	b.deliverCommit(second)
	for _, r := range h.Deliver(context.Background(), mlsChannel, members, 0) {
		if r.Err != nil || r.Acked != 0 {
			t.Fatalf("%s: acknowledged %d (%v), want the commit of epoch %d held", r.Installation, r.Acked, r.Err, second.Epoch)
		}
	}
	b.now = b.now.Add(59 * time.Second)
	b.deliverCommit(first)
	hostDeliver(t, h, members)
	checkEpoch(t, b, g1, second.Epoch, bob, carol)
	checkQueuesEmpty(t, b, bob, carol)
	for _, id := range []events.InstallationID{alice, bob, carol} {
		b.checkRebuild(id)
	}
}

// A delivery whose epoch is never reached is held for HoldNotYet only:
// then it is acknowledged as settled and the queue goes on.
func TestHoldNotYetEnds(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	_, second := twoProcessCommits(t, b, g1) // the first is never queued
	h := NewHost(b.log, b.del, &HostOptions{HoldNotYet: time.Minute})
	b.deliverCommit(second)
	res := h.Deliver(context.Background(), mlsChannel, []*Installation{b.insts[bob]}, 0)
	if res[0].Err != nil || res[0].Acked != 0 || len(res[0].Delivered) != 1 {
		t.Fatalf("held: %+v", res[0])
	}
	if ds, err := b.del.Fetch(context.Background(), bob, mlsChannel, 0); err != nil || len(ds) != 1 {
		t.Fatalf("bob's queue holds %d deliveries (%v), want the commit", len(ds), err)
	}
	b.now = b.now.Add(time.Minute)
	got := hostDeliver(t, h, []*Installation{b.insts[bob]}, mls.ErrWrongEpoch)[bob]
	if len(got) != 1 || got[0] != "error" {
		t.Fatalf("bob's deliveries %q, want the commit refused", got)
	}
	checkQueuesEmpty(t, b, bob)
	checkEpoch(t, b, g1, second.Epoch-2, bob)
}
