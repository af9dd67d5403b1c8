package engine

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// OpenInstallation given a read model it must not use fails naming the
// file and what is wrong with it, and leaves it byte for byte as it was,
// with no file beside it but the lock: an old-schema file truncated
// (ErrCorrupt, whether the cut leaves its first pages or only its last
// one off), a file of a schema newer than this code knows, one newer than
// the options ask for (no downgrade), and a file rekeyed since the key
// was read (a stale key file: ErrWrongKey).
func TestOpenOfWrongInputsLeavesThem(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	const fill = 0xa3
	key := rawDBKey(t, fill)
	v8 := b.opts()
	v8.DB.SchemaVersion = 8
	alice, err := CreateInstallation(ctx, b.log, "alice", b.dbPath("alice"), key, v8)
	if err != nil {
		t.Fatal(err)
	}
	b.insts["alice"], b.keys["alice"] = alice, key
	b.create("bob")
	gid := b.groupOf(alice, "bob")
	for i := range 30 {
		b.send("alice", gid, fmt.Sprintf("m%d", i))
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	old, err := os.ReadFile(b.dbPath("alice"))
	if err != nil {
		t.Fatal(err)
	}

	// at writes data as alice's read model in a directory of its own.
	at := func(name string, data []byte) string {
		p := filepath.Join(b.dir, name, "alice.db")
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	refused := func(what, p string, opts *InstallationOptions, k projections.Key, want error) {
		t.Helper()
		before, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		in, err := OpenInstallation(ctx, b.log, "alice", p, k, opts)
		if in != nil {
			in.Close()
		}
		if !errors.Is(err, want) || !strings.Contains(err.Error(), p) {
			t.Fatalf("%s: open: %v, want %v naming %s", what, err, want, p)
		}
		if after, err := os.ReadFile(p); err != nil || !bytes.Equal(after, before) {
			t.Fatalf("%s: the refused open changed the file (%v)", what, err)
		}
		ents, err := os.ReadDir(filepath.Dir(p))
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range ents {
			names = append(names, e.Name())
		}
		if want := []string{"alice.db", "alice.db.lock"}; !slices.Equal(names, want) {
			t.Fatalf("%s: files beside the refused read model %v, want %v", what, names, want)
		}
	}
	pages := len(old) / projections.PageSize
	refused("first two pages only", at("head", old[:2*projections.PageSize]), b.opts(), key, projections.ErrCorrupt)
	refused("half its pages", at("half", old[:pages/2*projections.PageSize]), b.opts(), key, projections.ErrCorrupt)
	refused("last page cut", at("tail", old[:(pages-1)*projections.PageSize]), b.opts(), key, projections.ErrCorrupt)

	latest := at("latest", old)
	if _, err := replay.Rebuild(ctx, b.log, "alice", latest, key, nil); err != nil {
		t.Fatal(err)
	}
	refused("latest schema, options asking for 8", latest, v8, key, projections.ErrSchemaTooNew)

	future := at("future", old)
	raw, err := sql.Open("sqlite3", rawDSN(future, bytes.Repeat([]byte{fill}, projections.KeySize)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = raw.Exec(fmt.Sprintf("PRAGMA user_version = %d", projections.LatestSchema+1))
	if cerr := raw.Close(); err != nil || cerr != nil {
		t.Fatalf("set a future schema: %v %v", err, cerr)
	}
	refused(fmt.Sprintf("schema %d", projections.LatestSchema+1), future, b.opts(), key, projections.ErrSchemaTooNew)

	rekeyed := at("rekeyed", old)
	if _, err := replay.Rekey(ctx, b.log, "alice", rekeyed, key, rawDBKey(t, 0x77), nil); err != nil {
		t.Fatal(err)
	}
	refused("rekeyed since (a stale key)", rekeyed, b.opts(), key, projections.ErrWrongKey)
}
