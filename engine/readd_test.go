package engine

import (
	"context"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// Installations removed from a group (by a foreign member's encrypted
// commit, or leaving by their own proposal) are added back by a Welcome,
// an engine installation's and a foreign member's; the read model keeps
// both memberships (the first one's members and epochs without secrets),
// and every member agrees at every step, before and after a rebuild.
func TestReAddAfterRemoval(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	bob := b.create("bob")
	carol := b.create("carol")
	fx := w.addForeign("fx", true)
	w.addForeign("fy", false)
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("carol"), w.keyPackage("fx"), w.keyPackage("fy"))
	w.engineCommitted("alice", co, err)
	out, err := carol.Send(ctx, w.gid, []byte("before"), nil)
	if err != nil {
		t.Fatal(err)
	}
	w.committed("carol", out.Update.Commit, nil)
	w.deliver("carol", out.Message)

	// fx removes carol, encrypted.
	commit, _ := fx.commit(mls.CommitOptions{Remove: []mls.LeafIndex{fx.leaf("carol")}})
	removal := commit
	w.committed("fx", commit, nil)
	if w.members["carol"] {
		t.Fatal("carol not removed")
	}
	left, _ := w.state("alice")
	w.update("bob")

	// alice adds her back.
	co, err = alice.AddMembers(ctx, w.gid, w.keyPackage("carol"))
	w.engineCommitted("alice", co, err)
	if !w.members["carol"] {
		t.Fatal("carol not back")
	}
	ms, err := carol.DB().Memberships(ctx, w.gid)
	if err != nil || len(ms) != 2 || ms[0].Left != "removed" || ms[0].LeftEpoch != left-1 || ms[1].Left != "" || ms[1].JoinedEpoch != co.Epoch || ms[1].Membership != 2 {
		t.Fatalf("carol's memberships %+v, %v (removed at %d)", ms, err, left-1)
	}
	past, err := carol.DB().PastMembers(ctx, w.gid, 1)
	if err != nil || len(past) != 5 {
		t.Fatalf("carol's first membership's members: %+v, %v", past, err)
	}
	if eps, _ := carol.DB().PastEpochs(ctx, w.gid, 1); len(eps) == 0 || !eps[len(eps)-1].State.IsZero() {
		t.Fatalf("carol's first membership's epochs: %+v", eps)
	}
	if eps, _ := carol.DB().Epochs(ctx, w.gid); len(eps) != 1 || eps[0].Epoch != co.Epoch {
		t.Fatalf("carol's current epochs: %+v", eps)
	}
	// Back in the group she commits and sends; what she sent or received
	// before is still hers, and the commit that removed her is a duplicate.
	out, err = carol.Send(ctx, w.gid, []byte("after"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Update == nil {
		t.Fatal("carol sends without a path update after rejoining")
	}
	w.committed("carol", out.Update.Commit, nil)
	w.deliver("carol", out.Message)
	b.receiveAgain(carol, "carol", removal, ErrDuplicateMessage)
	if n := messageCount(t, carol, w.gid); n != 2 {
		t.Fatalf("carol has %d messages, want 2", n)
	}

	// bob leaves by his own proposal, fx commits it, then fx adds him back.
	po, err := bob.Leave(ctx, w.gid)
	if err != nil {
		t.Fatal(err)
	}
	w.deliver("bob", po.Proposal)
	commit, _ = fx.commit(mls.CommitOptions{ForcePath: true})
	got := w.deliver("fx", commit)
	if r := got["bob"]; !r.Removed || !r.Left {
		t.Fatalf("bob received his departure as %+v", r)
	}
	delete(w.members, "bob")
	w.check("bob left")
	var kp mls.KeyPackage
	if err := kp.Unmarshal(w.keyPackage("bob")); err != nil {
		t.Fatal(err)
	}
	commit, welcome := fx.commit(mls.CommitOptions{Add: []*mls.KeyPackage{&kp}})
	w.committed("fx", commit, welcome)
	if ms, _ := bob.DB().Memberships(ctx, w.gid); len(ms) != 2 || ms[0].Left != "left" {
		t.Fatalf("bob's memberships %+v", ms)
	}
	w.update("bob")

	w.verifyAll()
	for _, id := range []events.InstallationID{"bob", "carol"} {
		w.rebuildAndReopen(id)
	}
	w.update("carol")
	w.check("after rebuilds")
}
