package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// A rebuild that would lose data exits non-zero and leaves the live file
// byte for byte as it was: another installation's database, an
// installation id the stream does not know, a stream missing the live
// database's last event. --force overrides only the last.
func TestRebuildRefusesToLoseData(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	for _, id := range []events.InstallationID{"alice-phone", "bob-phone"} {
		createInstallation(t, l, dir, id)
	}
	db := func(id string) string { return filepath.Join(dir, id+".db") }
	key := func(id string) string { return filepath.Join(dir, id+".key") }
	rebuild := func(id, path, keyPath string, extra ...string) (int, string) {
		var out, errb bytes.Buffer
		args := append([]string{"rebuild", "--nats", srv.URL(), "--installation", id, "--db", path, "--db-key-file", keyPath}, extra...)
		code := run(ctx, ringEnv(&out, &errb, nil), args)
		return code, errb.String()
	}
	before, err := os.ReadFile(db("bob-phone"))
	if err != nil {
		t.Fatal(err)
	}
	same := func(what string) {
		t.Helper()
		if after, _ := os.ReadFile(db("bob-phone")); !bytes.Equal(after, before) {
			t.Fatalf("%s changed bob's database", what)
		}
	}

	code, stderr := rebuild("alice-phone", db("bob-phone"), key("bob-phone"))
	if code == 0 || !strings.Contains(stderr, "another installation") {
		t.Fatalf("rebuild of alice over bob's database: exit %d, %s", code, stderr)
	}
	same("rebuild of alice over bob's database")

	code, stderr = rebuild("bob-phnoe", db("bob-phone"), key("bob-phone"), "--force")
	if code == 0 || !strings.Contains(stderr, "bob-phnoe") {
		t.Fatalf("rebuild of a mistyped installation: exit %d, %s", code, stderr)
	}
	same("rebuild of a mistyped installation")

	// The stream loses bob's last event.
	last, err := l.LastSeq(ctx, "bob-phone")
	if err != nil {
		t.Fatal(err)
	}
	deleteSeq(t, l, last)
	code, stderr = rebuild("bob-phone", db("bob-phone"), key("bob-phone"))
	if code != exitVerify || !strings.Contains(stderr, "holds less") {
		t.Fatalf("rebuild from a stream missing the last event: exit %d, %s", code, stderr)
	}
	same("rebuild from a stream missing the last event")
	var out, errb bytes.Buffer
	code = run(ctx, ringEnv(&out, &errb, nil), []string{"verify", "--nats", srv.URL(), "--installation", "bob-phone", "--db", db("bob-phone"), "--db-key-file", key("bob-phone")})
	if code != exitVerify || strings.Contains(errb.String(), "rebuild it") {
		t.Fatalf("verify against a stream missing the last event: exit %d, %s", code, errb.String())
	}
	same("verify")
}

// A read command on a mistyped --data fails naming the path and creates
// no store there (only demo creates one).
func TestReadCommandsCreateNoStore(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	typo := filepath.Join(dir, "epochlgo")
	for _, args := range [][]string{
		{"verify", "--data", typo, "--installation", "alice-phone", "--db", filepath.Join(dir, "a.db"), "--db-key-file", filepath.Join(dir, "a.key")},
		{"inspect", "--data", typo, "--installation", "alice-phone"},
		{"rebuild", "--data", typo, "--installation", "alice-phone", "--db", filepath.Join(dir, "a.db"), "--db-key-file", filepath.Join(dir, "a.key")},
	} {
		if _, err := writeDBKeyFile(filepath.Join(dir, "a.key")); err != nil && !os.IsExist(err) {
			t.Fatal(err)
		}
		var out, errb bytes.Buffer
		code := run(ctx, ringEnv(&out, &errb, nil), args)
		if code == 0 || !strings.Contains(errb.String(), typo) {
			t.Fatalf("%s on a missing data directory: exit %d, stderr %s", args[0], code, errb.String())
		}
		if _, err := os.Stat(typo); !os.IsNotExist(err) {
			t.Fatalf("%s created %s: %v", args[0], typo, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "a.db")); !os.IsNotExist(err) {
			t.Fatalf("%s created the database: %v", args[0], err)
		}
	}
}

// rekey and migrate of a path that holds nothing (a typo of the file or
// of its directory) are refused naming it, and leave nothing there: no
// database, no lock file, no directory. A migrate built a new database
// from the stream at the typo'd path and said it had recovered it, the
// database meant left at its old schema.
func TestRekeyAndMigrateRefuseAMissingDatabase(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	createInstallation(t, l, dir, "alice-phone")
	key := filepath.Join(dir, "alice-phone.key")
	newKey := filepath.Join(dir, "new.key")
	if _, err := writeDBKeyFile(newKey); err != nil {
		t.Fatal(err)
	}
	for _, typo := range []string{filepath.Join(dir, "alice-phnoe.db"), filepath.Join(dir, "dbs", "alice-phone.db")} {
		for _, args := range [][]string{
			{"migrate", "--db-key-file", key},
			{"rekey", "--db-key-file", key, "--new-db-key-file", newKey},
		} {
			var out, errb bytes.Buffer
			args = append(args, "--nats", srv.URL(), "--installation", "alice-phone", "--db", typo)
			code := run(ctx, ringEnv(&out, &errb, nil), args)
			if code == 0 || !strings.Contains(errb.String(), typo) || !strings.Contains(errb.String(), "no ") {
				t.Fatalf("%s of %s: exit %d, stdout %q, stderr %q; want a refusal naming it", args[0], typo, code, out.String(), errb.String())
			}
			for _, p := range []string{typo, typo + ".lock", filepath.Join(dir, "dbs")} {
				if _, err := os.Lstat(p); !os.IsNotExist(err) {
					t.Fatalf("%s of %s left %s (%v)", args[0], typo, p, err)
				}
			}
		}
	}
}
