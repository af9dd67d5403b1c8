//go:build cgo

package pagecipher

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha512"
	"testing"
	"time"
)

// The provider's page HMAC, which this package leaves to libtomcrypt, is
// HMAC-SHA512 over the page and then its number: the same bytes as Go's.
func TestProviderHMACIsHMACSHA512(t *testing.T) {
	requireAESNI(t)
	for _, n := range []int{1, 4016 + 16, 4096} {
		key, page, pgno := random(t, 64), random(t, n), random(t, 4)
		got, err := providerHMAC(key, page, pgno)
		if err != nil {
			t.Fatal(err)
		}
		m := hmac.New(sha512.New, key)
		m.Write(page)
		m.Write(pgno)
		if want := m.Sum(nil); !bytes.Equal(got, want) {
			t.Fatalf("%d bytes: provider HMAC %x, HMAC-SHA512 %x", n, got, want)
		}
	}
}

// BenchmarkPageHMAC times the HMAC-SHA512 SQLCipher computes for every
// page it writes or reads (the encrypted page and its IV, 4032 bytes, then
// the page number) by the provider (libtomcrypt, built without assembly)
// and by Go's crypto/sha512, in the same run; x-go is the provider's time
// over Go's. A reference for what a faster page HMAC would save.
func BenchmarkPageHMAC(b *testing.B) {
	requireAESNI(b)
	key, page, pgno := random(b, 64), random(b, 4032), random(b, 4)
	var ltc, gotime time.Duration
	m := hmac.New(sha512.New, key)
	for b.Loop() {
		t0 := time.Now()
		if _, err := providerHMAC(key, page, pgno); err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		m.Reset()
		m.Write(page)
		m.Write(pgno)
		m.Sum(nil)
		ltc, gotime = ltc+t1.Sub(t0), gotime+time.Since(t1)
	}
	b.ReportMetric(float64(ltc.Nanoseconds())/1e3/float64(b.N), "provider-µs/page")
	b.ReportMetric(float64(gotime.Nanoseconds())/1e3/float64(b.N), "go-µs/page")
	b.ReportMetric(float64(ltc)/float64(gotime), "x-go")
}
