package ciphersuite

import (
	"crypto/ecdh"
	"crypto/rand"
	"testing"

	"github.com/cloudflare/circl/dh/x448"
)

// Every encoding in the tables is of a point of small order: a DH with
// any key gives all zeros (crypto/ecdh refuses it, circl reports it), for
// X25519 with the top bit set too. Generated keys are not in the tables.
// (That the tables miss none is RFC 7748's curve arithmetic, in
// loworder.go's comment: u = 0, ±1 and Curve25519's two of order 8.)
func TestLowOrderTablesHoldPointsOfSmallOrder(t *testing.T) {
	if len(lowOrderX25519) != 7 || len(lowOrderX448) != 5 {
		t.Fatalf("tables of %d and %d encodings; want 7 and 5", len(lowOrderX25519), len(lowOrderX448))
	}
	for range 3 {
		k, err := ecdh.X25519().GenerateKey(rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		for i, enc := range lowOrderX25519 {
			for _, top := range []byte{0, 0x80} {
				b := append([]byte(nil), enc...)
				b[31] |= top
				if !isLowOrderX25519(b) {
					t.Errorf("X25519 entry %d, top bit %#x: not found", i, top)
				}
				pub, err := ecdh.X25519().NewPublicKey(b)
				if err != nil {
					t.Fatal(err)
				}
				if _, err := k.ECDH(pub); err == nil {
					t.Errorf("X25519 entry %d (%x), top bit %#x: a DH with it succeeded; it is not of small order", i, enc, top)
				}
			}
		}
		if isLowOrderX25519(k.PublicKey().Bytes()) {
			t.Errorf("a generated X25519 key %x is in the table", k.PublicKey().Bytes())
		}
		var priv, pub, shared x448.Key
		if _, err := rand.Read(priv[:]); err != nil {
			t.Fatal(err)
		}
		for i, enc := range lowOrderX448 {
			if !isLowOrderX448(enc) {
				t.Errorf("X448 entry %d: not found", i)
			}
			var p x448.Key
			copy(p[:], enc)
			if x448.Shared(&shared, &priv, &p) {
				t.Errorf("X448 entry %d (%x): a DH with it succeeded; it is not of small order", i, enc)
			}
		}
		x448.KeyGen(&pub, &priv)
		if isLowOrderX448(pub[:]) {
			t.Errorf("a generated X448 key %x is in the table", pub)
		}
	}
}
