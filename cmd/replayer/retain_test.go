package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestRetainCommand: replayer retain deletes the old days' messages,
// snapshots and shreds their keys; compact deletes their events; rebuild
// starts from the snapshot and gives the same digest, and a rebuild from
// the start fails naming the compaction.
func TestRetainCommand(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("retain-cli")
	clock := time.Now().Add(-72 * time.Hour)
	now := func() time.Time { return clock }
	in, db, keyFile, _ := keyedInstallation(t, l, dir, id, &engine.InstallationOptions{Now: now})
	gid := []byte("retain-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"old one", "old two"} {
		if _, err := in.Send(ctx, gid, []byte(m), nil); err != nil {
			t.Fatal(err)
		}
	}
	clock = time.Now()
	if _, err := in.Send(ctx, gid, []byte("new"), nil); err != nil {
		t.Fatal(err)
	}
	for range 5 { // five commits, so that the member retires its oldest epochs
		if _, err := in.Update(ctx, gid); err != nil {
			t.Fatal(err)
		}
	}
	held, err := in.DB().HeldEpochs(ctx, gid) // the member's window
	if err != nil || len(held) == 0 || held[0] == 0 {
		t.Fatalf("held epochs after five commits: %v %v", held, err)
	}
	in.Close()

	cli := func(wantCode int, args ...string) (map[string]any, string) {
		t.Helper()
		var out, errb bytes.Buffer
		args = append(args, "--nats", srv.URL(), "--installation", string(id), "--json")
		if code := run(ctx, ringEnv(&out, &errb, nil), args); code != wantCode {
			t.Fatalf("%v: exit %d, want %d; stderr: %s", args, code, wantCode, errb.String())
		}
		var m map[string]any
		if wantCode == 0 {
			if err := json.Unmarshal(out.Bytes(), &m); err != nil {
				t.Fatalf("%v: %v: %s", args, err, out.String())
			}
		}
		return m, out.String() + errb.String()
	}
	cli(exitUsage, "retain", "--db", db, "--db-key-file", keyFile)
	cli(exitUsage, "retain", "--db", db, "--db-key-file", keyFile, "--messages", "-3h")
	cli(exitUsage, "retain", "--db", db, "--db-key-file", keyFile, "--messages", "30d", "--delivery", "soon")
	if m, _ := cli(0, "retain", "--db", db, "--db-key-file", keyFile, "--messages", "forever"); m["periods_shredded"] != float64(0) || m["messages_deleted"] != float64(0) {
		t.Fatalf("retain forever: %v", m)
	}
	m, _ := cli(0, "retain", "--db", db, "--db-key-file", keyFile, "--messages", "1d", "--compact")
	comp, _ := m["compact"].(map[string]any)
	if m["periods_shredded"] != float64(1) || m["keys_shredded"] != float64(1) || m["messages_deleted"] != float64(2) || m["snapshot"].(float64) == 0 || comp["deleted"] != float64(2) {
		t.Fatalf("retain --messages 1d --compact: %v", m)
	}
	if m, _ := cli(0, "compact"); m["compact"].(map[string]any)["deleted"] != float64(0) {
		t.Fatalf("compact again: %v", m)
	}
	v, _ := cli(0, "verify", "--db", db, "--db-key-file", keyFile)
	r, _ := cli(0, "rebuild", "--db", db, "--db-key-file", keyFile, "--no-mls-check")
	if r["digest"] != v["digest"] {
		t.Fatalf("rebuild from the snapshot: %v, verify said %v", r, v)
	}
	if _, out := cli(1, "rebuild", "--db", db, "--db-key-file", keyFile, "--from-start"); !strings.Contains(out, "compacted") {
		t.Fatalf("rebuild --from-start after compaction: %s", out)
	}

	// Past epochs: none by policy, but the member still holds some.
	cli(exitUsage, "retain", "--db", db, "--db-key-file", keyFile, "--past-epochs", "some")
	if m, _ := cli(0, "retain", "--db", db, "--db-key-file", keyFile, "--past-epochs", "all", "--messages", "forever"); m["epoch_chains_advanced"] != nil {
		t.Fatalf("retain --past-epochs all: %v", m)
	}
	m, _ = cli(0, "retain", "--db", db, "--db-key-file", keyFile, "--past-epochs", "none", "--compact")
	cuts, _ := m["epoch_chains_advanced"].([]any)
	comp, _ = m["compact"].(map[string]any)
	if len(cuts) != 1 || cuts[0].(map[string]any)["from"] != float64(0) || cuts[0].(map[string]any)["keep"] != float64(held[0]) || comp["deleted"] != float64(held[0]) {
		t.Fatalf("retain --past-epochs none --compact: %v", m)
	}
	v, _ = cli(0, "verify", "--db", db, "--db-key-file", keyFile)
	r, _ = cli(0, "rebuild", "--db", db, "--db-key-file", keyFile, "--no-mls-check")
	if r["digest"] != v["digest"] {
		t.Fatalf("rebuild after epoch retention: %v, verify said %v", r, v)
	}
	if m, _ := cli(0, "retain", "--db", db, "--db-key-file", keyFile, "--past-epochs", "0"); m["epoch_chains_advanced"] != nil {
		t.Fatalf("retain --past-epochs 0 again: %v", m)
	}

	// Full history: every covered event goes but each subject's last.
	cli(exitUsage, "compact", "--history", "soon")
	cli(exitUsage, "retain", "--db", db, "--db-key-file", keyFile, "--history", "-1d")
	m, _ = cli(0, "retain", "--db", db, "--db-key-file", keyFile, "--history", "none")
	// Every event scanned goes but the last of each of the two subjects
	// (the installation's and the group's).
	if comp, _ := m["compact"].(map[string]any); comp == nil || comp["deleted"].(float64) < 1 || comp["deleted"] != comp["scanned"].(float64)-2 {
		t.Fatalf("retain --history none: %v", m)
	}
	v, _ = cli(0, "verify", "--db", db, "--db-key-file", keyFile)
	r, _ = cli(0, "rebuild", "--db", db, "--db-key-file", keyFile, "--no-mls-check")
	if r["digest"] != v["digest"] {
		t.Fatalf("rebuild after history retention: %v, verify said %v", r, v)
	}
}

func TestParsePastEpochs(t *testing.T) {
	for in, want := range map[string]int{"all": 0, "": 0, "none": -1, "0": -1, "3": 3} {
		if got, err := parsePastEpochs(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"-1", "x", "2.5"} {
		if _, err := parsePastEpochs(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

func TestParseRetention(t *testing.T) {
	for in, want := range map[string]time.Duration{"forever": 0, "none": -1, "720h": 720 * time.Hour, "30d": 30 * 24 * time.Hour} {
		if got, err := parseRetention(in); err != nil || got != want {
			t.Errorf("%q: %v %v, want %v", in, got, err, want)
		}
	}
	for _, in := range []string{"0d", "-1h", "x", "3"} {
		if _, err := parseRetention(in); err == nil {
			t.Errorf("%q: no error", in)
		}
	}
}

// keyedInstallation creates installation id with its read model and the
// read model's key file in dir, as the retain command's tests run it.
func keyedInstallation(t *testing.T, l *eventlog.Log, dir string, id events.InstallationID, opts *engine.InstallationOptions) (in *engine.Installation, db, keyFile string, key projections.Key) {
	t.Helper()
	db, keyFile = filepath.Join(dir, string(id)+".db"), filepath.Join(dir, string(id)+".key")
	key, err := writeDBKeyFile(keyFile)
	if err != nil {
		t.Fatal(err)
	}
	if in, err = engine.CreateInstallation(context.Background(), l, id, db, key, opts); err != nil {
		t.Fatal(err)
	}
	return in, db, keyFile, key
}
