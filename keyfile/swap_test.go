package keyfile

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// A key file swapped for another while it is loaded (a file put in its
// place by whoever can write the directory): what is read is the file
// the mode and owner rules judged, never a loose one put there between
// the check and the read. Until 2026-12-07 the path was checked, then
// opened again, and such a swap made LoadDBKey return the loose file's
// key.
func TestLoadReadsTheFileItJudged(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "db.key")
	private, loose := filepath.Join(dir, "private"), filepath.Join(dir, "loose")
	keyA, keyB := bytes.Repeat([]byte{0xaa}, 32), bytes.Repeat([]byte{0xbb}, 32)
	if _, err := SaveDBKey(private, keyA); err != nil {
		t.Fatal(err)
	}
	if _, err := SaveDBKey(loose, keyB); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(loose, 0o644); err != nil {
		t.Fatal(err)
	}
	want, err := LoadDBKey(private)
	if err != nil {
		t.Fatal(err)
	}
	// put replaces path with src's file at once (a hard link renamed over it).
	put := func(src string) {
		tmp := path + ".tmp"
		os.Remove(tmp)
		if err := os.Link(src, tmp); err != nil {
			t.Error(err)
			return
		}
		if err := os.Rename(tmp, path); err != nil {
			t.Error(err)
		}
	}
	put(private)
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			put(loose)
			put(private)
		}
	})
	loaded, refused := 0, 0
	for range 20000 {
		k, err := LoadDBKey(path)
		var perm *PermissionError
		switch {
		case errors.As(err, &perm):
			refused++
		case err != nil:
			// The path between two renames: not there for a moment.
			if !errors.Is(err, os.ErrNotExist) {
				close(stop)
				wg.Wait()
				t.Fatalf("load during swaps: %v", err)
			}
		case !k.Equal(want):
			close(stop)
			wg.Wait()
			t.Fatalf("load %d returned the loose file's key (after %d refusals): read a file it did not judge", loaded, refused)
		default:
			loaded++
		}
	}
	close(stop)
	wg.Wait()
	t.Logf("%d loads of the private file, %d of the loose one refused", loaded, refused)
	if loaded == 0 || refused == 0 {
		t.Fatalf("%d loads and %d refusals: the swaps did not interleave with the loads", loaded, refused)
	}
}
