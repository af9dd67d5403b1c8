//go:build unix

package keyfile

import (
	"errors"
	"os"
	"strconv"
	"strings"
	"testing"
)

// TestLoadRefusesOtherOwners: a private (0600) keyring, key or passphrase
// file owned by another user is refused, directly or through a symbolic
// link, with an error naming the file, its owner and the fix; root's and
// one's own files are accepted.
func TestLoadRefusesOtherOwners(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("giving a file to another user takes root (chown); running as uid " + strconv.Itoa(os.Geteuid()))
	}
	const other = 65534 // nobody
	dir := t.TempDir()
	loaders := privateFiles(t, dir)
	for path, load := range loaders {
		if err := load(path); err != nil {
			t.Fatalf("%s owned by root: %v", path, err)
		}
		if err := os.Chown(path, other, other); err != nil {
			t.Fatal(err)
		}
		link := path + ".link"
		if err := os.Symlink(path, link); err != nil {
			t.Fatal(err)
		}
		for _, p := range []string{path, link} {
			err := load(p)
			var oe *OwnerError
			if !errors.As(err, &oe) || !errors.Is(err, ErrNotOwned) || oe.Path != p || oe.Owner != other || oe.Self != 0 {
				t.Fatalf("%s owned by uid %d: %v, want an *OwnerError", p, other, err)
			}
			msg := err.Error()
			for _, want := range []string{p, "uid 65534", "chown 0"} {
				if !strings.Contains(msg, want) {
					t.Fatalf("error %q does not name %q", msg, want)
				}
			}
			if p == link && !strings.Contains(msg, "a link to "+path) {
				t.Fatalf("error %q does not name the file the link leads to", msg)
			}
		}
		// CheckOwner alone (the replayer's --keys-file) refuses it too.
		if err := CheckOwner(path); !errors.Is(err, ErrNotOwned) {
			t.Fatalf("CheckOwner(%s): %v", path, err)
		}
		if err := os.Chown(path, 0, 0); err != nil {
			t.Fatal(err)
		}
		if err := load(link); err != nil {
			t.Fatalf("%s back with root: %v", link, err)
		}
	}
}
