package engine

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/mls"
)

// Pre-shared keys: an external PSK registered with engine installations
// (and held by a foreign member) is injected inline, by a foreign
// proposal, by an engine proposal, and into a Welcome; a resumption PSK
// of an earlier epoch is injected too. Group states never carry the
// external PSK; once retired it can no longer be used. Every member
// agrees after each step, and every history re-derives (VerifyMLS holds
// the PSKs the events registered).
func TestPreSharedKeys(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	bob := b.create("bob")
	carol := b.create("carol")
	fx := w.addForeign("fx", true)
	secret := []byte("a pre-shared secret, 32 bytes..")
	id := []byte("shared-psk")
	for _, in := range []*Installation{alice, bob, carol} {
		if err := in.RegisterExternalPSK(ctx, id, secret); err != nil {
			t.Fatal(err)
		}
	}
	if err := alice.RegisterExternalPSK(ctx, id, []byte("another")); !errors.Is(err, ErrPSKRegistered) {
		t.Fatalf("a PSK id registered twice: %v, want ErrPSKRegistered", err)
	}
	fx.psks[string(id)] = secret
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	w.gid = created.GroupID
	w.members["alice"] = true
	co, err := alice.AddMembers(ctx, w.gid, w.keyPackage("bob"), w.keyPackage("fx"))
	w.engineCommitted("alice", co, err)

	// Inline: an external PSK, then a resumption PSK of the last epoch.
	co, err = alice.CommitPreSharedKeys(ctx, w.gid, ExternalPSK(id))
	w.engineCommitted("alice", co, err)
	e, _ := w.state("bob")
	co, err = bob.CommitPreSharedKeys(ctx, w.gid, ResumptionPSK(e-1))
	w.engineCommitted("bob", co, err)
	// By reference: fx's proposal, committed by bob.
	nonce := make([]byte, 32)
	rand.Read(nonce)
	prop := fx.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) {
		return g.ProposePreSharedKey(mls.PreSharedKeyID{Type: mls.PSKTypeExternal, PSKID: id, PSKNonce: nonce})
	})
	w.deliver("fx", prop)
	co, err = bob.CommitProposals(ctx, w.gid)
	w.engineCommitted("bob", co, err)
	if len(fx.g.PendingProposals()) != 0 {
		t.Fatal("the PSK proposal was not committed")
	}
	// Into a Welcome: bob proposes the PSK, fx proposes adding carol,
	// alice commits both.
	po, err := bob.ProposePreSharedKey(ctx, w.gid, ExternalPSK(id))
	if err != nil {
		t.Fatal(err)
	}
	w.deliver("bob", po.Proposal)
	carolKP := w.keyPackage("carol")
	prop = fx.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) {
		var kp mls.KeyPackage
		if err := kp.Unmarshal(carolKP); err != nil {
			return nil, nil, err
		}
		return g.ProposeAdd(&kp)
	})
	w.deliver("fx", prop)
	co, err = alice.CommitProposals(ctx, w.gid)
	if err != nil {
		t.Fatal(err)
	}
	// The commit injects the PSK: without it, it does not process.
	var cm mls.MLSMessage
	if err := cm.Unmarshal(co.Commit); err != nil {
		t.Fatal(err)
	}
	if _, _, err := fx.g.WithoutExternalPSK(id).ProcessCommit(&cm); !errors.Is(err, mls.ErrUnknownPSK) {
		t.Fatalf("alice's commit processed without the PSK: %v", err)
	}
	w.engineCommitted("alice", co, err)
	if !w.members["carol"] {
		t.Fatal("carol was not added")
	}
	// No recorded state carries the PSK.
	for _, in := range []*Installation{alice, bob, carol} {
		st, err := in.DB().GroupState(ctx, w.gid)
		if err != nil {
			t.Fatal(err)
		}
		eps, _ := in.DB().Epochs(ctx, w.gid)
		for _, ep := range eps {
			if bytes.Contains(ep.State.Bytes(), secret) {
				t.Fatalf("%s: the state of epoch %d carries the PSK", in.ID(), ep.Epoch)
			}
		}
		if bytes.Contains(st.Bytes(), secret) {
			t.Fatalf("%s: the group state carries the PSK", in.ID())
		}
	}
	// Retired: gone from the read model, refused in a commit.
	if err := bob.RetireExternalPSK(ctx, id); err != nil {
		t.Fatal(err)
	}
	if err := bob.RetireExternalPSK(ctx, id); !errors.Is(err, mls.ErrUnknownPSK) {
		t.Fatalf("retiring a retired PSK: %v", err)
	}
	if ps, _ := bob.DB().ExternalPSKs(ctx); len(ps) != 0 {
		t.Fatalf("bob still holds %d PSKs", len(ps))
	}
	before := b.lastSeq("bob")
	if _, err := bob.CommitPreSharedKeys(ctx, w.gid, ExternalPSK(id)); !errors.Is(err, mls.ErrUnknownPSK) {
		t.Fatalf("a commit with a retired PSK: %v", err)
	}
	if b.lastSeq("bob") != before {
		t.Fatal("a refused PSK commit was recorded")
	}
	w.verifyAll()
	w.rebuildAndReopen("alice")
	e, _ = w.state("alice")
	co, err = b.insts["alice"].CommitPreSharedKeys(ctx, w.gid, ResumptionPSK(e))
	w.engineCommitted("alice", co, err)
}
