package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// syncBuffer is a bytes.Buffer safe for the follower's goroutine and the
// test to share.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// TestFollowResumesFromCheckpoints runs "replayer follow" on two read
// models, appends events for them while it runs, interrupts it, appends
// more, and restarts it: each run applies exactly the events its read
// models lacked, and both end at the stream's last event for them.
func TestFollowResumesFromCheckpoints(t *testing.T) {
	ctx := context.Background()
	srv := natstest.Start(t, natstest.Options{})
	dir := t.TempDir()
	ringText := "1:" + strings.Repeat("5a", 32)
	ring, err := parseKeyring(ringText)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(ctx, eventlog.Config{NATSURL: srv.URL()}, ring)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	ids := []events.InstallationID{"follow-a", "follow-b"}
	for _, id := range ids {
		createInstallation(t, l, dir, id)
	}
	queue := engine.NewDeliveries(l, nil)
	enqueue := func(n int, round string) {
		t.Helper()
		for _, id := range ids {
			for i := range n {
				if _, _, err := queue.Enqueue(ctx, engine.Enqueue{Recipient: id, Channel: "mls",
					Payload: []byte(fmt.Sprintf("%s-%d", round, i)), IdempotencyKey: fmt.Sprintf("%s-%s-%d", id, round, i)}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	// caughtUp reports whether every read model reached its installation's
	// last event on the stream.
	caughtUp := func() bool {
		for _, id := range ids {
			last, err := l.LastSeq(ctx, id)
			if err != nil {
				t.Fatal(err)
			}
			key, err := readDBKeyFile(filepath.Join(dir, string(id)+".key"))
			if err != nil {
				t.Fatal(err)
			}
			db, err := projections.Open(filepath.Join(dir, string(id)+".db"), key, nil)
			if err != nil {
				t.Fatal(err)
			}
			cp, err := db.Checkpoint(ctx)
			db.Close()
			if err != nil {
				t.Fatal(err)
			}
			if cp != last {
				return false
			}
		}
		return true
	}
	// follow runs the command until the read models caught up, then
	// interrupts it as Ctrl-C would, and returns its exit code and stderr.
	follow := func() (int, string) {
		t.Helper()
		runCtx, cancel := context.WithCancel(ctx)
		defer cancel()
		var stdout, stderr syncBuffer
		env := &cliEnv{stdout: &stdout, stderr: &stderr, getenv: func(k string) string {
			if k == envRootKeys {
				return ringText
			}
			return ""
		}}
		code := make(chan int, 1)
		go func() {
			code <- run(runCtx, env, []string{"follow", "--nats", srv.URL(), "--db-dir", dir, "--db-keys-beside"})
		}()
		deadline := time.Now().Add(30 * time.Second)
		for !caughtUp() {
			select {
			case c := <-code:
				t.Fatalf("follow exited early with %d: %s", c, stderr.String())
			default:
			}
			if time.Now().After(deadline) {
				t.Fatalf("read models did not catch up; follow said: %s", stderr.String())
			}
			time.Sleep(20 * time.Millisecond)
		}
		cancel()
		return <-code, stderr.String()
	}

	enqueue(5, "one")
	c, out := follow()
	if c != exitInterrupted {
		t.Fatalf("follow after Ctrl-C exited %d, want %d: %s", c, exitInterrupted, out)
	}
	for _, id := range ids {
		if !strings.Contains(out, fmt.Sprintf("%s: 5 events applied", id)) {
			t.Fatalf("first run: want 5 events applied to %s; follow said: %s", id, out)
		}
	}
	enqueue(3, "two")
	c, out = follow()
	if c != exitInterrupted {
		t.Fatalf("second follow exited %d: %s", c, out)
	}
	for _, id := range ids {
		if !strings.Contains(out, fmt.Sprintf("%s: 3 events applied", id)) {
			t.Fatalf("second run: want only the 3 new events applied to %s; follow said: %s", id, out)
		}
	}
	// The followed read models hold the deliveries.
	key, err := readDBKeyFile(filepath.Join(dir, "follow-a.key"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := projections.Open(filepath.Join(dir, "follow-a.db"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var n int
	if err := db.SQL().QueryRow(`SELECT count(*) FROM deliveries WHERE state = 'pending'`).Scan(&n); err != nil {
		t.Fatal(err)
	}
	if n != 8 {
		t.Fatalf("follow-a's read model has %d pending deliveries, want 8", n)
	}
}

// TestFollowKeysBesideIgnoresEnvironmentKey: the documented
// "follow --db-keys-beside" runs in a shell that exports
// $EPOCHLOG_DB_KEY: only a key flag on the command line conflicts with
// --db-keys-beside, the environment is only a default.
func TestFollowKeysBesideIgnoresEnvironmentKey(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("beside-a")
	createInstallation(t, l, dir, id)
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var stdout, stderr syncBuffer
	env := ringEnv(&stdout, &stderr, map[string]string{envDBKey: strings.Repeat("ab", 32)})
	code := make(chan int, 1)
	go func() {
		code <- run(runCtx, env, []string{"follow", "--nats", srv.URL(), "--db-dir", dir, "--db-keys-beside"})
	}()
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(stderr.String(), "following "+string(id)) {
		select {
		case c := <-code:
			t.Fatalf("follow --db-keys-beside with $%s set exited %d: %s", envDBKey, c, stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("follow did not start: %s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	if c := <-code; c != exitInterrupted {
		t.Fatalf("follow after Ctrl-C exited %d, want %d: %s", c, exitInterrupted, stderr.String())
	}
	// A key flag given with it still conflicts.
	var out, errb bytes.Buffer
	c := run(ctx, ringEnv(&out, &errb, nil), []string{"follow", "--nats", srv.URL(), "--db-dir", dir, "--db-keys-beside",
		"--db-key-file", filepath.Join(dir, string(id)+".key")})
	if c != exitUsage {
		t.Fatalf("follow --db-keys-beside --db-key-file: exit %d, want %d: %s", c, exitUsage, errb.String())
	}
}
