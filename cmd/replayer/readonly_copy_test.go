//go:build linux

package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// TestReadOnlyCopyIsReadable: a read model on a read-only mount (a backup,
// a snapshot of a volume) can be checked where it is: status and verify
// read it and exit 0, and leave nothing beside it. follow, which would
// write, says the file is open for reading only.
func TestReadOnlyCopyIsReadable(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("ro-copy")
	createInstallation(t, l, dir, id)
	enqueueFor(t, l, id, "before", 3)
	// Bring the read model up to date, then copy it (closed: no -wal) to
	// a directory that becomes read-only.
	var out, errb bytes.Buffer
	key := filepath.Join(dir, string(id)+".key")
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"rebuild", "--nats", srv.URL(), "--installation", string(id),
		"--db", filepath.Join(dir, string(id)+".db"), "--db-key-file", key}); code != exitOK {
		t.Fatalf("rebuild: exit %d: %s", code, errb.String())
	}
	backup := filepath.Join(t.TempDir(), "backup")
	if err := os.Mkdir(backup, 0o700); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, string(id)+".db"))
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(backup, string(id)+".db")
	if err := os.WriteFile(db, b, 0o600); err != nil {
		t.Fatal(err)
	}
	makeReadOnly(t, backup)

	// follow runs until its context ends, retrying a failing read model;
	// the others end by themselves.
	replayer := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		c, cancel := context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
		code := run(c, ringEnv(&out, &errb, nil), append(args, "--nats", srv.URL()))
		return code, out.String(), errb.String()
	}
	if code, stdout, stderr := replayer("status", "--db", db, "--db-key-file", key); code != exitOK || !strings.HasSuffix(strings.TrimSpace(stdout), " ok") {
		t.Fatalf("status of a read-only copy: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := replayer("verify", "--installation", string(id), "--db", db, "--db-key-file", key); code != exitOK {
		t.Fatalf("verify of a read-only copy: exit %d\n%s%s", code, stdout, stderr)
	}
	// The copy falls behind; status says so, as of any lagging read model.
	enqueueFor(t, l, id, "after", 2)
	if code, stdout, stderr := replayer("status", "--db", db, "--db-key-file", key, "--json"); code != exitOK ||
		!strings.Contains(stdout, `"pending":2`) {
		t.Fatalf("status of a lagging read-only copy: exit %d\n%s%s", code, stdout, stderr)
	}
	if code, stdout, stderr := replayer("follow", "--db-dir", backup, "--db-key-file", key); code == exitOK || !strings.Contains(stderr, "for reading only") {
		t.Fatalf("follow of a read-only copy: exit %d, want a refusal saying it is open for reading only\n%s%s", code, stdout, stderr)
	}
	ents, err := os.ReadDir(backup)
	if err != nil {
		t.Fatal(err)
	}
	if len(ents) != 1 {
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		t.Fatalf("the read-only directory holds %v after reading, want the file alone", names)
	}
}
