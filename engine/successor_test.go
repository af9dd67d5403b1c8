package engine

import (
	"bytes"
	"context"
	"errors"
	"testing"

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
