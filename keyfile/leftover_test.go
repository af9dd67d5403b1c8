//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package keyfile

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"

	"github.com/epochlog/epochlog/internal/childproc"
)

// envCrashChild names the key file TestCrashBetweenWriteAndRenameChild
// writes, in the child process the parent test starts and kills.
const envCrashChild = "EPOCHLOG_KEYFILE_CRASH_CHILD"

// TestCrashBetweenWriteAndRenameChild is the child of
// TestCrashLeftoverRemoved: it saves a key file and is killed (SIGKILL)
// between writing the temporary file and renaming it. It does nothing
// when run alone.
func TestCrashBetweenWriteAndRenameChild(t *testing.T) {
	path := os.Getenv(envCrashChild)
	if path == "" {
		t.Skip("run by TestCrashLeftoverRemoved")
	}
	afterTempWritten = func(string) { syscall.Kill(os.Getpid(), syscall.SIGKILL) }
	SaveDBKey(path, bytes.Repeat([]byte{0x42}, 32))
	t.Fatal("not killed between writing and renaming")
}

// leftovers lists the temporary files of path's name beside it.
func leftovers(t *testing.T, path string) []string {
	t.Helper()
	m, err := filepath.Glob(path + tempSuffix + "*")
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// captureWarnings sends slog's default logger to a buffer for the test.
func captureWarnings(t *testing.T) *bytes.Buffer {
	var b bytes.Buffer
	old := slog.Default()
	slog.SetDefault(slog.New(slog.NewTextHandler(&b, nil)))
	t.Cleanup(func() { slog.SetDefault(old) })
	return &b
}

// TestCrashLeftoverRemoved: a process killed between writing a key file's
// temporary file and renaming it leaves that file (a full key) beside the
// key file; the next write removes it with a warning naming it (a read
// does not look). A temporary file a live writer holds is left alone.
func TestCrashLeftoverRemoved(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db.key")
	if _, err := NewDBKeyFile(path); err != nil {
		t.Fatal(err)
	}
	crash := func() string {
		t.Helper()
		child := childproc.Start(t, "TestCrashBetweenWriteAndRenameChild", []string{envCrashChild + "=" + path})
		if err := child.Wait(); !child.Killed() {
			t.Fatalf("the child was not killed between write and rename: %v\n%s", err, child.Output())
		}
		left := leftovers(t, path)
		if len(left) != 1 {
			t.Fatalf("after the crash: temporary files %v, want one", left)
		}
		return left[0]
	}
	warnings := captureWarnings(t)

	// A write removes it (a read leaves it: reads do not list the
	// directory).
	left := crash()
	if _, err := LoadDBKey(path); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, path); len(l) != 1 {
		t.Fatalf("after a read: temporary files %v, want the leftover still there", l)
	}
	if _, err := NewDBKeyFile(path); err != nil {
		t.Fatal(err)
	}
	if l := leftovers(t, path); len(l) != 0 {
		t.Fatalf("after a write: temporary files %v remain", l)
	}
	if !strings.Contains(warnings.String(), left) {
		t.Fatalf("no warning names the leftover %s removed: %q", left, warnings.String())
	}

	// A temporary file a writer is still writing (it holds the lock) stays,
	// and so do files that only look alike.
	busy, err := writeTemp(path, []byte("in progress"))
	if err != nil {
		t.Fatal(err)
	}
	defer busy.Close()
	others := []string{path + tempSuffix + "x1", filepath.Join(dir, "other.key"+tempSuffix+"1")}
	for _, o := range others {
		if err := os.WriteFile(o, nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := NewDBKeyFile(path); err != nil {
		t.Fatal(err)
	}
	for _, keep := range append(others, busy.Name()) {
		if _, err := os.Stat(keep); err != nil {
			t.Fatalf("%s removed: %v", keep, err)
		}
	}
}

// TestConcurrentWritesAndReadsKeepTheirTemporaryFiles: readers and
// writers of one key file racing never take a write in progress for a
// crash's leftover: every save and load succeeds, and nothing is left.
func TestConcurrentWritesAndReadsKeepTheirTemporaryFiles(t *testing.T) {
	path := filepath.Join(t.TempDir(), "db.key")
	if _, err := NewDBKeyFile(path); err != nil {
		t.Fatal(err)
	}
	captureWarnings(t)
	errs := make(chan error, 8*50)
	var wg sync.WaitGroup
	for w := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 50 {
				var err error
				if w%2 == 0 {
					_, err = NewDBKeyFile(path)
				} else {
					_, err = LoadDBKey(path)
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if l := leftovers(t, path); len(l) != 0 {
		t.Fatalf("temporary files left: %v", l)
	}
}
