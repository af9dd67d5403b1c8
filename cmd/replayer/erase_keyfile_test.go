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
	noTerminal(t)
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

// TestEraseRemovesItsKeyFileNamedOtherwise: --db-key-file naming the
// read model's own key file by another spelling of its path (relative
// to the working directory, with the read model's absolute) is its own
// key file, removed: by the run that removes the read model, and by the
// run after a kill between the read model's removal and its key file's.
// Until 2026-12-07 it was kept, "its name is not the read model's own
// (" + the same file + ")".
func TestEraseRemovesItsKeyFileNamedOtherwise(t *testing.T) {
	noTerminal(t)
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	createInstallation(t, l, dir, "rel-a")
	createInstallation(t, l, dir, "rel-b")
	t.Chdir(dir)
	// rel-b: killed after its read model went, before its key file did
	// (what erase did up to there: the marker, then the removal).
	dbB := filepath.Join(dir, "rel-b.db")
	key, err := readDBKeyFile("rel-b.key")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Erase(ctx, l, "rel-b", &engine.EraseOptions{By: "test", ReadModel: dbB, ReadModelKey: key,
		BeforeRemove: func() error { return writeEraseMarker(dbB, "rel-b", "rel-b.key") }}); err != nil {
		t.Fatal(err)
	}
	for id, named := range map[string]string{"rel-a": "rel-a.key", "rel-b": "./rel-b.key"} {
		var out, errb bytes.Buffer
		args := []string{"erase", "--yes", "--nats", srv.URL(), "--installation", id, "--db", filepath.Join(dir, id+".db"), "--db-key-file", named}
		code := run(ctx, ringEnv(&out, &errb, nil), args)
		if _, err := os.Lstat(filepath.Join(dir, id+".key")); code != exitOK || !os.IsNotExist(err) {
			t.Fatalf("%v: exit %d, key file there: %v; stdout %q, stderr %q", args, code, err == nil, out.String(), errb.String())
		}
		if _, err := os.Lstat(eraseMarkerPath(filepath.Join(dir, id+".db"))); !os.IsNotExist(err) {
			t.Fatalf("%v: its marker is left (%v)", args, err)
		}
	}
}

// TestEraseKeepsAKeyFileNoReadModelProved: an erase whose --db is not
// there (deleted by hand, a mistyped path) keeps the key file named by
// --db-key-file, or found beside it with the key given otherwise: no
// read model proved it is that read model's key, and it may open
// another; it says so. One replaced after a killed erase proved the
// earlier file is kept too. Until 2026-12-07 it was removed on a guess.
func TestEraseKeepsAKeyFileNoReadModelProved(t *testing.T) {
	noTerminal(t)
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	for _, id := range []events.InstallationID{"gone-a", "gone-b", "gone-c"} {
		createInstallation(t, l, dir, id)
	}
	db := func(id string) string { return filepath.Join(dir, id+".db") }
	keyOf := func(id string) string { return filepath.Join(dir, id+".key") }
	// gone-a, gone-b: read model deleted by hand before any erase.
	for _, id := range []string{"gone-a", "gone-b"} {
		if err := os.Remove(db(id)); err != nil {
			t.Fatal(err)
		}
	}
	// gone-c: killed after its read model went; its key file replaced
	// since by another one of the same name.
	key, err := readDBKeyFile(keyOf("gone-c"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Erase(ctx, l, "gone-c", &engine.EraseOptions{By: "test", ReadModel: db("gone-c"), ReadModelKey: key,
		BeforeRemove: func() error { return writeEraseMarker(db("gone-c"), "gone-c", keyOf("gone-c")) }}); err != nil {
		t.Fatal(err)
	}
	if err := os.Remove(keyOf("gone-c")); err != nil {
		t.Fatal(err)
	}
	if _, err := writeDBKeyFile(keyOf("gone-c")); err != nil {
		t.Fatal(err)
	}
	hexB, err := os.ReadFile(keyOf("gone-b"))
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		id   string
		vars map[string]string
		args []string
	}{
		{"gone-a", nil, []string{"--db-key-file", keyOf("gone-a")}},
		{"gone-b", map[string]string{envDBKey: strings.TrimSpace(string(hexB))}, nil},
		{"gone-c", nil, []string{"--db-key-file", keyOf("gone-c")}},
	} {
		var out, errb bytes.Buffer
		args := append([]string{"erase", "--yes", "--nats", srv.URL(), "--installation", c.id, "--db", db(c.id)}, c.args...)
		code := run(ctx, ringEnv(&out, &errb, c.vars), args)
		if _, err := os.Lstat(keyOf(c.id)); code != exitOK || err != nil ||
			!strings.Contains(out.String(), "kept key file "+keyOf(c.id)+": no read model proved it is its key") {
			t.Fatalf("%v: exit %d, key file gone: %v; stdout %q, stderr %q", args, code, err != nil, out.String(), errb.String())
		}
	}
}

// TestEraseSaysWhyItsKeyFileWasNotRead: a key file beside the read model
// that cannot be read as a key (mode 0644: readable by others) is kept,
// and the reason given is why it could not be read, not that it holds
// another key. Until 2026-12-07 it said "it does not hold the key the
// read model was opened with", for a file holding that very key.
func TestEraseSaysWhyItsKeyFileWasNotRead(t *testing.T) {
	noTerminal(t)
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	createInstallation(t, l, dir, "open-a")
	keyFile := filepath.Join(dir, "open-a.key")
	hex, err := os.ReadFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(keyFile, 0o644); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	args := []string{"erase", "--yes", "--nats", srv.URL(), "--installation", "open-a", "--db", filepath.Join(dir, "open-a.db"), "--json"}
	code := run(ctx, ringEnv(&out, &errb, map[string]string{envDBKey: strings.TrimSpace(string(hex))}), args)
	var res map[string]any
	if err := json.Unmarshal(out.Bytes(), &res); err != nil || code != exitOK {
		t.Fatalf("%v: exit %d, stdout %q, stderr %q (%v)", args, code, out.String(), errb.String(), err)
	}
	why, _ := res["key_file_kept_why"].(string)
	if res["key_file_kept"] != keyFile || strings.Contains(why, "does not hold the key") || !strings.Contains(why, keyFile) {
		t.Fatalf("a key file of mode 0644 holding the read model's key: %q", out.String())
	}
}

// TestEraseKeepsTheKeyOfAReadModelNotNamedDB: a read model whose name
// does not end in .db has no key file of its own by name (follow and
// status --db-keys-beside know only ID.db beside ID.key): erase --db
// keeps the key file named beside it, saying why. Until 2026-12-07 the
// rule's test (own == db) could never hold, and NAME.key was removed as
// the read model's own.
func TestEraseKeepsTheKeyOfAReadModelNotNamedDB(t *testing.T) {
	noTerminal(t)
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("bare-name")
	createInstallation(t, l, dir, id)
	db, key := filepath.Join(dir, string(id)), filepath.Join(dir, string(id)+".key")
	if err := os.Rename(db+".db", db); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	args := []string{"erase", "--yes", "--nats", srv.URL(), "--installation", string(id), "--db", db, "--db-key-file", key}
	if code := run(context.Background(), ringEnv(&out, &errb, nil), args); code != exitOK {
		t.Fatalf("%v: exit %d, stdout %q, stderr %q", args, code, out.String(), errb.String())
	}
	if _, err := os.Lstat(key); err != nil {
		t.Fatalf("the key file of a read model not named .db was removed: %v; stdout %q", err, out.String())
	}
	if !strings.Contains(out.String(), "kept key file "+key+": the read model's name does not end in .db") {
		t.Fatalf("erase does not say why it kept the key file: %q", out.String())
	}
}
