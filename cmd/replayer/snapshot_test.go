package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// TestSnapshotCommand: replayer snapshot stores a checked snapshot;
// verify and rebuild start from it, --from-start replays the whole
// history, --list shows it.
func TestSnapshotCommand(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("snap-cli")
	createInstallation(t, l, dir, id)
	db, keyFile := filepath.Join(dir, string(id)+".db"), filepath.Join(dir, string(id)+".key")
	last, err := l.LastSeq(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) map[string]any {
		t.Helper()
		var out, errb bytes.Buffer
		args = append(args, "--nats", srv.URL(), "--installation", string(id), "--json")
		if code := run(ctx, ringEnv(&out, &errb, nil), args); code != 0 {
			t.Fatalf("%v: exit %d, stderr: %s", args, code, errb.String())
		}
		var m map[string]any
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			t.Fatalf("%v: %v: %s", args, err, out.String())
		}
		return m
	}
	if m := cli("snapshot", "--list"); len(m["snapshots"].([]any)) != 0 {
		t.Fatalf("snapshots before any: %v", m)
	}
	m := cli("snapshot", "--db", db, "--db-key-file", keyFile)
	if m["checkpoint"] != float64(last) || m["base"] != float64(0) || m["bytes"].(float64) <= 0 {
		t.Fatalf("snapshot: %v", m)
	}
	digest := m["digest"]
	if m := cli("snapshot", "--list"); len(m["snapshots"].([]any)) != 1 || m["snapshots"].([]any)[0].(map[string]any)["not_a_snapshot"] != nil {
		t.Fatalf("snapshots after one: %v", m)
	}
	// An object put under its names by whoever may write to the bucket
	// is listed, marked (until 2026-12-07 it looked like any snapshot).
	if _, err := l.PutSealedSnapshot(ctx, id, last+100, []byte("not a sealed snapshot")); err != nil {
		t.Fatal(err)
	}
	if m := cli("snapshot", "--list"); len(m["snapshots"].([]any)) != 2 ||
		m["snapshots"].([]any)[0].(map[string]any)["not_a_snapshot"] == nil || m["snapshots"].([]any)[1].(map[string]any)["not_a_snapshot"] != nil {
		t.Fatalf("snapshots beside a forged object: %v; want the forged one (newest) marked, the snapshot not", m)
	}
	var lout, lerr bytes.Buffer
	if code := run(ctx, ringEnv(&lout, &lerr, nil), []string{"snapshot", "--list", "--nats", srv.URL(), "--installation", string(id)}); code != 0 ||
		strings.Count(lout.String(), "NOT A SNAPSHOT") != 1 {
		t.Fatalf("snapshot --list beside a forged object: exit %d, stdout %q, stderr %q; want it marked once", code, lout.String(), lerr.String())
	}
	if err := l.DeleteSnapshot(ctx, id, last+100); err != nil {
		t.Fatal(err)
	}
	if m := cli("verify", "--db", db, "--db-key-file", keyFile); m["from_snapshot"] != float64(last) || m["replayed"] != float64(0) || m["digest"] != digest {
		t.Fatalf("verify from the snapshot: %v", m)
	}
	if m := cli("verify", "--db", db, "--db-key-file", keyFile, "--from-start"); m["from_snapshot"] != float64(0) || m["replayed"] != float64(last) {
		t.Fatalf("verify --from-start: %v", m)
	}
	if m := cli("rebuild", "--db", db, "--db-key-file", keyFile); m["replayed"] != float64(0) || m["digest"] != digest {
		t.Fatalf("rebuild from the snapshot: %v", m)
	}
	if m := cli("rebuild", "--db", db, "--db-key-file", keyFile, "--from-start"); m["replayed"] != float64(last) || m["digest"] != digest {
		t.Fatalf("rebuild --from-start: %v", m)
	}
	var out, errb bytes.Buffer
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"snapshot", "--nats", srv.URL(), "--installation", string(id), "--db", db, "--db-key-file", keyFile, "--keep", "0"}); code != exitUsage {
		t.Fatalf("--keep 0: exit %d, want %d", code, exitUsage)
	}
	out.Reset()
	errb.Reset()
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"help"}); code != 0 || !strings.Contains(out.String()+errb.String(), "snapshot  ") {
		t.Fatalf("help does not list snapshot: %s", out.String())
	}
}

// TestSnapshotListRefusesTheFlagsItIgnores: --list lists every stored
// snapshot of the installation; --db, a read-model key, --keep and
// --from-start given with it are refused (exit 2, naming them), nothing
// listed or pruned. Until 2026-12-07 they were ignored: --list --db X
// listed snapshots of any copy, --list --keep 1 pruned nothing.
func TestSnapshotListRefusesTheFlagsItIgnores(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("snap-list")
	createInstallation(t, l, dir, id)
	db, keyFile := filepath.Join(dir, string(id)+".db"), filepath.Join(dir, string(id)+".key")
	base := []string{"snapshot", "--list", "--nats", srv.URL(), "--installation", string(id)}
	for _, tc := range []struct {
		extra []string
		want  string
	}{
		{[]string{"--db", db}, "--db"},
		{[]string{"--db", db, "--db-key-file", keyFile}, "--db, --db-key-file"},
		{[]string{"--keep", "1"}, "--keep"},
		{[]string{"--from-start"}, "--from-start"},
	} {
		var out, errb bytes.Buffer
		code := run(ctx, ringEnv(&out, &errb, nil), append(append([]string{}, base...), tc.extra...))
		if code != exitUsage || out.Len() != 0 || !strings.Contains(errb.String(), tc.want+" take or select no snapshot") {
			t.Fatalf("snapshot --list %v: exit %d, stdout %q, stderr %q; want exit %d naming %s", tc.extra, code, out.String(), errb.String(), exitUsage, tc.want)
		}
	}
	var out, errb bytes.Buffer
	if code := run(ctx, ringEnv(&out, &errb, nil), base); code != exitOK || !strings.Contains(out.String(), "no snapshots of "+string(id)) {
		t.Fatalf("snapshot --list: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
