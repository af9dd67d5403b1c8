package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// Proposals from senders that are not members (RFC 9420 §12.1.8): a
// delivery service named in the group's external_senders extension
// removes a member, and a client asks to be added; engine installations
// and foreign members receive both, an engine installation commits them
// by reference after a restart and a rebuild, and everyone agrees. A
// forged one is refused and nothing is recorded. Rebuild and VerifyMLS
// re-derive it all.
func TestNonMemberProposals(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	bob := b.create("bob")
	w.addForeign("fx", true)
	w.addForeign("fy", false)
	fz := w.addForeign("fz", false) // not a member: asks to join

	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("fx"), w.keyPackage("fy"))
	w.engineCommitted("alice", co, err)

	// The delivery service becomes the group's external sender.
	cs := w.foreign["fx"].cs
	ds, err := cs.GenerateSignatureKey()
	if err != nil {
		t.Fatal(err)
	}
	senders, err := mls.ExternalSenders{{SignatureKey: ds.PublicKey(), Credential: mls.NewBasicCredential([]byte("delivery-service"))}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	co, err = alice.SetGroupContextExtensions(ctx, w.gid, mls.Extensions{{Type: mls.ExtensionTypeExternalSenders, Data: senders}})
	w.engineCommitted("alice", co, err)
	epoch, _ := w.state("alice")

	nonMember := func(what string, wire []byte, sender events.InstallationID, kind, typ string) {
		t.Helper()
		for id, r := range w.deliver("", wire) {
			if r != nil && (r.Kind != "proposal" || r.NonMember != kind || r.Sender != sender || r.ProposalType != typ || len(r.ProposalRef) == 0) {
				t.Fatalf("%s received %s as %+v", id, what, r)
			}
		}
		w.check(what)
	}
	// The delivery service removes fy.
	remove, err := mls.ExternalProposal(cs.ID(), ds, 0, w.gid, epoch, &mls.Proposal{Type: mls.ProposalTypeRemove, Remove: &mls.Remove{Removed: w.foreign["fx"].leaf("fy")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	removeWire, err := remove.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	nonMember("the delivery service's Remove", removeWire, "delivery-service", "external", "remove")
	b.receiveAgain(bob, "bob", removeWire, ErrDuplicateMessage)

	// fz proposes its own Add.
	kp := foreignKeyPackage(t, fz)
	join, err := mls.NewMemberProposal(fz.sig, kp, w.gid, epoch, nil)
	if err != nil {
		t.Fatal(err)
	}
	joinWire, err := join.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	nonMember("fz's own Add", joinWire, "fz", "new_member", "add")

	// A proposal in the delivery service's name, signed by another key:
	// refused, nothing recorded.
	forger, err := cs.GenerateSignatureKey()
	if err != nil {
		t.Fatal(err)
	}
	forged, err := mls.ExternalProposal(cs.ID(), forger, 0, w.gid, epoch, &mls.Proposal{Type: mls.ProposalTypeRemove, Remove: &mls.Remove{Removed: w.foreign["fx"].leaf("bob")}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	forgedWire, err := forged.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	before := b.lastSeq("alice")
	if _, err := alice.Receive(ctx, forgedWire); !errors.Is(err, mls.ErrBadSignature) {
		t.Fatalf("a forged external proposal: %v, want mls.ErrBadSignature", err)
	}
	if after := b.lastSeq("alice"); after != before {
		t.Fatal("a forged external proposal was recorded")
	}

	// The cache survives a restart and a rebuild; bob commits both.
	b.restart("alice")
	w.rebuildAndReopen("bob")
	bob = b.insts["bob"]
	for _, id := range []events.InstallationID{"alice", "bob"} {
		ps, err := b.insts[id].DB().PendingProposals(ctx, w.gid)
		if err != nil || len(ps) != 2 {
			t.Fatalf("%s holds %d proposals, want 2: %v", id, len(ps), err)
		}
	}
	co, err = bob.CommitProposals(ctx, w.gid)
	w.engineCommitted("bob", co, err)
	if len(co.Added) != 1 || co.Added[0] != "fz" {
		t.Fatalf("the commit's Welcome is for %v, want fz", co.Added)
	}
	if w.members["fy"] || !w.members["fz"] {
		t.Fatalf("members after the commit: %v", w.memberList())
	}
	w.update("alice")
	w.verifyAll()
}
