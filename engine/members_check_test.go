package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// The engine names members, senders and recipients by their credential's
// identity: a member it cannot name as one installation is refused,
// nothing recorded, wherever it would enter a group. Until 2026-12-06 a
// second leaf claiming an installation already in the group (an impostor
// with its own key) was added, and its messages came back as that
// installation's; an identity that is no installation id was added, and
// then its every message refused and every later commit's fan-out
// refused.
func TestMembersTheEngineCannotNameAreRefused(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	b.create("bob")
	mallory := w.addForeign("bob", true) // claims to be bob, with its own key
	odd := w.addForeign("carol.example.com", true)
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	for name, kps := range map[string][][]byte{
		"a second leaf of bob":     {b.keyPackage("bob"), mallory.keyPackage()},
		"not an installation id":   {odd.keyPackage()},
		"a second leaf of herself": {newForeign(t, "alice", true).keyPackage()},
	} {
		before := b.lastSeq("alice")
		if _, err := alice.AddMembers(ctx, gid, kps...); !errors.Is(err, ErrMemberRefused) {
			t.Fatalf("%s: AddMembers: %v, want ErrMemberRefused", name, err)
		}
		if after := b.lastSeq("alice"); after != before {
			t.Fatalf("%s: the refused commit recorded events (last seq %d -> %d)", name, before, after)
		}
	}
	if ms, err := alice.Members(ctx, gid); err != nil || len(ms) != 1 {
		t.Fatalf("members after the refusals: %v %v", ms, err)
	}
}

// A received commit that adds a member the engine cannot name, and a
// Welcome into a group that holds one, are refused too: the impostor was
// added by a member that does not use this engine.
func TestReceivedImpostorIsRefused(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	b.create("bob")
	frank := w.addForeign("frank", true)
	mallory := w.addForeign("bob", true)
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	co, err := alice.AddMembers(ctx, created.GroupID, frank.keyPackage())
	if err != nil {
		t.Fatal(err)
	}
	frank.join(co.Welcome)
	// frank adds bob and a second "bob": alice refuses the commit, and
	// bob refuses the Welcome.
	kpOf := func(wire []byte) *mls.KeyPackage {
		var kp mls.KeyPackage
		if err := kp.Unmarshal(wire); err == nil {
			return &kp
		}
		var m mls.MLSMessage
		if err := m.Unmarshal(wire); err != nil || m.KeyPackage == nil {
			t.Fatalf("not a key package: %v", err)
		}
		return m.KeyPackage
	}
	commit, welcome := frank.commit(mls.CommitOptions{Add: []*mls.KeyPackage{kpOf(b.keyPackage("bob")), kpOf(mallory.keyPackage())}})
	before := b.lastSeq("alice")
	if _, err := alice.Receive(ctx, commit); !errors.Is(err, ErrMemberRefused) {
		t.Fatalf("alice receives a commit adding a second bob: %v, want ErrMemberRefused", err)
	}
	if after := b.lastSeq("alice"); after != before {
		t.Fatalf("the refused commit recorded events (last seq %d -> %d)", before, after)
	}
	if _, err := b.insts["bob"].Receive(ctx, welcome); !errors.Is(err, ErrMemberRefused) {
		t.Fatalf("bob receives a Welcome into a group with a second bob: %v, want ErrMemberRefused", err)
	}
	if !Settled(ErrMemberRefused) {
		t.Fatal("a refused member's commit would stop a delivery queue for good")
	}
}

// CheckMember is the application's Authentication Service: a key it does
// not know for an installation id is refused, a known one taken.
func TestCheckMemberIsTheAuthenticationService(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	directory := map[events.InstallationID][]byte{}
	check := func(_ context.Context, id events.InstallationID, key []byte) error {
		if !bytes.Equal(directory[id], key) {
			return fmt.Errorf("%w: not the key the directory holds", ErrMemberRefused)
		}
		return nil
	}
	alice := b.createWith("alice", &InstallationOptions{CheckMember: check})
	bob := b.create("bob")
	directory["alice"], directory["bob"] = alice.SignaturePublicKey(), bob.SignaturePublicKey()
	dave := w.addForeign("dave", true) // not in the directory
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := alice.AddMembers(ctx, created.GroupID, dave.keyPackage()); !errors.Is(err, ErrMemberRefused) || !bytes.Contains([]byte(err.Error()), []byte("not the key the directory holds")) {
		t.Fatalf("adding a member the directory does not know: %v, want ErrMemberRefused with the reason", err)
	}
	if _, err := alice.AddMembers(ctx, created.GroupID, b.keyPackage("bob")); err != nil {
		t.Fatalf("adding a member the directory knows: %v", err)
	}
}

// A CheckMember that cannot decide (its directory unreachable) refuses
// nothing: the commit is not acknowledged, and received once it can.
// Until later on 2026-12-06 every error of the hook was a refusal, and
// Host.Deliver dropped the commit.
func TestCheckMemberThatCannotDecideRefusesNothing(t *testing.T) {
	ctx := context.Background()
	var asDown atomic.Bool
	b, g := groupOfBobChecking(t, func(ctx context.Context, id events.InstallationID, key []byte) error {
		if asDown.Load() {
			return fmt.Errorf("authentication service unreachable: %w", context.DeadlineExceeded)
		}
		return nil
	})
	// The AS is down for a moment while bob receives alice's commit adding carol.
	co, err := b.insts[alice].AddMembers(ctx, g, b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	asDown.Store(true)
	h := NewHost(b.log, b.del, nil)
	r := h.Deliver(ctx, mlsChannel, []*Installation{b.insts[bob]}, 0)[0]
	for _, d := range r.Delivered {
		t.Logf("AS down: delivery %d err=%v settled=%v", d.Delivery.Seq, d.Err, d.Err != nil && Settled(d.Err))
	}
	asDown.Store(false) // the AS is back

	b.send(alice, g, "hello after the add")
	got, stopErr := deliveredWithin(t, h, b.insts[bob], "hello after the add")
	ep, _ := b.insts[bob].Epoch(ctx, g)
	if !got || ep != co.Epoch {
		t.Fatalf("a transient CheckMember failure made Host.Deliver acknowledge (drop) alice's commit: bob is at epoch %d (want %d), message received: %v, queue stopped: %v (errors.Is DeadlineExceeded: %v)",
			ep, co.Epoch, got, stopErr, errors.Is(stopErr, context.DeadlineExceeded))
	}
}

// An Add proposal of a member the engine refuses is refused when it is
// made or received, not cached: cached, every commit of the epoch that
// takes the cache would be refused, and no engine member could move the
// group on. Until later on 2026-12-06 it was cached.
func TestProposalOfARefusedMemberIsNotCached(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	w := newWorld(t, b)
	alice := b.create("alice")
	frank := w.addForeign("frank", true)
	odd := w.addForeign("carol.example.com", true)
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	co, err := alice.AddMembers(ctx, gid, frank.keyPackage())
	if err != nil {
		t.Fatal(err)
	}
	frank.join(co.Welcome)
	if _, err := alice.ProposeAdd(ctx, gid, odd.keyPackage()); !errors.Is(err, ErrMemberRefused) {
		t.Fatalf("alice proposes adding an identity that is no installation id: %v, want ErrMemberRefused", err)
	}
	kp := foreignKeyPackage(t, odd)
	proposal := frank.propose(func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeAdd(kp) })
	before := b.lastSeq("alice")
	if _, err := alice.Receive(ctx, proposal); !errors.Is(err, ErrMemberRefused) || !Settled(err) {
		t.Fatalf("alice receives frank's proposal to add it: %v, want ErrMemberRefused", err)
	}
	if after := b.lastSeq("alice"); after != before {
		t.Fatalf("the refused proposal recorded events (last seq %d -> %d)", before, after)
	}
	if _, err := alice.Update(ctx, gid); err != nil {
		t.Fatalf("alice's next commit: %v", err)
	}
}
