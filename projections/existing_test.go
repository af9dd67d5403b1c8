package projections

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"syscall"
	"testing"
)

// userVersion reads PRAGMA user_version from the file itself.
func userVersion(t *testing.T, path string, k Key) int {
	t.Helper()
	db, err := OpenExisting(path, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v int
	if err := db.sql.QueryRow("PRAGMA user_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

// plaintextCopy exports src into an unencrypted database at path, the way
// an older deployment without SQLCipher would have had it.
func plaintextCopy(t *testing.T, src *DB, path string) {
	t.Helper()
	conn, err := src.sql.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	for _, q := range []string{
		fmt.Sprintf(`ATTACH DATABASE '%s' AS plain KEY ''`, path),
		`SELECT sqlcipher_export('plain')`,
		fmt.Sprintf(`PRAGMA plain.user_version = %d`, src.SchemaVersion()),
		fmt.Sprintf(`PRAGMA plain.application_id = %d`, applicationID),
		`DETACH DATABASE plain`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
}

func assertNotExist(t *testing.T, what string, err error, path string) {
	t.Helper()
	var fe *FileError
	if !errors.Is(err, fs.ErrNotExist) || !errors.As(err, &fe) || fe.Path != path {
		t.Errorf("%s: %v, want a *FileError naming %s wrapping fs.ErrNotExist", what, err, path)
	}
}

func TestOpenExistingNeverMigrates(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 20)
	dir := t.TempDir()
	k := newKey(t)
	path := filepath.Join(dir, "v1.db")
	v1 := build(t, path, k, &Options{SchemaVersion: 1}, recs)
	want, _ := v1.Digest(ctx)
	if err := v1.Close(); err != nil {
		t.Fatal(err)
	}

	db, err := OpenExisting(path, k, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := db.Digest(ctx)
	if err != nil || db.SchemaVersion() != 1 {
		t.Fatalf("opened at schema %d, %v", db.SchemaVersion(), err)
	}
	if d := Compare(want, got); d != nil {
		t.Fatalf("content differs: %v", d)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if v := userVersion(t, path, k); v != 1 {
		t.Fatalf("file at schema %d after OpenExisting, want 1", v)
	}
	// NoMigrate with an explicit older SchemaVersion opens a v2 file too
	// (no downgrade refusal: nothing is changed).
	v2 := filepath.Join(dir, "v2.db")
	build(t, v2, k, nil, recs).Close()
	db2, err := Open(v2, k, &Options{SchemaVersion: 1, NoMigrate: true})
	if err != nil || db2.SchemaVersion() != LatestSchema {
		t.Fatalf("NoMigrate at SchemaVersion 1 on a v%d file: %v", LatestSchema, err)
	}
	db2.Close()
	// Control: Open migrates the same file.
	m := mustOpen(t, path, k, nil)
	if m.SchemaVersion() != LatestSchema {
		t.Fatalf("Open left schema %d", m.SchemaVersion())
	}
}

func TestOpenExistingRefusals(t *testing.T) {
	recs := sampleStream(t, "inst-a", 1, 10)
	dir := t.TempDir()
	k := newKey(t)

	// Missing or empty: refused, nothing created (not even a salt sidecar).
	missing := filepath.Join(dir, "missing.db")
	pk, _ := PassphraseKey([]byte("pass"))
	for _, key := range []Key{k, pk, NoKey()} {
		_, err := OpenExisting(missing, key, &Options{Argon2: cheapArgon2})
		assertNotExist(t, "missing file", err, missing)
	}
	if m, _ := filepath.Glob(missing + "*"); len(m) != 0 {
		t.Fatalf("OpenExisting created %v", m)
	}
	empty := filepath.Join(dir, "empty.db")
	if err := os.WriteFile(empty, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err := OpenExisting(empty, k, nil)
	assertNotExist(t, "empty file", err, empty)
	if st, _ := os.Stat(empty); st.Size() != 0 {
		t.Fatalf("OpenExisting wrote %d bytes into an empty file", st.Size())
	}
	// A named pipe (or a device) has size 0 too, but is no missing read
	// model: it was reported as "file does not exist: empty file".
	pipe := filepath.Join(dir, "pipe.db")
	if err := syscall.Mkfifo(pipe, 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = OpenExisting(pipe, k, nil)
	if !errors.Is(err, ErrNotOurs) || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("named pipe: %v, want ErrNotOurs (not a regular file)", err)
	}
	if _, _, err := MigrateInPlace(ctx, pipe, k, nil); !errors.Is(err, ErrNotOurs) || errors.Is(err, fs.ErrNotExist) {
		t.Errorf("migrate a named pipe in place: %v, want ErrNotOurs (not a regular file)", err)
	}

	path := filepath.Join(dir, "a.db")
	src := build(t, path, k, nil, recs)
	plain := filepath.Join(dir, "plain.db")
	plaintextCopy(t, src, plain)
	if _, err := src.sql.Exec(fmt.Sprintf("PRAGMA user_version = %d", LatestSchema+1)); err != nil {
		t.Fatal(err)
	}
	src.Close()
	for _, c := range []struct {
		name string
		path string
		key  Key
		want error
	}{
		{"schema too new", path, k, ErrSchemaTooNew},
		{"wrong key", path, newKey(t), ErrWrongKey},
		{"encrypted file without a key", path, NoKey(), ErrWrongKey},
		{"plaintext file with a key", plain, k, ErrNotOurs},
	} {
		_, err := OpenExisting(c.path, c.key, nil)
		if !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	// The unencrypted file opens without a key, read-only, as it is.
	db, err := OpenExisting(plain, NoKey(), nil)
	if err != nil || db.SchemaVersion() != LatestSchema {
		t.Fatalf("plaintext source: %v", err)
	}
	db.Close()
}

func TestMigrateInPlace(t *testing.T) {
	recs := sampleStream(t, "inst-a", 3, 40)
	dir := t.TempDir()
	k := newKey(t)
	path := filepath.Join(dir, "v1.db")
	build(t, path, k, &Options{SchemaVersion: 1}, recs).Close()
	fresh := build(t, filepath.Join(dir, "v2.db"), k, nil, recs)
	want, _ := fresh.Digest(ctx)
	fresh.Close()

	from, to, err := MigrateInPlace(ctx, path, k, nil)
	if err != nil || from != 1 || to != LatestSchema {
		t.Fatalf("MigrateInPlace: %d -> %d, %v", from, to, err)
	}
	if v := userVersion(t, path, k); v != LatestSchema {
		t.Fatalf("user_version %d after migration", v)
	}
	// The same content as a build at the latest schema from the stream:
	// the new columns and tables are filled from what the file holds.
	db := mustOpen(t, path, k, nil)
	got, _ := db.Digest(ctx)
	if d := Compare(want, got); d != nil {
		t.Fatalf("in-place migration differs from a v2 build: %v", d)
	}
	groups, _ := db.Groups(ctx)
	for _, g := range groups {
		if g.LastMessageAt.IsZero() {
			t.Errorf("group %s lacks last_message_at after migration", g.ID)
		}
	}
	db.Close()
	// At the target already: only checked.
	if from, to, err := MigrateInPlace(ctx, path, k, nil); err != nil || from != LatestSchema || to != LatestSchema {
		t.Fatalf("second MigrateInPlace: %d -> %d, %v", from, to, err)
	}
	// Downgrades are refused, the file unchanged.
	if from, to, err := MigrateInPlace(ctx, path, k, &Options{SchemaVersion: 1}); !errors.Is(err, ErrSchemaTooNew) || from != LatestSchema || to != LatestSchema {
		t.Fatalf("MigrateInPlace to 1 of a v%d file: %d -> %d, %v", LatestSchema, from, to, err)
	}

	// A passphrase key finds its salt sidecar.
	pk, _ := PassphraseKey([]byte("migrate me"))
	pp := filepath.Join(dir, "pass.db")
	build(t, pp, pk, &Options{SchemaVersion: 1, Argon2: cheapArgon2}, recs).Close()
	if from, to, err := MigrateInPlace(ctx, pp, pk, nil); err != nil || from != 1 || to != LatestSchema {
		t.Fatalf("MigrateInPlace with a passphrase: %d -> %d, %v", from, to, err)
	}

	// Refusals.
	missing := filepath.Join(dir, "missing.db")
	_, _, err = MigrateInPlace(ctx, missing, k, nil)
	assertNotExist(t, "missing file", err, missing)
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("MigrateInPlace created %s", missing)
	}
	var fe *FileError
	if _, _, err := MigrateInPlace(ctx, path, NoKey(), nil); !errors.As(err, &fe) || fe.Op != "migrate" {
		t.Fatalf("MigrateInPlace with NoKey: %v", err)
	}
	if from, to, err := MigrateInPlace(ctx, path, newKey(t), nil); !errors.Is(err, ErrWrongKey) || from != 0 || to != 0 {
		t.Fatalf("MigrateInPlace with a wrong key: %d -> %d, %v", from, to, err)
	}
}

func TestRemoveLeftovers(t *testing.T) {
	dir := t.TempDir()
	// A name with glob metacharacters: "a[1].db.rebuild-*" must not match
	// "a1.db.rebuild-*", another database's leftovers.
	name := "a[1].db"
	live := filepath.Join(dir, name)
	pk, _ := PassphraseKey([]byte("live"))
	recs := sampleStream(t, "inst-a", 1, 5)
	db := build(t, live, pk, &Options{Argon2: cheapArgon2}, recs)
	want, _ := db.Digest(ctx)
	db.Close()

	// An interrupted rebuild: a database with sidecars, keyed with the
	// live database's salt.
	tmp1, err := BuildAside(dir, name)
	if err != nil {
		t.Fatal(err)
	}
	build(t, tmp1, pk, &Options{SaltPath: SaltPath(live)}, recs).Close()
	touch := func(p string) {
		t.Helper()
		if err := os.WriteFile(p, []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	touch(tmp1 + "-wal")
	touch(tmp1 + "-shm")
	// Another, just begun; and a sidecar whose database is gone.
	tmp2, _ := BuildAside(dir, name)
	touch(tmp2)
	touch(live + ".rebuild-0123456789abcdef-journal")
	// Not ours to remove.
	others := []string{filepath.Join(dir, "a1.db.rebuild-0123456789abcdef"), filepath.Join(dir, "b.db.rebuild-0123456789abcdef"), live + "-shm"}
	for _, p := range others {
		touch(p)
	}

	n, err := RemoveLeftovers(live)
	if err != nil || n != 2 {
		t.Fatalf("RemoveLeftovers: %d, %v; want 2 databases removed", n, err)
	}
	entries, _ := os.ReadDir(dir)
	var left []string
	for _, e := range entries {
		left = append(left, filepath.Join(dir, e.Name()))
	}
	wantLeft := append([]string{live, SaltPath(live)}, others...)
	slices.Sort(left)
	slices.Sort(wantLeft)
	if !slices.Equal(left, wantLeft) {
		t.Fatalf("left behind %v, want %v", left, wantLeft)
	}
	if err := os.Remove(live + "-shm"); err != nil {
		t.Fatal(err)
	}
	if n, err := RemoveLeftovers(live); err != nil || n != 0 {
		t.Fatalf("second RemoveLeftovers: %d, %v", n, err)
	}
	db, err = OpenExisting(live, pk, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if got, _ := db.Digest(ctx); Compare(want, got) != nil {
		t.Fatal("the live database changed")
	}
}
