package engine

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
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

// Four processes of bob open one read model file that does not exist
// yet, at once: one opens it (creating it from the log), the others get
// projections.ErrLocked, and the file verifies against the log.
func TestConcurrentOpensOfOneReadModel(t *testing.T) {
	b := newBackend(t)
	setupGroups(t, b)
	ctx := context.Background()
	for round := 0; round < 8; round++ {
		path := filepath.Join(t.TempDir(), "bob.db")
		var wg sync.WaitGroup
		res := make([]error, 4)
		ins := make([]*Installation, 4)
		for i := range 4 {
			l, err := eventlog.Open(ctx, testConfig(b.srv), b.ring)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			wg.Add(1)
			go func() {
				defer wg.Done()
				ins[i], res[i] = OpenInstallation(ctx, l, bob, path, b.keys[bob], b.opts())
			}()
		}
		wg.Wait()
		ok := 0
		for i, err := range res {
			switch {
			case err == nil:
				ok++
			case errors.Is(err, projections.ErrLocked):
			default:
				t.Errorf("round %d opener %d: %v", round, i, err)
			}
		}
		if ok != 1 {
			t.Fatalf("round %d: %d openers succeeded: %v", round, ok, res)
		}
		for _, in := range ins {
			if in != nil {
				in.Close()
			}
		}
		if _, err := replay.Verify(ctx, b.log, bob, path, b.keys[bob], nil); err != nil {
			t.Fatalf("round %d: verify: %v", round, err)
		}
	}
}

// Two processes of alice decide one unknown outcome (an Update whose
// answer was lost) while the second one also commits: both find it
// recorded, the stream holds it once, and the second commit follows it.
func TestTwoProcessesDecideOneOutcome(t *testing.T) {
	ctx := context.Background()
	b, proxy, direct := lossyBackend(t)
	b.create(alice)
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	proxy.mute.Store(true)
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	_, err = b.insts[alice].Update(short, gid)
	cancel()
	var u *OutcomeUnknownError
	if !errors.As(err, &u) {
		t.Fatalf("%v", err)
	}
	proxy.mute.Store(false)
	proxy.Drop()
	other, err := OpenInstallation(ctx, direct, alice, filepath.Join(t.TempDir(), "a2.db"), b.keys[alice], b.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	var wg sync.WaitGroup
	var rec [3]bool
	var errs [3]error
	var up *CommitOutput
	for i, in := range []*Installation{b.insts[alice], other} {
		wg.Add(1)
		go func() { defer wg.Done(); rec[i], errs[i] = in.Decide(ctx, u) }()
	}
	wg.Add(1)
	go func() { defer wg.Done(); up, errs[2] = other.Update(ctx, gid) }()
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("call %d: %v", i, err)
		}
	}
	if seqs := commitsTo(t, direct, gid, 1); len(seqs) != 1 {
		t.Fatalf("commits to epoch 1: %v", seqs)
	}
	if !rec[0] || !rec[1] {
		t.Fatalf("decided %v, want both recorded", rec)
	}
	if up == nil || up.Epoch != 2 {
		t.Fatalf("other's update %+v", up)
	}
	for _, in := range []*Installation{b.insts[alice], other} {
		if e, err := in.Epoch(ctx, gid); err != nil || e != 2 {
			t.Errorf("epoch %d %v", e, err)
		}
	}
	b.checkRebuild(alice)
}

// A message of an epoch this installation was a member at, queued after
// the commit that removed it (its sender had not seen the removal yet),
// can never be received: a Welcome adds it back at a later epoch. It is
// refused as retired (settled), not as not-yet: with HoldNotYet it would
// otherwise hold the queue, another group's messages behind it included,
// for that long. (Before, it was mls.ErrNotMember and held.)
func TestLateMessageOfAnEndedMembershipNotHeld(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, g2 := setupGroups(t, b)
	b.send(bob, g1, "first") // with bob's path update
	b.drainAll()
	late, err := b.insts[bob].Send(ctx, g1, []byte("sent before the removal"), nil)
	if err != nil || late.Update != nil {
		t.Fatalf("bob's message: %+v, %v", late, err)
	}
	removal, err := b.insts[alice].RemoveMembers(ctx, g1, carol)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(removal)
	if _, err := b.del.FanOut(ctx, late.Recipients, mlsChannel, late.Message, time.Time{}, "late"); err != nil {
		t.Fatal(err)
	}
	b.send(bob, g2, "in the other group")
	h := NewHost(b.log, b.del, &HostOptions{HoldNotYet: time.Minute})
	got := hostDeliver(t, h, []*Installation{b.insts[carol]}, ErrEpochRetired)[carol]
	want := []string{"commit", "error", string(bob) + ": in the other group"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("carol's deliveries %q, want %q", got, want)
	}
	checkQueuesEmpty(t, b, carol)
}

// A commit of an epoch before this installation's membership (carol,
// removed and added back, gets a commit of the epoch in between, as a
// fan-out to an old member list would queue it) can never be applied:
// it is ErrEpochRetired, settled, not held by HoldNotYet as one ahead of
// its turn with another group's messages behind it. (Before, it was
// mls.ErrWrongEpoch and held.)
func TestCommitOfAnEpochBeforeTheMembershipNotHeld(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, g2 := setupGroups(t, b)
	commit := func(co *CommitOutput, err error) *CommitOutput {
		t.Helper()
		if err != nil {
			t.Fatal(err)
		}
		b.deliverCommit(co)
		b.drainAll()
		return co
	}
	commit(b.insts[alice].RemoveMembers(ctx, g1, carol))
	between := commit(b.insts[alice].Update(ctx, g1))
	commit(b.insts[alice].AddMembers(ctx, g1, b.keyPackage(carol)))
	if _, err := b.del.FanOut(ctx, []events.InstallationID{carol}, mlsChannel, between.Commit, time.Time{}, "late"); err != nil {
		t.Fatal(err)
	}
	b.send(bob, g2, "in the other group")
	h := NewHost(b.log, b.del, &HostOptions{HoldNotYet: time.Minute})
	got := hostDeliver(t, h, []*Installation{b.insts[carol]}, ErrEpochRetired)[carol]
	want := []string{"error", string(bob) + ": in the other group"}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("carol's deliveries %q, want %q", got, want)
	}
	checkQueuesEmpty(t, b, carol)
}

// A process of an installation whose cached group another process of it
// has moved on receives what follows: a refusal decided on the cached
// state catches up and decides again when the group moved. Before, the
// stale process refused every message of an epoch the other process
// reached (application message, proposal or commit, as mls.ErrWrongEpoch
// "a commit is missing"), and a commit of a proposal the other process
// had received (mls.ErrInvalidProposal), until an append of its own lost
// a race; a Host settles both refusals, so the messages were dropped and
// the installation was left behind its group.
func TestStaleProcessReceivesTheNewEpoch(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	p2 := b.secondProcess(bob, nil)
	m1 := b.send(alice, g1, "one")
	if _, err := p2.Receive(ctx, m1.Message); err != nil { // p2 caches the group at epoch 1
		t.Fatal(err)
	}
	update := func() *CommitOutput {
		co, err := b.insts[alice].Update(ctx, g1)
		if err != nil {
			t.Fatal(err)
		}
		return co
	}
	co := update()
	if _, err := b.insts[bob].Receive(ctx, co.Commit); err != nil { // bob's first process: epoch 2
		t.Fatal(err)
	}
	m2, err := b.insts[alice].Send(ctx, g1, []byte("two"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := p2.Receive(ctx, m2.Message); err != nil || string(r.Content.Bytes()) != "two" {
		t.Fatalf("the stale process receives a message of epoch 2: %v", err)
	}
	co = update()
	if _, err := b.insts[bob].Receive(ctx, co.Commit); err != nil { // epoch 3
		t.Fatal(err)
	}
	co = update()
	if r, err := p2.Receive(ctx, co.Commit); err != nil || r.Epoch != 4 {
		t.Fatalf("the stale process receives the commit of epoch 3: %v", err)
	}
	pr, err := b.insts[alice].ProposeUpdate(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[bob].Receive(ctx, pr.Proposal); err != nil {
		t.Fatal(err)
	}
	co = update()
	if _, err := b.insts[bob].Receive(ctx, co.Commit); err != nil { // epoch 5
		t.Fatal(err)
	}
	pr, err = b.insts[alice].ProposeUpdate(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Receive(ctx, pr.Proposal); err != nil {
		t.Fatalf("the stale process receives a proposal of epoch 5: %v", err)
	}
	// A commit of a proposal the other process received, both ways.
	if r, err := b.insts[bob].Receive(ctx, update().Commit); err != nil || r.Epoch != 6 {
		t.Fatalf("the first process receives the commit of a proposal the second one received: %v", err)
	}
	own, err := b.insts[bob].ProposeUpdate(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[alice].Receive(ctx, own.Proposal); err != nil {
		t.Fatal(err)
	}
	if r, err := p2.Receive(ctx, update().Commit); err != nil || r.Epoch != 7 {
		t.Fatalf("the second process receives the commit of a proposal the first one made: %v", err)
	}
	// Of the same epoch: the first process, at epoch 7 too, did not see
	// the second's proposal.
	if ep, err := b.insts[bob].Epoch(ctx, g1); err != nil || ep != 7 {
		t.Fatalf("bob's first process at epoch %d: %v", ep, err)
	}
	if own, err = p2.ProposeUpdate(ctx, g1); err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[alice].Receive(ctx, own.Proposal); err != nil {
		t.Fatal(err)
	}
	if r, err := b.insts[bob].Receive(ctx, update().Commit); err != nil || r.Epoch != 8 {
		t.Fatalf("the first process receives the commit of a proposal the second one made in its epoch: %v", err)
	}
	// A message of an epoch not reached yet is still refused.
	co = update()
	m9, err := b.insts[alice].Send(ctx, g1, []byte("nine"), nil)
	if err != nil {
		t.Fatal(err)
	}
	_, err = p2.Receive(ctx, m9.Message)
	mustErrIs(t, err, mls.ErrWrongEpoch)
	if _, err := p2.Receive(ctx, co.Commit); err != nil {
		t.Fatal(err)
	}
	if r, err := p2.Receive(ctx, m9.Message); err != nil || string(r.Content.Bytes()) != "nine" {
		t.Fatalf("after the commit: %v", err)
	}
	if _, err := b.insts[bob].Receive(ctx, m9.Message); !errors.Is(err, ErrDuplicateMessage) {
		t.Fatalf("the first process receives the message the second did: %v, want ErrDuplicateMessage", err)
	}
}

// A process of an installation receives and sends in a group another
// process of it joined (by Welcome) after this one last caught up.
// Before, it refused the group as unknown (ErrUnknownGroup; a Host
// settled the messages) until something else caught its read model up;
// likewise a group the installation rejoined there (mls.ErrNotMember).
func TestStaleProcessReceivesAGroupJoinedElsewhere(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	p2 := b.secondProcess(carol, nil)
	if _, err := p2.Epoch(ctx, g1); err != nil { // caught up now, not after
		t.Fatal(err)
	}
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	g3 := created.GroupID
	co, err := b.insts[alice].AddMembers(ctx, g3, b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[carol].Receive(ctx, co.Welcome); err != nil {
		t.Fatal(err)
	}
	m, err := b.insts[alice].Send(ctx, g3, []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := p2.Receive(ctx, m.Message); err != nil || string(r.Content.Bytes()) != "hello" {
		t.Fatalf("the second process receives in a group the first joined: %v", err)
	}
	// Removed (in the second process), added again (in the first).
	rm, err := b.insts[alice].RemoveMembers(ctx, g3, carol)
	if err != nil {
		t.Fatal(err)
	}
	if r, err := p2.Receive(ctx, rm.Commit); err != nil || !r.Removed {
		t.Fatalf("the second process receives carol's removal: %v", err)
	}
	co, err = b.insts[alice].AddMembers(ctx, g3, b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[carol].Receive(ctx, co.Welcome); err != nil {
		t.Fatal(err)
	}
	out, err := p2.Send(ctx, g3, []byte("back"), nil)
	if err != nil {
		t.Fatalf("the second process sends in the group the first rejoined: %v", err)
	}
	if out.Update != nil {
		if _, err := b.insts[alice].Receive(ctx, out.Update.Commit); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := b.insts[alice].Receive(ctx, out.Message); err != nil || string(r.Content.Bytes()) != "back" {
		t.Fatalf("alice receives it: %v", err)
	}
}
