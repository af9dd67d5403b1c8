package engine

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// Successor groups through the engine: a branch of some members, and a
// reinitialisation (a foreign member's ReInit proposal, committed by an
// engine installation, the successor started by another). Engine
// installations join from the Welcome with the predecessor from their
// read model, a foreign member with its own; all agree; the closed
// group refuses to go on; rebuild and VerifyMLS re-derive every join.
func TestSuccessorGroups(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	bob := b.create("bob")
	carol := b.create("carol")
	fx := w.addForeign("fx", true)

	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("carol"), w.keyPackage("fx"))
	w.engineCommitted("alice", co, err)

	// agree requires the members of a successor group to be in the same
	// epoch with the same authenticator.
	agree := func(gid []byte, insts []*Installation, foreign *mls.Group) {
		t.Helper()
		e0, a0, err := insts[0].EpochAuthenticator(ctx, gid)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range insts[1:] {
			e, a, err := in.EpochAuthenticator(ctx, gid)
			if err != nil || e != e0 || !bytes.Equal(a, a0) {
				t.Fatalf("%s in group %x: epoch %d vs %d, authenticators equal %v (%v)", in.ID(), gid, e, e0, bytes.Equal(a, a0), err)
			}
		}
		if foreign != nil && (foreign.Epoch() != e0 || !bytes.Equal(foreign.EpochAuthenticator(), a0)) {
			t.Fatalf("the foreign member disagrees on group %x", gid)
		}
	}
	// foreignJoin joins fx to a successor from its Welcome, with its
	// state of the old group as the predecessor.
	foreignJoin := func(welcome []byte) *mls.Group {
		t.Helper()
		var m mls.MLSMessage
		if err := m.Unmarshal(welcome); err != nil {
			t.Fatal(err)
		}
		for _, k := range fx.kps {
			if g, err := mls.Join(&m, k.kp, k.secrets, &mls.JoinOptions{Options: fx.opts(), Predecessors: []*mls.Group{fx.g}}); err == nil {
				return g
			}
		}
		t.Fatal("fx cannot join the successor")
		return nil
	}

	// alice branches off with bob and fx.
	branch, err := alice.Branch(ctx, w.gid, []byte("the-branch"), b.keyPackage("bob"), fx.keyPackage())
	if err != nil {
		t.Fatal(err)
	}
	if branch.Commit == nil || len(branch.Recipients) != 0 || branch.Epoch != 1 || len(branch.Added) != 2 || branch.ProjectionErr != nil {
		t.Fatalf("branch output %+v", branch)
	}
	if _, err := bob.Receive(ctx, branch.Welcome); err != nil {
		t.Fatalf("bob joins the branch: %v", err)
	}
	agree(branch.GroupID, []*Installation{alice, bob}, foreignJoin(branch.Welcome))
	if _, err := alice.Branch(ctx, w.gid, nil, b.keyPackage("bob"), newForeign(t, "outsider", false).keyPackage()); !errors.Is(err, mls.ErrInvalidKeyPackage) {
		t.Fatalf("a branch with an outsider: %v, want mls.ErrInvalidKeyPackage", err)
	}

	// fx proposes a ReInit; carol commits it by reference.
	appID, err := mls.ApplicationIDExtension([]byte("successor"))
	if err != nil {
		t.Fatal(err)
	}
	ri := mls.ReInit{GroupID: []byte("the-successor"), Version: mls.ProtocolMLS10, CipherSuite: ciphersuite.Suite(DefaultCiphersuite), Extensions: mls.Extensions{appID}}
	proposal := fx.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeReInit(ri) })
	for id, r := range w.deliver("fx", proposal) {
		if r != nil && (r.Kind != "proposal" || r.ProposalType != "reinit") {
			t.Fatalf("%s received the ReInit as %+v", id, r)
		}
	}
	co, err = carol.CommitProposals(ctx, w.gid)
	w.engineCommitted("carol", co, err)
	for _, in := range []*Installation{alice, bob, carol} {
		if got, err := in.ReInitOf(ctx, w.gid); err != nil || got == nil || !bytes.Equal(got.GroupID, ri.GroupID) {
			t.Fatalf("%s: ReInit after the commit: %+v, %v", in.ID(), got, err)
		}
	}
	if fx.g.ReInit() == nil {
		t.Fatal("the foreign member did not see the ReInit committed")
	}
	before := b.lastSeq("alice")
	if _, err := alice.Send(ctx, w.gid, []byte("too late"), nil); !errors.Is(err, mls.ErrReInitialized) {
		t.Fatalf("sending in a closed group: %v, want mls.ErrReInitialized", err)
	}
	if _, err := alice.Update(ctx, w.gid); !errors.Is(err, mls.ErrReInitialized) {
		t.Fatalf("committing in a closed group: %v, want mls.ErrReInitialized", err)
	}
	if after := b.lastSeq("alice"); after != before {
		t.Fatal("an operation on a closed group recorded something")
	}
	if _, err := carol.Reinitialize(ctx, w.gid, b.keyPackage("alice")); !errors.Is(err, mls.ErrInvalidKeyPackage) {
		t.Fatalf("a successor that leaves members out: %v, want mls.ErrInvalidKeyPackage", err)
	}

	// bob starts the successor after a restart (the closed state is read
	// back from the read model); everyone joins.
	bob = b.restart("bob")
	next, err := bob.Reinitialize(ctx, w.gid, b.keyPackage("alice"), b.keyPackage("carol"), fx.keyPackage())
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(next.GroupID, ri.GroupID) || len(next.Added) != 3 {
		t.Fatalf("successor output %+v", next)
	}
	for _, in := range []*Installation{alice, carol} {
		r, err := in.Receive(ctx, next.Welcome)
		if err != nil || r.Kind != "welcome" || !bytes.Equal(r.GroupID, ri.GroupID) {
			t.Fatalf("%s joins the successor: %+v, %v", in.ID(), r, err)
		}
	}
	fxNext := foreignJoin(next.Welcome)
	agree(next.GroupID, []*Installation{bob, alice, carol}, fxNext)
	if e, ok := fxNext.GroupContext().Extensions.Find(mls.ExtensionTypeApplicationID); !ok || !bytes.Contains(e.Data, []byte("successor")) {
		t.Fatal("the successor lacks the ReInit's extensions")
	}
	// The successor carries messages.
	sent, err := alice.Send(ctx, next.GroupID, []byte("hello again"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if sent.Update != nil { // alice's first message in the group refreshes her path
		for _, in := range []*Installation{bob, carol} {
			if _, err := in.Receive(ctx, sent.Update.Commit); err != nil {
				t.Fatalf("%s receives alice's update: %v", in.ID(), err)
			}
		}
		var m mls.MLSMessage
		if err := m.Unmarshal(sent.Update.Commit); err != nil {
			t.Fatal(err)
		}
		if fxNext, _, err = fxNext.Process(&m); err != nil {
			t.Fatal(err)
		}
		agree(next.GroupID, []*Installation{bob, alice, carol}, fxNext)
	}
	got, err := carol.Receive(ctx, sent.Message)
	if err != nil || string(got.Content.Bytes()) != "hello again" {
		t.Fatalf("carol receives in the successor: %v", err)
	}

	// Every installation's history re-derives and rebuilds to the same
	// read model.
	for _, id := range []events.InstallationID{"alice", "bob", "carol"} {
		b.checkRebuild(id)
	}
}

// groupEvents returns the events of in's aggregate of the group, in
// order, as the stream holds them.
func groupEvents(t *testing.T, b *backend, in *Installation, gid []byte) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	agg := in.groupAgg(gid)
	if err := b.log.Read(context.Background(), in.ID(), 0, func(r eventlog.Record) error {
		if r.Event.Aggregate == agg {
			out = append(out, r)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// twoMembers returns alice and bob in a group alice created.
func twoMembers(t *testing.T, b *backend) (alice, bob *Installation, gid []byte) {
	t.Helper()
	ctx := context.Background()
	alice, bob = b.create("alice"), b.create("bob")
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	co, err := alice.AddMembers(ctx, created.GroupID, b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Receive(ctx, co.Welcome); err != nil {
		t.Fatal(err)
	}
	return alice, bob, created.GroupID
}

// A successor group's start is one event on its aggregate: its creation
// carrying its first commit (group.created v3), no atomic batch. The
// engine's position of the group is 1, the commit is handed back by
// OwnCommits, the next commit is recorded from the first commit's state
// (no reload), and rebuild and VerifyMLS agree.
func TestSuccessorStartIsOneEvent(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice, bob, gid := twoMembers(t, b)
	branch, err := alice.Branch(ctx, gid, []byte("one-event-branch"), b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	recs := groupEvents(t, b, alice, branch.GroupID)
	if len(recs) != 1 {
		t.Fatalf("the branch's start is %d events on its aggregate, want 1", len(recs))
	}
	gc, ok := recs[0].Event.Body.(events.GroupCreated)
	if !ok || gc.Epoch != 0 || gc.FirstCommit == nil || gc.FirstCommit.Epoch != 1 || gc.FirstCommit.OwnOutput == nil ||
		!bytes.Equal(gc.FirstCommit.Commit, branch.Commit) || !bytes.Equal(gc.FirstCommit.OwnOutput.Welcome, branch.Welcome) {
		t.Fatalf("the branch's start recorded as %s %+v", recs[0].Event.Body.Kind(), recs[0].Event.Body)
	}
	// The epoch the first commit started begins with its state: the next
	// commit's delta starts from it.
	start, err := gc.FirstCommit.StateOf(gc.State.Bytes())
	if err != nil {
		t.Fatal(err)
	}
	gs := alice.group[string(branch.GroupID)]
	if gs == nil || gs.pos != 1 || gs.g.Epoch() != 1 || !bytes.Equal(gs.epochStart.Bytes(), start.Bytes()) {
		t.Fatalf("alice's state of the branch: %+v", gs)
	}
	sameOutputs(t, "branch", ownCommits(t, alice, branch.GroupID, 0), []*CommitOutput{branch})
	if _, err := bob.Receive(ctx, branch.Welcome); err != nil {
		t.Fatalf("bob joins the branch: %v", err)
	}
	up, err := alice.Update(ctx, branch.GroupID)
	if err != nil {
		t.Fatal(err)
	}
	if recs := groupEvents(t, b, alice, branch.GroupID); len(recs) != 2 || recs[1].Event.Position != 2 {
		t.Fatalf("after an update the branch's aggregate holds %d events", len(recs))
	}
	if _, err := bob.Receive(ctx, up.Commit); err != nil {
		t.Fatalf("bob follows alice's update in the branch: %v", err)
	}
	b.checkRebuild("alice")
	b.checkRebuild("bob")
}

// A history written before group.created v3 holds a successor's start as
// two events, group.created and its first group.commit_applied, appended
// as one atomic batch. It still reads: the engine loads the group from
// it, OwnCommits hands the first commit back, VerifyMLS re-derives it
// and a rebuild equals the live read model.
func TestSuccessorTwoEventFormStillReads(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice, bob, gid := twoMembers(t, b)
	var bobKP mls.KeyPackage
	if err := bobKP.Unmarshal(b.keyPackage("bob")); err != nil {
		t.Fatal(err)
	}
	// The start as the engine recorded it before: two events, one batch.
	ng, bodies := oldSuccessorStart(t, alice, gid, func(g *mls.Group, kp *mls.KeyPackage, sec *mls.KeyPackageSecrets) (*mls.Group, mls.CommitOptions, error) {
		return g.PrepareBranch([]byte("old-branch"), kp, sec, []*mls.KeyPackage{&bobKP})
	})
	if err := alice.appendAndProject(ctx, alice.groupAgg(ng.GroupID()), 0, bodies); err != nil {
		t.Fatal(err)
	}
	if recs := groupEvents(t, b, alice, ng.GroupID()); len(recs) != 2 || recs[0].Event.Body.Kind() != events.KindGroupCreated || recs[1].Event.Body.Kind() != events.KindCommitApplied {
		t.Fatalf("the old form is not two events: %d", len(recs))
	}
	c := bodies[1].(events.CommitApplied)
	outs := ownCommits(t, alice, ng.GroupID(), 0)
	if len(outs) != 1 || outs[0].Epoch != 1 || !bytes.Equal(outs[0].Commit, c.Commit) || !bytes.Equal(outs[0].Welcome, c.OwnOutput.Welcome) {
		t.Fatalf("own commits of the old form: %+v", outs)
	}
	if _, err := bob.Receive(ctx, c.OwnOutput.Welcome); err != nil {
		t.Fatalf("bob joins the old form's successor: %v", err)
	}
	up, err := alice.Update(ctx, ng.GroupID())
	if err != nil {
		t.Fatalf("alice commits in the old form's successor: %v", err)
	}
	if _, err := bob.Receive(ctx, up.Commit); err != nil {
		t.Fatal(err)
	}
	b.checkRebuild("alice")
	alice = b.rebuildAndRestart("alice")
	if _, err := alice.Send(ctx, ng.GroupID(), []byte("after a rebuild"), nil); err != nil {
		t.Fatal(err)
	}
}

// oldSuccessorStart makes the bodies an engine before group.created v3
// appended to start a successor of the group: group.created alone (the
// successor at epoch 0) and its first commit, a group.commit_applied.
func oldSuccessorStart(t *testing.T, in *Installation, gid []byte,
	prepare func(g *mls.Group, kp *mls.KeyPackage, sec *mls.KeyPackageSecrets) (*mls.Group, mls.CommitOptions, error)) (*mls.Group, []events.Body) {
	t.Helper()
	ctx := context.Background()
	gs, err := in.currentGroup(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	kp, sec, err := mls.NewKeyPackage(in.cs.ID(), in.cred, in.sig, in.capabilities())
	if err != nil {
		t.Fatal(err)
	}
	first, co, err := prepare(gs.g, kp, sec)
	if err != nil {
		t.Fatal(err)
	}
	co.ForcePath = true
	st, err := first.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	ng, res, err := first.Commit(co)
	if err != nil {
		t.Fatal(err)
	}
	wire, err := res.Commit.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	welcome, err := res.Welcome.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	commit, err := in.commitEvents(ctx, first, ng, st, wire, welcome, events.Committer{Leaf: uint32(first.LeafIndex()), Identity: []byte(in.ID()), Own: true})
	if err != nil {
		t.Fatal(err)
	}
	created := events.GroupCreated{GroupID: ng.GroupID(), Ciphersuite: uint16(in.cs.ID()), Epoch: first.Epoch(), State: events.NewSecret(st),
		Members: []events.Member{{Leaf: uint32(first.LeafIndex()), Identity: []byte(in.ID())}}}
	return ng, append([]events.Body{created}, commit...)
}
