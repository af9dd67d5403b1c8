package engine

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/replay"
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
	// The successor's GroupContext extensions: external_senders (an
	// application_id, a LeafNode extension, may not be one; RFC 9420 §17.3).
	senders, err := mls.ExternalSenders{{SignatureKey: bytes.Repeat([]byte{7}, 32), Credential: mls.NewBasicCredential([]byte("successor"))}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	ri := mls.ReInit{GroupID: []byte("the-successor"), Version: mls.ProtocolMLS10, CipherSuite: ciphersuite.Suite(DefaultCiphersuite),
		Extensions: mls.Extensions{{Type: mls.ExtensionTypeExternalSenders, Data: senders}}}
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
	if e, ok := fxNext.GroupContext().Extensions.Find(mls.ExtensionTypeExternalSenders); !ok || !bytes.Contains(e.Data, []byte("successor")) {
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
// order, as the stream holds them (read through l).
func groupEvents(t *testing.T, l *eventlog.Log, in *Installation, gid []byte) []eventlog.Record {
	t.Helper()
	var out []eventlog.Record
	agg := in.groupAgg(gid)
	if err := l.Read(context.Background(), in.ID(), 0, func(r eventlog.Record) error {
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
// engine's position of the group is 1 and what it holds in memory is
// what a reload gives, the commit is handed back by OwnCommits, the next
// commit is recorded from the first commit's state, and rebuild and
// VerifyMLS agree.
func TestSuccessorStartIsOneEvent(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice, bob, gid := twoMembers(t, b)
	branch, err := alice.Branch(ctx, gid, []byte("one-event-branch"), b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	recs := groupEvents(t, b.log, alice, branch.GroupID)
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
	// What the engine holds in memory is what a reload from the read
	// model gives (as TestReloadEqualsMemory checks for other operations).
	mem, err := gs.g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	delete(alice.group, string(branch.GroupID))
	got, err := alice.loadGroup(ctx, branch.GroupID)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := got.g.MarshalBinary(); err != nil || !bytes.Equal(st, mem) || got.pos != gs.pos ||
		!bytes.Equal(got.epochStart.Bytes(), gs.epochStart.Bytes()) || !got.lastUpdate.Equal(gs.lastUpdate) {
		t.Fatalf("the branch reloaded: position %d (in memory %d), same state %v, same epoch start %v, last update %v (in memory %v) (%v)",
			got.pos, gs.pos, bytes.Equal(st, mem), bytes.Equal(got.epochStart.Bytes(), gs.epochStart.Bytes()), got.lastUpdate, gs.lastUpdate, err)
	}
	sameOutputs(t, "branch", ownCommits(t, alice, branch.GroupID, 0), []*CommitOutput{branch})
	if _, err := bob.Receive(ctx, branch.Welcome); err != nil {
		t.Fatalf("bob joins the branch: %v", err)
	}
	up, err := alice.Update(ctx, branch.GroupID)
	if err != nil {
		t.Fatal(err)
	}
	if recs := groupEvents(t, b.log, alice, branch.GroupID); len(recs) != 2 || recs[1].Event.Position != 2 {
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
	if err := appendOldForm(t, alice, alice.groupAgg(ng.GroupID()), bodies...); err != nil {
		t.Fatal(err)
	}
	if recs := groupEvents(t, b.log, alice, ng.GroupID()); len(recs) != 2 || recs[0].Event.Body.Kind() != events.KindGroupCreated || recs[1].Event.Body.Kind() != events.KindCommitApplied {
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

// appendOldForm records bodies as an engine before group.created v3 did a
// successor's start: the group's first events, in one atomic append (a
// batch when there are several), then projected.
func appendOldForm(t *testing.T, in *Installation, agg events.Aggregate, bodies ...events.Body) error {
	t.Helper()
	ctx := context.Background()
	evs := make([]events.Event, len(bodies))
	for i, b := range bodies {
		evs[i] = events.Event{Aggregate: agg, Time: in.opts.Now().UTC(), Body: b}
	}
	if _, err := decideAppend(ctx, in.log, 0, evs, in.opts.OutcomeTimeout); err != nil {
		return err
	}
	return in.project(ctx)
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
	commit, err := in.commitEvent(ctx, first, ng, st, wire, welcome, events.Committer{Leaf: uint32(first.LeafIndex()), Identity: []byte(in.ID()), Own: true})
	if err != nil {
		t.Fatal(err)
	}
	created := events.GroupCreated{GroupID: ng.GroupID(), Ciphersuite: uint16(in.cs.ID()), Epoch: first.Epoch(), State: events.NewSecret(st),
		Members: []events.Member{{Leaf: uint32(first.LeafIndex()), Identity: []byte(in.ID())}}}
	return ng, []events.Body{created, commit}
}

// A history written by an engine before group.created v3 may hold the
// first of a successor start's two events alone: the server stored part
// of the atomic batch. It reads as the one-member group at epoch 0 it
// records (rebuild and VerifyMLS agree); starting the successor again
// under its id is refused with ErrSuccessorStranded, naming the group,
// and records nothing; another member, whose history is whole, starts
// it, and the stranded member resyncs into it (its Welcome is refused:
// the member holds the group at epoch 0).
func TestSuccessorCreationStoredAlone(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice, bob, gid := twoMembers(t, b)
	ri := mls.ReInit{GroupID: []byte("stranded-successor"), Version: mls.ProtocolMLS10, CipherSuite: ciphersuite.Suite(DefaultCiphersuite)}
	co, err := alice.CommitReInit(ctx, gid, ri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Receive(ctx, co.Commit); err != nil {
		t.Fatal(err)
	}
	var bobKP mls.KeyPackage
	if err := bobKP.Unmarshal(b.keyPackage("bob")); err != nil {
		t.Fatal(err)
	}
	ng, bodies := oldSuccessorStart(t, alice, gid, func(g *mls.Group, kp *mls.KeyPackage, sec *mls.KeyPackageSecrets) (*mls.Group, mls.CommitOptions, error) {
		return g.PrepareReinitialize(kp, sec, []*mls.KeyPackage{&bobKP})
	})
	if err := appendOldForm(t, alice, alice.groupAgg(ng.GroupID()), bodies[0]); err != nil {
		t.Fatal(err)
	}
	b.checkRebuild("alice")

	kp := b.keyPackage("bob")
	before := b.lastSeq("alice")
	_, err = alice.Reinitialize(ctx, gid, kp)
	mustErrIs(t, err, ErrSuccessorStranded)
	if !strings.Contains(err.Error(), hex.EncodeToString(ri.GroupID)) {
		t.Fatalf("the refusal does not name the successor group: %v", err)
	}
	if after := b.lastSeq("alice"); after != before {
		t.Fatalf("a refused successor start recorded events %d..%d", before+1, after)
	}
	next, err := bob.Reinitialize(ctx, gid, b.keyPackage("alice"))
	if err != nil {
		t.Fatalf("bob starts the successor: %v", err)
	}
	// alice holds the group at epoch 0: the Welcome to epoch 1 is
	// refused as one that commits are missing before; she resyncs into
	// bob's successor from its GroupInfo (her leaf there is replaced).
	_, err = alice.Receive(ctx, next.Welcome)
	mustErrIs(t, err, mls.ErrWrongEpoch)
	gi, err := bob.GroupInfo(ctx, next.GroupID, true)
	if err != nil {
		t.Fatal(err)
	}
	rs, err := alice.Resync(ctx, next.GroupID, gi.GroupInfo, nil, ResyncLost)
	if err != nil {
		t.Fatalf("alice resyncs into bob's successor: %v", err)
	}
	if _, err := bob.Receive(ctx, rs.Commit); err != nil {
		t.Fatal(err)
	}
	ea, aa, err := alice.EpochAuthenticator(ctx, next.GroupID)
	if err != nil {
		t.Fatal(err)
	}
	eb, ab, err := bob.EpochAuthenticator(ctx, next.GroupID)
	if err != nil || ea != eb || !bytes.Equal(aa, ab) {
		t.Fatalf("alice at epoch %d, bob at %d (%v): they disagree", ea, eb, err)
	}
	b.checkRebuild("alice")
	b.checkRebuild("bob")
}

// A successor's start whose answer was lost is one undecided append: the
// *OutcomeUnknownError carries its output, Decide finds the one event
// recorded (never a part of it), the Welcome joins, and the group goes
// on from position 1.
func TestSuccessorStartDecided(t *testing.T) {
	ctx := context.Background()
	b, proxy, direct := lossyBackend(t)
	// The answers are lost from alice's append on: her clock, read as
	// the events are stamped (after the read model caught up), mutes the
	// proxy once armed.
	var armed atomic.Bool
	opts := b.opts()
	opts.Now = func() time.Time {
		if armed.Load() {
			proxy.mute.Store(true)
		}
		return b.clock()
	}
	b.createWith(alice, opts)
	b.create(bob)
	gid := b.pair(alice, bob)
	kp := b.keyPackage(bob)
	armed.Store(true)
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	_, err := b.insts[alice].Branch(short, gid, []byte("undecided-branch"), kp)
	cancel()
	var u *OutcomeUnknownError
	if !errors.As(err, &u) || u.Commit == nil || u.Commit.Welcome == nil || len(u.evs) != 1 {
		t.Fatalf("Branch whose answer never came: %v, want an *OutcomeUnknownError with the output and one event", err)
	}
	armed.Store(false)
	reconnects := b.log.Conn().Stats().Reconnects
	proxy.mute.Store(false)
	proxy.Drop()
	for deadline := time.Now().Add(time.Minute); b.log.Conn().Stats().Reconnects == reconnects || !b.log.Conn().IsConnected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the log did not reconnect in a minute")
		}
	}
	recorded, err := b.insts[alice].Decide(ctx, u)
	if err != nil || !recorded {
		t.Fatalf("Decide: recorded %v, %v", recorded, err)
	}
	if recs := groupEvents(t, direct, b.insts[alice], u.Commit.GroupID); len(recs) != 1 || recs[0].Event.Body.Kind() != events.KindGroupCreated {
		t.Fatalf("the decided start is %d events on its aggregate, want 1", len(recs))
	}
	if _, err := b.insts[bob].Receive(ctx, u.Commit.Welcome); err != nil {
		t.Fatalf("bob joins the decided branch: %v", err)
	}
	up, err := b.insts[alice].Update(ctx, u.Commit.GroupID)
	if err != nil || up.Epoch != 2 {
		t.Fatalf("alice's update in the decided branch: %+v, %v", up, err)
	}
	if _, err := b.insts[bob].Receive(ctx, up.Commit); err != nil {
		t.Fatal(err)
	}
	b.checkRebuild(alice)
}

// A successor's start is sealed under the key of its first commit's
// epoch (the state it leaves the group in): once the member retired
// epoch 0 but still holds epoch 1, retention cuts the group's epoch
// chain at 1 and the event still opens, with compaction too; the member
// goes on and its read model verifies.
func TestSuccessorStartOutlivesEpochZero(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice, bob, gid := twoMembers(t, b)
	branch, err := alice.Branch(ctx, gid, []byte("retained-branch"), b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Receive(ctx, branch.Welcome); err != nil {
		t.Fatal(err)
	}
	for range 3 { // epochs 2 to 4: epoch 0 leaves the window of 3
		if _, err := alice.Update(ctx, branch.GroupID); err != nil {
			t.Fatal(err)
		}
	}
	held, err := alice.DB().HeldEpochs(ctx, branch.GroupID)
	if err != nil || len(held) == 0 || held[0] != 1 {
		t.Fatalf("held epochs of the branch: %v (%v), want from 1", held, err)
	}
	res, err := alice.Retain(ctx, replay.RetentionPolicy{PastEpochs: replay.KeepNoPastEpochs}, &RetainOptions{Compact: true})
	if err != nil {
		t.Fatal(err)
	}
	cut := false
	for _, e := range res.Epochs {
		cut = cut || e.Keep == 1
	}
	if !cut {
		t.Fatalf("retention did not cut the branch's chain at epoch 1: %+v", res.Epochs)
	}
	if recs := groupEvents(t, b.log, alice, branch.GroupID); len(recs) == 0 || recs[0].Event.Body.Kind() != events.KindGroupCreated {
		t.Fatalf("the branch's start is gone after retention (%d events left)", len(recs))
	}
	if _, err := alice.Update(ctx, branch.GroupID); err != nil {
		t.Fatalf("commit after retention: %v", err)
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Verify(ctx, b.log, "alice", b.dbPath("alice"), b.keys["alice"], nil); err != nil {
		t.Fatalf("verify after retention: %v", err)
	}
}
