package projections

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// envLockHelper tells TestLockHelperProcess, run in a child process, which
// database to lock.
const envLockHelper = "EPOCHLOG_TEST_LOCK_HELPER_PATH"

func mustLock(t *testing.T, path, holder string) *WriterLock {
	t.Helper()
	l, err := LockAs(path, holder)
	if err != nil {
		t.Fatalf("LockAs(%s): %v", path, err)
	}
	t.Cleanup(func() { l.Unlock() })
	return l
}

// wantLocked checks the error contract of a refused lock: a *FileError
// about the database's absolute path, wrapping ErrLocked, naming the
// holder and giving a hint.
func wantLocked(t *testing.T, err error, path string, holderParts ...string) {
	t.Helper()
	if err == nil {
		t.Fatal("second lock succeeded, want ErrLocked")
	}
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want errors.Is(err, ErrLocked)", err)
	}
	var fe *FileError
	if !errors.As(err, &fe) {
		t.Fatalf("err = %T, want *FileError", err)
	}
	abs, _ := filepath.Abs(path)
	if fe.Path != abs || fe.Op != "lock" {
		t.Errorf("FileError{Path: %q, Op: %q}, want {%q, \"lock\"}", fe.Path, fe.Op, abs)
	}
	msg := err.Error()
	for _, s := range append([]string{abs, "locked by pid ", "stop that writer first"}, holderParts...) {
		if !strings.Contains(msg, s) {
			t.Errorf("error %q does not contain %q", msg, s)
		}
	}
}

func TestLockSameProcess(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	l := mustLock(t, path, "replayer follow")

	_, err := LockAs(path, "replayer rebuild")
	wantLocked(t, err, path, fmt.Sprintf("pid %d replayer follow since ", os.Getpid()), " host ")
	if _, err := Lock(path); !errors.Is(err, ErrLocked) {
		t.Fatalf("Lock: %v, want ErrLocked", err)
	}

	// A refused locker leaves the holder's description alone.
	b, err := os.ReadFile(path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(b), "replayer follow") {
		t.Fatalf("lock file = %q after a refused lock, want the holder's description", b)
	}

	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	if err := l.Unlock(); err != nil {
		t.Fatalf("second Unlock: %v", err)
	}
	l2 := mustLock(t, path, "replayer rebuild")
	_, err = LockAs(path, "x")
	wantLocked(t, err, path, "replayer rebuild")
	if err := l2.Unlock(); err != nil {
		t.Fatal(err)
	}
}

func TestLockFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	l := mustLock(t, path, "replayer follow")
	st, err := os.Stat(path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Errorf("lock file mode %v, want 0600", st.Mode().Perm())
	}
	if _, err := os.Stat(path); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lock created the database: %v", err)
	}
	b, err := os.ReadFile(path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("pid %d replayer follow since ", os.Getpid())
	if !strings.HasPrefix(string(b), want) || !strings.HasSuffix(string(b), "\n") || strings.Count(string(b), "\n") != 1 {
		t.Errorf("lock file = %q, want one line starting %q", b, want)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
	// Unlock empties the lock file and never deletes it.
	b, err = os.ReadFile(path + ".lock")
	if err != nil {
		t.Fatalf("lock file after Unlock: %v", err)
	}
	if len(b) != 0 {
		t.Errorf("lock file after Unlock = %q, want empty", b)
	}
	var nilLock *WriterLock
	if err := nilLock.Unlock(); err != nil {
		t.Errorf("nil Unlock: %v", err)
	}
}

// A WriterLock dropped without Unlock stays held: no finalizer releases
// it behind its holder's back.
func TestLockDroppedStaysHeld(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	if _, err := LockAs(path, "dropped"); err != nil {
		t.Fatal(err)
	}
	runtime.GC()
	runtime.GC()
	_, err := LockAs(path, "second")
	wantLocked(t, err, path, "dropped")
}

// The lock is on a name of its own, so a rebuild's rename of a new
// database over the live one leaves it in force.
func TestLockSurvivesSwap(t *testing.T) {
	dir := t.TempDir()
	live := filepath.Join(dir, "a.db")
	if err := os.WriteFile(live, []byte("old"), 0o600); err != nil {
		t.Fatal(err)
	}
	mustLock(t, live, "replayer rebuild")
	tmp := filepath.Join(dir, "a.db.rebuild-1")
	if err := os.WriteFile(tmp, []byte("new"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, live); err != nil {
		t.Fatal(err)
	}
	_, err := LockAs(live, "replayer follow")
	wantLocked(t, err, live, "replayer rebuild")
}

func TestLockRelativePath(t *testing.T) {
	t.Chdir(t.TempDir())
	mustLock(t, "a.db", "first")
	_, err := LockAs("./a.db", "second")
	wantLocked(t, err, "a.db", "first")
	_, err = LockAs("sub/../a.db", "second")
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("sub/../a.db: %v, want ErrLocked", err)
	}
	// A different database has a lock of its own.
	mustLock(t, "b.db", "other")
}

func TestLockMissingDirectory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "missing")
	path := filepath.Join(dir, "a.db")
	_, err := Lock(path)
	if err == nil {
		t.Fatal("Lock in a missing directory succeeded")
	}
	if errors.Is(err, ErrLocked) {
		t.Fatalf("err = %v, want not ErrLocked", err)
	}
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("err = %v, want errors.Is(err, fs.ErrNotExist)", err)
	}
	var fe *FileError
	if !errors.As(err, &fe) || fe.Path != path {
		t.Fatalf("err = %#v, want *FileError about %s", err, path)
	}
	if !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "directory must exist") {
		t.Errorf("error %q should name %s and say the directory must exist", err, path)
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("Lock created the directory: %v", err)
	}
	if _, err := Lock(""); err == nil || errors.Is(err, ErrLocked) {
		t.Errorf("Lock(\"\") = %v, want an error", err)
	}
}

func TestLockRefusesSymlinkedLockFile(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "precious")
	if err := os.WriteFile(target, []byte("keep me"), 0o600); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "a.db")
	if err := os.Symlink(target, path+".lock"); err != nil {
		t.Skipf("symlink: %v", err)
	}
	if _, err := Lock(path); err == nil || errors.Is(err, ErrLocked) {
		t.Fatalf("Lock through a symlinked lock file = %v, want an error", err)
	}
	if b, _ := os.ReadFile(target); string(b) != "keep me" {
		t.Fatalf("symlink target overwritten: %q", b)
	}
}

// A stale description (left by a crash, or garbage) is overwritten by the
// next holder, and a hostile one is sanitised when read.
func TestLockHolderDescription(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	if err := os.WriteFile(path+".lock", []byte("pid 1 dead writer since long ago and a much longer line than ours\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l := mustLock(t, path, "two\nlines\x1b[31m")
	b, err := os.ReadFile(path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(b), "dead writer") || strings.Count(string(b), "\n") != 1 || bytes.ContainsRune(b, 0x1b) {
		t.Fatalf("lock file = %q, want our one sanitised line only", b)
	}
	_, err = Lock(path)
	wantLocked(t, err, path, "two?lines?[31m")
	l.Unlock()

	cases := []struct {
		args []string
		want string
	}{
		{[]string{"/usr/local/bin/replayer", "follow"}, "replayer follow"},
		{[]string{"replayer", "rebuild", "-db", "x.db"}, "replayer rebuild"},
		{[]string{"replayer", "-passphrase=hunter2", "follow"}, "replayer"},
		{[]string{"replayer", "/var/lib/secret.key"}, "replayer"},
		{[]string{"replayer", "00112233445566778899aabbccddeeff"}, "replayer"},
		{[]string{"replayer"}, "replayer"},
		{nil, "unknown program"},
	}
	for _, c := range cases {
		if got := programName(c.args); got != c.want {
			t.Errorf("programName(%q) = %q, want %q", c.args, got, c.want)
		}
	}
}

// TestLockAcrossProcesses locks from a child process (this test binary
// re-executed), checks that the parent is refused with the child's pid,
// then kills the child: the kernel releases its lock.
func TestLockAcrossProcesses(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	cmd := exec.Command(os.Args[0], "-test.run=^TestLockHelperProcess$", "-test.count=1")
	cmd.Env = append(os.Environ(), envLockHelper+"="+path)
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	// The child exits when its stdin closes, so it never outlives us.
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
	t.Cleanup(func() {
		if !killed {
			cmd.Process.Kill()
			cmd.Wait()
		}
		stdin.Close()
	})

	locked := make(chan error, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if sc.Text() == "locked" {
				locked <- nil
				io.Copy(io.Discard, stdout)
				return
			}
		}
		locked <- fmt.Errorf("child's stdout ended before \"locked\" (scan error: %v)", sc.Err())
	}()
	select {
	case err := <-locked:
		if err != nil {
			t.Fatalf("%v; child stderr:\n%s", err, stderr.String())
		}
	case <-time.After(30 * time.Second):
		t.Fatal("child did not lock within 30s")
	}

	pid := cmd.Process.Pid
	_, err = LockAs(path, "parent")
	wantLocked(t, err, path, fmt.Sprintf("pid %d lock-helper since ", pid))

	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	cmd.Wait() // reaped: its descriptors are closed
	killed = true

	l := mustLock(t, path, "parent")
	b, err := os.ReadFile(path + ".lock")
	if err != nil {
		t.Fatal(err)
	}
	if want := fmt.Sprintf("pid %d parent since ", os.Getpid()); !strings.HasPrefix(string(b), want) {
		t.Fatalf("lock file = %q after the holder died, want it to start %q", b, want)
	}
	if err := l.Unlock(); err != nil {
		t.Fatal(err)
	}
}

// TestLockHelperProcess is not a test: TestLockAcrossProcesses runs it in
// a child process, where it locks the database named by $envLockHelper,
// prints "locked" and holds the lock until killed or until its stdin
// closes.
func TestLockHelperProcess(t *testing.T) {
	path := os.Getenv(envLockHelper)
	if path == "" {
		t.Skip("helper process for TestLockAcrossProcesses")
	}
	if _, err := LockAs(path, "lock-helper"); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	fmt.Println("locked")
	io.Copy(io.Discard, os.Stdin)
	os.Exit(0)
}
