package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
)

// testRingText is the event keyring of the tests that start their own
// server.
var testRingText = "1:" + strings.Repeat("5a", 32)

// startLog starts a JetStream server and opens the event log on it under
// testRingText.
func startLog(t *testing.T) (*natstest.Server, *engine.Log) {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	ring, err := parseKeyring(testRingText)
	if err != nil {
		t.Fatal(err)
	}
	l, err := engine.Open(context.Background(), engine.Config{NATSURL: srv.URL()}, ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return srv, l
}

// createInstallation creates installation id on l with its read model at
// DIR/ID.db under a raw key written to DIR/ID.key (the layout follow
// --db-keys-beside reads), and closes it: a follower or a command, not the
// installation, keeps the read model from here on.
func createInstallation(t *testing.T, l *engine.Log, dir string, id events.InstallationID) {
	t.Helper()
	key, err := writeDBKeyFile(filepath.Join(dir, string(id)+".key"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := engine.CreateInstallation(context.Background(), l, id, filepath.Join(dir, string(id)+".db"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
}

// ringEnv is an environment holding only the event keyring, plus vars.
func ringEnv(stdout, stderr interface{ Write([]byte) (int, error) }, vars map[string]string) *cliEnv {
	return &cliEnv{stdout: stdout, stderr: stderr, getenv: func(k string) string {
		if k == envRootKeys {
			return testRingText
		}
		return vars[k]
	}}
}

// TestVerifyWhileWriterRuns: verify reads the live database's checkpoint
// and its tables in one snapshot. If they were read apart, the live
// database's normal writer (a follower, or the installation itself)
// applying events in between would make verify report drift on a
// database that is exactly its history.
func TestVerifyWhileWriterRuns(t *testing.T) {
	ctx := context.Background()
	_, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("verify-a")
	path := filepath.Join(dir, "verify-a.db")
	key, err := writeDBKeyFile(filepath.Join(dir, "verify-a.key"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := engine.CreateInstallation(ctx, l, id, path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
	queue := engine.NewDeliveries(l, nil)
	enqueue := func(round string, n int) {
		for i := range n {
			if _, _, err := queue.Enqueue(ctx, engine.Enqueue{Recipient: id, Channel: "mls",
				Payload: []byte(fmt.Sprintf("%s-%d", round, i)), IdempotencyKey: fmt.Sprintf("%s-%d", round, i)}); err != nil {
				t.Fatal(err)
			}
		}
	}
	enqueue("one", 10)
	// The live database is the installation's, caught up: a faithful
	// projection of its history.
	live, err := engine.OpenExisting(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer live.Close()
	if _, _, err := l.CatchUp(ctx, id, live, nil); err != nil {
		t.Fatal(err)
	}
	// More events arrive; the live writer applies them while verify runs
	// (deterministically, from verify's progress callback).
	enqueue("two", 3)
	var once sync.Once
	var catchErr error
	caughtUp := 0
	_, err = l.Verify(ctx, id, path, key, &engine.ReplayOptions{BatchSize: 1, Progress: func(engine.Progress) {
		once.Do(func() { caughtUp, _, catchErr = l.CatchUp(ctx, id, live, nil) })
	}})
	if catchErr != nil {
		t.Fatal(catchErr)
	}
	if caughtUp == 0 {
		t.Fatal("the writer applied nothing during verify: the test did not exercise the race")
	}
	// The live database is still exactly its history (a fresh verify
	// passes), so the concurrent verify must not report drift.
	if _, err2 := l.Verify(ctx, id, path, key, nil); err2 != nil {
		t.Fatalf("the live database does not match its history afterwards: %v", err2)
	}
	if errors.Is(err, engine.ErrDrift) {
		t.Fatalf("verify reported drift (exit 3) on a faithful read model whose writer applied events during the verify: %v", err)
	}
	if err != nil {
		t.Fatal(err)
	}
}

// TestRebuildReplacesDamagedDatabase: docs/operations.md says a damaged
// database "is replaced without being read". That holds whether the damage
// shows when the file is opened (the page of epochlog_meta: the schema
// marker cannot be read) or only when its checkpoint is read (the page of
// checkpoint): rebuild replaces it and the result opens with the key.
func TestRebuildReplacesDamagedDatabase(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	for i, table := range []string{"epochlog_meta", "checkpoint"} {
		t.Run(table, func(t *testing.T) {
			dir := t.TempDir()
			id := events.InstallationID(fmt.Sprintf("damaged-%d", i))
			path := filepath.Join(dir, string(id)+".db")
			keyPath := filepath.Join(dir, string(id)+".key")
			key, err := writeDBKeyFile(keyPath)
			if err != nil {
				t.Fatal(err)
			}
			in, err := engine.CreateInstallation(ctx, l, id, path, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			var root int64
			if err := in.DB().SQL().QueryRow(`SELECT rootpage FROM sqlite_master WHERE name = ?`, table).Scan(&root); err != nil {
				t.Fatal(err)
			}
			in.Close()
			f, err := os.OpenFile(path, os.O_RDWR, 0)
			if err != nil {
				t.Fatal(err)
			}
			b := make([]byte, 8)
			off := (root-1)*4096 + 200
			if _, err := f.ReadAt(b, off); err != nil {
				t.Fatal(err)
			}
			for j := range b {
				b[j] ^= 0xff
			}
			if _, err := f.WriteAt(b, off); err != nil {
				t.Fatal(err)
			}
			f.Close()
			var out, errb bytes.Buffer
			code := run(ctx, ringEnv(&out, &errb, nil), []string{"rebuild", "--nats", srv.URL(), "--installation", string(id), "--db", path, "--db-key-file", keyPath})
			if code != 0 {
				t.Fatalf("rebuild of a database damaged in its %s page: exit %d, stderr: %s", table, code, errb.String())
			}
			if !strings.Contains(out.String(), "damaged and has been replaced") {
				t.Fatalf("rebuild does not say it replaced a damaged database: %s", out.String())
			}
			db, err := engine.OpenExisting(path, key, nil)
			if err != nil {
				t.Fatalf("rebuilt database: %v", err)
			}
			defer db.Close()
			if err := db.IntegrityCheck(ctx); err != nil {
				t.Fatalf("rebuilt database: %v", err)
			}
		})
	}
}
