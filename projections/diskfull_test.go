package projections

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"

	"github.com/epochlog/epochlog/internal/tmpfstest"
)

// A read model closed on a full disk cannot checkpoint its WAL into the
// file. Close says so, naming the file (until 2026-12-06 it returned nil
// and left the -wal, and a rebuild then failed in Swap with "still has a
// write-ahead log: close it before swapping ... rebuild again", which
// failed the same way); a reader's Close does not fail on it; the next
// open, once there is room, applies the WAL and has every committed
// transaction.
func TestCloseOnFullDiskSaysSo(t *testing.T) {
	dir := tmpfstest.Mount(t, "size=4m")
	path := filepath.Join(dir, "full.db")
	k := newKey(t)
	// One large batch: few commits, so no background checkpoint runs and
	// the WAL holds the pages.
	db := mustOpen(t, path, k, &Options{BatchSize: 100000})
	recs := mlsSizedStream(t, "inst-a", 4, 150)
	applyAll(t, db, recs)
	want, err := db.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path + "-wal"); err != nil || fi.Size() < 64<<10 {
		t.Fatalf("the WAL holds too little to need room when checkpointed: %v", err)
	}
	filler := tmpfstest.Fill(t, dir)

	err = db.Close()
	var fe *FileError
	if !errors.As(err, &fe) || fe.Path != path || fe.Op != "close" || !strings.Contains(err.Error(), "full") {
		t.Fatalf("Close on a full disk: %v; want a FileError naming %s and the full disk", err, path)
	}
	// A reader (opened as it is, nothing applied) is not failed by the
	// -wal the writer left: it is not its to checkpoint.
	ro, err := OpenExisting(path, k, nil)
	if err != nil {
		t.Fatalf("open as it is on the full disk: %v", err)
	}
	if err := ro.Close(); err != nil {
		t.Fatalf("Close of a reader on the full disk: %v", err)
	}
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	db = mustOpen(t, path, k, nil)
	got, err := db.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if !got.Equal(want) {
		t.Fatalf("reopened after room was made: digest %v, want %v", got, want)
	}
	if err := db.Close(); err != nil {
		t.Fatalf("Close with room: %v", err)
	}
	if _, err := os.Stat(path + "-wal"); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a -wal is left after Close with room: %v", err)
	}
}

// Out of inodes, SQLite fails to create the -wal or -shm with "unable to
// open database file: no such file or directory". Open says what ran out
// (ENOSPC, no free inode), naming the directory; the file opens once
// inodes are free.
func TestOpenOutOfInodesSaysSo(t *testing.T) {
	// The root directory, the database and two spare files.
	dir := tmpfstest.Mount(t, "size=4m,nr_inodes=4")
	path := filepath.Join(dir, "inodes.db")
	k := newKey(t)
	db := mustOpen(t, path, k, nil)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	var spares []string
	for {
		spare := filepath.Join(dir, "spare"+strconv.Itoa(len(spares)))
		if err := os.WriteFile(spare, nil, 0o600); err != nil {
			if !errors.Is(err, syscall.ENOSPC) {
				t.Fatal(err)
			}
			break
		}
		spares = append(spares, spare)
	}
	_, err := Open(path, k, nil)
	var fe *FileError
	if !errors.As(err, &fe) || fe.Path != path || !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), "no free inode") || !strings.Contains(err.Error(), dir) {
		t.Fatalf("Open out of inodes: %v; want a FileError naming %s, wrapping ENOSPC, saying no inode is free in %s", err, path, dir)
	}
	for _, spare := range spares {
		if err := os.Remove(spare); err != nil {
			t.Fatal(err)
		}
	}
	db = mustOpen(t, path, k, nil)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
}
