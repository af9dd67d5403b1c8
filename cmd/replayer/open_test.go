package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/nats-io/nats.go/jetstream"
)

// TestReadCommandsNeverChangeTheStream: on a stream an operator created
// with three replicas, the commands that only read the stream refuse
// --replicas (only demo, which creates the stream, takes it) and, run
// without it, leave the stream's configuration exactly as it was. In the
// field "inspect --replicas 1" had scaled such a stream down to one
// replica.
func TestReadCommandsNeverChangeTheStream(t *testing.T) {
	ctx := context.Background()
	c := natstest.StartCluster(t, 3)
	ring, err := parseKeyring(testRingText)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(ctx, eventlog.Config{NATSURL: c.URL(), Replicas: 3, RequestTimeout: 5 * time.Second}, ring)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	id := events.InstallationID("replicated-a")
	createInstallation(t, l, dir, id)
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	config := func() jetstream.StreamConfig {
		t.Helper()
		s, err := js.Stream(ctx, l.Stream())
		if err != nil {
			t.Fatal(err)
		}
		info, err := s.Info(ctx)
		if err != nil {
			t.Fatal(err)
		}
		return info.Config
	}
	before := config()
	if before.Replicas != 3 {
		t.Fatalf("the stream has %d replicas, want 3", before.Replicas)
	}
	db, key := filepath.Join(dir, string(id)+".db"), filepath.Join(dir, string(id)+".key")
	replayer := func(args ...string) (int, string) {
		var out, errb bytes.Buffer
		code := run(ctx, ringEnv(&out, &errb, nil), append(args, "--nats", c.URL()))
		return code, errb.String()
	}
	commands := [][]string{
		{"inspect", "--installation", string(id)},
		{"verify", "--installation", string(id), "--db", db, "--db-key-file", key},
		{"rebuild", "--installation", string(id), "--db", filepath.Join(dir, "rebuilt.db"), "--db-key-file", key},
		{"rekey", "--installation", string(id), "--db", db, "--db-key-file", key, "--new-db-key-file", key},
		{"migrate", "--installation", string(id), "--db", db, "--db-key-file", key},
		{"follow", "--db-dir", dir, "--db-keys-beside"},
	}
	for _, cmd := range commands {
		code, stderr := replayer(append(cmd, "--replicas", "1")...)
		if code != exitUsage || !strings.Contains(stderr, "only demo, which creates the stream, takes --replicas") {
			t.Errorf("%s --replicas 1: exit %d, want %d with an explanation; stderr: %s", cmd[0], code, exitUsage, stderr)
		}
		if after := config(); !reflect.DeepEqual(after, before) {
			t.Fatalf("%s --replicas 1 changed the stream: replicas %d -> %d\nbefore %+v\nafter  %+v", cmd[0], before.Replicas, after.Replicas, before, after)
		}
	}
	for _, cmd := range commands[:3] {
		if code, stderr := replayer(cmd...); code != exitOK {
			t.Fatalf("%s: exit %d: %s", cmd[0], code, stderr)
		}
		if after := config(); !reflect.DeepEqual(after, before) {
			t.Fatalf("%s changed the stream:\nbefore %+v\nafter  %+v", cmd[0], before, after)
		}
	}
}

// TestUnwritableDataDirFailsAtOnce: the embedded server cannot create its
// store in a data directory it cannot write; the command fails at once
// (not after the embedded server's one-minute start timeout) with an error
// naming the directory and the cause.
func TestUnwritableDataDirFailsAtOnce(t *testing.T) {
	for _, tc := range []struct {
		name  string
		setup func(t *testing.T, data string) string // returns the directory the error names
		want  []string
	}{
		{"store is a file", func(t *testing.T, data string) string {
			if err := os.WriteFile(filepath.Join(data, "jetstream"), []byte("x"), 0o600); err != nil {
				t.Fatal(err)
			}
			return data
		}, []string{"is not a directory"}},
		{"read-only", func(t *testing.T, data string) string {
			makeReadOnly(t, data)
			return data
		}, []string{"is not writable", "(permission denied|operation not permitted|read-only file system)"}},
		{"read-only store", func(t *testing.T, data string) string {
			store := filepath.Join(data, "jetstream")
			if err := os.Mkdir(store, 0o700); err != nil {
				t.Fatal(err)
			}
			makeReadOnly(t, store)
			return store
		}, []string{"is not writable"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			data := t.TempDir()
			named := tc.setup(t, data)
			var out, errb bytes.Buffer
			start := time.Now()
			code := run(context.Background(), ringEnv(&out, &errb, nil), []string{"inspect", "--data", data, "--installation", "x"})
			took := time.Since(start)
			if code != exitFailure {
				t.Fatalf("exit %d, want %d: %s", code, exitFailure, errb.String())
			}
			if took > 10*time.Second {
				t.Errorf("the error took %v", took)
			}
			msg := errb.String()
			if !strings.Contains(msg, "data directory "+named) {
				t.Errorf("the error does not name %s: %s", named, msg)
			}
			for _, w := range tc.want {
				if !regexp.MustCompile(w).MatchString(msg) {
					t.Errorf("the error does not say %q: %s", w, msg)
				}
			}
		})
	}
}

// makeReadOnly makes dir unwritable for this process: mode 0500, and when
// that does not stop this process (root), the immutable attribute; it
// skips the test if neither works.
func makeReadOnly(t *testing.T, dir string) {
	t.Helper()
	if err := os.Chmod(dir, 0o500); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Chmod(dir, 0o700) })
	if !writable(dir) {
		return
	}
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot make %s unwritable for this process (uid %d): chattr: %v %s", dir, os.Getuid(), err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", dir).Run() })
	if writable(dir) {
		t.Skipf("cannot make %s unwritable for this process", dir)
	}
}

func writable(dir string) bool {
	f, err := os.CreateTemp(dir, "probe-*")
	if err != nil {
		return false
	}
	f.Close()
	os.Remove(f.Name())
	return true
}

// TestWritingCommandsCreateNoStream: the commands that write beside an
// existing log (snapshot, retain, compact, erase, reseal) refuse a stream
// that does not exist, a mistyped --stream or a stream whose damaged files
// the server did not load, naming it, and create nothing. Until
// 2026-12-06 they created an empty stream of that name and went on (when
// its subjects did not overlap another stream's, as here).
func TestWritingCommandsCreateNoStream(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("no-create")
	createInstallation(t, l, dir, id)
	db, key := filepath.Join(dir, string(id)+".db"), filepath.Join(dir, string(id)+".key")
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{
		{"snapshot", "--installation", string(id), "--db", db, "--db-key-file", key},
		{"retain", "--installation", string(id), "--db", db, "--db-key-file", key, "--messages", "30d"},
		{"compact", "--installation", string(id)},
		{"erase", "--yes", "--installation", string(id)},
		{"reseal", "--yes", "--to", "NEWSTREAM"},
	} {
		var out, errb bytes.Buffer
		code := run(ctx, ringEnv(&out, &errb, nil), append(args, "--nats", srv.URL(), "--stream", "TYPO", "--subject-prefix", "typo"))
		if code == exitOK || !strings.Contains(errb.String(), "stream TYPO") {
			t.Errorf("%s --stream TYPO: exit %d, want a refusal naming the stream\n%s%s", args[0], code, out.String(), errb.String())
		}
		if _, err := js.Stream(ctx, "TYPO"); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("%s --stream TYPO created the stream (%v)", args[0], err)
		}
	}
}
