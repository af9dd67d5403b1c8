package projections

import (
	"bytes"
	"context"
	"database/sql"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	sqlite3 "github.com/mutecomm/go-sqlcipher/v4"
)

func newKey(t testing.TB) Key {
	t.Helper()
	k, err := GenerateRawKey()
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// cheapArgon2 keeps passphrase tests fast; the parameters are stored in
// the sidecar and read back, which is what the tests exercise.
var cheapArgon2 = Argon2Params{Time: 1, MemoryKiB: 1024, Threads: 1}

func mustOpen(t testing.TB, path string, k Key, o *Options) *DB {
	t.Helper()
	db, err := Open(path, k, o)
	if err != nil {
		t.Fatalf("Open(%s): %v", path, err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

func TestOpenCreatesHardenedSQLCipher4(t *testing.T) {
	path := filepath.Join(t.TempDir(), "sub", "ro.db")
	k := newKey(t)
	db := mustOpen(t, path, k, nil)
	if db.SchemaVersion() != LatestSchema {
		t.Fatalf("schema %d, want %d", db.SchemaVersion(), LatestSchema)
	}
	// Every pooled connection carries the hardening, not just the first.
	ctx := context.Background()
	var conns []*sql.Conn
	for i := 0; i < 4; i++ {
		c, err := db.sql.Conn(ctx)
		if err != nil {
			t.Fatal(err)
		}
		conns = append(conns, c)
		for p, want := range map[string]string{"temp_store": "2", "journal_mode": "wal", "foreign_keys": "1", "cipher_page_size": "4096", "kdf_iter": "256000", "cipher_hmac_algorithm": "HMAC_SHA512", "busy_timeout": "5000", "secure_delete": "1"} {
			var got string
			if err := c.QueryRowContext(ctx, "PRAGMA "+p).Scan(&got); err != nil {
				t.Fatal(err)
			}
			if !strings.EqualFold(got, want) {
				t.Errorf("conn %d: PRAGMA %s = %s, want %s", i, p, got, want)
			}
		}
	}
	for _, c := range conns {
		c.Close()
	}
	// The writing connection keeps a larger page cache (writerCacheKiB).
	var cache int
	if err := db.w.QueryRowContext(ctx, "PRAGMA cache_size").Scan(&cache); err != nil || cache != -writerCacheKiB {
		t.Errorf("writer's PRAGMA cache_size = %d (%v), want %d", cache, err, -writerCacheKiB)
	}
	hdr := make([]byte, 16)
	f, _ := os.Open(path)
	f.Read(hdr)
	f.Close()
	if bytes.Equal(hdr, sqliteHeader) {
		t.Fatal("database file is not encrypted")
	}
}

func TestPermissions(t *testing.T) {
	old := syscall.Umask(0)
	defer syscall.Umask(old)
	dir := filepath.Join(t.TempDir(), "models")
	path := filepath.Join(dir, "ro.db")
	pk, _ := PassphraseKey([]byte("correct horse"))
	db := mustOpen(t, path, pk, &Options{Argon2: cheapArgon2})
	applyAll(t, db, sampleStream(t, "inst-a", 1, 3))
	check := func(p string, want os.FileMode) {
		t.Helper()
		st, err := os.Stat(p)
		if err != nil {
			t.Fatalf("stat %s: %v", p, err)
		}
		if st.Mode().Perm() != want {
			t.Errorf("%s: mode %v, want %v", p, st.Mode().Perm(), want)
		}
	}
	check(dir, 0o700)
	check(path, 0o600)
	check(path+"-wal", 0o600)
	check(path+"-shm", 0o600)
	check(SaltPath(path), 0o600)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	check(path, 0o600)
}

// TestPlainSQLCipherReader proves the file is standard SQLCipher 4: a
// connection opened without any of our helpers reads it with PRAGMA key.
func TestPlainSQLCipherReader(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.db")
	raw := bytes.Repeat([]byte{0x42}, 32)
	k, _ := RawKey(raw)
	db := mustOpen(t, path, k, nil)
	applyAll(t, db, sampleStream(t, "inst-a", 1, 5))
	cp, _ := db.Checkpoint(context.Background())
	db.Close()

	hexKey := hex.EncodeToString(raw)
	// 1. The driver's documented DSN: its first statement on the fresh
	// connection is PRAGMA key = "x'..'"; nothing else of ours is involved.
	plain, err := sql.Open("sqlite3", path+"?_pragma_key="+url.QueryEscape("x'"+hexKey+"'"))
	if err != nil {
		t.Fatal(err)
	}
	defer plain.Close()
	var seq uint64
	if err := plain.QueryRow("SELECT seq FROM checkpoint").Scan(&seq); err != nil {
		t.Fatalf("plain SQLCipher reader: %v", err)
	}
	if seq != cp || seq == 0 {
		t.Fatalf("plain reader saw checkpoint %d, want %d", seq, cp)
	}
	// 2. Pure SQL: attach the file with its key to an in-memory database.
	mem, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		t.Fatal(err)
	}
	defer mem.Close()
	mem.SetMaxOpenConns(1)
	if _, err := mem.Exec(fmt.Sprintf(`ATTACH DATABASE '%s' AS enc KEY "x'%s'"`, path, hexKey)); err != nil {
		t.Fatal(err)
	}
	var n int
	if err := mem.QueryRow("SELECT count(*) FROM enc.messages").Scan(&n); err != nil || n == 0 {
		t.Fatalf("attached reader: %d messages, %v", n, err)
	}
	var suite int
	if err := mem.QueryRow("SELECT ciphersuite FROM enc.installation").Scan(&suite); err != nil || suite != 3 {
		t.Fatalf("attached reader: ciphersuite %d, %v", suite, err)
	}
	// And without the key, nothing reads.
	nokey, _ := sql.Open("sqlite3", path)
	defer nokey.Close()
	if err := nokey.QueryRow("SELECT count(*) FROM messages").Scan(&n); err == nil {
		t.Fatal("read the database without a key")
	}
}

func TestWrongKey(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.db")
	mustOpen(t, path, newKey(t), nil).Close()
	_, err := Open(path, newKey(t), nil)
	if !errors.Is(err, ErrWrongKey) || errors.Is(err, ErrCorrupt) {
		t.Fatalf("want ErrWrongKey only, got %v", err)
	}
	var fe *FileError
	if !errors.As(err, &fe) || fe.Path != path || !strings.Contains(err.Error(), path) {
		t.Fatalf("error does not name the file: %v", err)
	}
	// A passphrase key with the wrong passphrase too.
	p2 := filepath.Join(t.TempDir(), "pp.db")
	good, _ := PassphraseKey([]byte("right"))
	bad, _ := PassphraseKey([]byte("wrong"))
	mustOpen(t, p2, good, &Options{Argon2: cheapArgon2}).Close()
	if _, err := Open(p2, bad, nil); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("wrong passphrase: %v", err)
	}
	db := mustOpen(t, p2, good, nil)
	db.Close()
	// Without its salt the passphrase cannot work.
	os.Rename(SaltPath(p2), SaltPath(p2)+".moved")
	if _, err := Open(p2, good, nil); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("missing salt: %v", err)
	}
	// NoKey on an encrypted file.
	if _, err := Open(path, NoKey(), nil); !errors.Is(err, ErrWrongKey) {
		t.Fatalf("NoKey on encrypted file: %v", err)
	}
	if _, err := Open(path, Key{}, nil); err == nil {
		t.Fatal("zero Key accepted")
	}
}

func flip(t *testing.T, path string, off int64) {
	t.Helper()
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	b := make([]byte, 8)
	if _, err := f.ReadAt(b, off); err != nil {
		t.Fatal(err)
	}
	for i := range b {
		b[i] ^= 0xff
	}
	if _, err := f.WriteAt(b, off); err != nil {
		t.Fatal(err)
	}
}

func TestCorruptFile(t *testing.T) {
	build := func() (string, Key) {
		path := filepath.Join(t.TempDir(), "ro.db")
		k := newKey(t)
		db := mustOpen(t, path, k, nil)
		applyAll(t, db, sampleStream(t, "inst-a", 2, 40))
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
		if st, _ := os.Stat(path); st.Size() < 4*PageSize {
			t.Fatalf("test database too small: %d bytes", st.Size())
		}
		return path, k
	}
	t.Run("page1", func(t *testing.T) {
		path, k := build()
		flip(t, path, 100)
		_, err := Open(path, k, nil)
		if !errors.Is(err, ErrCorrupt) || errors.Is(err, ErrWrongKey) {
			t.Fatalf("want ErrCorrupt, got %v", err)
		}
		if !strings.Contains(err.Error(), path) {
			t.Fatalf("error does not name the file: %v", err)
		}
	})
	t.Run("data page", func(t *testing.T) {
		path, k := build()
		st, _ := os.Stat(path)
		last := st.Size()/PageSize - 1
		flip(t, path, last*PageSize+200)
		db, err := Open(path, k, nil)
		if err == nil {
			// Open reads only the schema; the damage shows on use.
			defer db.Close()
			_, err = db.Digest(context.Background())
			if err == nil {
				err = db.IntegrityCheck(context.Background())
			}
		}
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("want ErrCorrupt, got %v", err)
		}
		_, err = Open(path, k, &Options{CheckIntegrity: true})
		if !errors.Is(err, ErrCorrupt) {
			t.Fatalf("CheckIntegrity: want ErrCorrupt, got %v", err)
		}
	})
}

// TestOpenDamagedMetaPageIsCorrupt: a damaged epochlog_meta page is
// damage (ErrCorrupt: rebuild replaces the file), not a foreign file
// (ErrNotOurs: rebuild refuses to touch it). Only a missing or foreign
// schema marker means ErrNotOurs.
func TestOpenDamagedMetaPageIsCorrupt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.db")
	k := newKey(t)
	db := mustOpen(t, path, k, nil)
	applyAll(t, db, sampleStream(t, "inst-a", 1, 10))
	var root int64
	if err := db.sql.QueryRow(`SELECT rootpage FROM sqlite_master WHERE name = 'epochlog_meta'`).Scan(&root); err != nil {
		t.Fatal(err)
	}
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	flip(t, path, (root-1)*PageSize+200)
	_, err := Open(path, k, nil)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("Open of a file whose epochlog_meta page is damaged: want ErrCorrupt, got %v (ErrNotOurs=%v)", err, errors.Is(err, ErrNotOurs))
	}
	if !strings.Contains(err.Error(), path) {
		t.Fatalf("error does not name the file: %v", err)
	}
}

// TestOpenMissingOrForeignMarkerIsNotOurs: a file with our application_id
// but no epochlog_meta table, no format row, or another format is
// ErrNotOurs, never ErrCorrupt (rebuild must not replace it).
func TestOpenMissingOrForeignMarkerIsNotOurs(t *testing.T) {
	for _, tc := range []struct{ name, stmt string }{
		{"no table", `DROP TABLE epochlog_meta`},
		{"no row", `DELETE FROM epochlog_meta WHERE name = 'format'`},
		{"other format", `UPDATE epochlog_meta SET value = 'someone.else' WHERE name = 'format'`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "ro.db")
			k := newKey(t)
			db := mustOpen(t, path, k, nil)
			if _, err := db.sql.Exec(tc.stmt); err != nil {
				t.Fatal(err)
			}
			if err := db.Close(); err != nil {
				t.Fatal(err)
			}
			_, err := Open(path, k, nil)
			if !errors.Is(err, ErrNotOurs) || errors.Is(err, ErrCorrupt) {
				t.Fatalf("want ErrNotOurs, got %v", err)
			}
		})
	}
}

func TestNotOurs(t *testing.T) {
	dir := t.TempDir()
	k := newKey(t)
	// An encrypted SQLCipher database with someone else's schema.
	path := filepath.Join(dir, "foreign.db")
	c := newConnector(path, k.bytes(), (&Options{}).withDefaults(path), false, false)
	if err := prepareFile(path); err != nil {
		t.Fatal(err)
	}
	fdb := sql.OpenDB(c)
	if _, err := fdb.Exec("CREATE TABLE users(id INTEGER PRIMARY KEY)"); err != nil {
		t.Fatal(err)
	}
	fdb.Close()
	if _, err := Open(path, k, nil); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("foreign schema: %v", err)
	}
	// A text file.
	txt := filepath.Join(dir, "notes.txt")
	os.WriteFile(txt, []byte("hello, this is not a database\n"), 0o600)
	if _, err := Open(txt, k, nil); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("text file: %v", err)
	}
	// An unencrypted SQLite file opened with a key.
	plain := filepath.Join(dir, "plain.db")
	pdb, _ := sql.Open("sqlite3", plain)
	pdb.Exec("CREATE TABLE t(x)")
	pdb.Close()
	if _, err := Open(plain, k, nil); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("plaintext file with key: %v", err)
	}
	if _, err := Open(plain, NoKey(), nil); !errors.Is(err, ErrNotOurs) {
		t.Fatalf("plaintext foreign file with NoKey: %v", err)
	}
	// NoKey never creates.
	if _, err := Open(filepath.Join(dir, "new.db"), NoKey(), nil); err == nil {
		t.Fatal("NoKey created a database")
	}
}

func TestSchemaTooNew(t *testing.T) {
	path := filepath.Join(t.TempDir(), "ro.db")
	k := newKey(t)
	db := mustOpen(t, path, k, nil)
	if _, err := db.sql.Exec(fmt.Sprintf("PRAGMA user_version = %d", LatestSchema+1)); err != nil {
		t.Fatal(err)
	}
	db.Close()
	_, err := Open(path, k, nil)
	if !errors.Is(err, ErrSchemaTooNew) || !strings.Contains(err.Error(), path) {
		t.Fatalf("want ErrSchemaTooNew naming the file, got %v", err)
	}
	// A v2 file is not opened as v1 either (downgrade refused).
	p2 := filepath.Join(t.TempDir(), "ro.db")
	mustOpen(t, p2, k, nil).Close()
	if _, err := Open(p2, k, &Options{SchemaVersion: 1}); !errors.Is(err, ErrSchemaTooNew) {
		t.Fatalf("downgrade: %v", err)
	}
}

func TestKeyRedaction(t *testing.T) {
	raw := bytes.Repeat([]byte{0xab}, 32)
	k, _ := RawKey(raw)
	p, _ := PassphraseKey([]byte("hunter2-passphrase"))
	for _, key := range []Key{k, p} {
		j, _ := json.Marshal(struct{ K Key }{key})
		txt, _ := key.MarshalText()
		for _, s := range []string{
			fmt.Sprint(key), fmt.Sprintf("%v %+v %#v %s %x %X %q %d", key, key, key, key, key, key, key, key),
			key.String(), key.GoString(), string(j), string(txt),
			fmt.Sprintf("%+v", struct{ K Key }{key}),
		} {
			if strings.Contains(strings.ToLower(s), "abab") || strings.Contains(s, "hunter2") || strings.Contains(s, "171") {
				t.Fatalf("key leaked: %s", s)
			}
			if !strings.Contains(s, "REDACTED") {
				t.Fatalf("not redacted: %s", s)
			}
		}
	}
	if _, err := RawKey(raw[:31]); err == nil {
		t.Fatal("31-byte raw key accepted")
	}
	// Constructors copy.
	k2, _ := RawKey(raw)
	raw[0] ^= 1
	if !k.Equal(k2) {
		t.Fatal("RawKey did not copy its input")
	}
	k3, _ := RawKey(raw)
	if k.Equal(k3) || k.Equal(p) {
		t.Fatal("Equal true for different keys")
	}
	// An error from a wrong key never contains the key.
	path := filepath.Join(t.TempDir(), "ro.db")
	mustOpen(t, path, k, nil).Close()
	_, err := Open(path, k3, nil)
	if err == nil || strings.Contains(strings.ToLower(err.Error()), hex.EncodeToString(raw[1:8])) {
		t.Fatalf("error leaks key or missing: %v", err)
	}
}

var _ = sqlite3.ErrNotADB
