package main

import (
	"bytes"
	"context"
	"fmt"
	"github.com/epochlog/epochlog/internal/syncbuf"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// syncBuffer is a buffer the follower's goroutine and the test share.
type syncBuffer = syncbuf.Buffer

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
	pending, err := db.PendingDeliveries(ctx, "follow-a", "mls", 0, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(pending); n != 8 {
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
	for !strings.Contains(stderr.String(), `msg="following read model" installation=`+string(id)) {
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

// runningFollow is "replayer follow" running in the background.
type runningFollow struct {
	stdout, stderr *syncBuffer
	code           chan int
	cancel         context.CancelFunc
}

// startFollow runs "replayer follow --nats URL --db-dir DIR args..." until
// stop is called.
func startFollow(t testing.TB, url, dir string, args ...string) *runningFollow {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &runningFollow{stdout: &syncBuffer{}, stderr: &syncBuffer{}, code: make(chan int, 1), cancel: cancel}
	env := ringEnv(f.stdout, f.stderr, nil)
	go func() {
		f.code <- run(ctx, env, append([]string{"follow", "--nats", url, "--db-dir", dir}, args...))
	}()
	t.Cleanup(func() {
		cancel()
		<-f.code
	})
	return f
}

// waitFor waits until cond holds, failing the test if follow exits first
// or it takes too long.
func (f *runningFollow) waitFor(t testing.TB, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		select {
		case c := <-f.code:
			f.code <- c
			t.Fatalf("follow exited with %d while waiting for %s: %s", c, what, f.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s; follow said: %s", what, f.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// stop interrupts follow as Ctrl-C would and returns its exit code.
func (f *runningFollow) stop() int {
	f.cancel()
	c := <-f.code
	f.code <- c // for the cleanup
	return c
}

// checkpointOf opens the read model DIR/ID.db with its key DIR/ID.key and
// returns its checkpoint.
func checkpointOf(t *testing.T, dir string, id events.InstallationID) uint64 {
	t.Helper()
	key, err := readDBKeyFile(filepath.Join(dir, string(id)+".key"))
	if err != nil {
		t.Fatal(err)
	}
	db, err := projections.OpenExisting(filepath.Join(dir, string(id)+".db"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	cp, err := db.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return cp
}

// enqueueFor appends n deliveries for id.
func enqueueFor(t *testing.T, l *eventlog.Log, id events.InstallationID, round string, n int) {
	t.Helper()
	queue := engine.NewDeliveries(l, nil)
	for i := range n {
		if _, _, err := queue.Enqueue(context.Background(), engine.Enqueue{Recipient: id, Channel: "mls",
			Payload: []byte(fmt.Sprintf("%s-%d", round, i)), IdempotencyKey: fmt.Sprintf("%s-%s-%d", id, round, i)}); err != nil {
			t.Fatal(err)
		}
	}
}

// shortRetries makes follow retry failed read models within milliseconds
// for the rest of the test.
func shortRetries(t *testing.T) {
	oldMin, oldMax := followRetryMin, followRetryMax
	followRetryMin, followRetryMax = 20*time.Millisecond, 80*time.Millisecond
	t.Cleanup(func() { followRetryMin, followRetryMax = oldMin, oldMax })
}

// TestFollowIsolatesFailures: one read model that cannot be followed (a
// wrong key, a file that is not a read model) does not stop the others.
// It is reported on stderr with its installation, database and error, and
// tried again; the healthy one keeps applying events appended after the
// start; on Ctrl-C the exit status is 3 for a verification failure (the
// wrong key) and 1 for another, and the summary names the failing one.
func TestFollowIsolatesFailures(t *testing.T) {
	shortRetries(t)
	for _, tc := range []struct {
		name  string
		spoil func(t *testing.T, dir string, id events.InstallationID)
		code  int
		err   string
	}{
		{"wrong key", func(t *testing.T, dir string, id events.InstallationID) {
			if _, err := writeDBKeyFile(filepath.Join(dir, string(id)+".key")); err != nil {
				t.Fatal(err)
			}
		}, exitVerify, "wrong key"},
		{"not a read model", func(t *testing.T, dir string, id events.InstallationID) {
			if err := os.WriteFile(filepath.Join(dir, string(id)+".db"), bytes.Repeat([]byte("not a database "), 512), 0o600); err != nil {
				t.Fatal(err)
			}
		}, exitFailure, "not an epochlog read model"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv, l := startLog(t)
			dir := t.TempDir()
			good, bad := events.InstallationID("good-a"), events.InstallationID("bad-b")
			createInstallation(t, l, dir, good)
			createInstallation(t, l, dir, bad)
			tc.spoil(t, dir, bad)
			badPath := filepath.Join(dir, string(bad)+".db")

			f := startFollow(t, srv.URL(), dir, "--db-keys-beside")
			f.waitFor(t, "the failure reported twice", func() bool {
				return strings.Count(f.stderr.String(), `level=ERROR msg="read model failed; trying again, the others carry on" installation=bad-b db=`+badPath) >= 2
			})
			if !strings.Contains(f.stderr.String(), tc.err) {
				t.Fatalf("the report does not say %q: %s", tc.err, f.stderr.String())
			}
			// Events appended after the start reach the healthy read model.
			enqueueFor(t, l, good, "after-start", 4)
			last, err := l.LastSeq(context.Background(), good)
			if err != nil {
				t.Fatal(err)
			}
			f.waitFor(t, "good-a to catch up", func() bool { return checkpointOf(t, dir, good) == last })

			code := f.stop()
			out := f.stderr.String()
			if code != tc.code {
				t.Fatalf("follow with a failing read model exited %d after Ctrl-C, want %d: %s", code, tc.code, out)
			}
			if !strings.Contains(out, "replayer: good-a: 4 events applied, checkpoint "+fmt.Sprint(last)) {
				t.Fatalf("the summary does not show good-a caught up: %s", out)
			}
			if !strings.Contains(out, "replayer: bad-b: FAILING (database "+badPath) {
				t.Fatalf("the summary does not name the failing read model: %s", out)
			}
			if !strings.Contains(out, "1 of 2 read models failing when follow stopped: bad-b ("+badPath+")") {
				t.Fatalf("the final error does not name the failing read model: %s", out)
			}
		})
	}
}

// TestFollowRetriesFailedReadModel: a read model that failed is tried
// again; once its key is fixed it is followed like the others, and the
// run ends as a healthy one (exit 130), its summary noting the failures.
// A failure on an event names the event's stream sequence.
func TestFollowRetriesFailedReadModel(t *testing.T) {
	shortRetries(t)
	srv, l := startLog(t)
	dir := t.TempDir()
	good, bad := events.InstallationID("good-a"), events.InstallationID("late-b")
	createInstallation(t, l, dir, good)
	createInstallation(t, l, dir, bad)
	keyPath := filepath.Join(dir, string(bad)+".key")
	right, err := os.ReadFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := writeDBKeyFile(keyPath); err != nil {
		t.Fatal(err)
	}
	f := startFollow(t, srv.URL(), dir, "--db-keys-beside")
	f.waitFor(t, "the failure reported", func() bool {
		return strings.Contains(f.stderr.String(), `msg="read model failed; trying again, the others carry on" installation=late-b`)
	})
	enqueueFor(t, l, bad, "meanwhile", 3)
	if err := os.WriteFile(keyPath, right, 0o600); err != nil {
		t.Fatal(err)
	}
	last, err := l.LastSeq(context.Background(), bad)
	if err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "late-b to catch up", func() bool { return checkpointOf(t, dir, bad) == last })
	f.waitFor(t, "late-b followed again", func() bool {
		return strings.Contains(f.stderr.String(), `msg="read model recovered: followed again" installation=late-b`)
	})

	// An event the installation's read model cannot open stops it, with
	// the stream sequence; the healthy one goes on.
	junk := publishJunk(t, l, bad, "junk")
	f.waitFor(t, "the bad event reported", func() bool {
		return strings.Contains(f.stderr.String(), fmt.Sprintf("installation=late-b db=%s failures=", filepath.Join(dir, "late-b.db"))) &&
			strings.Contains(f.stderr.String(), fmt.Sprintf(" stream_sequence=%d ", junk))
	})
	enqueueFor(t, l, good, "after-junk", 2)
	goodLast, err := l.LastSeq(context.Background(), good)
	if err != nil {
		t.Fatal(err)
	}
	f.waitFor(t, "good-a to catch up", func() bool { return checkpointOf(t, dir, good) == goodLast })
	if code := f.stop(); code == exitInterrupted || code == exitOK {
		t.Fatalf("follow with a read model stuck on a bad event exited %d: %s", code, f.stderr.String())
	}
	if out := f.stderr.String(); !strings.Contains(out, "late-b: FAILING") || !strings.Contains(out, "3 events applied") {
		t.Fatalf("summary: %s", out)
	}
}
