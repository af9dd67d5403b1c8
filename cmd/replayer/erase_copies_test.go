package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
)

// TestEraseRemovesKeptCopies: erase --db promises that no plaintext of the
// installation is left in its read model. The copies of that read model
// epochlog itself keeps beside it hold the same history under the same
// key: the damaged file a rebuild kept (<db>.damaged-*), the one a forced
// rebuild replaced (<db>.replaced-*), the temporary database of a rebuild
// that was killed (<db>.rebuild-*). They go with it.
func TestEraseRemovesKeptCopies(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("erase-copies")
	path := filepath.Join(dir, string(id)+".db")
	keyPath := filepath.Join(dir, string(id)+".key")
	key, err := writeDBKeyFile(keyPath)
	if err != nil {
		t.Fatal(err)
	}
	in, err := engine.CreateInstallation(ctx, l, id, path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// A damaged read model, replaced by a rebuild that keeps it beside.
	raw, err := openRaw(path, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	var root int64
	err = raw.QueryRow(`SELECT rootpage FROM sqlite_master WHERE name = 'checkpoint'`).Scan(&root)
	raw.Close()
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt(bytes.Repeat([]byte{0xa5}, 8), (root-1)*4096+200); err != nil {
		t.Fatal(err)
	}
	f.Close()
	cli := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		code := run(ctx, ringEnv(&out, &errb, nil), args)
		return code, out.String(), errb.String()
	}
	if code, _, stderr := cli("rebuild", "--nats", srv.URL(), "--installation", string(id), "--db", path, "--db-key-file", keyPath); code != exitOK {
		t.Fatalf("rebuild: exit %d, stderr %s", code, stderr)
	}
	// What a forced rebuild keeps, and what a killed one leaves: copies
	// of the read model under its key, as those operations name them.
	for _, name := range []string{path + ".replaced-1765000000", path + ".rebuild-0123456789abcdef"} {
		if err := os.WriteFile(name, good, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	kept := func() []string {
		m, err := filepath.Glob(path + ".*")
		if err != nil {
			t.Fatal(err)
		}
		var out []string
		for _, p := range m {
			if !strings.HasSuffix(p, ".lock") {
				out = append(out, filepath.Base(p))
			}
		}
		return out
	}
	if k := kept(); len(k) != 3 {
		t.Fatalf("before the erase, beside the read model: %v; want a .damaged-*, a .replaced-* and a .rebuild-*", k)
	}
	if code, _, stderr := cli("erase", "--yes", "--nats", srv.URL(), "--installation", string(id), "--db", path, "--db-key-file", keyPath); code != exitOK {
		t.Fatalf("erase: exit %d, stderr %s", code, stderr)
	}
	if _, err := os.Lstat(path); !os.IsNotExist(err) {
		t.Fatalf("read model still there: %v", err)
	}
	if k := kept(); len(k) != 0 {
		t.Fatalf("erase --db left copies of the erased installation's read model, which its key still opens: %v", k)
	}
}
