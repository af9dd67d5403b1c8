package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// External joins: engine installations and foreign clients join a group
// by external commit from GroupInfos published by engine installations
// and foreign members (tree inline or beside), a foreign member resyncs
// (its old leaf removed by its own external commit), and a removed
// installation comes back by external commit as a new membership. Every
// member agrees after each step; every engine installation's history
// re-derives, and other members' external commits are re-derived too.
func TestExternalJoins(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	bob := b.create("bob")
	carol := b.create("carol")
	dave := b.create("dave")
	fx := w.addForeign("fx", true)
	fy := w.addForeign("fy", false)
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("fx"))
	w.engineCommitted("alice", co, err)

	// carol joins from alice's GroupInfo, tree inline.
	gio, err := alice.GroupInfo(ctx, w.gid, true)
	if err != nil || gio.RatchetTree != nil {
		t.Fatalf("group info: %+v, %v", gio, err)
	}
	co, err = carol.JoinExternal(ctx, gio.GroupInfo, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(co.Recipients) != 3 || co.Epoch != gio.Epoch+1 {
		t.Fatalf("carol's external commit: recipients %v, epoch %d", co.Recipients, co.Epoch)
	}
	got := w.deliver("carol", co.Commit)
	if r := got["alice"]; r.Kind != "commit" || r.Sender != "carol" {
		t.Fatalf("alice received carol's external commit as %+v", r)
	}
	w.members["carol"] = true
	w.check("carol joins by external commit")
	if _, err := carol.JoinExternal(ctx, gio.GroupInfo, nil); !errors.Is(err, ErrAlreadyMember) {
		t.Fatalf("joining again: %v", err)
	}
	b.receiveAgain(alice, "alice", co.Commit, ErrDuplicateMessage)
	b.receiveAgain(carol, "carol", co.Commit, ErrDuplicateMessage) // her own, echoed

	// fy, foreign, joins from bob's GroupInfo with the tree beside it.
	gio, err = bob.GroupInfo(ctx, w.gid, false)
	if err != nil || gio.RatchetTree == nil {
		t.Fatalf("group info: %+v, %v", gio, err)
	}
	commit := fy.joinExternal(gio.GroupInfo, gio.RatchetTree, false)
	w.deliver("fy", commit)
	w.members["fy"] = true
	w.check("fy joins by external commit")

	// dave joins from a foreign member's GroupInfo.
	fgi, ftree := fx.groupInfo(false)
	co, err = dave.JoinExternal(ctx, fgi, ftree)
	if err != nil {
		t.Fatal(err)
	}
	w.deliver("dave", co.Commit)
	w.members["dave"] = true
	w.check("dave joins from fx's group info")

	// fy resyncs: its external commit removes its old leaf.
	fgi, _ = fx.groupInfo(true)
	commit = fy.joinExternal(fgi, nil, true)
	w.deliver("fy", commit)
	w.check("fy resyncs")

	// bob, removed, comes back by external commit: a new membership.
	commit, _ = fx.commit(mls.CommitOptions{Remove: []mls.LeafIndex{fx.leaf("bob")}})
	w.committed("fx", commit, nil)
	gio, err = carol.GroupInfo(ctx, w.gid, true)
	if err != nil {
		t.Fatal(err)
	}
	co, err = bob.JoinExternal(ctx, gio.GroupInfo, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.deliver("bob", co.Commit)
	w.members["bob"] = true
	w.check("bob back by external commit")
	ms, err := bob.DB().Memberships(ctx, w.gid)
	if err != nil || len(ms) != 2 || ms[0].Left != "removed" || ms[1].JoinedVia != "external" {
		t.Fatalf("bob's memberships %+v, %v", ms, err)
	}
	// The joiners commit and send like any member.
	w.update("bob")
	w.update("dave")
	out, err := carol.Send(ctx, w.gid, []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Update != nil {
		w.committed("carol", out.Update.Commit, nil)
	}
	w.deliver("carol", out.Message)
	w.verifyAll()
	for _, id := range []events.InstallationID{"carol", "bob"} {
		w.rebuildAndReopen(id)
	}
	w.update("carol")
	_ = fy
}
