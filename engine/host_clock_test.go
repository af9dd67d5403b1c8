package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/mls"
)

// fanOutCommitFrom fans co's commit out through d (another process's
// delivery service, on its own clock).
func fanOutCommitFrom(t *testing.T, d *Deliveries, co *CommitOutput) {
	t.Helper()
	if _, err := d.FanOut(context.Background(), co.Recipients, mlsChannel, co.Commit, time.Time{}, fmt.Sprintf("commit-%x-%d", co.GroupID, co.Epoch)); err != nil {
		t.Fatalf("fan out commit: %v", err)
	}
}

// The process that fans out the later of two commits runs two minutes
// behind the Host's (no NTP on it): measured from the enqueue's time,
// the commit was older than HoldNotYet when first refused, so it was
// acknowledged as settled at once and the members stayed an epoch
// behind for good. HoldNotYet is measured on the Host's clock, from when
// it first held the delivery.
func TestHoldNotYetEnqueuerClockBehind(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	first, second := twoProcessCommits(t, b, g1)
	h := NewHost(b.log, b.del, &HostOptions{HoldNotYet: time.Minute})
	members := []*Installation{b.insts[bob], b.insts[carol]}
	lagging := NewDeliveries(b.log, func() time.Time { return b.now.Add(-2 * time.Minute) })
	fanOutCommitFrom(t, lagging, second)
	for _, r := range h.Deliver(context.Background(), mlsChannel, members, 0) {
		if r.Err != nil || r.Acked != 0 {
			t.Fatalf("%s: acknowledged %d (%v), want the commit of epoch %d held", r.Installation, r.Acked, r.Err, second.Epoch)
		}
	}
	b.now = b.now.Add(30 * time.Second)
	fanOutCommitFrom(t, lagging, first)
	hostDeliver(t, h, members)
	checkEpoch(t, b, g1, second.Epoch, bob, carol)
	checkQueuesEmpty(t, b, bob, carol)
}

// The process that fans out a commit whose epoch is never reached runs a
// year ahead of the Host's: measured from the enqueue's time, the
// delivery was held, and the recipient's queue stopped there, for a
// year. It is held for HoldNotYet of the Host's clock, then
// acknowledged as settled.
func TestHoldNotYetEnqueuerClockAhead(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	_, second := twoProcessCommits(t, b, g1) // the first is never queued
	h := NewHost(b.log, b.del, &HostOptions{HoldNotYet: time.Minute})
	ahead := NewDeliveries(b.log, func() time.Time { return b.now.AddDate(1, 0, 0) })
	fanOutCommitFrom(t, ahead, second)
	res := h.Deliver(context.Background(), mlsChannel, []*Installation{b.insts[bob]}, 0)
	if res[0].Err != nil || res[0].Acked != 0 || len(res[0].Delivered) != 1 {
		t.Fatalf("held: %+v", res[0])
	}
	b.now = b.now.Add(time.Minute)
	got := hostDeliver(t, h, []*Installation{b.insts[bob]}, mls.ErrWrongEpoch)[bob]
	if len(got) != 1 || got[0] != "error" {
		t.Fatalf("bob's deliveries %q, want the commit refused and acknowledged after HoldNotYet", got)
	}
	checkQueuesEmpty(t, b, bob)
	checkEpoch(t, b, g1, second.Epoch-2, bob)
}
