package engine

import (
	"bytes"
	"context"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// An application-defined group context extension type (private use range).
const appExtension = mls.ExtensionType(0xf001)

// Group context extensions change by commit and by proposal, from engine
// installations and foreign members; requiring an extension some member
// does not support is refused, and so is adding a member that lacks a
// required one (by commit, or left out of a commit by reference). Every
// member agrees on the extensions after each step.
func TestGroupContextExtensions(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	withApp := b.opts()
	withApp.SupportedExtensions = []mls.ExtensionType{appExtension}
	alice := b.createWith("alice", withApp)
	bob := b.createWith("bob", withApp)
	carol := b.create("carol") // no support for the extension
	fx := w.addForeign("fx", true)
	fx.caps = &mls.Capabilities{Versions: []mls.ProtocolVersion{mls.ProtocolMLS10}, Extensions: []mls.ExtensionType{appExtension}}
	fy := w.addForeign("fy", false) // no support either
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("fx"))
	w.engineCommitted("alice", co, err)

	required, err := RequiredCapabilities([]mls.ExtensionType{appExtension}, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	agree := func(want []byte) {
		t.Helper()
		for _, id := range w.memberList() {
			var exts mls.Extensions
			if f, ok := w.foreign[id]; ok {
				exts = f.g.GroupContext().Extensions
			} else if exts, err = b.insts[events.InstallationID(id)].GroupContextExtensions(ctx, w.gid); err != nil {
				t.Fatal(err)
			}
			e, ok := exts.Find(appExtension)
			if (want == nil) != !ok || (ok && !bytes.Equal(e.Data, want)) {
				t.Fatalf("%s has extensions %+v, want the application extension %q", id, exts, want)
			}
		}
	}
	// By commit: the application extension, required of every member.
	co, err = alice.SetGroupContextExtensions(ctx, w.gid, mls.Extensions{{Type: appExtension, Data: []byte("v1")}, required})
	w.engineCommitted("alice", co, err)
	agree([]byte("v1"))

	// A member lacking the required extension cannot be added: refused,
	// nothing recorded.
	refused := func(what string, err error) {
		t.Helper()
		if !errors.Is(err, mls.ErrInvalidProposal) {
			t.Fatalf("%s: %v, want mls.ErrInvalidProposal", what, err)
		}
	}
	before := b.lastSeq("alice")
	_, err = alice.AddMembers(ctx, w.gid, w.keyPackage("carol"))
	refused("adding carol, who lacks the required extension", err)
	_, err = alice.AddMembers(ctx, w.gid, w.keyPackage("fy"))
	refused("adding fy, who lacks the required extension", err)
	// Nor can the group require what a member lacks.
	other, _ := RequiredCapabilities([]mls.ExtensionType{appExtension + 1}, nil, nil)
	_, err = alice.SetGroupContextExtensions(ctx, w.gid, mls.Extensions{other})
	refused("requiring an extension nobody supports", err)
	_, err = alice.ProposeGroupContextExtensions(ctx, w.gid, mls.Extensions{other})
	refused("proposing to require an extension nobody supports", err)
	if after := b.lastSeq("alice"); after != before {
		t.Fatal("a refused change was recorded")
	}
	// A foreign proposal to add fy is recorded, and left out of bob's
	// commit by reference.
	prop := fx.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) {
		var kp mls.KeyPackage
		if err := kp.Unmarshal(fy.keyPackage()); err != nil {
			return nil, nil, err
		}
		return g.ProposeAdd(&kp)
	})
	w.deliver("fx", prop)
	co, err = bob.CommitProposals(ctx, w.gid)
	w.engineCommitted("bob", co, err)
	if w.members["fy"] || co.Welcome != nil {
		t.Fatal("fy was added although she lacks a required extension")
	}

	// By proposal: bob proposes a new value, a foreign member commits it.
	po, err := bob.ProposeGroupContextExtensions(ctx, w.gid, mls.Extensions{{Type: appExtension, Data: []byte("v2")}, required})
	if err != nil {
		t.Fatal(err)
	}
	w.deliver("bob", po.Proposal)
	commit, _ := fx.commit(mls.CommitOptions{ForcePath: true})
	w.committed("fx", commit, nil)
	agree([]byte("v2"))

	// A foreign commit lifts the requirement; carol can join.
	none := mls.Extensions{}
	commit, _ = fx.commit(mls.CommitOptions{GroupContextExtensions: &none})
	w.committed("fx", commit, nil)
	agree(nil)
	co, err = alice.AddMembers(ctx, w.gid, w.keyPackage("carol"))
	w.engineCommitted("alice", co, err)
	if !w.members["carol"] {
		t.Fatal("carol not added once the requirement is lifted")
	}
	// carol's leaf does not list the extension: the group cannot carry it.
	_, err = bob.SetGroupContextExtensions(ctx, w.gid, mls.Extensions{{Type: appExtension, Data: []byte("v3")}})
	refused("an extension carol does not support", err)
	w.update("carol")
	w.verifyAll()
	_ = carol
}
