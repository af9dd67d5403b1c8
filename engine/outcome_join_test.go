package engine

import (
	"context"
	"errors"
	"testing"
)

// A join by external commit is an own commit too: when the server stops
// answering as its append is sent, it returns its output inside an
// *OutcomeUnknownError, and Decide settles it. Until now it failed with a
// plain ErrOutcomeUnknown: a join recorded meanwhile left the joiner in a
// group whose members could never be given its commit.
func TestExternalJoinCarriesItsCommitWhenUndecided(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	ctx := context.Background()
	srv, create, freeze := frozenWorld(t)
	alice, carol := create("alice"), create("carol")
	g, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gio, err := alice.GroupInfo(ctx, g.GroupID, true)
	if err != nil {
		t.Fatal(err)
	}
	freeze.Store(true)
	_, err = carol.JoinExternal(ctx, gio.GroupInfo, nil)
	srv.Thaw()
	if err == nil {
		t.Skip("the join was answered before the freeze took hold")
	}
	var u *OutcomeUnknownError
	if !errors.As(err, &u) || u.Commit == nil {
		t.Fatalf("join by external commit with the server frozen: %v, want an *OutcomeUnknownError carrying the commit", err)
	}
	recorded, err := carol.Decide(ctx, u)
	if err != nil {
		t.Fatalf("decide after the thaw: %v", err)
	}
	if recorded {
		if _, err := alice.Receive(ctx, u.Commit.Commit); err != nil {
			t.Fatalf("alice receives the decided join: %v", err)
		}
	}
}

// Decide settles an operation of the installation it is called on: given
// another installation's error, it refuses and appends nothing. It
// appended the events and caught up its own read model instead, and on
// another Log answered "not recorded" for a commit that was.
func TestDecideRefusesAnotherInstallationsOperation(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	ctx := context.Background()
	srv, create, freeze := frozenWorld(t)
	alice, bob := create("alice"), create("bob")
	kp, err := bob.PublishKeyPackage(ctx, "d", true)
	if err != nil {
		t.Fatal(err)
	}
	g, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	freeze.Store(true)
	_, err = alice.AddMembers(ctx, g.GroupID, kp.KeyPackage)
	srv.Thaw()
	if err == nil {
		t.Skip("the commit was answered before the freeze took hold")
	}
	var u *OutcomeUnknownError
	if !errors.As(err, &u) {
		t.Fatalf("add with the server frozen: %v, want an *OutcomeUnknownError", err)
	}
	if recorded, err := bob.Decide(ctx, u); err == nil {
		t.Fatalf("bob decided alice's commit: recorded %v, want an error", recorded)
	}
	if _, err := alice.Decide(ctx, u); err != nil {
		t.Fatalf("alice decides her commit: %v", err)
	}
}
