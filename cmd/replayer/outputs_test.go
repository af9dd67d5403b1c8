package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/projections"
)

// rebuild --schema 8 over a read model whose installation recorded own
// commits and messages with their outputs makes a file that keeps none,
// and says so on stderr (until 2026-12-06 it said nothing); migrate
// --in-place then fails (exit 1), names the file, its schema and
// what to do, and leaves the file byte for byte as it was; migrate by
// replay brings it back, and verify passes.
func TestMigrateInPlaceRefusesARebuildAtSchema8(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	path, keyPath := filepath.Join(dir, "alice.db"), filepath.Join(dir, "alice.key")
	key, err := writeDBKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	in, err := engine.CreateInstallation(ctx, l, "alice", path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	g, err := in.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Update(ctx, g.GroupID); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Send(ctx, g.GroupID, []byte("hello"), nil); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(ctx, ringEnv(&out, &errb, nil), args)
		return code, errb.String()
	}
	common := []string{"--nats", srv.URL(), "--installation", "alice", "--db", path, "--db-key-file", keyPath}
	code, stderr := cli(append([]string{"rebuild", "--schema", "8"}, common...)...)
	if code != exitOK {
		t.Fatalf("rebuild --schema 8: exit %d, stderr %s", code, stderr)
	}
	if !strings.Contains(stderr, "note: "+path) || !strings.Contains(stderr, "schema 8 applied") || !strings.Contains(stderr, "by replay") {
		t.Errorf("rebuild --schema 8: stderr %q does not note the outputs the file could not keep", stderr)
	}
	sum := func() [32]byte {
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	before := sum()
	code, stderr = cli("migrate", "--db", path, "--db-key-file", keyPath, "--in-place")
	if code != exitFailure {
		t.Fatalf("migrate --in-place of a schema 8 file that kept no own outputs: exit %d, want %d; stderr %s", code, exitFailure, stderr)
	}
	for _, want := range []string{path, "schema 8 applied", "by replay"} {
		if !strings.Contains(stderr, want) {
			t.Errorf("migrate --in-place: stderr %q does not say %q", stderr, want)
		}
	}
	if sum() != before {
		t.Fatal("the refused migrate --in-place changed the file")
	}
	if code, stderr := cli(append([]string{"migrate"}, common...)...); code != exitOK {
		t.Fatalf("migrate by replay: exit %d, stderr %s", code, stderr)
	}
	if code, stderr := cli(append([]string{"verify"}, common...)...); code != exitOK {
		t.Fatalf("verify after the migration by replay: exit %d, stderr %s", code, stderr)
	}
	db, err := projections.OpenExisting(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.OutputsKept(ctx, projections.LatestSchema); err != nil || db.SchemaVersion() != projections.LatestSchema {
		t.Fatalf("after migrate by replay: schema %d, outputs kept %v", db.SchemaVersion(), err)
	}
}
