package projections

import (
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
)

func build(t *testing.T, path string, k Key, o *Options, recs []Record) *DB {
	t.Helper()
	db := mustOpen(t, path, k, o)
	applyAll(t, db, recs)
	return db
}

func TestDigestIndependentOfKeyAndCatchesEdits(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 30)
	dir := t.TempDir()
	a := build(t, filepath.Join(dir, "a.db"), newKey(t), &Options{BatchSize: 1000}, recs)
	pk, _ := PassphraseKey([]byte("another key entirely"))
	b := build(t, filepath.Join(dir, "b.db"), pk, &Options{BatchSize: 3, Argon2: cheapArgon2}, recs)
	da, err := a.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	db, err := b.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(da, db); d != nil {
		t.Fatalf("same stream, different keys and batch sizes: %v", d)
	}
	if d, err := CompareDB(ctx, a, b); err != nil || d != nil {
		t.Fatalf("CompareDB: %v, %v", d, err)
	}
	// The files themselves differ (different keys, salts, IVs).
	fa, _ := os.ReadFile(a.Path())
	fb, _ := os.ReadFile(b.Path())
	if string(fa[:4096]) == string(fb[:4096]) {
		t.Fatal("files are byte-identical under different keys")
	}
	// A row edited with the key is caught, and named.
	if _, err := b.sql.Exec(`UPDATE messages SET content = CAST('forged' AS BLOB) WHERE group_id = ? AND ordinal = 7`, gid(1)); err != nil {
		t.Fatal(err)
	}
	db2, _ := b.Digest(ctx)
	d := Compare(da, db2)
	if d == nil || d.Table != "messages" {
		t.Fatalf("edit not caught by digest: %v", d)
	}
	dd, err := CompareDB(ctx, a, b)
	if err != nil || dd == nil || dd.Table != "messages" || !strings.Contains(dd.RowKey, "ordinal=7") || !strings.Contains(dd.RowKey, fmt.Sprintf("%x", gid(1))) {
		t.Fatalf("CompareDB: %v, %v", dd, err)
	}
	// A deleted row too.
	if _, err := b.sql.Exec(`DELETE FROM members WHERE leaf = 1 AND group_id = ?`, gid(0)); err != nil {
		t.Fatal(err)
	}
	db3, _ := b.Digest(ctx)
	if d := Compare(da, db3); d == nil || d.Table != "members" {
		t.Fatalf("deleted row: %v", d)
	}
}

func TestMigrateV1ToV2InPlace(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 25)
	dir := t.TempDir()
	k := newKey(t)
	v1 := build(t, filepath.Join(dir, "v1.db"), k, &Options{SchemaVersion: 1}, recs)
	if v1.SchemaVersion() != 1 {
		t.Fatalf("schema %d", v1.SchemaVersion())
	}
	d1, _ := v1.Digest(ctx)
	if err := v1.Close(); err != nil {
		t.Fatal(err)
	}
	fresh := build(t, filepath.Join(dir, "v2.db"), newKey(t), &Options{SchemaVersion: 2}, recs)
	d2, _ := fresh.Digest(ctx)
	if Compare(d1, d2) == nil {
		t.Fatal("v1 and v2 digests are equal: the schema change is not real")
	}
	// Opening at a newer version migrates in place.
	migrated := mustOpen(t, filepath.Join(dir, "v1.db"), k, &Options{SchemaVersion: 2})
	if migrated.SchemaVersion() != 2 {
		t.Fatalf("migrated schema %d", migrated.SchemaVersion())
	}
	var uv int
	migrated.sql.QueryRow("PRAGMA user_version").Scan(&uv)
	if uv != 2 {
		t.Fatalf("user_version %d", uv)
	}
	dm, _ := migrated.Digest(ctx)
	if d := Compare(dm, d2); d != nil {
		t.Fatalf("in-place migration differs from a fresh v2 build: %v", d)
	}
	if d, err := CompareDB(ctx, migrated, fresh); d != nil || err != nil {
		t.Fatalf("CompareDB: %v %v", d, err)
	}
	groups, _ := migrated.Groups(ctx)
	if len(groups) == 0 || groups[0].LastMessageAt.IsZero() {
		t.Fatalf("backfilled last_message_at missing: %+v", groups)
	}
}

func TestSwapRekey(t *testing.T) {
	old := syscall.Umask(0o022)
	defer syscall.Umask(old)
	recs := sampleStream(t, "inst-a", 2, 20)
	dir := filepath.Join(t.TempDir(), "models")
	live := filepath.Join(dir, "inst-a.db")
	oldKey := newKey(t)
	db := build(t, live, oldKey, nil, recs)
	want, _ := db.Digest(ctx)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}

	// Rebuild under a new passphrase key beside the live file; the salt
	// sidecar lives at the live path so the swapped file opens with it.
	newKey, _ := PassphraseKey([]byte("new passphrase"))
	tmp, err := BuildAside(dir, "inst-a.db")
	if err != nil || filepath.Dir(tmp) != dir {
		t.Fatalf("BuildAside: %s, %v", tmp, err)
	}
	aside := mustOpen(t, tmp, newKey, &Options{SaltPath: SaltPath(live), Argon2: cheapArgon2})
	applyAll(t, aside, recs)

	// Swapping while the rebuilt file is still open (WAL not checkpointed)
	// is refused and harms nothing.
	if err := Swap(tmp, live); err == nil {
		t.Fatal("swap of an open database accepted")
	}
	if err := aside.Close(); err != nil {
		t.Fatal(err)
	}
	if err := Swap(tmp, live); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(tmp); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("temporary file left behind: %v", err)
	}
	if _, err := Open(live, oldKey, nil); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old key after rekey: %v", err)
	}
	got := mustOpen(t, live, newKey, nil)
	gd, _ := got.Digest(ctx)
	if d := Compare(want, gd); d != nil {
		t.Fatalf("content changed by rekey: %v", d)
	}
	st, _ := os.Stat(live)
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("swapped file mode %v", st.Mode().Perm())
	}
}

func TestSwapFailureLeavesLiveIntact(t *testing.T) {
	recs := sampleStream(t, "inst-a", 1, 10)
	dir := t.TempDir()
	live := filepath.Join(dir, "ro.db")
	k := newKey(t)
	db := build(t, live, k, nil, recs)
	want, _ := db.Digest(ctx)
	db.Close()
	check := func() {
		t.Helper()
		db, err := Open(live, k, nil)
		if err != nil {
			t.Fatalf("live database harmed: %v", err)
		}
		defer db.Close()
		got, _ := db.Digest(ctx)
		if d := Compare(want, got); d != nil {
			t.Fatalf("live database changed: %v", d)
		}
	}
	// A truncated rebuild.
	tmp, _ := BuildAside(dir, "ro.db")
	os.WriteFile(tmp, make([]byte, 1000), 0o600)
	if err := Swap(tmp, live); err == nil {
		t.Fatal("truncated rebuild swapped in")
	}
	check()
	// A missing rebuild.
	if err := Swap(filepath.Join(dir, "nope"), live); err == nil {
		t.Fatal("missing rebuild swapped in")
	}
	// A rebuild in another directory (rename would not be atomic).
	other := filepath.Join(t.TempDir(), "x.db")
	build(t, other, k, nil, recs).Close()
	if err := Swap(other, live); err == nil {
		t.Fatal("cross-directory swap accepted")
	}
	check()
	if err := RemoveAside(tmp); err != nil {
		t.Fatal(err)
	}
}

// TestSwapDropsStaleRollbackJournal: a hot rollback journal left beside
// the live file (a tool that switched the journal mode died mid-write)
// belongs to the old file; Swap removes it, or the next Open would roll it
// back into the new database and corrupt it. A rebuilt file that still
// has a rollback journal is refused: the rename would part it from the
// journal that undoes its unfinished transaction.
func TestSwapDropsStaleRollbackJournal(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 40)
	dir := t.TempDir()
	live := filepath.Join(dir, "ro.db")
	k := newKey(t)
	build(t, live, k, nil, recs).Close()
	want, err := build(t, filepath.Join(t.TempDir(), "ref.db"), k, nil, recs).Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}

	// A real hot journal of the live file: a writer in rollback-journal
	// mode with a tiny cache (so it spills pages into the file before
	// committing), copied mid-transaction.
	w, err := sql.Open("sqlite3", live+"?_pragma_key="+url.QueryEscape("x'"+hex.EncodeToString(k.bytes())+"'\"; PRAGMA cipher_compatibility = 4; --"))
	if err != nil {
		t.Fatal(err)
	}
	w.SetMaxOpenConns(1)
	for _, q := range []string{"PRAGMA journal_mode = DELETE", "PRAGMA cache_size = 2", "BEGIN", "UPDATE messages SET content = randomblob(300)"} {
		if _, err := w.Exec(q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	journal, err := os.ReadFile(live + "-journal")
	if err != nil || len(journal) == 0 {
		t.Fatalf("no hot journal to copy: %d bytes, %v", len(journal), err)
	}
	if _, err := w.Exec("ROLLBACK"); err != nil {
		t.Fatal(err)
	}
	w.Close()
	if err := os.WriteFile(live+"-journal", journal, 0o600); err != nil {
		t.Fatal(err)
	}

	tmp, err := BuildAside(dir, "ro.db")
	if err != nil {
		t.Fatal(err)
	}
	build(t, tmp, k, nil, recs).Close()
	// A rebuilt file with a rollback journal of its own is refused, and
	// the live file keeps its journal.
	if err := os.WriteFile(tmp+"-journal", journal, 0o600); err != nil {
		t.Fatal(err)
	}
	if err := Swap(tmp, live); err == nil || !strings.Contains(err.Error(), "rollback journal") {
		t.Fatalf("swap of a rebuilt file with a rollback journal: %v", err)
	}
	if _, err := os.Stat(live + "-journal"); err != nil {
		t.Fatalf("a refused swap touched the live journal: %v", err)
	}
	if err := os.Remove(tmp + "-journal"); err != nil {
		t.Fatal(err)
	}

	if err := Swap(tmp, live); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(live + "-journal"); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("the old file's journal is still beside the new one: %v", err)
	}
	db, err := Open(live, k, nil)
	if err != nil {
		t.Fatalf("open after swap: %v", err)
	}
	defer db.Close()
	got, err := db.Digest(ctx)
	if err != nil {
		t.Fatalf("digest after swap: %v", err)
	}
	if d := Compare(want, got); d != nil {
		t.Fatalf("swapped-in database differs from its build: %v", d)
	}
}

// TestSnapshotIgnoresLaterCommits: a Snapshot's checkpoint and tables are
// one state of the database, whatever the writer commits after it was
// taken.
func TestSnapshotIgnoresLaterCommits(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 20)
	half := len(recs) / 2
	db := build(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), nil, recs[:half])
	defer db.Close()
	before, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	ref := build(t, filepath.Join(t.TempDir(), "ref.db"), newKey(t), nil, recs[:half])
	defer ref.Close()
	snap, err := db.Snapshot(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer snap.Close()
	applyAll(t, db, recs[half:])
	if cp := snap.Checkpoint(); cp != recs[half-1].Seq {
		t.Fatalf("snapshot checkpoint %d, want %d", cp, recs[half-1].Seq)
	}
	got, err := snap.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(before, got); d != nil {
		t.Fatalf("snapshot saw a later commit: %v", d)
	}
	if d, err := snap.CompareDB(ctx, ref); err != nil || d != nil {
		t.Fatalf("snapshot vs a build of the same events: %v, %v", d, err)
	}
	if err := snap.Close(); err != nil {
		t.Fatal(err)
	}
	if cp, _ := db.Checkpoint(ctx); cp != lastSeq(recs) {
		t.Fatalf("live checkpoint %d, want %d", cp, lastSeq(recs))
	}
}

func TestExportRekeyAndPlaintextMigration(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 15)
	dir := t.TempDir()
	src := build(t, filepath.Join(dir, "src.db"), newKey(t), nil, recs)
	want, _ := src.Digest(ctx)

	// Make an unencrypted copy the way an older deployment would have had one.
	plainPath := filepath.Join(dir, "plain.db")
	conn, err := src.sql.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, q := range []string{
		fmt.Sprintf(`ATTACH DATABASE '%s' AS plain KEY ''`, plainPath),
		`SELECT sqlcipher_export('plain')`,
		fmt.Sprintf(`PRAGMA plain.user_version = %d`, LatestSchema),
		fmt.Sprintf(`PRAGMA plain.application_id = %d`, applicationID),
		`DETACH DATABASE plain`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close()

	plain := mustOpen(t, plainPath, NoKey(), nil)
	pd, err := plain.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(want, pd); d != nil {
		t.Fatalf("plaintext copy differs: %v", d)
	}
	if err := plain.Apply(ctx, recs); err == nil {
		t.Fatal("applied events to an unencrypted source")
	}
	// Unencrypted -> encrypted.
	encPath := filepath.Join(dir, "enc.db")
	k2 := newKey(t)
	if err := plain.ExportTo(ctx, encPath, k2, nil); err != nil {
		t.Fatal(err)
	}
	enc := mustOpen(t, encPath, k2, nil)
	ed, _ := enc.Digest(ctx)
	if d := Compare(want, ed); d != nil {
		t.Fatalf("exported database differs: %v", d)
	}
	// Rekey by export: new key opens, old refused.
	rk := filepath.Join(dir, "rekeyed.db")
	k3 := newKey(t)
	if err := enc.ExportTo(ctx, rk, k3, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(rk, k2, nil); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("old key on rekeyed file: %v", err)
	}
	r := mustOpen(t, rk, k3, nil)
	rd, _ := r.Digest(ctx)
	if d := Compare(want, rd); d != nil {
		t.Fatalf("rekeyed database differs: %v", d)
	}
	// The exported file keeps applying events.
	if err := r.Apply(ctx, recs); err != nil {
		t.Fatal(err)
	}
}

// TestCipherCompatibilityPinnedPerConnection changes SQLCipher's process
// default to version 3 settings: our connections must still come up with
// version 4 settings, because each one pins them right after the key.
func TestCipherCompatibilityPinnedPerConnection(t *testing.T) {
	other, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	other.SetMaxOpenConns(1)
	if _, err := other.Exec("PRAGMA cipher_default_compatibility = 3"); err != nil {
		t.Fatal(err)
	}
	defer other.Exec("PRAGMA cipher_default_compatibility = 4")
	path := filepath.Join(t.TempDir(), "ro.db")
	db := mustOpen(t, path, newKey(t), nil)
	var iter int
	var hmacAlg string
	db.sql.QueryRow("PRAGMA kdf_iter").Scan(&iter)
	db.sql.QueryRow("PRAGMA cipher_hmac_algorithm").Scan(&hmacAlg)
	if iter != 256000 || hmacAlg != "HMAC_SHA512" {
		t.Fatalf("connection settings kdf_iter=%d hmac=%s under a version-3 process default", iter, hmacAlg)
	}
}

func TestMemorySecuritySwitch(t *testing.T) {
	on, err := MemorySecurity()
	if err != nil || !on {
		t.Fatalf("memory security in this build: %v, %v", on, err)
	}
	if err := SetMemorySecurity(false); err != nil {
		t.Fatal(err)
	}
	defer SetMemorySecurity(true)
	if on, _ := MemorySecurity(); on {
		t.Fatal("memory security still on")
	}
	// Databases work either way.
	db := build(t, filepath.Join(t.TempDir(), "ro.db"), newKey(t), nil, sampleStream(t, "inst-a", 1, 5))
	if _, err := db.Digest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := SetMemorySecurity(true); err != nil {
		t.Fatal(err)
	}
	if on, _ := MemorySecurity(); !on {
		t.Fatal("memory security not restored")
	}
}
