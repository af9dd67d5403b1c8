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

// A live read model reached by another name in an unwritable directory (a
// symbolic link, a hard link) is not taken for a read-only copy: its -wal
// is beside its real name, and an immutable open would ignore it and read
// stale rows. Through a link, the real file's directory and -wal decide;
// a file with another name is never opened so. Until later on 2026-12-06
// the name given decided.
func TestReadOnlyDirectoryNameOfALiveFileIsNotACopy(t *testing.T) {
	for _, how := range []string{"symlink", "hard link"} {
		t.Run(how, func(t *testing.T) { liveFileByAnotherName(t, how) })
	}
}

func liveFileByAnotherName(t *testing.T, how string) {
	liveDir := t.TempDir()
	live := filepath.Join(liveDir, "a.db")
	k := newKey(t)
	recs := sampleStream(t, "inst-a", 2, 10)
	w := mustOpen(t, live, k, nil)
	defer w.Close()
	applyAll(t, w, recs[:len(recs)/2])
	w.Close()
	w = mustOpen(t, live, k, nil) // the live writer, open: its last transactions sit in the -wal
	applyAll(t, w, recs[len(recs)/2:])
	wantCP, _ := w.Checkpoint(ctx)
	if st, err := os.Stat(live + "-wal"); err != nil || st.Size() == 0 {
		t.Skipf("no non-empty -wal beside the live file (%v)", err)
	}

	roDir := t.TempDir()
	link := filepath.Join(roDir, "a.db")
	link_ := os.Symlink
	if how == "hard link" {
		link_ = os.Link
	}
	if err := link_(live, link); err != nil {
		t.Fatal(err)
	}
	makeDirReadOnly(t, roDir)
	ro, err := OpenExisting(link, k, nil)
	if err != nil {
		// Refused (a hard link's directory cannot hold SQLite's files):
		// what mattered is that it is not read as a copy.
		if how == "hard link" {
			return
		}
		t.Fatalf("open through the symlink: %v", err)
	}
	defer ro.Close()
	cp, err := ro.Checkpoint(ctx)
	if ro.ReadOnly() || err != nil || cp != wantCP {
		t.Fatalf("a live read model by a %s in an unwritable directory: read-only copy %v, checkpoint %d (%v), the file's is %d", how, ro.ReadOnly(), cp, err, wantCP)
	}
}
