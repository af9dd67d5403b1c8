package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/replay"
	"github.com/nats-io/nats.go/jetstream"
)

// TestResealCommand: two installations with a group and messages each,
// and a third whose history retention trimmed (carried by its snapshot);
// reseal --rewrap reports the keys; reseal --to without --switch leaves
// the old stream active, and --rollback --to deletes the target; reseal
// --to --switch under a new keyring verifies every event and both read
// models' digests, then switches; a rebuild on the new stream with the
// new keyring only works; --rollback points back; destructive steps
// refuse without --yes.
func TestResealCommand(t *testing.T) {
	noTerminal(t)
	srv, l := startLog(t)
	dir := t.TempDir()
	ctx := context.Background()
	for _, id := range []events.InstallationID{"alice", "bob"} {
		key, err := writeDBKeyFile(filepath.Join(dir, string(id)+".key"))
		if err != nil {
			t.Fatal(err)
		}
		in, err := engine.CreateInstallation(ctx, l, id, filepath.Join(dir, string(id)+".db"), key, nil)
		if err != nil {
			t.Fatal(err)
		}
		gid := []byte("group-of-" + id)
		if _, err := in.CreateGroup(ctx, gid); err != nil {
			t.Fatal(err)
		}
		for _, m := range []string{"one", "two", "three"} {
			if _, err := in.Send(ctx, gid, []byte(m), nil); err != nil {
				t.Fatal(err)
			}
		}
		in.Close()
	}
	// carol's history is trimmed: an old day of messages shredded and
	// compacted; the re-seal carries it by its snapshot.
	carolKey, err := writeDBKeyFile(filepath.Join(dir, "carol.key"))
	if err != nil {
		t.Fatal(err)
	}
	clock := time.Now().Add(-72 * time.Hour)
	carol, err := engine.CreateInstallation(ctx, l, "carol", filepath.Join(dir, "carol.db"), carolKey, &engine.InstallationOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := carol.CreateGroup(ctx, []byte("group-of-carol")); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"old", "new"} {
		if m == "new" {
			clock = time.Now()
		}
		if _, err := carol.Send(ctx, []byte("group-of-carol"), []byte(m), nil); err != nil {
			t.Fatal(err)
		}
	}
	if r, err := carol.Retain(ctx, replay.RetentionPolicy{Messages: 24 * time.Hour}, &engine.RetainOptions{Compact: true}); err != nil || r.Compacted.Deleted == 0 {
		t.Fatalf("retain carol: %+v %v", r, err)
	}
	carol.Close()
	newKeys := filepath.Join(dir, "new.keys")
	if err := os.WriteFile(newKeys, []byte("9:"+strings.Repeat("c3", 32)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(ctx, ringEnv(&out, &errb, nil), args)
		return code, out.String(), errb.String()
	}
	common := []string{"--nats", srv.URL(), "--installation", "alice", "--installation", "bob", "--installation", "carol"}

	code, stdout, stderr := cli(append([]string{"reseal", "--rewrap"}, common...)...)
	if code != exitOK || !strings.Contains(stdout, "root key 1: still needed by") || !strings.Contains(stdout, "pseudonyms") {
		t.Fatalf("rewrap: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	// Re-seal without switching: the old stream stays active; rollback
	// deletes the target.
	code, stdout, stderr = cli(append([]string{"reseal", "--to", "TRY"}, common...)...)
	if code != exitOK || !strings.Contains(stdout, "equal for 3 installations") {
		t.Fatalf("reseal --to TRY: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if a, err := l.ActiveStream(ctx, "EPOCHLOG"); err != nil || a.Revision != 0 {
		t.Fatalf("pointer after an unswitched reseal: %+v %v", a, err)
	}
	if code, _, stderr = cli("reseal", "--rollback", "--to", "TRY", "--nats", srv.URL()); code != exitUsage || !strings.Contains(stderr, "--yes") {
		t.Fatalf("rollback without --yes: exit %d, stderr %q", code, stderr)
	}
	// Rollback deletes an unswitched re-seal target of the active stream
	// and nothing else: not a bucket's stream, not a missing one, not
	// another log's stream.
	openLogWith(t, eventlog.Config{NATSURL: srv.URL(), Stream: "OTHER", SubjectPrefix: "other"})
	for _, name := range []string{"KV_EPOCHLOG_KEYS", "NOPE", "OTHER"} {
		code, stdout, stderr := cli("reseal", "--rollback", "--to", name, "--yes", "--nats", srv.URL())
		if code == exitOK || strings.Contains(stdout, "deleted") {
			t.Fatalf("rollback --to %s: exit %d, stdout %q, stderr %q; want it refused", name, code, stdout, stderr)
		}
		lines := strings.Split(strings.TrimSpace(stderr), "\n")
		t.Logf("rollback --to %s: %s", name, lines[len(lines)-1])
	}
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"KV_EPOCHLOG_KEYS", "OTHER"} {
		if _, err := js.Stream(ctx, name); err != nil {
			t.Fatalf("stream %s after the refused rollbacks: %v", name, err)
		}
	}
	if code, _, stderr = cli("reseal", "--rollback", "--to", "TRY", "--yes", "--nats", srv.URL()); code != exitOK {
		t.Fatalf("rollback of TRY: exit %d, stderr %q", code, stderr)
	}
	if _, err := js.Stream(ctx, "TRY"); !errors.Is(err, jetstream.ErrStreamNotFound) {
		t.Fatalf("stream TRY after its rollback: %v, want it deleted", err)
	}

	// Re-seal under a new keyring and switch.
	code, stdout, stderr = cli(append([]string{"reseal", "--json", "--to", "EPOCHLOG_R2", "--switch", "--yes", "--new-keys-file", newKeys}, common...)...)
	if code != exitOK {
		t.Fatalf("reseal --switch: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	var res struct {
		Reseal  eventlog.Resealed `json:"reseal"`
		Digests map[string]string `json:"digests"`
		Active  eventlog.Active   `json:"active"`
	}
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || res.Reseal.Verified == 0 || res.Reseal.Verified != res.Reseal.Copied ||
		len(res.Digests) != 3 || len(res.Reseal.Anchors) != 1 || res.Active.Current.Stream != "EPOCHLOG_R2" || res.Active.Previous == nil || res.Active.Previous.Stream != "EPOCHLOG" {
		t.Fatalf("reseal output %q (%v)", stdout, err)
	}
	// The new stream with the new keyring alone rebuilds alice.
	var out, errb bytes.Buffer
	code = run(ctx, &cliEnv{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}, []string{"rebuild", "--nats", srv.URL(),
		"--stream", "EPOCHLOG_R2", "--subject-prefix", "epochlog_epochlog_r2", "--keys-file", newKeys, "--installation", "alice",
		"--db", filepath.Join(dir, "alice-r2.db"), "--db-key-file", filepath.Join(dir, "alice.key")})
	if code != exitOK || !strings.Contains(out.String(), res.Digests["alice"]) {
		t.Fatalf("rebuild from the new stream: exit %d, stdout %q, stderr %q, want digest %s", code, out.String(), errb.String(), res.Digests["alice"])
	}
	// A command given the base stream after the switch reads it as asked,
	// and warns that it is not the active one, naming the one to give.
	// Until 2026-12-06 nothing said so: a verify of a read model rebuilt
	// on the new stream then advised rebuilding it from the old one.
	if code, _, stderr = cli("inspect", "--nats", srv.URL(), "--installation", "alice"); code != exitOK ||
		!strings.Contains(stderr, "not the active stream") || !strings.Contains(stderr, "--stream EPOCHLOG_R2 --subject-prefix epochlog_epochlog_r2") {
		t.Fatalf("inspect of the base stream after a switch: exit %d, stderr %q; want a warning naming EPOCHLOG_R2", code, stderr)
	}
	// Roll back, then forward is a new reseal --switch; finalize needs --yes.
	// Pointer steps open the active stream: with its keyring.
	if code, stdout, stderr = cli("reseal", "--rollback", "--yes", "--nats", srv.URL(), "--keys-file", newKeys); code != exitOK || !strings.Contains(stdout, "EPOCHLOG is active again") {
		t.Fatalf("rollback: exit %d, stdout %q, stderr %q", code, stdout, stderr)
	}
	if a, err := l.ActiveStream(ctx, "EPOCHLOG"); err != nil || a.Current.Stream != "EPOCHLOG" {
		t.Fatalf("pointer after rollback: %+v %v", a, err)
	}
	if code, _, stderr = cli("reseal", "--finalize", "--nats", srv.URL()); code != exitUsage {
		t.Fatalf("finalize without --yes: exit %d, stderr %q", code, stderr)
	}

	// A writer still on the previous stream (EPOCHLOG_R2 since the
	// rollback) appends an event the active one lacks: finalize refuses
	// to delete it. Until 2026-12-06 it deleted it and exited 0.
	ring2, err := parseKeyring("9:" + strings.Repeat("c3", 32))
	if err != nil {
		t.Fatal(err)
	}
	l2, err := eventlog.Open(ctx, eventlog.Config{NATSURL: srv.URL(), Stream: "EPOCHLOG_R2", SubjectPrefix: "epochlog_epochlog_r2"}, ring2)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	enqueueFor(t, l2, "alice", "on the old stream", 1)
	if code, _, stderr = cli("reseal", "--finalize", "--yes", "--nats", srv.URL()); code != exitVerify || !strings.Contains(stderr, "1 events appended since the switch") {
		t.Fatalf("finalize with an event only the previous stream holds: exit %d, want %d; stderr %q", code, exitVerify, stderr)
	}
	if _, err := js.Stream(ctx, "EPOCHLOG_R2"); err != nil {
		t.Fatalf("the previous stream after a refused finalize: %v", err)
	}
	// And the active stream took an event since the rollback, which the
	// previous one lacks: rolling back again would hide it.
	enqueueFor(t, l, "alice", "on the active stream", 1)
	if code, _, stderr = cli("reseal", "--rollback", "--yes", "--nats", srv.URL()); code != exitVerify || !strings.Contains(stderr, "rolling back would hide them") {
		t.Fatalf("rollback with an event only the active stream holds: exit %d, want %d; stderr %q", code, exitVerify, stderr)
	}
	if a, err := l.ActiveStream(ctx, "EPOCHLOG"); err != nil || a.Current.Stream != "EPOCHLOG" {
		t.Fatalf("pointer after a refused rollback: %+v %v", a, err)
	}
}

// What --switch compares before it switches: the source as the re-seal
// found it. An append, and a purge of the stream, each change it; the
// same state does not.
func TestResealSwitchRefusesASourceThatChanged(t *testing.T) {
	ctx := context.Background()
	_, l := startLog(t)
	dir := t.TempDir()
	createInstallation(t, l, dir, "moving")
	before, err := sourceState(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := unchangedSince(ctx, l, before, "NEXT"); err != nil {
		t.Fatalf("an unchanged source: %v", err)
	}
	enqueueFor(t, l, "moving", "during the re-seal", 1)
	_, err = unchangedSince(ctx, l, before, "NEXT")
	var ve verifyError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "changed while it was re-sealed") {
		t.Fatalf("a source appended to during the re-seal: %v, want a refusal (exit 3)", err)
	}
	before, err = sourceState(ctx, l)
	if err != nil {
		t.Fatal(err)
	}
	deleteSeq(t, l, before.first)
	if _, err := unchangedSince(ctx, l, before, "NEXT"); !errors.As(err, &ve) {
		t.Fatalf("a source purged during the re-seal: %v, want a refusal", err)
	}
}
