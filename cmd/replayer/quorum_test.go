package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/internal/syncbuf"
	"github.com/epochlog/epochlog/projections"
)

// TestCommandsWithoutQuorum kills two of the three nodes of a cluster
// holding the stream at 3 replicas: the node left takes clients, but
// neither the stream nor the JetStream meta group has a quorum. Every
// command must then fail (exit 1, never 0 or a wait without end) within
// a bound that follows from the request and progress timeouts, saying
// that the cluster did not serve the request and what to check, not
// "context deadline exceeded" alone. Once the nodes are back, the live
// read model verifies and a rebuild equals it. Until 2026-12-08 every
// command said only "eventlog: open key bucket EPOCHLOG_KEYS: context
// deadline exceeded".
func TestCommandsWithoutQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and kills cluster nodes")
	}
	t.Parallel() // waits on its own cluster and its commands' processes

	c, sum := quorumWorld(t, 3, 12)
	inst := sum.Installations[0]
	live, liveKey := filepath.Join(sum.DBDir, inst+".db"), filepath.Join(sum.DBDir, inst+".key")
	nodes := c.Nodes()
	nodes[1].Kill()
	nodes[2].Kill()
	url := nodes[0].URL()

	cmds := map[string][]string{
		"status":  {"status", "--nats", url, "--db", live, "--db-key-file", liveKey, "--json"},
		"verify":  {"verify", "--nats", url, "--installation", inst, "--db", live, "--db-key-file", liveKey, "--json"},
		"inspect": {"inspect", "--nats", url, "--installation", inst},
	}
	// A follow keeps trying each read model (docs/operations.md,
	// "Follow"): each try must fail within the bound and say why, and
	// the follow, stopped, exit 1; or, failing to open the log, exit 1
	// at once.
	followed, _ := copyDB(t, sum.DBDir, inst)
	follow := exec.Command("replayer", "follow", "--nats", url, "--db-dir", filepath.Dir(followed), "--db-keys-beside", "--installation", inst)
	follow.Env = append(os.Environ(), envRootKeys+"="+testRingText)
	var followErr syncbuf.Buffer
	follow.Stderr = &followErr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followStart := time.Now()
	followDone := make(chan error, 1)
	go func() { followDone <- follow.Wait() }()
	defer func() {
		if follow.ProcessState == nil {
			follow.Process.Kill()
			<-followDone
		}
	}()
	copied, copiedKey := copyDB(t, sum.DBDir, inst)
	cmds["rebuild"] = []string{"rebuild", "--nats", url, "--installation", inst, "--db", copied, "--db-key-file", copiedKey, "--json"}
	var mu sync.Mutex
	var wg sync.WaitGroup
	okWithout := map[string]bool{}
	for name, args := range cmds {
		wg.Go(func() {
			// Far beyond the bound (the request timeout, 10 s, for
			// opening; the progress timeout, 60 s, for a read): a
			// command still running then waits without end.
			r := runReplayer(t, name, 4*time.Minute, args...)
			mu.Lock()
			defer mu.Unlock()
			t.Logf("%s without a quorum: exit %d after %v: %s", name, r.code, r.took.Round(time.Millisecond), strings.TrimSpace(r.stderr))
			// The node left may still lead the stream for a moment and
			// serve its reads: a command that reads what it asked for
			// may exit 0 (what it did is checked below).
			switch {
			case r.code == -1:
				t.Errorf("%s without a quorum still running after 4 minutes", name)
			case r.code == 0:
				okWithout[name] = true
			case r.code != exitFailure:
				t.Errorf("%s without a quorum: exit %d, want %d\nstdout: %s", name, r.code, exitFailure, r.out)
			case !strings.Contains(r.stderr+r.out, "majority of the cluster's nodes"):
				t.Errorf("%s without a quorum does not say what to check: %s", name, r.stderr)
			}
		})
	}
	wg.Wait()
	waitFor(t, 4*time.Minute, "the follow to say its read model failed, and why", func() bool {
		return strings.Contains(followErr.String(), "majority of the cluster's nodes")
	})
	t.Logf("follow without a quorum: its read model's first try failed, saying why, %v after it started", time.Since(followStart).Round(time.Millisecond))
	follow.Process.Signal(os.Interrupt)
	select {
	case <-followDone:
	case <-time.After(2 * time.Minute):
		t.Fatal("follow still running 2 minutes after an interrupt")
	}
	// Exit 1: failing at its start (opening the log), or stopped with its
	// read model failing. Or interrupted (130) when it had caught up
	// while the node left still led, then lost its consumer and went on
	// resuming it (saying why): its read model is at its checkpoint,
	// nothing failed. Never 0, nor any other code.
	switch code := follow.ProcessState.ExitCode(); {
	case code == exitFailure:
	case code == exitInterrupted && strings.Contains(followErr.String(), "follow lost its consumer"):
	default:
		t.Errorf("follow stopped without a quorum: exit %d, want %d (or %d having lost its consumer):\n%s", code, exitFailure, exitInterrupted, followErr.String())
	}

	nodes[1].Start()
	nodes[2].Start()
	c.WaitStreamCurrent("EPOCHLOG")
	c.WaitStreamCurrent("KV_EPOCHLOG_KEYS")
	t.Logf("exit 0 without a quorum (the node left still led): %v", okWithout)
	if okWithout["rebuild"] {
		// Before the rebuild below replaces it: exit 0 lost nothing.
		key, err := readDBKeyFile(liveKey)
		if err != nil {
			t.Fatal(err)
		}
		sameAsLive(t, "rebuilt without a quorum, exit 0", copied, live, key)
	}
	if r := runReplayer(t, "verify", 4*time.Minute, "verify", "--nats", c.URL(), "--installation", inst, "--db", live, "--db-key-file", liveKey, "--json"); r.code != 0 {
		t.Fatalf("verify once the quorum is back: exit %d: %s", r.code, r.stderr)
	}
	if r := runReplayer(t, "rebuild", 4*time.Minute, "rebuild", "--nats", c.URL(), "--installation", inst, "--db", copied, "--db-key-file", copiedKey, "--json"); r.code != 0 {
		t.Fatalf("rebuild once the quorum is back: exit %d: %s", r.code, r.stderr)
	}
	key, err := readDBKeyFile(liveKey)
	if err != nil {
		t.Fatal(err)
	}
	sameAsLive(t, "rebuilt once the quorum is back", copied, live, key)
}

// quorumWorld runs the demo on a 3-node process cluster, the stream at 3
// replicas, and returns the cluster and the demo's summary.
func quorumWorld(t *testing.T, installations, messages int) (*natstest.ProcessCluster, demoSummary) {
	t.Helper()
	c := natstest.StartProcessCluster(t, 3)
	var out, errb bytes.Buffer
	code := run(context.Background(), ringEnv(&out, &errb, nil), []string{"demo", "--nats", c.URL(), "--replicas", "3",
		"--data", t.TempDir(), "--installations", itoa(installations), "--messages", itoa(messages), "--seed", "7", "--json"})
	if code != 0 {
		t.Fatalf("demo: exit %d\n%s", code, errb.String())
	}
	var sum demoSummary
	if err := json.Unmarshal(out.Bytes(), &sum); err != nil {
		t.Fatalf("demo summary: %v\n%s", err, out.String())
	}
	return c, sum
}

func itoa(n int) string { return strconv.Itoa(n) }

type cliResult struct {
	name        string
	code        int
	took        time.Duration
	out, stderr string
}

// runReplayer runs replayer as a process with args, killing it after
// limit (code -1 then).
func runReplayer(t *testing.T, name string, limit time.Duration, args ...string) cliResult {
	ctx, cancel := context.WithTimeout(context.Background(), limit)
	defer cancel()
	cmd := exec.CommandContext(ctx, "replayer", args...)
	cmd.Env = append(os.Environ(), envRootKeys+"="+testRingText)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	start := time.Now()
	err := cmd.Run()
	r := cliResult{name: name, took: time.Since(start), out: out.String(), stderr: errb.String()}
	if ctx.Err() != nil {
		r.code = -1
	} else if ee, ok := err.(*exec.ExitError); ok {
		r.code = ee.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return r
}

// copyDB copies an installation's read model and key into a new directory.
func copyDB(t *testing.T, dbDir, inst string) (db, key string) {
	t.Helper()
	dir := t.TempDir()
	for _, ext := range []string{".db", ".key"} {
		b, err := os.ReadFile(filepath.Join(dbDir, inst+ext))
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(filepath.Join(dir, inst+ext), b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return filepath.Join(dir, inst+".db"), filepath.Join(dir, inst+".key")
}

// TestFollowAcrossQuorumLoss follows an installation's read model with
// replayer follow while a service fans messages out to its delivery
// queue in batches, and kills two of the cluster's three nodes in the
// middle of it, for less than the follow's progress timeout. Calls that
// fail are made again with the same keys once the nodes are back. In
// the end every message is in the queue exactly once, the follow's read
// model reaches the installation's last event and equals a rebuild, and
// verify passes: nothing returned as done was lost, nothing applied
// twice, nothing skipped.
func TestFollowAcrossQuorumLoss(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and kills cluster nodes")
	}
	t.Parallel() // waits on its own cluster and its commands' processes

	ctx := context.Background()
	c := natstest.StartProcessCluster(t, 3)
	ring, err := parseKeyring(testRingText)
	if err != nil {
		t.Fatal(err)
	}
	cfg := eventlog.Config{NATSURL: c.URL(), Replicas: 3, RequestTimeout: 2 * time.Second, ReconnectWait: 20 * time.Millisecond}
	l, err := eventlog.Open(ctx, cfg, ring)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	dir := t.TempDir()
	const inst = "alice"
	createInstallation(t, l, dir, inst)
	follow := exec.Command("replayer", "follow", "--nats", c.URL(), "--db-dir", dir, "--db-keys-beside", "--installation", inst)
	follow.Env = append(os.Environ(), envRootKeys+"="+testRingText)
	var followErr syncbuf.Buffer
	follow.Stderr = &followErr
	if err := follow.Start(); err != nil {
		t.Fatal(err)
	}
	followDone := make(chan error, 1)
	go func() { followDone <- follow.Wait() }()
	defer func() {
		if follow.ProcessState == nil {
			follow.Process.Kill()
			<-followDone
		}
		if t.Failed() {
			t.Logf("follow:\n%s", followErr.String())
		}
	}()

	// The follow is under way (its log open, its read model followed)
	// before the quorum goes: one that cannot open the log exits 1.
	waitFor(t, 2*time.Minute, "the follow to follow its read model", func() bool {
		return strings.Contains(followErr.String(), "following read model")
	})
	del := engine.NewDeliveries(l, nil)
	del.OutcomeTimeout = 3 * time.Second
	const batches, perBatch = 24, 20
	// fanOut fans batch b out until it is done (ErrOutcomeUnknown or any
	// failure: again, with the same keys), within a generous bound.
	done := map[string]bool{}
	fanOut := func(b int) (tries int) {
		items := make([]engine.FanOutItem, perBatch)
		for i := range items {
			key := fmt.Sprintf("b%d-%d", b, i)
			items[i] = engine.FanOutItem{Recipients: []events.InstallationID{inst}, Channel: "mls", Payload: []byte(key), IdempotencyKey: key}
		}
		deadline := time.Now().Add(3 * time.Minute)
		for {
			tries++
			if _, err := del.FanOutMany(ctx, items); err == nil {
				for _, it := range items {
					done[it.IdempotencyKey] = true
				}
				return tries
			} else if time.Now().After(deadline) {
				t.Fatalf("batch %d still failing after 3 minutes: %v", b, err)
			} else {
				t.Logf("batch %d, try %d: %v", b, tries, err)
				del = engine.NewDeliveries(l, nil) // reloads the queue
				del.OutcomeTimeout = 3 * time.Second
				time.Sleep(200 * time.Millisecond)
			}
		}
	}
	nodes := c.Nodes()
	for b := range batches {
		if b == batches/3 {
			nodes[1].Kill()
			nodes[2].Kill()
			t.Logf("killed node1, node2 before batch %d", b)
			go func() {
				time.Sleep(15 * time.Second)
				nodes[1].Start()
				nodes[2].Start()
			}()
		}
		fanOut(b)
	}
	c.WaitStreamCurrent("EPOCHLOG")

	// Every message once, in the queue as a fresh service loads it.
	ds, err := engine.NewDeliveries(l, nil).Fetch(ctx, inst, "mls", 0)
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]int{}
	for _, d := range ds {
		seen[d.IdempotencyKey]++
	}
	for key := range done {
		if seen[key] != 1 {
			t.Errorf("message %s in the queue %d times, want once", key, seen[key])
		}
	}
	if len(ds) != batches*perBatch {
		t.Errorf("%d messages in the queue, want %d", len(ds), batches*perBatch)
	}

	// The follow reaches the installation's last event.
	last, err := l.LastSeq(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	key, err := readDBKeyFile(filepath.Join(dir, inst+".key"))
	if err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(dir, inst+".db")
	waitFor(t, 3*time.Minute, "the follow to reach the installation's last event", func() bool {
		h, err := headAt(db, key)
		return err == nil && h >= last
	})
	follow.Process.Signal(os.Interrupt)
	select {
	case <-followDone:
	case <-time.After(2 * time.Minute):
		t.Fatal("follow still running 2 minutes after an interrupt")
	}
	if code := follow.ProcessState.ExitCode(); code != exitInterrupted {
		t.Errorf("follow: exit %d, want %d (every read model healthy)", code, exitInterrupted)
	}
	if r := runReplayer(t, "verify", 4*time.Minute, "verify", "--nats", c.URL(), "--installation", inst, "--db", db, "--db-key-file", filepath.Join(dir, inst+".key"), "--json"); r.code != 0 {
		t.Fatalf("verify of the followed read model: exit %d: %s", r.code, r.stderr)
	}
	fresh := filepath.Join(t.TempDir(), inst+".db")
	if r := runReplayer(t, "rebuild", 4*time.Minute, "rebuild", "--nats", c.URL(), "--installation", inst, "--db", fresh, "--db-key-file", filepath.Join(dir, inst+".key"), "--json"); r.code != 0 {
		t.Fatalf("rebuild: exit %d: %s", r.code, r.stderr)
	}
	sameAsLive(t, "a rebuild", fresh, db, key)
}

// sameAsLive fails the test unless the read model at path has the
// content and checkpoint of the one at live (both under key).
func sameAsLive(t *testing.T, what, path, live string, key projections.Key) {
	t.Helper()
	dl, cl := digestAt(t, live, key)
	if d, c := digestAt(t, path, key); !d.Equal(dl) || c != cl {
		t.Fatalf("%s: checkpoint %d, want %d, or other content", what, c, cl)
	}
}

// headAt is the checkpoint of the read model at path, read without a lock.
func headAt(path string, key projections.Key) (uint64, error) {
	db, err := projections.OpenExisting(path, key, nil)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	return db.Checkpoint(context.Background())
}

// TestCommandsAcrossMetaLeaderKill kills (SIGKILL) the JetStream meta
// group's leader of a 3-node cluster, the event stream led by another
// node, and runs the commands at once, while the two others elect a new
// meta leader (and new leaders for what the dead node led: the key
// bucket, perhaps). Each must do its work, waiting the elections out
// within its request timeout: exit 0, the rebuilt and rekeyed read
// models equal to the live one. The timeout is a minute
// (--request-timeout): on a loaded machine an election can outlast the
// 10 s default, and the command then fails (TestCommandsWithoutQuorum
// holds what it says).
func TestCommandsAcrossMetaLeaderKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and kills cluster nodes")
	}
	t.Parallel() // waits on its own cluster and its commands' processes

	c, sum := quorumWorld(t, 3, 12)
	inst := sum.Installations[0]
	live, liveKey := filepath.Join(sum.DBDir, inst+".db"), filepath.Join(sum.DBDir, inst+".key")
	meta := c.MetaLeader()
	for _, p := range c.Nodes() {
		if p != meta {
			c.StepDownStream("EPOCHLOG", p)
			break
		}
	}
	newKey := filepath.Join(t.TempDir(), "new.key")
	if _, err := writeDBKeyFile(newKey); err != nil {
		t.Fatal(err)
	}
	rebuilt, rebuiltKey := copyDB(t, sum.DBDir, inst)
	rekeyed, rekeyedKey := copyDB(t, sum.DBDir, inst)
	cmds := map[string][]string{
		"status":  {"status", "--nats", c.URL(), "--request-timeout", "1m", "--db", live, "--db-key-file", liveKey, "--json"},
		"verify":  {"verify", "--nats", c.URL(), "--request-timeout", "1m", "--installation", inst, "--db", live, "--db-key-file", liveKey, "--mls", "--json"},
		"inspect": {"inspect", "--nats", c.URL(), "--request-timeout", "1m", "--installation", inst},
		"rebuild": {"rebuild", "--nats", c.URL(), "--request-timeout", "1m", "--installation", inst, "--db", rebuilt, "--db-key-file", rebuiltKey, "--json"},
		"rekey":   {"rekey", "--nats", c.URL(), "--request-timeout", "1m", "--installation", inst, "--db", rekeyed, "--db-key-file", rekeyedKey, "--new-db-key-file", newKey, "--json"},
	}
	t.Logf("killing the meta leader %s (the stream's leader: %s)", meta.Name(), c.StreamLeader("EPOCHLOG").Name())
	meta.Kill()
	var mu sync.Mutex
	var wg sync.WaitGroup
	for name, args := range cmds {
		wg.Go(func() {
			r := runReplayer(t, name, 4*time.Minute, args...)
			mu.Lock()
			defer mu.Unlock()
			t.Logf("%s right after the meta leader's kill: exit %d after %v", name, r.code, r.took.Round(time.Millisecond))
			if r.code != 0 {
				t.Errorf("%s right after the meta leader's kill: exit %d: %s", name, r.code, r.stderr)
			}
		})
	}
	wg.Wait()
	key, err := readDBKeyFile(liveKey)
	if err != nil {
		t.Fatal(err)
	}
	nk, err := readDBKeyFile(newKey)
	if err != nil {
		t.Fatal(err)
	}
	dl, cl := digestAt(t, live, key)
	for _, db := range []struct {
		path string
		key  projections.Key
	}{{rebuilt, key}, {rekeyed, nk}} {
		if d, cp := digestAt(t, db.path, db.key); !d.Equal(dl) || cp != cl {
			t.Errorf("%s: checkpoint %d, want the live one's %d, or another content", db.path, cp, cl)
		}
	}
}
