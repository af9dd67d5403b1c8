package eventlog

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// One server per store: the embedded server locks its data directory, and
// a second Open of the same directory, in this process or another, is
// refused with ErrStoreLocked naming the holder.

// lockedOpen opens a Log on cfg, expects ErrStoreLocked, and returns the
// *StoreLockedError after checking the error contract.
func lockedOpen(t *testing.T, cfg Config) *StoreLockedError {
	t.Helper()
	start := time.Now()
	l, err := Open(context.Background(), cfg, keyring(t, 1, 0x11))
	if err == nil {
		l.Close()
		t.Fatalf("second Open of %s succeeded, want ErrStoreLocked", cfg.DataDir)
	}
	t.Logf("refused in %v: %v", time.Since(start).Round(time.Millisecond), err)
	// At once, not after waiting for the lock: a wait would be as long as
	// the holder lives (the test's). The bound is generous for a loaded CI.
	if d := time.Since(start); d > 30*time.Second {
		t.Errorf("refusal took %v, want it at once (no wait for the lock)", d)
	}
	if !errors.Is(err, ErrStoreLocked) || !errors.Is(fmt.Errorf("wrapped: %w", err), ErrStoreLocked) {
		t.Fatalf("error %v is not ErrStoreLocked", err)
	}
	var le *StoreLockedError
	if !errors.As(err, &le) {
		t.Fatalf("error %T is not a *StoreLockedError", err)
	}
	if le.Dir != cfg.DataDir || !strings.Contains(err.Error(), cfg.DataDir) {
		t.Errorf("error names directory %q (%v), want %q", le.Dir, err, cfg.DataDir)
	}
	if want := fmt.Sprintf("pid %d ", le.PID); le.PID == 0 || !strings.HasPrefix(le.Holder, want) || !strings.Contains(err.Error(), want) {
		t.Errorf("holder %q, pid %d: want the holder's pid in the error %q", le.Holder, le.PID, err)
	}
	return le
}

func TestStoreLockInProcess(t *testing.T) {
	for _, inProcess := range []bool{false, true} {
		t.Run(fmt.Sprintf("in-process=%v", inProcess), func(t *testing.T) {
			dir := t.TempDir()
			cfg := Config{DataDir: dir, EmbeddedInProcess: inProcess}
			l, err := Open(context.Background(), cfg, keyring(t, 1, 0x11))
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			mustAppend(t, l, 0, msg(group(instA, "g1"), 1, "before"))

			le := lockedOpen(t, cfg)
			if le.PID != os.Getpid() {
				t.Errorf("holder pid %d, want this process, %d", le.PID, os.Getpid())
			}
			if inProcess {
				if le.URL != "" || !le.InProcess || !strings.Contains(le.Error(), "in-process, not reachable from outside") {
					t.Errorf("in-process holder: URL %q, InProcess %v, error %q", le.URL, le.InProcess, le.Error())
				}
			} else {
				if le.URL == "" || le.URL != l.ClientURL() || le.InProcess || !strings.Contains(le.Error(), "--nats "+le.URL) {
					t.Errorf("holder URL %q (in-process %v), want %q and the hint --nats <url> in %q", le.URL, le.InProcess, l.ClientURL(), le.Error())
				}
			}
			// The same store through another path to it is the same lock.
			other := cfg
			other.DataDir = filepath.Join(dir, ".", "jetstream", "..")
			lockedOpen(t, other)

			// The lock file: 0600, the holder's line and where it serves.
			lf := filepath.Join(dir, lockFileName)
			fi, err := os.Stat(lf)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Perm() != 0o600 {
				t.Errorf("lock file mode %v, want 0600", fi.Mode().Perm())
			}
			b, err := os.ReadFile(lf)
			if err != nil {
				t.Fatal(err)
			}
			lines := strings.Split(strings.TrimSuffix(string(b), "\n"), "\n")
			if len(lines) != 2 || !strings.HasPrefix(lines[0], fmt.Sprintf("pid %d %s since ", os.Getpid(), filepath.Base(os.Args[0]))) || !strings.Contains(lines[0], " host ") {
				t.Errorf("lock file holds %q", b)
			}

			// Closed, the store opens again at once, with its events.
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
			l2 := openLog(t, cfg, keyring(t, 1, 0x11))
			if recs := readAll(t, l2, instA, 0); len(recs) != 1 || content(recs[0].Event) != "before" {
				t.Fatalf("after reopening: %d records", len(recs))
			}
		})
	}
}

// Open fails after the embedded server has started (here: a keyring the
// stream was not created under); the lock goes with the server.
func TestStoreLockReleasedWhenOpenFails(t *testing.T) {
	dir := t.TempDir()
	cfg := Config{DataDir: dir, EmbeddedInProcess: true}
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "g1"), 1, "kept"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(context.Background(), cfg, keyring(t, 1, 0x77)); !errors.Is(err, ErrKeyringMismatch) {
		t.Fatalf("Open with another keyring: %v, want ErrKeyringMismatch", err)
	}
	l = openLog(t, cfg, keyring(t, 1, 0x11))
	if recs := readAll(t, l, instA, 0); len(recs) != 1 {
		t.Fatalf("read %d records, want 1", len(recs))
	}
}

// A Log of this process being closed releases its lock just after its
// server has shut down, on another goroutine: an Open meanwhile waits for
// it instead of failing, while a holder whose server runs is refused at
// once.
func TestStoreLockWaitsForClosingHolder(t *testing.T) {
	dir := t.TempDir()
	lk, err := lockStore(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer lk.release()
	if _, err := lockStore(dir); !errors.Is(err, ErrStoreLocked) {
		t.Fatalf("lock held by a starting server: %v, want ErrStoreLocked", err)
	}
	// A server that is not running, as after Shutdown.
	srv, err := server.NewServer(&server.Options{DontListen: true, NoLog: true, NoSigs: true})
	if err != nil {
		t.Fatal(err)
	}
	lk.srv.Store(srv)
	got := make(chan error, 1)
	go func() {
		lk2, err := lockStore(dir)
		if err == nil {
			lk2.release()
		}
		got <- err
	}()
	select {
	case err := <-got:
		t.Fatalf("lockStore returned (%v) while the closing holder still held the lock", err)
	case <-time.After(200 * time.Millisecond):
	}
	lk.release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("after the holder released: %v", err)
		}
	case <-time.After(time.Minute):
		t.Fatal("lockStore still waiting a minute after the holder released")
	}
	// Released, the file describes no holder.
	if b, err := os.ReadFile(filepath.Join(dir, lockFileName)); err != nil || len(b) != 0 {
		t.Errorf("released lock file holds %q (%v), want it empty", b, err)
	}
}

// The lock file is written and truncated: never through a symbolic link.
func TestStoreLockRefusesSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(t.TempDir(), "precious")
	if err := os.WriteFile(target, []byte("keep me\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Symlink(target, filepath.Join(dir, lockFileName)); err != nil {
		t.Fatal(err)
	}
	l, err := Open(context.Background(), Config{DataDir: dir, EmbeddedInProcess: true}, keyring(t, 1, 0x11))
	if err == nil {
		l.Close()
		t.Fatal("Open through a symbolic link as lock file succeeded")
	}
	t.Logf("refused: %v", err)
	if b, _ := os.ReadFile(target); string(b) != "keep me\n" {
		t.Fatalf("the link's target now holds %q", b)
	}
}

// lockHolderEnv, when set to a data directory, makes
// TestStoreLockHolderProcess the child of TestStoreLockAcrossProcesses.
const lockHolderEnv = "EPOCHLOG_TEST_LOCK_HOLDER"

// TestStoreLockHolderProcess is not a test of its own: run as a child
// process, it opens the log on a data directory, appends the aggregate's
// second event, prints "ready <client URL>" and holds the store until it
// is killed (or its stdin closes).
func TestStoreLockHolderProcess(t *testing.T) {
	dir := os.Getenv(lockHolderEnv)
	if dir == "" {
		t.Skip("child process of TestStoreLockAcrossProcesses")
	}
	l := openLog(t, Config{DataDir: dir}, keyring(t, 1, 0x11))
	mustAppend(t, l, 1, msg(group(instA, "g1"), 2, "by the child"))
	fmt.Printf("ready %s\n", l.ClientURL())
	_, _ = io.Copy(io.Discard, os.Stdin)
}

func TestStoreLockAcrossProcesses(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a child process")
	}
	dir := t.TempDir()
	cfg := Config{DataDir: dir}
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "g1"), 1, "by the parent"))
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}

	// The child: this test binary again, running only the holder.
	cmd := exec.Command(os.Args[0], "-test.run=^TestStoreLockHolderProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), lockHolderEnv+"="+dir)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	killed := false
	defer func() {
		if !killed {
			_ = cmd.Process.Kill()
			_ = cmd.Wait()
		}
	}()
	ready := make(chan string, 1)
	var out strings.Builder
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if url, ok := strings.CutPrefix(sc.Text(), "ready "); ok {
				ready <- url
			}
			out.WriteString(sc.Text() + "\n")
		}
		close(ready)
	}()
	var url string
	select {
	case u, ok := <-ready:
		if !ok {
			_ = cmd.Wait()
			t.Fatalf("child exited before ready:\n%s%s", out.String(), stderr.String())
		}
		url = u
	case <-time.After(2 * time.Minute):
		t.Fatalf("child not ready after 2m:\n%s", stderr.String())
	}

	// Refused at once, naming the child and where it serves the store.
	le := lockedOpen(t, cfg)
	if le.PID != cmd.Process.Pid || le.URL != url {
		t.Fatalf("holder pid %d at %q, want the child: pid %d at %q", le.PID, le.URL, cmd.Process.Pid, url)
	}
	// The hint works: connected to the child's server, the store's
	// events are there, the child's included.
	remote := openLog(t, Config{NATSURL: le.URL}, keyring(t, 1, 0x11))
	if recs := readAll(t, remote, instA, 0); len(recs) != 2 {
		t.Fatalf("through the holder's server: %d records, want 2", len(recs))
	}
	remote.Close()

	// The holder crashes: the kernel releases its lock, and the store,
	// opened again, still holds both events.
	if err := cmd.Process.Kill(); err != nil { // SIGKILL
		t.Fatal(err)
	}
	_ = cmd.Wait()
	killed = true
	_ = stdin.Close()
	l = openLog(t, cfg, keyring(t, 1, 0x11))
	recs := readAll(t, l, instA, 0)
	if len(recs) != 2 || content(recs[0].Event) != "by the parent" || content(recs[1].Event) != "by the child" {
		t.Fatalf("after the holder was killed: %d records, want the parent's and the child's", len(recs))
	}
}

// The embedded server switches JetStream off when its store fails (a full
// disk): an append then goes unanswered, and its error says why and where
// instead of only that no answer came.
func TestAppendSaysTheEmbeddedStoreIsOff(t *testing.T) {
	dir := t.TempDir()
	l, err := Open(context.Background(), Config{DataDir: dir, EmbeddedInProcess: true, RequestTimeout: time.Second}, keyring(t, 1, 0x11))
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	agg := group(instA, "full")
	mustAppend(t, l, 0, msg(agg, 1, "before"))
	if err := l.srv.DisableJetStream(); err != nil {
		t.Fatal(err)
	}
	_, err = l.Append(context.Background(), 1, msg(agg, 2, "after"))
	if err == nil || !strings.Contains(err.Error(), "switched JetStream off") || !strings.Contains(err.Error(), filepath.Join(dir, "jetstream")) {
		t.Fatalf("append with JetStream off: %v, want it to say so and name the store", err)
	}
}

// An embedded server given a port in use says so at once (ErrListenAddr,
// naming the port) instead of waiting out its start timeout with an error
// that names nothing; its data directory is free again after.
func TestEmbeddedListenPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	dir := t.TempDir()
	_, err = Open(context.Background(), Config{DataDir: dir, ListenPort: port}, keyring(t, 1, 0x11))
	if !errors.Is(err, ErrListenAddr) {
		t.Fatalf("Open on a port in use: %v, want ErrListenAddr", err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("port %d", port)) {
		t.Fatalf("the error does not name port %d: %v", port, err)
	}
	l := openLog(t, Config{DataDir: dir}, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "g1"), 1, "on another port"))
}
