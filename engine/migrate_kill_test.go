package engine

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/internal/childproc"
	"github.com/epochlog/epochlog/projections"
)

// envMigrateKillChild carries what the child of TestMigrationByReplayKilled
// needs: the server URL and the read model's path, separated by a space.
const envMigrateKillChild = "EPOCHLOG_TEST_MIGRATE_KILL_CHILD"

// migrateKillFill is the fill byte of alice's raw read-model key there.
const migrateKillFill = 0xa2

// migrateKillSteps are the log messages at which the child prints a step:
// the open starting its migration by replay (the kills during the
// rebuild are timed from it), the rebuild having swapped its file in
// (finished) and the open's note that it migrated, after both of which
// it pauses so that a kill lands there; then "done" once the open
// returned.
var migrateKillSteps = map[string]string{
	"engine: the read model did not keep own outputs a migration in place would lose; migrating it by replay": "start",
	"replay: rebuild finished":              "swapped",
	"engine: read model migrated by replay": "migrated",
}

// stepPrinter is a kill test child's slog handler: it prints
// "step:<name>" for each message of steps, at any level, and pauses
// after each but quick, so that the parent can kill it there.
type stepPrinter struct {
	steps map[string]string
	quick string // a step printed without the pause ("": none)
}

func (h stepPrinter) Enabled(context.Context, slog.Level) bool { return true }

func (h stepPrinter) Handle(_ context.Context, r slog.Record) error {
	if s, ok := h.steps[r.Message]; ok {
		fmt.Println("step:" + s)
		if s != h.quick {
			time.Sleep(100 * time.Millisecond)
		}
	}
	return nil
}

func (h stepPrinter) WithAttrs([]slog.Attr) slog.Handler { return h }
func (h stepPrinter) WithGroup(string) slog.Handler      { return h }

// killChildLog is a kill test child's start: the server URL and read
// model path its parent put in the environment variable env (the test
// skips when run alone, not by parent), and a Log on that server whose
// logger prints the child's steps.
func killChildLog(t *testing.T, env, parent string, steps stepPrinter) (*eventlog.Log, string) {
	t.Helper()
	arg := os.Getenv(env)
	if arg == "" {
		t.Skip("run by " + parent)
	}
	url, path, _ := strings.Cut(arg, " ")
	cfg := eventlog.Config{NATSURL: url, RequestTimeout: 10 * time.Second, ReconnectWait: 20 * time.Millisecond, Logger: slog.New(steps)}
	l, err := eventlog.Open(context.Background(), cfg, keyring(t, 1, 0x42))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l, path
}

// TestMigrationByReplayKilledChild is alice's process opening her schema
// 8 read model with the latest schema (which migrates it by replay), run
// by TestMigrationByReplayKilled. It does nothing when run alone.
func TestMigrationByReplayKilledChild(t *testing.T) {
	l, path := killChildLog(t, envMigrateKillChild, "TestMigrationByReplayKilled", stepPrinter{steps: migrateKillSteps, quick: "start"})
	ctx := context.Background()
	in, err := OpenInstallation(ctx, l, "alice", path, rawDBKey(t, migrateKillFill), &InstallationOptions{UpdateInterval: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("step:done")
}

// An engine process killed (SIGKILL, a real child process) while its open
// migrates a read model by replay (during the rebuild, right after the
// swap, after the migration before the open returns) leaves the file
// either as it was (schema 8, the same content) or migrated, never
// missing; the next open succeeds, leaves no rebuild leftovers, and its
// read model equals a fresh build of the stream, own outputs included.
func TestMigrationByReplayKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes; not with -short")
	}
	ctx := context.Background()
	b := newBackend(t)
	key := rawDBKey(t, migrateKillFill)
	v8 := b.opts()
	v8.DB.SchemaVersion = 8
	alice, err := CreateInstallation(ctx, b.log, "alice", b.dbPath("alice"), key, v8)
	if err != nil {
		t.Fatal(err)
	}
	b.insts["alice"], b.keys["alice"] = alice, key
	b.create("bob")
	gid := b.groupOf(alice, "bob")
	const sent = 40
	for i := range sent {
		b.send("alice", gid, fmt.Sprintf("m%d", i))
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	path := b.dbPath("alice")
	notKeptAt(t, path, key, nil, 8)
	pristine, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	oldDigest := digestAsIs(t, path, key, 8)

	// restore puts the schema 8 file back, as the first round found it.
	restore := func() {
		for _, f := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
			if err := os.Remove(f); err != nil && !os.IsNotExist(err) {
				t.Fatal(err)
			}
		}
		if err := os.WriteFile(path, pristine, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d (the kill times)", seed)
	rng := rand.New(rand.NewPCG(seed, 5))
	// The first round runs to the end and times the rebuild, from its
	// start to its swap: the kills after "start" spread over it.
	var span time.Duration
	rounds := []struct {
		after string
		frac  float64 // of span, after the step
	}{{"", 0}, {"start", 0}, {"start", 0.2}, {"start", 0.4}, {"start", 0.6}, {"start", 0.8}, {"start", 1}, {"swapped", 0}, {"migrated", 0}}
	outcomes := map[int]int{}
	for round, r := range rounds {
		restore()
		child := childproc.Start(t, "TestMigrationByReplayKilledChild",
			[]string{envMigrateKillChild + "=" + b.srv.URL() + " " + path}, "-test.count=1", "-test.v")
		var started time.Time
		last := ""
		for {
			line, err := child.Next()
			if err == io.EOF {
				break
			}
			if err != nil {
				child.Kill()
				child.Wait()
				t.Fatalf("round %d: the child is stuck after step %q: %v\n%s", round, last, err, child.Output())
			}
			s, ok := strings.CutPrefix(line, "step:")
			if !ok {
				continue
			}
			last = s
			if s == "start" {
				started = time.Now()
			}
			if s == "swapped" && r.after == "" {
				span = time.Since(started)
			}
			if s == r.after {
				time.Sleep(time.Duration((r.frac + rng.Float64()*0.2) * float64(span)))
				child.Kill()
				break
			}
		}
		werr := child.Wait()
		switch {
		case r.after == "" && werr != nil:
			t.Fatalf("round %d: the uninterrupted child failed: %v\n%s", round, werr, child.Output())
		case r.after != "" && !child.Killed():
			t.Fatalf("round %d: the child was not killed after %q (%v)\n%s", round, r.after, werr, child.Output())
		}

		// The file as the killed process left it: the old one, unchanged,
		// or the migrated one.
		db, err := projections.OpenExisting(path, key, nil)
		if err != nil {
			t.Fatalf("round %d (killed after %q): the read model: %v", round, last, err)
		}
		schema := db.SchemaVersion()
		db.Close()
		switch schema {
		case 8:
			if d := projections.Compare(oldDigest, digestAsIs(t, path, key, 8)); d != nil {
				t.Fatalf("round %d (killed after %q): the schema 8 file changed: %v", round, last, d)
			}
		case projections.LatestSchema:
		default:
			t.Fatalf("round %d (killed after %q): the file is at schema %d", round, last, schema)
		}
		outcomes[schema]++

		// The next start.
		in, err := OpenInstallation(ctx, b.log, "alice", path, key, b.opts())
		if err != nil {
			t.Fatalf("round %d (killed after %q, schema %d): open after the kill: %v", round, last, schema, err)
		}
		b.insts["alice"] = in
		if v := in.DB().SchemaVersion(); v != projections.LatestSchema {
			t.Fatalf("round %d: opened at schema %d", round, v)
		}
		if n := len(ownMessages(t, in, gid, 0, 0)); n != sent {
			t.Fatalf("round %d: %d own messages after the open, want %d", round, n, sent)
		}
		b.checkRebuild("alice")
		if err := in.Close(); err != nil {
			t.Fatal(err)
		}
		delete(b.insts, "alice")
		left, err := filepath.Glob(path + ".rebuild-*")
		if err != nil || len(left) != 0 {
			t.Fatalf("round %d (killed after %q): leftovers after the open: %v %v", round, last, left, err)
		}
		t.Logf("round %d: killed after %q (%v): file at schema %d; reopened", round, r.after, time.Duration(r.frac*float64(span)), schema)
	}
	t.Logf("files found at schema 8 / %d: %d / %d", projections.LatestSchema, outcomes[8], outcomes[projections.LatestSchema])
}

// digestAsIs is the content digest of the read model at path, opened as
// it is, which must be at schema.
func digestAsIs(t *testing.T, path string, key projections.Key, schema int) projections.Digest {
	t.Helper()
	db, err := projections.OpenExisting(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if v := db.SchemaVersion(); v != schema {
		t.Fatalf("%s at schema %d, want %d", path, v, schema)
	}
	d, err := db.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}
