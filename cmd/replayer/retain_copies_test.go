package main

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
)

// TestRetainNamesKeptCopies: retention deletes old messages from --db and
// destroys their keys, but a copy a rebuild kept beside the read model
// (<db>.replaced-*, <db>.damaged-*) still holds them under the same key.
// retain does not delete such a copy (it may hold what nothing else
// does) but must not let the operator believe the history is gone: it
// names the copies on stderr and in --json.
func TestRetainNamesKeptCopies(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("retain-copies")
	db, keyFile := filepath.Join(dir, string(id)+".db"), filepath.Join(dir, string(id)+".key")
	key, err := writeDBKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now().Add(-72 * time.Hour)
	in, err := engine.CreateInstallation(ctx, l, id, db, key, &engine.InstallationOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	gid := []byte("retain-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Send(ctx, gid, []byte("old secret"), nil); err != nil {
		t.Fatal(err)
	}
	// A commit after it: an own message of a past epoch is one a reload
	// no longer needs, which retention without the engine deletes.
	if _, err := in.Update(ctx, gid); err != nil {
		t.Fatal(err)
	}
	in.Close()
	b, err := os.ReadFile(db)
	if err != nil {
		t.Fatal(err)
	}
	kept := db + ".replaced-1765000000" // as a forced rebuild names it
	if err := os.WriteFile(kept, b, 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	args := []string{"retain", "--nats", srv.URL(), "--installation", string(id), "--db", db, "--db-key-file", keyFile, "--messages", "1d", "--json"}
	if code := run(ctx, ringEnv(&out, &errb, nil), args); code != exitOK {
		t.Fatalf("retain: exit %d, stderr %s", code, errb.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil || m["messages_deleted"] != float64(1) {
		t.Fatalf("retain output %s (%v)", out.String(), err)
	}
	copies, _ := m["kept_copies"].([]any)
	if len(copies) != 1 || copies[0] != kept || !strings.Contains(errb.String(), kept) {
		t.Fatalf("retain does not name the kept copy that still holds the deleted messages: kept_copies %v, stderr %q", m["kept_copies"], errb.String())
	}
}

// TestRetainKeepsWhatAReloadNeeds: retain cannot record a group's state
// (the engine's Installation.Retain does), so it keeps the messages
// recorded since it in an epoch the group holds (deleted, a restarted
// member would accept a received one delivered again), and says so on
// stderr and in --json.
func TestRetainKeepsWhatAReloadNeeds(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("retain-keeps")
	db, keyFile := filepath.Join(dir, string(id)+".db"), filepath.Join(dir, string(id)+".key")
	key, err := writeDBKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now().Add(-72 * time.Hour)
	in, err := engine.CreateInstallation(ctx, l, id, db, key, &engine.InstallationOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	gid := []byte("retain-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Send(ctx, gid, []byte("old, of the current epoch"), nil); err != nil {
		t.Fatal(err)
	}
	in.Close()
	var out, errb bytes.Buffer
	args := []string{"retain", "--nats", srv.URL(), "--installation", string(id), "--db", db, "--db-key-file", keyFile, "--messages", "1d", "--json"}
	if code := run(ctx, ringEnv(&out, &errb, nil), args); code != exitOK {
		t.Fatalf("retain: exit %d, stderr %s", code, errb.String())
	}
	var m map[string]any
	if err := json.Unmarshal(out.Bytes(), &m); err != nil || m["messages_deleted"] != float64(0) || m["groups_keeping_messages"] != float64(1) {
		t.Fatalf("retain output %s (%v)", out.String(), err)
	}
	if !strings.Contains(errb.String(), "1 groups keep messages older than the cutoff") {
		t.Fatalf("retain does not warn of the messages it kept: stderr %q", errb.String())
	}
}
