package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"sort"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/replay"
)

// Proposals by reference from every kind of member: foreign members
// propose Add, Update, PreSharedKey and GroupContextExtensions (encrypted
// or public), engine installations propose Add and Remove. The cache
// survives a restart and a rebuild; an engine installation commits the
// proposals by reference, a foreign member commits engine proposals; an
// installation leaves by its own Remove proposal. All members agree after
// every step, and every engine installation's history re-derives.
func TestProposalsByReference(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice") // PrivateMessage
	publicOpts := b.opts()
	publicOpts.HandshakeWireFormat = WireFormatPublic
	bob := b.createWith("bob", publicOpts)
	carol := b.create("carol")
	b.create("dave")
	fx := w.addForeign("fx", true)
	fy := w.addForeign("fy", false)
	fz := w.addForeign("fz", true)

	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("carol"), w.keyPackage("fx"), w.keyPackage("fy"))
	w.engineCommitted("alice", co, err)
	epoch, _ := w.state("alice")

	proposed := func(from events.InstallationID, wire []byte, typ string) {
		t.Helper()
		for id, r := range w.deliver(from, wire) {
			if r != nil && (r.Kind != "proposal" || r.ProposalType != typ || r.Sender != from || len(r.ProposalRef) == 0) {
				t.Fatalf("%s received %s's %s proposal as %+v", id, from, typ, r)
			}
		}
		w.check(string(from) + " proposes " + typ)
	}
	// Foreign proposals, encrypted and public.
	addFZ := fx.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeAdd(foreignKeyPackage(t, fz)) })
	if wireFormatOf(t, addFZ) != mls.WireFormatPrivateMessage {
		t.Fatal("fx's proposal is not encrypted")
	}
	proposed("fx", addFZ, "add")
	proposed("fy", fy.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeUpdate() }), "update")
	nonce := make([]byte, 32)
	rand.Read(nonce)
	proposed("fx", fx.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) {
		return g.ProposePreSharedKey(mls.PreSharedKeyID{Type: mls.PSKTypeExternal, PSKID: []byte("nobody holds this"), PSKNonce: nonce})
	}), "psk")
	// external_senders, a GroupContext extension (an application_id, a
	// LeafNode extension, may not be one; RFC 9420 §17.3).
	senders, err := mls.ExternalSenders{{SignatureKey: bytes.Repeat([]byte{7}, 32), Credential: mls.NewBasicCredential([]byte("epochlog-test"))}}.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	proposed("fy", fy.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) {
		return g.ProposeGroupContextExtensions(mls.Extensions{{Type: mls.ExtensionTypeExternalSenders, Data: senders}})
	}), "group_context_extensions")
	// Engine proposals: bob's public, alice's encrypted.
	po, err := bob.ProposeRemove(ctx, w.gid, "fy")
	if err != nil || po.Epoch != epoch || wireFormatOf(t, po.Proposal) != mls.WireFormatPublicMessage {
		t.Fatalf("bob proposes: %+v, %v", po, err)
	}
	proposed("bob", po.Proposal, "remove")
	po, err = alice.ProposeAdd(ctx, w.gid, w.keyPackage("dave"))
	if err != nil || wireFormatOf(t, po.Proposal) != mls.WireFormatPrivateMessage {
		t.Fatalf("alice proposes: %+v, %v", po, err)
	}
	proposed("alice", po.Proposal, "add")
	if _, err := carol.ProposeRemove(ctx, w.gid, "nobody"); !errors.Is(err, mls.ErrNotMember) {
		t.Fatalf("proposing to remove a non-member: %v", err)
	}
	// A proposal delivered again is a duplicate; nothing is recorded.
	b.receiveAgain(carol, "carol", addFZ, ErrDuplicateMessage)

	// The cache survives a restart and a rebuild.
	alice = b.restart("alice")
	w.rebuildAndReopen("bob")
	for _, id := range []events.InstallationID{"alice", "bob", "carol"} {
		ps, err := b.insts[id].DB().PendingProposals(ctx, w.gid)
		if err != nil || len(ps) != 6 {
			t.Fatalf("%s holds %d proposals, want 6: %v", id, len(ps), err)
		}
	}
	// alice commits them by reference, after her own encrypted proposal
	// and a restart: her commit must use the next handshake generation.
	co, err = alice.CommitProposals(ctx, w.gid)
	w.engineCommitted("alice", co, err)
	if wireFormatOf(t, co.Commit) != mls.WireFormatPrivateMessage {
		t.Fatal("alice's commit is not encrypted")
	}
	sort.Slice(co.Added, func(i, j int) bool { return co.Added[i] < co.Added[j] })
	if len(co.Added) != 2 || co.Added[0] != "dave" || co.Added[1] != "fz" {
		t.Fatalf("the commit's Welcome is for %v, want dave and fz", co.Added)
	}
	if w.members["fy"] || !w.members["fz"] || !w.members["dave"] {
		t.Fatalf("members after the commit: %v", w.memberList())
	}
	if e, ok := fx.g.GroupContext().Extensions.Find(mls.ExtensionTypeExternalSenders); !ok || !bytes.Contains(e.Data, []byte("epochlog-test")) {
		t.Fatal("the group context extensions proposal was not committed")
	}
	if ps, _ := alice.DB().PendingProposals(ctx, w.gid); len(ps) != 0 {
		t.Fatalf("proposals outlive their epoch: %d", len(ps))
	}

	// A foreign member commits engine proposals by reference.
	po, err = carol.ProposeUpdate(ctx, w.gid)
	if err != nil {
		t.Fatal(err)
	}
	proposed("carol", po.Proposal, "update")
	po, err = b.insts["dave"].ProposeRemove(ctx, w.gid, "bob")
	if err != nil {
		t.Fatal(err)
	}
	proposed("dave", po.Proposal, "remove")
	commit, _ := fz.commit(mls.CommitOptions{ForcePath: true})
	w.committed("fz", commit, nil)
	if w.members["bob"] {
		t.Fatal("bob not removed by the foreign commit of dave's proposal")
	}

	// carol leaves: her own Remove proposal, committed by a foreign member.
	po, err = carol.Leave(ctx, w.gid)
	if err != nil {
		t.Fatal(err)
	}
	proposed("carol", po.Proposal, "remove")
	commit, _ = fx.commit(mls.CommitOptions{ForcePath: true})
	got := w.deliver("fx", commit)
	if r := got["carol"]; !r.Removed || !r.Left {
		t.Fatalf("carol received the commit of her departure as %+v", r)
	}
	delete(w.members, "carol")
	w.check("carol left")
	ms, err := carol.DB().Memberships(ctx, w.gid)
	if err != nil || len(ms) != 1 || ms[0].Left != "left" {
		t.Fatalf("carol's memberships %+v, %v", ms, err)
	}

	// A proposal overtaken by a commit is stale: refused, not recorded.
	stale := fz.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeUpdate() })
	w.update("dave") // dave never saw it: his commit does not carry it
	before := b.lastSeq("alice")
	if _, err := alice.Receive(ctx, stale); !errors.Is(err, ErrStaleProposal) {
		t.Fatalf("a proposal of a past epoch: %v", err)
	}
	if after := b.lastSeq("alice"); after != before {
		t.Fatal("a stale proposal was recorded")
	}
	w.verifyAll()
}

// Two processes of one installation race to commit the same cached
// proposal: one append wins the epoch with the proposal; the other loses,
// catches up, and commits again on the new epoch (the proposal is no
// longer pending there). A proposal received by both is recorded once.
// Nothing forks: every member, both processes included, agrees.
func TestTwoProcessesRaceOnProposalCommit(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice1 := b.create("alice")
	b.create("bob")
	fx := w.addForeign("fx", true)
	created, err := alice1.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice1.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("fx"))
	w.engineCommitted("alice", co, err)
	alice2 := b.secondProcess("alice", nil)
	if _, err := alice2.Epoch(ctx, w.gid); err != nil {
		t.Fatal(err)
	}

	// fx proposes removing bob; both processes of alice receive it.
	prop := fx.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeRemove(fx.leaf("bob")) })
	if r, err := alice1.Receive(ctx, prop); err != nil || r.Kind != "proposal" {
		t.Fatalf("alice (1) receives the proposal: %+v, %v", r, err)
	}
	// A second later: with the same clock the two receipts would be the
	// same event, and Append would take the second for a retry.
	b.now = b.now.Add(time.Second)
	if _, err := alice2.Receive(ctx, prop); !errors.Is(err, ErrDuplicateMessage) {
		t.Fatalf("alice (2) receives the proposal process 1 recorded: %v, want ErrDuplicateMessage", err)
	}
	w.receive("bob", prop)

	// Both commit at once.
	type result struct {
		co  *CommitOutput
		err error
	}
	res := make(chan result, 2)
	for _, in := range []*Installation{alice1, alice2} {
		go func() {
			co, err := in.CommitProposals(ctx, w.gid)
			res <- result{co, err}
		}()
	}
	var outs []*CommitOutput
	for range 2 {
		r := <-res
		if r.err != nil {
			t.Fatalf("a racing commit failed: %v", r.err)
		}
		outs = append(outs, r.co)
	}
	sort.Slice(outs, func(i, j int) bool { return outs[i].Epoch < outs[j].Epoch })
	if outs[0].Epoch+1 != outs[1].Epoch {
		t.Fatalf("racing commits at epochs %d and %d, want consecutive", outs[0].Epoch, outs[1].Epoch)
	}
	// The winner carried the removal: bob is among its recipients, not
	// among the second's.
	if !containsID(outs[0].Recipients, "bob") || containsID(outs[1].Recipients, "bob") {
		t.Fatalf("recipients %v then %v: the removal is not in the first commit", outs[0].Recipients, outs[1].Recipients)
	}
	// The members process both commits, in order (alice is two epochs
	// ahead of them until then).
	if r := w.receive("bob", outs[0].Commit); !r.Removed {
		t.Fatalf("bob received the first commit as %+v", r)
	}
	w.receive("fx", outs[0].Commit)
	w.receive("fx", outs[1].Commit)
	delete(w.members, "bob")
	w.check("two racing commits of alice")
	if err := alice1.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if err := alice2.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	d1, _ := alice1.DB().Digest(ctx)
	d2, _ := alice2.DB().Digest(ctx)
	if !d1.Equal(d2) {
		t.Fatal("the two processes' read models differ")
	}
	for _, in := range []*Installation{alice1, alice2} {
		e, a, err := in.EpochAuthenticator(ctx, w.gid)
		fe, fa := w.state("fx")
		if err != nil || e != fe || !bytes.Equal(a, fa) {
			t.Fatalf("a process of alice at epoch %d, fx at %d (%v)", e, fe, err)
		}
	}
	w.verifyAll()
}

func containsID(ids []events.InstallationID, id events.InstallationID) bool {
	for _, x := range ids {
		if x == id {
			return true
		}
	}
	return false
}

// VerifyMLS re-derives a received proposal from its recorded message: a
// record that says the message carried another proposal (a buggy or
// compromised writer) is a mismatch.
func TestVerifyMLSChecksTheRecordedProposal(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	gid := b.pair(alice, bob)
	po, err := b.insts[alice].ProposeUpdate(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	in := b.insts[bob]
	gs, err := in.loadGroup(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	var m mls.MLSMessage
	if err := m.Unmarshal(po.Proposal); err != nil {
		t.Fatal(err)
	}
	ng, _, err := gs.g.Process(&m)
	if err != nil {
		t.Fatal(err)
	}
	p, _ := newProposal(gs.g, ng)
	body, err := proposalEvent(ng, p, nil, po.Proposal, po.MessageID, []byte(alice), false)
	if err != nil {
		t.Fatal(err)
	}
	body.ProposalType = uint16(mls.ProposalTypeRemove) // the record lies about the proposal
	if err := in.appendAndProject(ctx, in.groupAgg(gid), gs.pos, body); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.VerifyMLS(ctx, b.log, bob); !errors.Is(err, replay.ErrMLSMismatch) {
		t.Errorf("VerifyMLS of a proposal_staged that contradicts its message: %v, want replay.ErrMLSMismatch", err)
	}
	// The truthful record re-derives (alice's own proposal is checked
	// against its state).
	if rep, err := replay.VerifyMLS(ctx, b.log, alice); err != nil || rep.Own == 0 {
		t.Fatalf("VerifyMLS of alice: %+v, %v", rep, err)
	}
}
