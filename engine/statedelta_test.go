package engine

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// commitForms reads id's group.commit_applied events: how many recorded
// their state as a delta and how many whole, and the largest delta and
// smallest whole state seen.
func commitForms(t *testing.T, b *backend, id events.InstallationID) (deltas, wholes, maxDelta, minWhole int) {
	t.Helper()
	err := b.log.Read(context.Background(), id, 0, func(r eventlog.Record) error {
		c, ok := r.Event.Body.(events.CommitApplied)
		if !ok {
			return nil
		}
		if !c.StateDelta.IsZero() {
			deltas++
			maxDelta = max(maxDelta, c.StateDelta.Len())
		} else {
			wholes++
			if minWhole == 0 || c.State.Len() < minWhole {
				minWhole = c.State.Len()
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return
}

// Every commit (and cached proposal) of a group of a dozen members records
// its state as a delta from the state its epoch started with
// (group.commit_applied v4, group.proposal_staged v3):
// own and processed commits, a commit of a member that joined by Welcome,
// a commit by reference to a cached proposal (whose state is the base),
// and one after a restart (the base read back from the read model). Each
// installation's history then verifies (VerifyMLS) and rebuilds into its
// live read model.
func TestCommitsRecordStateDeltas(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	alice := b.create("alice")
	out, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := out.GroupID
	var members []events.InstallationID
	var kps [][]byte
	for i := range 11 {
		id := events.InstallationID(fmt.Sprintf("member-%d", i))
		b.create(id)
		members = append(members, id)
		kps = append(kps, b.keyPackage(id))
	}
	co, err := alice.AddMembers(ctx, gid, kps...)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drainAll()
	commit := func(who events.InstallationID) {
		t.Helper()
		co, err := b.insts[who].Update(ctx, gid)
		if err != nil {
			t.Fatalf("%s update: %v", who, err)
		}
		if co.ProjectionErr != nil {
			t.Fatalf("%s update: %v", who, co.ProjectionErr)
		}
		b.deliverCommit(co)
		b.drainAll()
	}
	commit(members[0]) // a member that joined by Welcome
	p, err := b.insts[members[1]].ProposeUpdate(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.del.FanOut(ctx, p.Recipients, mlsChannel, p.Proposal, time.Time{}, "proposal"); err != nil {
		t.Fatal(err)
	}
	b.drainAll()
	commit("alice") // by reference to the proposal every member cached
	b.restart("alice")
	b.restart(members[2])
	commit("alice") // the bases read back from the read models
	commit(members[2])

	for _, id := range append([]events.InstallationID{"alice"}, members...) {
		deltas, wholes, maxDelta, _ := commitForms(t, b, id)
		// Alice's first commit (the group of 1 to 12) has a state more
		// than twice its base: whole. Every other is a delta (in a
		// group of 6, an own commit's delta is about half the state).
		wantWhole := 0
		if id == "alice" {
			wantWhole = 1
		}
		st, err := b.insts[id].DB().GroupState(ctx, gid)
		if err != nil {
			t.Fatal(err)
		}
		if wholes != wantWhole || deltas != 4 || maxDelta*2 > st.Len() {
			t.Errorf("%s: %d commits recorded as deltas (largest %d bytes, state %d), %d whole; want 4 deltas of at most half the state, %d whole",
				id, deltas, maxDelta, st.Len(), wholes, wantWhole)
		}
		b.checkRebuild(id)
	}
	// The proposal every member cached (its proposer's own included) is
	// a delta in every history.
	for _, id := range append([]events.InstallationID{"alice"}, members...) {
		n := 0
		err := b.log.Read(ctx, id, 0, func(r eventlog.Record) error {
			if p, ok := r.Event.Body.(events.ProposalStaged); ok {
				if p.StateDelta.IsZero() || !p.State.IsZero() {
					t.Errorf("%s: proposal recorded with its state whole (%d bytes)", id, p.State.Len())
				}
				n++
			}
			return nil
		})
		if err != nil || n != 1 {
			t.Fatalf("%s: %d proposals read, %v; want 1", id, n, err)
		}
	}
}
