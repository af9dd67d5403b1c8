package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestEraseRemovesTheReadModelsOwnKeyFile: erase --db removes the read
// model's own key file (<db without .db>.key, holding the key that opened
// it), whether the key was named by --db-key-file or given otherwise, and
// says so. A key file that may be other read models' too is kept and
// named with why: one named under another name (a shared key), a
// passphrase file, a file with another name in its directory (a link
// another read model's key may be). Until 2026-12-07 every key file
// stayed.
func TestEraseRemovesTheReadModelsOwnKeyFile(t *testing.T) {
	noTTY := stdinIsTerminal
	stdinIsTerminal = func() bool { return false }
	t.Cleanup(func() { stdinIsTerminal = noTTY })
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	db := func(id events.InstallationID) string { return filepath.Join(dir, string(id)+".db") }
	keyOf := func(id events.InstallationID) string { return filepath.Join(dir, string(id)+".key") }
	erase := func(id events.InstallationID, vars map[string]string, args ...string) (string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		args = append([]string{"erase", "--yes", "--nats", srv.URL(), "--installation", string(id), "--db", db(id)}, args...)
		if code := run(ctx, ringEnv(&out, &errb, vars), args); code != exitOK {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
		}
		if _, err := os.Lstat(db(id)); !os.IsNotExist(err) {
			t.Fatalf("%v: the read model is still there (%v)", args, err)
		}
		return out.String(), errb.String()
	}
	gone := func(p string) bool { _, err := os.Lstat(p); return os.IsNotExist(err) }
	opens := func(id events.InstallationID, keyFile string) {
		t.Helper()
		k, err := readDBKeyFile(keyFile)
		if err != nil {
			t.Fatal(err)
		}
		d, err := projections.OpenExisting(db(id), k, nil)
		if err != nil {
			t.Fatalf("%s no longer opens with %s: %v", id, keyFile, err)
		}
		d.Close()
	}
	for _, id := range []events.InstallationID{"named-a", "env-b", "keep-c", "linked-d"} {
		createInstallation(t, l, dir, id)
	}

	// Its own key file, named.
	out, _ := erase("named-a", nil, "--db-key-file", keyOf("named-a"))
	if !gone(keyOf("named-a")) || !strings.Contains(out, "removed its key file "+keyOf("named-a")) {
		t.Fatalf("erase --db-key-file of the read model's own key file: key file there: %v; stdout %q", !gone(keyOf("named-a")), out)
	}
	// Its own key file, the key given in the environment: found beside,
	// holding the same key. --json names it.
	hex, err := os.ReadFile(keyOf("env-b"))
	if err != nil {
		t.Fatal(err)
	}
	out, _ = erase("env-b", map[string]string{envDBKey: strings.TrimSpace(string(hex))}, "--json")
	var res map[string]any
	if err := json.Unmarshal([]byte(out), &res); err != nil || res["key_file_removed"] != keyOf("env-b") || !gone(keyOf("env-b")) {
		t.Fatalf("erase with $%s: key file there: %v; stdout %q (%v)", envDBKey, !gone(keyOf("env-b")), out, err)
	}
	opens("keep-c", keyOf("keep-c"))

	// A key file with another name in its directory (another read
	// model's key is a link to it): kept, and said why.
	peer := filepath.Join(dir, "peer.key")
	if err := os.Symlink(keyOf("linked-d"), peer); err != nil {
		t.Fatal(err)
	}
	out, _ = erase("linked-d", nil, "--db-key-file", keyOf("linked-d"))
	if gone(keyOf("linked-d")) || !strings.Contains(out, "kept key file "+keyOf("linked-d")+": the same file is also "+peer) {
		t.Fatalf("erase of a read model whose key file another name leads to: removed: %v; stdout %q", gone(keyOf("linked-d")), out)
	}

	// A key shared by two read models, named under its own name: kept.
	sharedKey := filepath.Join(dir, "shared.key")
	key, err := writeDBKeyFile(sharedKey)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range []events.InstallationID{"shared-e", "shared-f"} {
		in, err := engine.CreateInstallation(ctx, l, id, db(id), key, nil)
		if err != nil {
			t.Fatal(err)
		}
		in.Close()
	}
	out, _ = erase("shared-e", nil, "--db-key-file", sharedKey)
	if gone(sharedKey) || !strings.Contains(out, "kept key file "+sharedKey+": its name is not the read model's own") {
		t.Fatalf("erase with a shared key file: removed: %v; stdout %q", gone(sharedKey), out)
	}
	opens("shared-f", sharedKey)
}
