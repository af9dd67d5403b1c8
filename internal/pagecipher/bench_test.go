//go:build cgo

package pagecipher

import (
	"path/filepath"
	"testing"
	"time"
)

// BenchmarkPageCipher times SQLCipher pages (4016 bytes: 4096 less the
// IV and HMAC reserve; 16 per call, so that the call's own cost does not
// count) through each AES-256-CBC, in the same run; x-libtomcrypt is the
// AES instructions' time over libtomcrypt's.
func BenchmarkPageCipher(b *testing.B) {
	requireAESNI(b)
	const pages = 16
	key, iv, page := random(b, 32), random(b, 16), random(b, pages*4016)
	for _, mode := range []struct {
		name    string
		encrypt bool
	}{{"encrypt", true}, {"decrypt", false}} {
		b.Run(mode.name, func(b *testing.B) {
			var aesni, ltc time.Duration
			for i := 0; i < b.N; i++ {
				t0 := time.Now()
				if _, err := aesniCBC(mode.encrypt, key, iv, page); err != nil {
					b.Fatal(err)
				}
				t1 := time.Now()
				if _, err := ltcCBC(mode.encrypt, key, iv, page); err != nil {
					b.Fatal(err)
				}
				aesni, ltc = aesni+t1.Sub(t0), ltc+time.Since(t1)
			}
			b.ReportMetric(float64(aesni.Nanoseconds())/1e3/float64(b.N*pages), "aesni-µs/page")
			b.ReportMetric(float64(ltc.Nanoseconds())/1e3/float64(b.N*pages), "libtomcrypt-µs/page")
			b.ReportMetric(float64(aesni)/float64(ltc), "x-libtomcrypt")
		})
	}
}

// BenchmarkBlobRewrite is the read model's heavy write in miniature: a
// transaction replacing a state-sized blob (177 KiB, a group of 1,000's
// MLS state) in a WAL-mode SQLCipher file, with secure_delete as the read
// model runs; one file per page cipher, interleaved in the same run.
func BenchmarkBlobRewrite(b *testing.B) {
	requireAESNI(b)
	defer useAESNI(true)
	dir := b.TempDir()
	blob := random(b, 177<<10)
	open := func(name string, aesni bool) func() time.Duration {
		useAESNI(aesni)
		db := openDB(b, filepath.Join(dir, name), random(b, 32))
		b.Cleanup(func() { db.Close() })
		mustExec(b, db, "PRAGMA secure_delete = ON")
		mustExec(b, db, "CREATE TABLE s (id INTEGER PRIMARY KEY, state BLOB)")
		mustExec(b, db, "INSERT INTO s VALUES (1, ?)", blob)
		return func() time.Duration {
			// New bytes throughout: SQLite rewrites only the overflow
			// pages whose bytes change (as a new epoch's row is).
			next := random(b, len(blob))
			t := time.Now()
			mustExec(b, db, "UPDATE s SET state = ? WHERE id = 1", next)
			return time.Since(t)
		}
	}
	withAESNI, withLTC := open("aesni.db", true), open("ltc.db", false)
	var aesni, ltc time.Duration
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if i%2 == 0 {
			aesni += withAESNI()
			ltc += withLTC()
		} else {
			ltc += withLTC()
			aesni += withAESNI()
		}
	}
	b.ReportMetric(float64(aesni.Microseconds())/float64(b.N)/1000, "aesni-ms")
	b.ReportMetric(float64(ltc.Microseconds())/float64(b.N)/1000, "libtomcrypt-ms")
	b.ReportMetric(float64(aesni)/float64(ltc), "x-libtomcrypt")
}
