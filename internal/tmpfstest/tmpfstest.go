// Package tmpfstest mounts small tmpfs file systems for tests that need a
// full disk (or no free inode) without filling a real one.
package tmpfstest

import (
	"errors"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// Mount mounts a tmpfs with options opts ("size=4m", "nr_inodes=4") on a
// fresh directory and unmounts it when the test ends. It skips the test
// where mounting is not allowed (not root, or without CAP_SYS_ADMIN).
func Mount(tb testing.TB, opts string) string {
	tb.Helper()
	dir := tb.TempDir()
	if err := mount(dir, opts+",mode=0700"); err != nil {
		tb.Skipf("cannot mount a tmpfs to fill (%v): needs Linux and root or CAP_SYS_ADMIN", err)
	}
	tb.Cleanup(func() {
		if err := unmount(dir); err != nil {
			tb.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// Fill writes a file in dir until the file system is full and returns
// its path: removing it makes room again.
func Fill(tb testing.TB, dir string) string {
	tb.Helper()
	path := filepath.Join(dir, "filler")
	f, err := os.Create(path)
	if err != nil {
		tb.Fatal(err)
	}
	defer f.Close()
	buf := make([]byte, 4096)
	for {
		if _, err := f.Write(buf); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				tb.Fatalf("fill %s: %v", dir, err)
			}
			return path
		}
	}
}
