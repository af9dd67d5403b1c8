package engine

import (
	"bytes"
	"context"
	"errors"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/replay"
)

// One history holding a successor started in the old two-event form and
// one started as one event (group.created v3): the member joins both
// from their Welcomes after a restart between the start and the Welcome
// (its predecessor read back from the read model), the starter commits
// in both after a restart, VerifyMLS and a rebuild agree with the live
// read models, and retention of the successors' epochs 0 and 1
// (compacted) leaves both going on, the starter's read model verified.
func TestSuccessorBothFormsAcrossReloadsAndRetention(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice, _, gid := twoMembers(t, b)
	var bobKP mls.KeyPackage
	if err := bobKP.Unmarshal(b.keyPackage("bob")); err != nil {
		t.Fatal(err)
	}
	old, bodies := oldSuccessorStart(t, alice, gid, func(g *mls.Group, kp *mls.KeyPackage, sec *mls.KeyPackageSecrets) (*mls.Group, mls.CommitOptions, error) {
		return g.PrepareBranch([]byte("old-branch"), kp, sec, []*mls.KeyPackage{&bobKP})
	})
	if err := appendOldForm(t, alice, alice.groupAgg(old.GroupID()), bodies...); err != nil {
		t.Fatal(err)
	}
	oldWelcome := bodies[1].(events.CommitApplied).OwnOutput.Welcome
	branch, err := alice.Branch(ctx, gid, []byte("new-branch"), b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	successors := [][]byte{old.GroupID(), branch.GroupID}

	bob := b.restart("bob")
	for i, w := range [][]byte{oldWelcome, branch.Welcome} {
		if r, err := bob.Receive(ctx, w); err != nil || r.Kind != "welcome" {
			t.Fatalf("bob joins successor %d after a restart: %+v, %v", i, r, err)
		}
	}
	update := func(who *Installation, to *Installation, gid []byte) {
		t.Helper()
		up, err := who.Update(ctx, gid)
		if err != nil {
			t.Fatalf("%s commits in %x: %v", who.ID(), gid, err)
		}
		if _, err := to.Receive(ctx, up.Commit); err != nil {
			t.Fatalf("%s receives %s's commit in %x: %v", to.ID(), who.ID(), gid, err)
		}
	}
	alice = b.restart("alice")
	for _, s := range successors {
		update(alice, bob, s)
		update(bob, alice, s)
	}
	b.checkRebuild("alice")
	b.checkRebuild("bob")

	// The first group, with messages, closed by a ReInit; retention
	// (a day later, messages none) records its state at both members,
	// closed as it is, and deletes the messages; the successor is
	// started after restarts, and a deleted message stays refused.
	sent, err := alice.Send(ctx, gid, []byte("before the reinit"), nil)
	if err != nil || sent.Update != nil {
		t.Fatalf("alice sends before the reinit: %v", err)
	}
	if _, err := bob.Receive(ctx, sent.Message); err != nil {
		t.Fatal(err)
	}
	ri := mls.ReInit{GroupID: []byte("reinit-successor"), Version: mls.ProtocolMLS10, CipherSuite: ciphersuite.Suite(DefaultCiphersuite)}
	co, err := alice.CommitReInit(ctx, gid, ri)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Receive(ctx, co.Commit); err != nil {
		t.Fatal(err)
	}
	b.now = b.now.Add(48 * time.Hour)
	for _, in := range []*Installation{alice, bob} {
		if res, err := in.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil); err != nil || res.RowsDeleted == 0 || res.GroupsKept != 0 {
			t.Fatalf("%s retains the closed group's messages: %+v, %v", in.ID(), res, err)
		}
	}
	alice, bob = b.restart("alice"), b.restart("bob")
	if _, err := bob.Receive(ctx, sent.Message); !errors.Is(err, mls.ErrGenerationReused) {
		t.Fatalf("a deleted message of the closed group delivered again: %v, want mls.ErrGenerationReused", err)
	}
	next, err := alice.Reinitialize(ctx, gid, b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	bob = b.restart("bob")
	if r, err := bob.Receive(ctx, next.Welcome); err != nil || r.Kind != "welcome" {
		t.Fatalf("bob joins the reinitialised group after a restart: %+v, %v", r, err)
	}
	successors = append(successors, next.GroupID)

	// Epochs 0 and 1 of the successors leave the window, and go.
	for _, s := range successors {
		for range 3 {
			update(alice, bob, s)
		}
		if bytes.Equal(s, next.GroupID) { // two commits fewer so far
			update(alice, bob, s)
			update(alice, bob, s)
		}
		if held, err := alice.DB().HeldEpochs(ctx, s); err != nil || len(held) == 0 || held[0] < 2 {
			t.Fatalf("held epochs of %x: %v (%v), want from 2 on", s, held, err)
		}
	}
	if _, err := alice.Retain(ctx, replay.RetentionPolicy{PastEpochs: replay.KeepNoPastEpochs}, &RetainOptions{Compact: true}); err != nil {
		t.Fatal(err)
	}
	alice = b.restart("alice")
	bob = b.restart("bob")
	for _, s := range successors {
		update(alice, bob, s)
		update(bob, alice, s)
		sent, err := alice.Send(ctx, s, []byte("after retention"), nil)
		if err != nil || sent.Update != nil {
			t.Fatalf("alice sends in %x after retention: %v", s, err)
		}
		if r, err := bob.Receive(ctx, sent.Message); err != nil || string(r.Content.Bytes()) != "after retention" {
			t.Fatalf("bob receives in %x after retention: %+v, %v", s, r, err)
		}
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Verify(ctx, b.log, "alice", b.dbPath("alice"), b.keys["alice"], nil); err != nil {
		t.Fatalf("verify after retention: %v", err)
	}
	b.rebuildAndRestart("alice")
}
