//go:build linux

package projections

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// makeDirReadOnly makes dir unwritable for this process: by mode, or for
// root (whom modes do not stop) by the immutable attribute.
func makeDirReadOnly(t *testing.T, dir string) {
	t.Helper()
	if os.Geteuid() != 0 {
		if err := os.Chmod(dir, 0o500); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Chmod(dir, 0o700) })
		return
	}
	if out, err := exec.Command("chattr", "+i", dir).CombinedOutput(); err != nil {
		t.Skipf("cannot make %s read-only as root here (chattr +i: %v %s)", dir, err, out)
	}
	t.Cleanup(func() { exec.Command("chattr", "-i", dir).Run() })
}

// A read model in a directory that cannot be written (a backup on a
// read-only mount) opens as it is, for reading: SQLite would have to
// create its -wal and -shm beside it, so it is opened immutable, which is
// safe only because without a -wal nothing has it open and nothing can
// open it to write. Reads see every row; writes fail and change nothing.
// Open to migrate still says why it cannot.
func TestOpenInAReadOnlyDirectoryReads(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	k := newKey(t)
	recs := sampleStream(t, "inst-a", 2, 10)
	db := mustOpen(t, path, k, nil)
	applyAll(t, db, recs)
	want, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db.Close()
	makeDirReadOnly(t, dir)

	if _, err := Open(path, k, nil); err == nil || !strings.Contains(err.Error(), "directory "+dir+" cannot be written") {
		t.Fatalf("open to migrate in a read-only directory: %v, want it to name the directory", err)
	}
	ro, err := OpenExisting(path, k, nil)
	if err != nil {
		t.Fatalf("open as it is in a read-only directory: %v", err)
	}
	defer ro.Close()
	if !ro.ReadOnly() {
		t.Fatal("ReadOnly() = false for a file opened for reading only")
	}
	if cp, err := ro.Checkpoint(ctx); err != nil || cp != lastSeq(recs) {
		t.Fatalf("checkpoint %d (%v), want %d", cp, err, lastSeq(recs))
	}
	if got, err := ro.Digest(ctx); err != nil || !got.Equal(want) {
		t.Fatalf("digest of the read-only copy differs (%v)", err)
	}
	more := sampleStream(t, "inst-a", 2, 11)
	if err := ro.Apply(ctx, more[len(more)-1:]); err == nil || !strings.Contains(err.Error(), "for reading only") {
		t.Fatalf("apply to a read-only copy: %v, want a read-only refusal", err)
	}
	if cp, _ := ro.Checkpoint(ctx); cp != lastSeq(recs) {
		t.Fatalf("checkpoint %d after a refused write, want %d", cp, lastSeq(recs))
	}
	if err := ro.Close(); err != nil {
		t.Fatalf("close: %v", err)
	}
	ents, _ := os.ReadDir(dir)
	if len(ents) != 1 {
		t.Fatalf("the directory holds %d entries after a read, want the file alone", len(ents))
	}
}

// With a -wal beside it (a copy of a file that was open, or a process
// killed), the file's last transactions are in the -wal, which an
// immutable open would ignore: it is refused, naming the directory.
func TestOpenInAReadOnlyDirectoryWithAWALSaysWhy(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "a.db")
	k := newKey(t)
	mustOpen(t, path, k, nil).Close()
	if err := os.WriteFile(path+"-wal", nil, 0o600); err != nil {
		t.Fatal(err)
	}
	makeDirReadOnly(t, dir)
	for _, o := range []*Options{{NoMigrate: true}, nil} {
		_, err := Open(path, k, o)
		if err == nil || !strings.Contains(err.Error(), "directory "+dir+" cannot be written") {
			t.Fatalf("open in a read-only directory: %v, want it to name the directory", err)
		}
	}
}
