//go:build linux

package projections

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// A read model in a directory that cannot be written does not open (SQLite
// must create its -wal and -shm beside it, even to read), and the error
// says that, not SQLite's "no such file or directory" of a file that is
// there.
func TestOpenInAReadOnlyDirectorySaysWhy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	k := newKey(t)
	mustOpen(t, path, k, nil).Close()
	// Read-only for this process: by mode, or for root (whom modes do not
	// stop) by the immutable attribute.
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
	} else {
		if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
			t.Skipf("cannot make %s read-only as root here (chattr +i: %v %s)", dir, err, out)
		}
		t.Cleanup(func() { exec.Command("chattr", "-i", dir).Run() })
	}
	for _, o := range []*Options{{NoMigrate: true}, nil} {
		_, err := Open(path, k, o)
		if err == nil || !strings.Contains(err.Error(), "directory "+dir+" cannot be written") {
			t.Fatalf("open in a read-only directory: %v, want it to name the directory", err)
		}
	}
}
