package replay

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	sqlite3 "github.com/mutecomm/go-sqlcipher/v4"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

func noLeftovers(t *testing.T, live string) {
	t.Helper()
	m, err := filepath.Glob(live + ".rebuild-*")
	if err != nil {
		t.Fatal(err)
	}
	if len(m) > 0 {
		t.Fatalf("temporary files left beside %s: %v", filepath.Base(live), m)
	}
}

// countRows counts a table's rows, as the read model's digest does.
func countRows(t *testing.T, path string, key projections.Key, table string) int {
	t.Helper()
	d, _ := digestOf(t, path, key)
	for _, td := range d.Tables {
		if td.Name == table {
			return td.Rows
		}
	}
	t.Fatalf("no table %s in the digest of %s", table, filepath.Base(path))
	return 0
}

func TestRebuildTwiceGivesIdenticalDigests(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 3, 300)
	writeHistory(t, l, instB, 2, 120)
	dir := t.TempDir()
	live := filepath.Join(dir, "a.db")
	key := rawDBKey(t, 0xA1)

	r1, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatalf("first rebuild: %v", err)
	}
	if r1.Existed || r1.Checkpoint != lastSeq(t, l, instA) || r1.Schema != projections.LatestSchema {
		t.Fatalf("first rebuild: %+v, want a new database at checkpoint %d", r1, lastSeq(t, l, instA))
	}
	d1, _ := digestOf(t, live, key)
	if n := countRows(t, live, key, "messages"); n != 200 {
		t.Fatalf("messages after rebuild: %d rows, want 200 (sent and received of 300)", n)
	}

	r2, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatalf("second rebuild: %v", err)
	}
	if !r2.Existed || r2.PreviousCheckpoint != r1.Checkpoint || r2.Replayed != r1.Replayed || r1.Replayed != 300+10+1+4+3*3 {
		t.Fatalf("second rebuild: %+v", r2)
	}
	d2, _ := digestOf(t, live, key)
	if diff := projections.Compare(d1, d2); diff != nil {
		t.Fatalf("two rebuilds differ: %v", diff)
	}
	noLeftovers(t, live)

	// The other installation's model is built from its own events only.
	liveB := filepath.Join(dir, "b.db")
	if _, err := Rebuild(ctx, l, instB, liveB, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	dB, _ := digestOf(t, liveB, key)
	if projections.Compare(d1, dB) == nil {
		t.Fatal("read models of two installations have equal digests")
	}
	for _, p := range []string{live, liveB} {
		st, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if st.Mode().Perm() != 0o600 {
			t.Fatalf("%s has mode %o after rebuild, want 600", filepath.Base(p), st.Mode().Perm())
		}
	}
}

func TestRebuildRefusesWrongKeyAndLeavesLiveAlone(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 1, 30)
	live := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 1)
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	before, _ := digestOf(t, live, key)
	_, err := Rebuild(ctx, l, instA, live, rawDBKey(t, 2), &RebuildOptions{Options: *testReplayOptions()})
	if !errors.Is(err, projections.ErrWrongKey) {
		t.Fatalf("rebuild with a wrong key: %v, want ErrWrongKey", err)
	}
	after, _ := digestOf(t, live, key)
	if diff := projections.Compare(before, after); diff != nil {
		t.Fatalf("live database changed: %v", diff)
	}
	noLeftovers(t, live)
}

func TestRebuildRecoversCorruptDatabase(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 1, 200)
	dir := t.TempDir()
	live := filepath.Join(dir, "a.db")
	key := rawDBKey(t, 1)
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	want, _ := digestOf(t, live, key)
	damageMiddle(t, live)
	res, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil {
		// The damage may only show when the page is read; an integrity
		// check must then name it.
		t.Fatalf("rebuild over a damaged database: %v", err)
	}
	got, _ := digestOf(t, live, key)
	if diff := projections.Compare(want, got); diff != nil {
		t.Fatalf("recovered database differs: %v (result %+v)", diff, res)
	}
	// Nothing is destroyed: the damaged file stays beside the new one.
	if !res.Recovered || res.KeptDamaged == "" {
		t.Fatalf("result %+v: want Recovered with the damaged file kept", res)
	}
	kept, err := os.ReadFile(res.KeptDamaged)
	if err != nil || !bytes.Contains(kept, []byte("garbage garbage garbage")) {
		t.Fatalf("kept damaged file %s: %v", res.KeptDamaged, err)
	}
}

// A rekey reads every row of the live database, so it meets damage the
// open did not: it names it as the file check does (ErrCorrupt, the
// page), not as SQLite's "SQL logic error", and leaves the file as it is.
func TestRekeyOfADamagedDatabaseNamesTheDamage(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 1, 200)
	live := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 1)
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	damageMiddle(t, live)
	before := readFile(t, live)
	_, err := Rekey(ctx, l, instA, live, key, rawDBKey(t, 2), testReplayOptions())
	if !errors.Is(err, projections.ErrCorrupt) || strings.Contains(err.Error(), "SQL logic error") {
		t.Fatalf("rekey of a damaged database: %v, want ErrCorrupt naming the damage", err)
	}
	unchanged(t, live, before)
}

// damageMiddle writes garbage over a page in the middle of the file at
// path.
func damageMiddle(t *testing.T, path string) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteAt([]byte("garbage garbage garbage"), st.Size()/2); err != nil {
		t.Fatal(err)
	}
}

func TestRebuildCancelledLeavesEverythingConsistent(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 2, 600)
	live := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 7)
	if _, err := Rebuild(context.Background(), l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	before, cpBefore := digestOf(t, live, key)

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	o := testReplayOptions()
	o.Progress = func(p Progress) {
		if p.Applied >= 128 {
			cancel()
		}
	}
	_, err := Rekey(ctx, l, instA, live, key, rawDBKey(t, 8), o)
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled rekey: %v, want context.Canceled", err)
	}
	after, cpAfter := digestOf(t, live, key)
	if diff := projections.Compare(before, after); diff != nil || cpAfter != cpBefore {
		t.Fatalf("live database changed by a cancelled rekey: %v", diff)
	}
	noLeftovers(t, live)
}

func TestRekeyRawAndPassphrase(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 2, 150)
	live := filepath.Join(t.TempDir(), "a.db")
	k1 := rawDBKey(t, 1)
	if _, err := Rebuild(ctx, l, instA, live, k1, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	want, cp := digestOf(t, live, k1)

	steps := []struct {
		name     string
		old, new projections.Key
	}{
		{"raw to passphrase", k1, passKey(t, "correct horse")},
		{"passphrase to passphrase", passKey(t, "correct horse"), passKey(t, "battery staple")},
		{"passphrase to raw", passKey(t, "battery staple"), rawDBKey(t, 2)},
		{"raw to raw", rawDBKey(t, 2), rawDBKey(t, 3)},
	}
	for _, s := range steps {
		res, err := Rekey(ctx, l, instA, live, s.old, s.new, testReplayOptions())
		if err != nil {
			t.Fatalf("%s: %v", s.name, err)
		}
		if !res.Digest.Equal(want) || res.Checkpoint != cp {
			t.Fatalf("%s: result %+v, want the old content at checkpoint %d", s.name, res, cp)
		}
		_, err = openAsIs(live, s.old, projections.Options{})
		if !errors.Is(err, projections.ErrWrongKey) {
			t.Fatalf("%s: old key: %v, want ErrWrongKey", s.name, err)
		}
		got, gotCP := digestOf(t, live, s.new)
		if diff := projections.Compare(want, got); diff != nil || gotCP != cp {
			t.Fatalf("%s: content under the new key differs: %v", s.name, diff)
		}
		noLeftovers(t, live)
	}
	// The last key is raw: the passphrase salt was removed with the old key.
	if _, err := os.Stat(projections.SaltPath(live)); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("salt sidecar after rekey to a raw key: %v", err)
	}
	if _, err := Rekey(ctx, l, instA, live, rawDBKey(t, 3), rawDBKey(t, 3), testReplayOptions()); err == nil {
		t.Fatal("rekey to the same key succeeded")
	}
}

// A rekey to a passphrase with Options.DB.SaltPath set creates the salt
// there, before the swap, and the rekeyed file opens (and verifies) with
// it; no "<db>.salt" appears; a rekey back to a raw key removes it. Until
// 2026-12-07 every replay operation put the salt at "<db>.salt" whatever
// the options said.
func TestRekeyWithACustomSaltPath(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 2, 50)
	live, salt := filepath.Join(t.TempDir(), "a.db"), filepath.Join(t.TempDir(), "a.salt")
	k1, pass := rawDBKey(t, 1), passKey(t, "correct horse")
	if _, err := Rebuild(ctx, l, instA, live, k1, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	want, _ := digestOf(t, live, k1)
	o := testReplayOptions()
	o.DB.SaltPath = salt
	if _, err := Rekey(ctx, l, instA, live, k1, pass, o); err != nil {
		t.Fatalf("rekey to a passphrase with the salt at %s: %v", salt, err)
	}
	if _, err := os.Stat(salt); err != nil {
		t.Fatalf("salt sidecar at the custom path after the rekey: %v", err)
	}
	if _, err := os.Lstat(projections.SaltPath(live)); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("%s after the rekey: %v, want no such file", projections.SaltPath(live), err)
	}
	db, err := openAsIs(live, pass, o.DB)
	if err != nil {
		t.Fatalf("open the rekeyed file with the custom salt: %v", err)
	}
	got, err := db.Digest(ctx)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if diff := projections.Compare(want, got); diff != nil {
		t.Fatalf("content under the passphrase differs: %v", diff)
	}
	if _, err := Verify(ctx, l, instA, live, pass, o); err != nil {
		t.Fatalf("verify with the custom salt: %v", err)
	}
	if _, err := Rekey(ctx, l, instA, live, pass, rawDBKey(t, 2), o); err != nil {
		t.Fatalf("rekey back to a raw key: %v", err)
	}
	if _, err := os.Lstat(salt); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("custom salt sidecar after a rekey to a raw key: %v, want removed", err)
	}
	noLeftovers(t, live)
}

// sqlOpen opens a read model with its raw key (hex) through the SQLCipher
// driver, behind package projections' back, the way anyone holding the key
// could.
func sqlOpen(t *testing.T, path string, rawHex string) *sql.DB {
	t.Helper()
	dsn := "file:" + path + "?_pragma_key=" + "x'" + rawHex + "'&_pragma_cipher_page_size=4096"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

// sqlExec runs statements on a read model with its raw key through the
// SQLCipher driver directly, as an attacker or a careless tool would.
func sqlExec(t *testing.T, path string, rawHex string, stmts ...string) {
	t.Helper()
	db := sqlOpen(t, path, rawHex)
	defer db.Close()
	for _, s := range stmts {
		if _, err := db.Exec(s); err != nil {
			t.Fatalf("%s: %v", s, err)
		}
	}
}

var _ = sqlite3.SQLITE_OK // the driver registers "sqlite3" for sqlExec

func TestVerifyCatchesDrift(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 2, 90)
	live := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 0x5A)
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	res, err := Verify(ctx, l, instA, live, key, nil)
	if err != nil {
		t.Fatalf("verify of a fresh rebuild: %v", err)
	}
	if res.Checkpoint != lastSeq(t, l, instA) || res.Replayed == 0 {
		t.Fatalf("verify result %+v", res)
	}
	noLeftovers(t, live)

	// Edit one message with the key, through SQL.
	rawHex := strings.Repeat("5a", projections.KeySize)
	db := sqlOpen(t, live, rawHex)
	r, err := db.Exec(`UPDATE messages SET content = X'00' WHERE ordinal = 3 AND group_id = ?`, genGroupID(1))
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := r.RowsAffected(); n != 1 {
		t.Fatalf("edited %d rows, want 1", n)
	}
	db.Close()
	_, err = Verify(ctx, l, instA, live, key, nil)
	var de *DriftError
	if !errors.As(err, &de) || !errors.Is(err, ErrDrift) {
		t.Fatalf("verify of an edited database: %v, want a *DriftError", err)
	}
	if de.Table != "messages" || !strings.Contains(de.RowKey, "ordinal=3") {
		t.Fatalf("drift names table %q row %q, want messages ordinal=3", de.Table, de.RowKey)
	}
	if strings.Contains(err.Error(), "message 3") {
		t.Fatalf("drift error leaks row content: %v", err)
	}
	noLeftovers(t, live)

	// A deleted delivery is caught too, and a rekey refuses the drifted
	// database rather than silently "fixing" it under a new key.
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	sqlExec(t, live, rawHex, `DELETE FROM deliveries WHERE seq = 5`)
	_, err = Verify(ctx, l, instA, live, key, nil)
	if !errors.As(err, &de) || de.Table != "deliveries" {
		t.Fatalf("verify after a delete: %v", err)
	}
	_, err = Rekey(ctx, l, instA, live, key, rawDBKey(t, 0x5B), testReplayOptions())
	if !errors.As(err, &de) || de.Table != "deliveries" {
		t.Fatalf("rekey of a drifted database: %v, want a *DriftError", err)
	}
	if _, err := openAsIs(live, key, projections.Options{}); err != nil {
		t.Fatalf("live database after refused rekey: %v", err)
	}

	// A trigger, view, index or table planted in the schema is drift too,
	// though no row differs: a trigger changes what the next event does.
	for _, c := range []struct{ key, sql string }{
		{"trigger evil", `CREATE TRIGGER evil AFTER INSERT ON messages BEGIN DELETE FROM messages WHERE ordinal < NEW.ordinal; END`},
		{"view peek", `CREATE VIEW peek AS SELECT content FROM messages`},
		{"index messages_extra", `CREATE INDEX messages_extra ON messages(content)`},
		{"table notes", `CREATE TABLE notes(x)`},
	} {
		if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
			t.Fatal(err)
		}
		sqlExec(t, live, rawHex, c.sql)
		_, err = Verify(ctx, l, instA, live, key, nil)
		if !errors.As(err, &de) || de.Table != "(schema)" || de.RowKey != c.key {
			t.Fatalf("verify with %s planted: %v, want a *DriftError naming it", c.key, err)
		}
	}

	// A checkpoint moved past the stream cannot be told from a stream that
	// lost its tail: it is the stream holding less, never a reason to
	// rebuild.
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	sqlExec(t, live, rawHex, `UPDATE checkpoint SET seq = seq + 1000`)
	_, err = Verify(ctx, l, instA, live, key, nil)
	if !errors.Is(err, ErrBehind) || errors.Is(err, ErrDrift) {
		t.Fatalf("verify with a checkpoint past the stream: %v, want ErrBehind", err)
	}
}

func TestMigrateInPlaceAndByReplayAgree(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 3, 120)
	dir := t.TempDir()
	key := rawDBKey(t, 0x33)
	v1 := filepath.Join(dir, "v1.db")
	if _, err := Rebuild(ctx, l, instA, v1, key, &RebuildOptions{Options: *testReplayOptions(), SchemaVersion: 1}); err != nil {
		t.Fatal(err)
	}
	if d, _ := digestOf(t, v1, key); d.Schema != 1 {
		t.Fatalf("built schema %d, want 1", d.Schema)
	}
	inPlace := filepath.Join(dir, "inplace.db")
	byReplay := filepath.Join(dir, "replay.db")
	for _, p := range []string{inPlace, byReplay} {
		b, err := os.ReadFile(v1)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	from, to, err := projections.MigrateInPlace(ctx, inPlace, key, nil)
	if err != nil || from != 1 || to != projections.LatestSchema {
		t.Fatalf("in-place migration: %d -> %d, %v", from, to, err)
	}
	res, err := Migrate(ctx, l, instA, byReplay, key, projections.Key{}, testReplayOptions())
	if err != nil || res.PreviousSchema != 1 || res.Schema != projections.LatestSchema {
		t.Fatalf("migration by replay: %+v, %v", res, err)
	}
	dIn, _ := digestOf(t, inPlace, key)
	dRe, _ := digestOf(t, byReplay, key)
	if diff := projections.Compare(dIn, dRe); diff != nil {
		t.Fatalf("in-place and replay migrations differ: %v", diff)
	}
	// The new column is filled: every group with messages knows its last one.
	db := openDB(t, inPlace, key)
	gs, err := db.Groups(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var missing, filled int
	for _, g := range gs {
		if !g.LastMessageAt.IsZero() {
			filled++
			continue
		}
		page, err := db.Messages(ctx, g.ID, projections.Page{Limit: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(page.Messages) > 0 {
			missing++
		}
	}
	db.Close()
	if missing != 0 || filled == 0 {
		t.Fatalf("after migration: %d groups with messages lack last_message_at, %d have it", missing, filled)
	}
	if _, err := Verify(ctx, l, instA, inPlace, key, nil); err != nil {
		t.Fatalf("verify after in-place migration: %v", err)
	}
}

func TestMigratePlaintextToEncrypted(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 2, 60)
	dir := t.TempDir()
	key := rawDBKey(t, 0x44)
	enc := filepath.Join(dir, "enc.db")
	if _, err := Rebuild(ctx, l, instA, enc, key, &RebuildOptions{Options: *testReplayOptions(), SchemaVersion: 1}); err != nil {
		t.Fatal(err)
	}
	// Decrypt it into an unencrypted v1 database: the kind of store a
	// client without SQLCipher has.
	plain := filepath.Join(dir, "plain.db")
	sqlExec(t, enc, strings.Repeat("44", 32),
		fmt.Sprintf(`ATTACH DATABASE '%s' AS plain KEY ''`, plain),
		`SELECT sqlcipher_export('plain')`,
		`PRAGMA plain.user_version = 1`,
		`PRAGMA plain.application_id = 1162890311`,
		`DETACH DATABASE plain`)
	if _, err := openAsIs(plain, key, projections.Options{}); !errors.Is(err, projections.ErrNotOurs) {
		t.Fatalf("plaintext file with a key: %v, want ErrNotOurs", err)
	}
	if _, err := Verify(ctx, l, instA, plain, projections.NoKey(), nil); err != nil {
		t.Fatalf("verify of the plaintext database: %v", err)
	}
	newKey := passKey(t, "now encrypted")
	res, err := Migrate(ctx, l, instA, plain, projections.NoKey(), newKey, testReplayOptions())
	if err != nil || res.PreviousSchema != 1 || res.Schema != projections.LatestSchema {
		t.Fatalf("migrate plaintext: %+v, %v", res, err)
	}
	if _, err := openAsIs(plain, projections.NoKey(), projections.Options{}); !errors.Is(err, projections.ErrWrongKey) {
		t.Fatalf("migrated file without a key: %v, want ErrWrongKey", err)
	}
	head := make([]byte, 16)
	f, err := os.Open(plain)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.Read(head)
	f.Close()
	if strings.HasPrefix(string(head), "SQLite format") {
		t.Fatal("migrated file still has a plaintext header")
	}
	if _, err := Verify(ctx, l, instA, plain, newKey, nil); err != nil {
		t.Fatalf("verify after migration: %v", err)
	}
	// A database that is not encrypted cannot be migrated in place.
	if _, _, err := projections.MigrateInPlace(ctx, enc, projections.NoKey(), nil); err == nil {
		t.Fatal("in-place migration with NoKey succeeded")
	}
}

func TestRebuildWhileAppendingLosesNothing(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	h := writeHistory(t, l, instA, 3, 1500)
	live := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 0x66)

	started := make(chan struct{})
	var once sync.Once
	stop := make(chan struct{})
	var appended atomic.Int64
	appendErr := make(chan error, 1)
	go func() {
		<-started
		for {
			select {
			case <-stop:
				appendErr <- nil
				return
			default:
			}
			h.messages(20, 3)
			n, err := h.flush(ctx, l)
			if err != nil {
				appendErr <- err
				return
			}
			appended.Add(int64(n))
		}
	}()
	o := RebuildOptions{Options: Options{BatchSize: 64, SkipMLSCheck: true, Progress: func(Progress) { once.Do(func() { close(started) }) }}}
	res, err := Rebuild(ctx, l, instA, live, key, &o)
	close(stop)
	if aerr := <-appendErr; aerr != nil {
		t.Fatalf("appending during the rebuild: %v", aerr)
	}
	if err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	if appended.Load() == 0 {
		t.Fatal("nothing was appended while the rebuild ran")
	}
	db := openDB(t, live, key)
	n, cp, err := CatchUp(ctx, l, instA, db, nil)
	db.Close()
	if err != nil {
		t.Fatal(err)
	}
	if want := lastSeq(t, l, instA); cp != want {
		t.Fatalf("after catch-up the checkpoint is %d, want the last sequence %d", cp, want)
	}
	t.Logf("appended %d during the rebuild; rebuild replayed %d, caught up %d after the swap, %d later", appended.Load(), res.Replayed, res.CaughtUp, n)

	fresh := filepath.Join(filepath.Dir(live), "fresh.db")
	if _, err := Rebuild(ctx, l, instA, fresh, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	got, _ := digestOf(t, live, key)
	want, _ := digestOf(t, fresh, key)
	if diff := projections.Compare(want, got); diff != nil {
		t.Fatalf("rebuilt-while-appending database differs from a fresh rebuild: %v", diff)
	}
	if rows, msgs := countRows(t, live, key, "messages")+countRows(t, live, key, "deliveries"), h.msgs; rows != msgs {
		t.Fatalf("%d messages and deliveries in the read model, %d appended", rows, msgs)
	}
}

func TestProjectResumesFromCheckpoints(t *testing.T) {
	l, _ := newLog(t)
	dir := t.TempDir()
	key := rawDBKey(t, 0x77)
	insts := []events.InstallationID{instA, instB}
	gens := map[events.InstallationID]*historyGen{}
	for _, inst := range insts {
		gens[inst] = writeHistory(t, l, inst, 2, 50)
	}
	// instB starts from a read model that is already partly built, so the
	// two resume from different checkpoints.
	pathOf := func(inst events.InstallationID) string { return filepath.Join(dir, string(inst)+".db") }
	if _, err := Rebuild(context.Background(), l, instB, pathOf(instB), key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	gens[instA].messages(40, 2)
	if _, err := gens[instA].flush(context.Background(), l); err != nil {
		t.Fatal(err)
	}

	run := func(wantApplied map[events.InstallationID]int) {
		t.Helper()
		var ps []Projection
		for _, inst := range insts {
			db, err := projections.Open(pathOf(inst), key, nil)
			if err != nil {
				t.Fatal(err)
			}
			defer db.Close()
			ps = append(ps, Projection{Installation: inst, DB: db})
		}
		ctx, cancel := context.WithCancel(context.Background())
		defer cancel()
		var mu sync.Mutex
		applied := map[events.InstallationID]int{}
		caughtUp := make(chan struct{})
		targets := map[events.InstallationID]uint64{}
		for _, inst := range insts {
			targets[inst] = lastSeq(t, l, inst)
		}
		// A read model already at its target has nothing to apply, so
		// OnApply never fires for it: count it as caught up from the start.
		reached := map[events.InstallationID]bool{}
		for _, p := range ps {
			cp, err := p.DB.Checkpoint(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if cp >= targets[p.Installation] {
				reached[p.Installation] = true
			}
		}
		if len(reached) == len(insts) {
			close(caughtUp)
		}
		done := make(chan error, 1)
		go func() {
			done <- Project(ctx, l, ps, &ProjectOptions{BatchSize: 16, OnApply: func(inst events.InstallationID, n int, cp uint64) {
				mu.Lock()
				defer mu.Unlock()
				applied[inst] += n
				if cp >= targets[inst] && !reached[inst] {
					reached[inst] = true
					if len(reached) == len(insts) {
						close(caughtUp)
					}
				}
			}})
		}()
		select {
		case <-caughtUp:
		case err := <-done:
			t.Fatalf("project stopped: %v", err)
		case <-time.After(60 * time.Second):
			t.Fatal("read models did not catch up")
		}
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) {
			t.Fatalf("project after cancel: %v", err)
		}
		mu.Lock()
		defer mu.Unlock()
		for inst, want := range wantApplied {
			if applied[inst] != want {
				t.Fatalf("%s: applied %d events, want %d (resume from its checkpoint)", inst, applied[inst], want)
			}
		}
	}
	// First run: A from scratch, B only what it lacks (nothing).
	run(map[events.InstallationID]int{instA: gens[instA].events, instB: 0})
	// Restart after more appends: each applies only its new events.
	more := map[events.InstallationID]int{}
	for _, inst := range insts {
		gens[inst].messages(30, 2)
		n, err := gens[inst].flush(context.Background(), l)
		if err != nil {
			t.Fatal(err)
		}
		more[inst] = n
	}
	run(more)
	for _, inst := range insts {
		if _, err := Verify(context.Background(), l, inst, pathOf(inst), key, nil); err != nil {
			t.Fatalf("verify %s after follow: %v", inst, err)
		}
		if _, cp := digestOf(t, pathOf(inst), key); cp != lastSeq(t, l, inst) {
			t.Fatalf("%s checkpoint %d, want %d", inst, cp, lastSeq(t, l, inst))
		}
	}
}
