//go:build cgo

package pagecipher

import (
	"bytes"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"testing"
)

func unhex(t testing.TB, s string) []byte {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestActiveWhereTheCPUHasAES fails when this machine has the AES
// instructions and the cipher was not installed: a go-sqlcipher upgrade
// that changed the provider would otherwise slow every database down
// silently.
func TestActiveWhereTheCPUHasAES(t *testing.T) {
	on, what := Active()
	t.Logf("page cipher: %s", what)
	if os.Getenv(EnvDisable) == "off" {
		if on {
			t.Fatalf("%s=off, yet the AES instructions are installed", EnvDisable)
		}
		return
	}
	if runtime.GOARCH == "amd64" && aesniSupported() && !on {
		t.Fatalf("this CPU has AES-NI but the page cipher is %s", what)
	}
}

// The AES-256 example of FIPS 197 (appendix C.3) and the CBC-AES256
// vectors of NIST SP 800-38A (F.2.5, F.2.6), in both implementations.
func TestKnownAnswers(t *testing.T) {
	requireAESNI(t)
	fipsKey := unhex(t, "000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
	sp := struct{ key, iv, plain, cipher string }{
		key:    "603deb1015ca71be2b73aef0857d77811f352c073b6108d72d9810a30914dff4",
		iv:     "000102030405060708090a0b0c0d0e0f",
		plain:  "6bc1bee22e409f96e93d7e117393172aae2d8a571e03ac9c9eb76fac45af8e5130c81c46a35ce411e5fbc1191a0a52eff69f2445df4f9b17ad2b417be66c3710",
		cipher: "f58c4c04d6e5f1ba779eabfb5f7bfbd69cfc4e967edb808d679f777bc6702c7d39f23369a9d9bacfa530e26304231461b2eb05e2c39be9fcda6c19078c6a9d1b",
	}
	cases := []struct {
		name                      string
		key, iv, plain, ciphertxt []byte
	}{
		// One block under a zero IV is the block cipher itself.
		{"FIPS 197 C.3", fipsKey, make([]byte, 16), unhex(t, "00112233445566778899aabbccddeeff"), unhex(t, "8ea2b7ca516745bfeafc49904b496089")},
		{"SP 800-38A F.2.5", unhex(t, sp.key), unhex(t, sp.iv), unhex(t, sp.plain), unhex(t, sp.cipher)},
	}
	for _, c := range cases {
		for _, impl := range []struct {
			name string
			cbc  func(bool, []byte, []byte, []byte) ([]byte, error)
		}{{"aesni", aesniCBC}, {"libtomcrypt", ltcCBC}} {
			got, err := impl.cbc(true, c.key, c.iv, c.plain)
			if err != nil || !bytes.Equal(got, c.ciphertxt) {
				t.Errorf("%s, %s encrypt = %x, %v; want %x", c.name, impl.name, got, err, c.ciphertxt)
			}
			got, err = impl.cbc(false, c.key, c.iv, c.ciphertxt)
			if err != nil || !bytes.Equal(got, c.plain) {
				t.Errorf("%s, %s decrypt = %x, %v; want %x", c.name, impl.name, got, err, c.plain)
			}
		}
	}
}

// TestAgreesWithLibtomcrypt compares the two on random keys, IVs and
// lengths, SQLCipher 4's page (4096 bytes less 80 reserved) among them,
// and the lengths around the four-block stride of the decryption.
func TestAgreesWithLibtomcrypt(t *testing.T) {
	requireAESNI(t)
	lengths := []int{16, 32, 48, 64, 80, 112, 128, 144, 4016, 4096, 65536}
	for i := 0; i < 200; i++ {
		lengths = append(lengths, 16*(1+int(randByte(t))%300))
	}
	for _, n := range lengths {
		key, iv, plain := random(t, 32), random(t, 16), random(t, n)
		a, err := aesniCBC(true, key, iv, plain)
		if err != nil {
			t.Fatal(err)
		}
		l, err := ltcCBC(true, key, iv, plain)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a, l) {
			t.Fatalf("%d bytes: AES-NI and libtomcrypt encrypt differently", n)
		}
		back, err := aesniCBC(false, key, iv, l)
		if err != nil || !bytes.Equal(back, plain) {
			t.Fatalf("%d bytes: AES-NI does not decrypt libtomcrypt's ciphertext (%v)", n, err)
		}
	}
}

// TestRefusesWhatItDoesNotTake: other key sizes and partial blocks are
// not its (SQLCipher's provider then falls back to libtomcrypt).
func TestRefusesWhatItDoesNotTake(t *testing.T) {
	requireAESNI(t)
	iv := make([]byte, 16)
	for _, c := range []struct {
		key, in int
	}{{16, 64}, {24, 64}, {31, 64}, {32, 15}, {32, 17}, {32, 4000 + 8}} {
		if _, err := aesniCBC(true, make([]byte, c.key), iv, make([]byte, c.in)); err == nil {
			t.Errorf("key of %d bytes, %d bytes in: accepted", c.key, c.in)
		}
	}
}

// TestDatabasesMoveBothWays writes a SQLCipher file with each page
// cipher in turn, and each reads and checks all the others wrote: the
// files are the same format.
func TestDatabasesMoveBothWays(t *testing.T) {
	requireAESNI(t)
	defer useAESNI(true)
	path := filepath.Join(t.TempDir(), "both.db")
	key := random(t, 32)
	blob := random(t, 100<<10) // overflow pages
	for round, aesni := range []bool{false, true, false, true} {
		useAESNI(aesni)
		db := openDB(t, path, key)
		if round == 0 {
			mustExec(t, db, "CREATE TABLE t (round INTEGER PRIMARY KEY, aesni INTEGER, b BLOB)")
		}
		rows, err := db.Query("SELECT round, b FROM t ORDER BY round")
		if err != nil {
			t.Fatalf("round %d (aesni %v): %v", round, aesni, err)
		}
		n := 0
		for rows.Next() {
			var r int
			var b []byte
			if err := rows.Scan(&r, &b); err != nil {
				t.Fatal(err)
			}
			if r != n || !bytes.Equal(b, blob) {
				t.Fatalf("round %d (aesni %v) reads row %d wrong", round, aesni, r)
			}
			n++
		}
		if err := rows.Err(); err != nil {
			t.Fatalf("round %d (aesni %v): %v", round, aesni, err)
		}
		rows.Close()
		if n != round {
			t.Fatalf("round %d (aesni %v) reads %d rows", round, aesni, n)
		}
		mustExec(t, db, "INSERT INTO t VALUES (?, ?, ?)", round, aesni, blob)
		var problems string
		if err := db.QueryRow("PRAGMA cipher_integrity_check").Scan(&problems); err != sql.ErrNoRows {
			t.Fatalf("round %d (aesni %v): cipher_integrity_check: %q %v", round, aesni, problems, err)
		}
		mustExec(t, db, "PRAGMA wal_checkpoint(TRUNCATE)")
		if err := db.Close(); err != nil {
			t.Fatal(err)
		}
	}
	// And the wrong key is still refused.
	db := openDB(t, path, random(t, 32))
	defer db.Close()
	if _, err := db.Exec("SELECT count(*) FROM t"); err == nil {
		t.Fatal("a wrong key read the database")
	}
}

func requireAESNI(t testing.TB) {
	t.Helper()
	if on, what := Active(); !on {
		// TestActiveWhereTheCPUHasAES fails where this should not happen.
		t.Skipf("the AES instructions are not installed: %s", what)
	}
}

func openDB(t testing.TB, path string, key []byte) *sql.DB {
	t.Helper()
	q := url.Values{}
	q.Set("_pragma_key", "x'"+hex.EncodeToString(key)+"'")
	q.Set("_journal_mode", "WAL")
	db, err := sql.Open("sqlite3", path+"?"+q.Encode())
	if err != nil {
		t.Fatal(err)
	}
	db.SetMaxOpenConns(1)
	return db
}

func mustExec(t testing.TB, db *sql.DB, q string, args ...any) {
	t.Helper()
	if _, err := db.Exec(q, args...); err != nil {
		t.Fatalf("%s: %v", q, err)
	}
}

func random(t testing.TB, n int) []byte {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

func randByte(t testing.TB) byte { return random(t, 1)[0] }
