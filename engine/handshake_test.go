package engine

import (
	"context"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/mls"
)

// Encrypted handshakes both ways: engine installations with each wire
// format policy (the default, PrivateMessage; PublicMessage by option;
// PublicMessage for one group by override) and foreign members that
// encrypt their handshakes or not add, update and remove in one group.
// After every step all members agree on the epoch, the members and the
// epoch authenticator; at the end every engine installation's history
// re-derives (VerifyMLS) and rebuilds to its live read model.
func TestEncryptedHandshakesBothWays(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice") // default: PrivateMessage
	publicOpts := b.opts()
	publicOpts.HandshakeWireFormat = WireFormatPublic
	bob := b.createWith("bob", publicOpts)
	carol := b.create("carol")
	fx := w.addForeign("fx", true)  // encrypts its handshakes
	fy := w.addForeign("fy", false) // PublicMessage
	w.addForeign("fz", true)

	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	if wf, _ := alice.HandshakeWireFormat(ctx, w.gid); wf != WireFormatPrivate {
		t.Fatalf("alice's default handshake wire format %v", wf)
	}
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("carol"), w.keyPackage("fx"), w.keyPackage("fy"))
	w.engineCommitted("alice", co, err)
	if len(co.Added) != 4 {
		t.Fatalf("added %v", co.Added)
	}

	// A foreign member's encrypted commit, received by every engine
	// installation: recorded as received, from fx.
	commit, _ := fx.commit(mls.CommitOptions{ForcePath: true})
	if wireFormatOf(t, commit) != mls.WireFormatPrivateMessage {
		t.Fatal("fx's commit is not encrypted")
	}
	got := w.deliver("fx", commit)
	w.check("fx updates, encrypted")
	if r := got["alice"]; r.Kind != "commit" || r.Sender != "fx" {
		t.Fatalf("alice received %+v", r)
	}
	// bob's option: PublicMessage.
	co = w.update("bob")
	if wireFormatOf(t, co.Commit) != mls.WireFormatPublicMessage {
		t.Fatal("bob's commit is not a PublicMessage")
	}
	// alice's default: PrivateMessage.
	co = w.update("alice")
	if wireFormatOf(t, co.Commit) != mls.WireFormatPrivateMessage {
		t.Fatal("alice's commit is not encrypted")
	}
	// A public foreign commit adding another foreign member.
	commit, welcome := fy.commit(mls.CommitOptions{ForcePath: true, Add: []*mls.KeyPackage{foreignKeyPackage(t, w.foreign["fz"])}})
	w.committed("fy", commit, welcome)
	// carol overrides her default for this group, then goes back to it.
	if err := carol.SetHandshakeWireFormat(ctx, w.gid, WireFormatPublic); err != nil {
		t.Fatal(err)
	}
	co = w.update("carol")
	if wireFormatOf(t, co.Commit) != mls.WireFormatPublicMessage {
		t.Fatal("carol's commit ignores the group's override")
	}
	// The override survives a restart.
	carol = b.restart("carol")
	if wf, _ := carol.HandshakeWireFormat(ctx, w.gid); wf != WireFormatPublic {
		t.Fatalf("carol's override after a restart: %v", wf)
	}
	if err := carol.SetHandshakeWireFormat(ctx, w.gid, WireFormatDefault); err != nil {
		t.Fatal(err)
	}
	if err := carol.SetHandshakeWireFormat(ctx, w.gid, 7); err == nil {
		t.Fatal("an unknown wire format is accepted")
	}
	co = w.update("carol")
	if wireFormatOf(t, co.Commit) != mls.WireFormatPrivateMessage {
		t.Fatal("carol's commit after the override was lifted is not encrypted")
	}
	// An encrypted foreign commit removes bob, who learns of it.
	commit, _ = fx.commit(mls.CommitOptions{Remove: []mls.LeafIndex{fx.leaf("bob")}})
	got = w.deliver("fx", commit)
	if r := got["bob"]; !r.Removed || r.Left {
		t.Fatalf("bob received %+v", r)
	}
	delete(w.members, "bob")
	w.check("fx removes bob, encrypted")
	if _, err := bob.Update(ctx, w.gid); !errors.Is(err, mls.ErrNotMember) {
		t.Fatalf("bob commits after his removal: %v", err)
	}
	// A redelivered encrypted commit is a duplicate, and so is the one
	// that removed bob.
	b.receiveAgain(alice, "alice", commit, ErrDuplicateMessage)
	b.receiveAgain(bob, "bob", commit, ErrDuplicateMessage)
	// Application messages still flow both ways.
	out, err := alice.Send(ctx, w.gid, []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Update != nil {
		t.Fatal("alice updated before sending")
	}
	w.deliver("alice", out.Message)
	w.verifyAll()
	w.rebuildAndReopen("alice")
	w.update("alice")
}

// foreignKeyPackage is a fresh key package of f, decoded.
func foreignKeyPackage(t testing.TB, f *foreign) *mls.KeyPackage {
	t.Helper()
	var kp mls.KeyPackage
	if err := kp.Unmarshal(f.keyPackage()); err != nil {
		t.Fatal(err)
	}
	return &kp
}
