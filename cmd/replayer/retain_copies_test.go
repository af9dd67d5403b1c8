package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
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
	clock := time.Now().Add(-72 * time.Hour)
	in, db, keyFile, _ := keyedInstallation(t, l, dir, id, &engine.InstallationOptions{Now: func() time.Time { return clock }})
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

// TestRetainRecordsWhatAReloadNeeds: retain goes through the engine
// (Installation.Retain), which records the state of a group whose
// messages a reload still needs (recorded since its state, in an epoch
// it holds: deleted unrecorded, a restarted member would accept a
// received one delivered again), so they are deleted too; and it opens
// the read model at the schema it has, migrating nothing.
func TestRetainRecordsWhatAReloadNeeds(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	for _, schema := range []int{projections.LatestSchema, 10} {
		dir := t.TempDir()
		id := events.InstallationID(fmt.Sprintf("retain-records-%d", schema))
		clock := time.Now().Add(-72 * time.Hour)
		in, db, keyFile, key := keyedInstallation(t, l, dir, id, &engine.InstallationOptions{
			Now: func() time.Time { return clock }, DB: projections.Options{SchemaVersion: schema}})
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
			t.Fatalf("schema %d: retain: exit %d, stderr %s", schema, code, errb.String())
		}
		var m map[string]any
		if err := json.Unmarshal(out.Bytes(), &m); err != nil || m["messages_deleted"] != float64(1) || m["groups_keeping_messages"] != nil {
			t.Fatalf("schema %d: retain output %s (%v), want the message deleted and none kept", schema, out.String(), err)
		}
		recorded := 0
		if err := l.Read(ctx, id, 0, func(r eventlog.Record) error {
			if r.Event.Body.Kind() == events.KindStateRecorded {
				recorded++
			}
			return nil
		}); err != nil {
			t.Fatal(err)
		}
		// At schema 10 too a reloaded sender counts the own messages of
		// the current epoch since the state (no generation is kept for
		// received ones): the state is recorded before the own message
		// goes.
		if recorded != 1 {
			t.Fatalf("schema %d: %d group.state_recorded events, want 1", schema, recorded)
		}
		got, err := projections.OpenExisting(db, key, &projections.Options{NoMigrate: true})
		if err != nil {
			t.Fatal(err)
		}
		if v := got.SchemaVersion(); v != schema {
			t.Fatalf("retain left the read model at schema %d, want %d (as it was)", v, schema)
		}
		got.Close()
	}
}
