package replay_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// exampleWorld opens a log on an embedded server and records an
// installation with one group, leaving its read model at dbPath under
// dbKey. The caller removes dir.
func exampleWorld(ctx context.Context) (dir string, log *eventlog.Log, id events.InstallationID, dbPath string, dbKey projections.Key) {
	dir, err := os.MkdirTemp("", "epochlog-replay-example-")
	if err != nil {
		panic(err)
	}
	root, err := events.NewRootKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		panic(err)
	}
	keys, err := events.NewKeyring(1, root)
	if err != nil {
		panic(err)
	}
	cfg := eventlog.DefaultConfig(filepath.Join(dir, "nats"))
	cfg.EmbeddedInProcess = true
	if log, err = eventlog.Open(ctx, cfg, keys); err != nil {
		panic(err)
	}
	id, dbPath = "alice-phone", filepath.Join(dir, "alice.db")
	if dbKey, err = projections.GenerateRawKey(); err != nil {
		panic(err)
	}
	in, err := engine.CreateInstallation(ctx, log, id, dbPath, dbKey, nil)
	if err != nil {
		panic(err)
	}
	if _, err := in.CreateGroup(ctx, nil); err != nil {
		panic(err)
	}
	if err := in.Close(); err != nil {
		panic(err)
	}
	return dir, log, id, dbPath, dbKey
}

// Rebuild replays an installation's events into a fresh database and
// swaps it over the live one; Verify then finds them equal.
func ExampleRebuild() {
	ctx := context.Background()
	dir, log, id, dbPath, dbKey := exampleWorld(ctx)
	defer os.RemoveAll(dir)
	defer log.Close()

	res, err := replay.Rebuild(ctx, log, id, dbPath, dbKey, nil)
	if err != nil {
		panic(err)
	}
	fmt.Printf("rebuilt %s: %d events replayed, replaced an existing database: %v\n", res.Installation, res.Replayed, res.Existed)
	if _, err := replay.Verify(ctx, log, id, dbPath, dbKey, nil); err != nil {
		panic(err)
	}
	fmt.Println("verified")
	// Output:
	// rebuilt alice-phone: 2 events replayed, replaced an existing database: true
	// verified
}

// Rekey moves a read model to a new key by replaying into a database under
// that key, proven equal to the old content before the swap. The old key
// no longer opens it.
func ExampleRekey() {
	ctx := context.Background()
	dir, log, id, dbPath, oldKey := exampleWorld(ctx)
	defer os.RemoveAll(dir)
	defer log.Close()

	newKey, err := projections.GenerateRawKey()
	if err != nil {
		panic(err)
	}
	if _, err := replay.Rekey(ctx, log, id, dbPath, oldKey, newKey, nil); err != nil {
		panic(err)
	}
	db, err := projections.Open(dbPath, oldKey, nil)
	if err == nil {
		db.Close()
	}
	fmt.Println("old key refused:", errors.Is(err, projections.ErrWrongKey))
	if _, err := replay.Verify(ctx, log, id, dbPath, newKey, nil); err != nil {
		panic(err)
	}
	fmt.Println("verified under the new key")
	// Output:
	// old key refused: true
	// verified under the new key
}
