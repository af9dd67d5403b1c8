package engine

import (
	"context"
	"testing"
)

// TestOpenWithAnotherInstallationsReadModel: a typo'd Register or an
// OpenInstallation given another installation's file (and key) is refused,
// and leaves the installation it named working: its appends in this
// process must not fail because of the other read model's checkpoint.
func TestOpenWithAnotherInstallationsReadModel(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	bob := b.create("bob")
	b.create("alice")
	for range 3 {
		b.keyPackage("alice") // alice's checkpoint moves past bob's last event
	}
	if err := b.insts["alice"].Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	if in, err := OpenInstallation(ctx, b.log, "bob", b.dbPath("alice"), b.keys["alice"], b.opts()); err == nil {
		in.Close()
		t.Fatal("opened bob on alice's read model")
	} else {
		mustErrIs(t, err, ErrWrongReadModel)
	}
	if _, err := bob.PublishKeyPackage(ctx, "directory", true); err != nil {
		t.Fatalf("bob after a mistaken open of alice's read model as bob's: %v", err)
	}
	if _, err := bob.CreateGroup(ctx, nil); err != nil {
		t.Fatalf("bob create group: %v", err)
	}
	alice, err := OpenInstallation(ctx, b.log, "alice", b.dbPath("alice"), b.keys["alice"], b.opts())
	if err != nil {
		t.Fatalf("reopen alice: %v", err)
	}
	b.insts["alice"] = alice
	if _, err := alice.PublishKeyPackage(ctx, "directory", true); err != nil {
		t.Fatalf("alice: %v", err)
	}
}
