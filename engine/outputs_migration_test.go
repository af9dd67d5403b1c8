package engine

import (
	"context"
	"crypto/sha256"
	"errors"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// fileSum is the SHA-256 of the file at path.
func fileSum(t *testing.T, path string) [32]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// notKeptAt fails unless the read model at path (opened with opts) is at
// schema and did not keep own outputs the latest schema keeps.
func notKeptAt(t *testing.T, path string, key projections.Key, opts *projections.Options, schema int) {
	t.Helper()
	db, err := projections.OpenExisting(path, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v := db.SchemaVersion(); v != schema {
		t.Fatalf("%s: schema %d, want %d", path, v, schema)
	}
	if err := db.OutputsKept(context.Background(), projections.LatestSchema); !errors.Is(err, projections.ErrOutputsNotKept) {
		t.Fatalf("%s at schema %d after own commits and messages: outputs kept %v, want ErrOutputsNotKept", path, schema, err)
	}
}

// A read model rebuilt for an older reader (replayer rebuild --schema 8)
// keeps no own outputs; migrate --in-place refuses it, leaving it as it
// is, and an engine of the latest schema opening it (through a Pool)
// migrates it by replay: the own commits and messages come back as the
// operations returned them, and the file is what a replay builds
// (replayer verify passes). Until 2026-12-06 the open migrated it in
// place and they were lost for good.
func TestOpenAfterRebuildAtSchema8LosesNoOutputs(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice := b.create("alice")
	b.create("bob")
	b.create("carol")
	gid := b.groupOf(alice, "bob")
	add, err := alice.AddMembers(ctx, gid, b.keyPackage("carol"))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(add)
	b.drainAll()
	b.send("alice", gid, "before the downgrade")
	cos, msgs := ownCommits(t, alice, gid, 0), ownMessages(t, alice, gid, 0, 0)
	if len(cos) != 2 || len(msgs) != 1 {
		t.Fatalf("%d own commits and %d own messages, want 2 and 1", len(cos), len(msgs))
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	path, key := b.dbPath("alice"), b.keys["alice"]

	if _, err := replay.Rebuild(ctx, b.log, "alice", path, key, &replay.RebuildOptions{SchemaVersion: 8}); err != nil {
		t.Fatalf("rebuild at schema 8: %v", err)
	}
	notKeptAt(t, path, key, nil, 8)
	sum := fileSum(t, path)
	if from, to, err := projections.MigrateInPlace(ctx, path, key, nil); !errors.Is(err, projections.ErrOutputsNotKept) || from != 8 || to != 8 {
		t.Fatalf("migrate --in-place of the schema 8 file: %d -> %d, %v; want ErrOutputsNotKept", from, to, err)
	}
	if fileSum(t, path) != sum {
		t.Fatal("the refused migration in place changed the file")
	}

	p := NewPool(b.log, func(context.Context, events.InstallationID) (projections.Key, error) { return key, nil }, &PoolOptions{Installation: b.opts()})
	if err := p.Register("alice", path); err != nil {
		t.Fatal(err)
	}
	in, release, err := p.Acquire(ctx, "alice")
	if err != nil {
		t.Fatalf("pool: open the schema 8 read model: %v", err)
	}
	if v := in.DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("opened at schema %d, want %d", v, projections.LatestSchema)
	}
	sameOutputs(t, "migrated as it opened", ownCommits(t, in, gid, 0), cos)
	sameSends(t, "migrated as it opened", ownMessages(t, in, gid, 0, 0), msgs)
	release()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Verify(ctx, b.log, "alice", path, key, nil); err != nil {
		t.Fatalf("verify the read model the open migrated: %v", err)
	}
	alice = b.restart("alice")
	sameOutputs(t, "reopened", ownCommits(t, alice, gid, 0), cos)
	b.checkRebuild("alice")
}

// aliceAtSchema8 creates alice with a read model at schema 8, in a group
// with bob, sends one own message (an output schema 8 cannot keep) and
// closes alice: her file can only be migrated by replay.
func aliceAtSchema8(t *testing.T, b *backend) (gid []byte) {
	t.Helper()
	v8 := b.opts()
	v8.DB.SchemaVersion = 8
	alice := b.createWith("alice", v8)
	b.create("bob")
	gid = b.groupOf(alice, "bob")
	b.send("alice", gid, "at schema 8")
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	return gid
}

// An open that cannot migrate by replay a read model that did not keep
// own outputs leaves the file as it was and says why: another
// installation's file is ErrWrongReadModel, as for any read model; an
// open whose context ends is ErrOutputsNotKept and the context's error.
// Until 2026-12-06 the open migrated the file in place first.
func TestOpenThatCannotMigrateByReplayLeavesTheFile(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	aliceAtSchema8(t, b)
	path, key := b.dbPath("alice"), b.keys["alice"]
	notKeptAt(t, path, key, nil, 8)
	sum := fileSum(t, path)

	if in, err := OpenInstallation(ctx, b.log, "bob", path, key, b.opts()); !errors.Is(err, ErrWrongReadModel) {
		if in != nil {
			in.Close()
		}
		t.Fatalf("open alice's schema 8 read model as bob: %v, want ErrWrongReadModel", err)
	}
	if fileSum(t, path) != sum {
		t.Fatal("opening another installation's read model changed it")
	}

	cctx, cancel := context.WithCancel(ctx)
	cancel()
	in, err := OpenInstallation(cctx, b.log, "alice", path, key, b.opts())
	if err == nil {
		in.Close()
	}
	if !errors.Is(err, projections.ErrOutputsNotKept) || !errors.Is(err, context.Canceled) {
		t.Fatalf("open with an ended context: %v, want ErrOutputsNotKept and context.Canceled", err)
	}
	if msg := err.Error(); !strings.Contains(msg, path) || !strings.Contains(msg, "schema 8 applied") {
		t.Errorf("error %q does not name the file and its schema", msg)
	}
	if fileSum(t, path) != sum {
		t.Fatal("an open that could not migrate by replay changed the file")
	}
	notKeptAt(t, path, key, nil, 8)
}

// A passphrase-keyed read model whose salt sidecar is not beside it
// (Options.SaltPath) is migrated by replay as it opens, as one with the
// default sidecar is: the rebuilt file opens with the same salt at the
// same place, no "<db>.salt" appears, and nothing is lost. Until
// 2026-12-07 the migration by replay looked for "<db>.salt" and the open
// failed, leaving the file at its old schema.
func TestOpenMigratesByReplayWithACustomSaltPath(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	key, err := projections.PassphraseKey([]byte("alice's read model passphrase"))
	if err != nil {
		t.Fatal(err)
	}
	path, salt := b.dbPath("alice"), filepath.Join(t.TempDir(), "alice.salt")
	dbOpts := projections.Options{SaltPath: salt, Argon2: projections.Argon2Params{Time: 1, MemoryKiB: 64, Threads: 1}}
	v8 := b.opts()
	v8.DB = dbOpts
	v8.DB.SchemaVersion = 8
	alice, err := CreateInstallation(ctx, b.log, "alice", path, key, v8)
	if err != nil {
		t.Fatal(err)
	}
	b.insts["alice"], b.keys["alice"] = alice, key
	b.create("bob")
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	add, err := alice.AddMembers(ctx, gid, b.keyPackage("bob"))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(add)
	b.drainAll()
	// What the operations returned: the read model at schema 8 keeps
	// none of it, the migration by replay gives it back.
	cos, msgs := []*CommitOutput{add}, []*SendOutput{b.send("alice", gid, "at schema 8, salt elsewhere")}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	notKeptAt(t, path, key, &dbOpts, 8)
	saltBefore := fileSum(t, salt)

	latest := b.opts()
	latest.DB = dbOpts
	in, err := OpenInstallation(ctx, b.log, "alice", path, key, latest)
	if err != nil {
		t.Fatalf("open the schema 8 read model with its salt at %s: %v", salt, err)
	}
	b.insts["alice"] = in
	if v := in.DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("opened at schema %d, want %d", v, projections.LatestSchema)
	}
	sameOutputs(t, "migrated as it opened", ownCommits(t, in, gid, 0), cos)
	sameSends(t, "migrated as it opened", ownMessages(t, in, gid, 0, 0), msgs)
	if _, err := os.Lstat(projections.SaltPath(path)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("%s after the migration: %v, want no such file (the salt is at %s)", projections.SaltPath(path), err, salt)
	}
	if fileSum(t, salt) != saltBefore {
		t.Error("the migration changed the salt sidecar")
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Verify(ctx, b.log, "alice", path, key, &replay.Options{DB: dbOpts}); err != nil {
		t.Fatalf("verify the read model the open migrated: %v", err)
	}
	if in, err = OpenInstallation(ctx, b.log, "alice", path, key, latest); err != nil {
		t.Fatalf("reopen: %v", err)
	}
	b.insts["alice"] = in
	sameOutputs(t, "reopened", ownCommits(t, in, gid, 0), cos)
}

// Another installation's read model of an older schema that migrates in
// place (it applied no own outputs) is refused by OpenInstallation and
// CreateInstallation before anything is migrated: the file stays byte for
// byte as it was, at its schema, and its own installation still opens
// (and migrates) it. Until 2026-12-07 the open migrated it in place to
// the latest schema first, then refused it.
func TestOpenOfAnotherInstallationsOlderFileLeavesIt(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	v8 := b.opts()
	v8.DB.SchemaVersion = 8
	alice := b.createWith("alice", v8)
	b.create("bob")
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	path, key := b.dbPath("alice"), b.keys["alice"]
	sum := fileSum(t, path)
	schemaIs := func(when string, want int) {
		t.Helper()
		db, err := projections.OpenExisting(path, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		defer db.Close()
		if v := db.SchemaVersion(); v != want {
			t.Fatalf("%s: %s at schema %d, want %d", when, path, v, want)
		}
	}
	for _, op := range []string{"open", "create"} {
		var in *Installation
		var err error
		if op == "open" {
			in, err = OpenInstallation(ctx, b.log, "bob", path, key, b.opts())
		} else {
			in, err = CreateInstallation(ctx, b.log, "dave", path, key, b.opts())
		}
		if in != nil {
			in.Close()
		}
		if !errors.Is(err, ErrWrongReadModel) || !strings.Contains(err.Error(), path) {
			t.Fatalf("%s with alice's schema 8 read model: %v, want ErrWrongReadModel naming %s", op, err, path)
		}
		if fileSum(t, path) != sum {
			t.Fatalf("%s of another installation's schema 8 read model changed it", op)
		}
		schemaIs(op+" refused", 8)
	}
	alice, err := OpenInstallation(ctx, b.log, "alice", path, key, b.opts())
	if err != nil {
		t.Fatalf("alice's own open: %v", err)
	}
	b.insts["alice"] = alice
	if v := alice.DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("alice's own open: schema %d, want %d", v, projections.LatestSchema)
	}
	b.checkRebuild("alice")
}

// While an open migrates a read model by replay, it holds the file's
// writer lock from its first look at the file until it returns: a second
// process of the installation opening the same file, and a replayer
// migrate of it, fail at once with projections.ErrLocked (they neither
// open the half-migrated file nor migrate it a second time), and the
// open that migrates returns the file a fresh build equals. Until
// 2026-12-07 the open let go of the lock around the replay: the second
// process took it, migrated the file itself, and the first migrated it
// again.
func TestMigrationByReplayInAnOpenHoldsTheLock(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	gid := aliceAtSchema8(t, b)
	path, key := b.dbPath("alice"), b.keys["alice"]
	notKeptAt(t, path, key, nil, 8)

	var logs strings.Builder // written by the open's goroutine only
	other := openLog(t, testConfig(b.srv), b.ring)
	var migrateErr, openErr error
	ran := false
	hook := func() { // inside the first open, as its replay starts
		ran = true
		_, migrateErr = replay.Migrate(ctx, other, "alice", path, key, key, nil)
		var in *Installation
		if in, openErr = OpenInstallation(ctx, other, "alice", path, key, b.opts()); in != nil {
			in.Close()
		}
	}
	cfg := testConfig(b.srv)
	cfg.Logger = slog.New(logtest.OnMessage{Handler: slog.NewTextHandler(&logs, nil), Once: &sync.Once{}, Hook: hook,
		Msg: "engine: the read model did not keep own outputs a migration in place would lose; migrating it by replay"})
	l := openLog(t, cfg, b.ring)
	alice, err := OpenInstallation(ctx, l, "alice", path, key, b.opts())
	if err != nil {
		t.Fatalf("open that migrates by replay: %v\n%s", err, logs.String())
	}
	b.insts["alice"] = alice
	if !ran {
		t.Fatal("the open did not migrate by replay (or its log message changed): the second process never ran")
	}
	if !errors.Is(migrateErr, projections.ErrLocked) {
		t.Errorf("replayer migrate during the open's migration: %v, want ErrLocked", migrateErr)
	}
	if !errors.Is(openErr, projections.ErrLocked) {
		t.Errorf("second open during the open's migration: %v, want ErrLocked", openErr)
	}
	if v := alice.DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("opened at schema %d, want %d", v, projections.LatestSchema)
	}
	if cos, msgs := ownCommits(t, alice, gid, 0), ownMessages(t, alice, gid, 0, 0); len(cos) != 1 || len(msgs) != 1 {
		t.Fatalf("migrated as it opened: %d own commits and %d own messages, want 1 and 1", len(cos), len(msgs))
	}
	b.checkRebuild("alice")
}
