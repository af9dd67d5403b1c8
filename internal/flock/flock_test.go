//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package flock

import (
	"os"
	"path/filepath"
	"testing"
)

// Two opens of one file are two open file descriptions: their locks
// conflict as two processes' would.
func TestLockConflictsAcrossOpenFiles(t *testing.T) {
	name := filepath.Join(t.TempDir(), "lock")
	open := func() *os.File {
		f, err := os.OpenFile(name, os.O_RDWR|os.O_CREATE|NoFollow, 0o600)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { f.Close() })
		return f
	}
	try := func(f *os.File, exclusive bool) bool {
		t.Helper()
		ok, err := Lock(f.Fd(), exclusive, false)
		if err != nil {
			t.Fatal(err)
		}
		return ok
	}
	a, b, c := open(), open(), open()
	if !try(a, false) || !try(b, false) {
		t.Fatal("two shared locks conflict")
	}
	if try(c, true) {
		t.Fatal("an exclusive lock was taken beside two shared ones")
	}
	a.Close()
	b.Close()
	if !try(c, true) {
		t.Fatal("closing the holders did not release their locks")
	}
	d := open()
	if try(d, false) {
		t.Fatal("a shared lock was taken beside an exclusive one")
	}
	if ok, err := Lock(c.Fd(), true, true); err != nil || !ok {
		t.Fatalf("waiting for a lock the same file holds: %v, %v", ok, err)
	}
	link := filepath.Join(t.TempDir(), "link")
	if err := os.Symlink(name, link); err != nil {
		t.Fatal(err)
	}
	if f, err := os.OpenFile(link, os.O_RDWR|NoFollow, 0); err == nil {
		f.Close()
		t.Fatal("NoFollow opened a symbolic link")
	}
}
