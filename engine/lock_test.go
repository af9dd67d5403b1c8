package engine

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// An installation is its read model's one writer: a second opener, a
// rebuild or a follower of the same file is refused at once, naming the
// holder, and nothing of the file changes; after Close they may go.
func TestInstallationHoldsItsReadModel(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	b.create(alice)
	path := b.dbPath(alice)

	_, err := OpenInstallation(ctx, b.log, alice, path, b.keys[alice], b.opts())
	if !errors.Is(err, projections.ErrLocked) || !containsPid(err) {
		t.Fatalf("second open of a held read model: %v, want ErrLocked naming the holder", err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Rebuild(ctx, b.log, alice, path, b.keys[alice], nil); !errors.Is(err, projections.ErrLocked) {
		t.Fatalf("rebuild of a held read model: %v, want ErrLocked", err)
	}
	db, err := projections.OpenExisting(path, b.keys[alice], nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := replay.Project(ctx, b.log, []replay.Projection{{Installation: alice, DB: db}}, nil); !errors.Is(err, projections.ErrLocked) {
		t.Fatalf("follower of a held read model: %v, want ErrLocked", err)
	}
	if after, _ := os.ReadFile(path); string(after) != string(before) {
		t.Fatal("refused writers changed the read model")
	}

	b.restart(alice) // Close lets go: the same process opens it again
}

func containsPid(err error) bool {
	return err != nil && strings.Contains(err.Error(), "pid ")
}
