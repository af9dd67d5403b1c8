package engine

import (
	"context"
	"testing"
)

// An operation whose events are durable but whose read model cannot take
// them succeeds: its output carries ProjectionErr (a value or an error,
// never both), and a later catch-up projects what was recorded.
func TestProjectionFailureIsInTheOutput(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	a := b.create(alice)
	created, err := a.CreateGroup(ctx, nil)
	if err != nil || created.ProjectionErr != nil {
		t.Fatalf("create group: %v, projection %v", err, created.ProjectionErr)
	}
	gid := created.GroupID

	// The read model goes away under the installation (a disk error, say).
	if err := a.DB().Close(); err != nil {
		t.Fatal(err)
	}
	co, err := a.Update(ctx, gid)
	if err != nil {
		t.Fatalf("update with an unwritable read model: %v, want the commit with ProjectionErr set", err)
	}
	if co == nil || co.Epoch != created.Epoch+1 || co.ProjectionErr == nil {
		t.Fatalf("update output %+v: want the next epoch and a ProjectionErr", co)
	}

	// The commit is on the stream: a restarted process catches up to it.
	_ = a.Close() // the database is closed already; this lets go of its lock
	delete(b.insts, alice)
	in, err := OpenInstallation(ctx, b.log, alice, b.dbPath(alice), b.keys[alice], b.opts())
	if err != nil {
		t.Fatalf("reopen: %v", err)
	}
	b.insts[alice] = in
	if ep, err := in.Epoch(ctx, gid); err != nil || ep != co.Epoch {
		t.Fatalf("epoch after catching up: %d, %v; want %d", ep, err, co.Epoch)
	}
}
