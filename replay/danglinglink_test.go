package replay

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A --db that is a symbolic link to a database that is not there (the
// file lost, or a volume not mounted) is rebuilt at the link's target,
// as a link to an existing database is: the link stays. It replaced the
// link with the rebuilt file; with the link's volume not mounted, the
// database there (which may hold more than the stream) was cut off
// without any comparison. A target whose directory is missing is
// refused, naming the link, and nothing is created.
func TestRebuildThroughALinkToAMissingDatabase(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 1, 10)
	key := rawDBKey(t, 0xA1)
	dir := t.TempDir()
	ctx := context.Background()

	// The target's directory is there: the database is made there.
	target := filepath.Join(dir, "store", "a.db")
	if err := os.Mkdir(filepath.Dir(target), 0o700); err != nil {
		t.Fatal(err)
	}
	link := filepath.Join(dir, "a.db")
	if err := os.Symlink(filepath.Join("store", "a.db"), link); err != nil {
		t.Fatal(err)
	}
	if _, err := Rebuild(ctx, l, instA, link, key, rebuildOpts(false)); err != nil {
		t.Fatalf("rebuild through a link to a missing database: %v", err)
	}
	if st, err := os.Lstat(link); err != nil || st.Mode()&fs.ModeSymlink == 0 {
		t.Fatalf("the link was replaced: %v %v", st, err)
	}
	if _, err := Verify(ctx, l, instA, target, key, testReplayOptions()); err != nil {
		t.Fatalf("verify the link's target after the rebuild: %v", err)
	}

	// The target's directory is not there (a volume not mounted).
	unmounted := filepath.Join(dir, "mnt", "vol")
	link2 := filepath.Join(dir, "b.db")
	if err := os.Symlink(filepath.Join(unmounted, "b.db"), link2); err != nil {
		t.Fatal(err)
	}
	for _, force := range []bool{false, true} {
		_, err := Rebuild(ctx, l, instA, link2, key, rebuildOpts(force))
		if err == nil || !strings.Contains(err.Error(), link2) || !strings.Contains(err.Error(), unmounted) {
			t.Fatalf("rebuild through a link into a missing directory (force %v): %v, want an error naming the link and the directory", force, err)
		}
		if st, err := os.Lstat(link2); err != nil || st.Mode()&fs.ModeSymlink == 0 {
			t.Fatalf("the link was replaced: %v %v", st, err)
		}
		if _, err := os.Stat(filepath.Join(dir, "mnt")); !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("the rebuild created %s: %v", filepath.Join(dir, "mnt"), err)
		}
	}
}
