package ciphersuite

import (
	"bytes"
	"math/big"
)

// The encodings of the X25519 and X448 public keys of small order (RFC
// 7748 §6): every shared secret with one is all zeros, so no HPKE
// encryption to it succeeds, and a tree node or key package carrying one
// could never be encrypted to. crypto/ecdh and circl check only a key's
// length. A Montgomery curve and its twist have small-order points at
// u = 0 and u = ±1 and, for Curve25519 (cofactor 8), two more u of order
// 8; an encoding may also be non-canonical (u + p for u = 0 and 1, the
// only ones below 2^255 or 2^448), and X25519 ignores the top bit.
// Comparing with this table costs nothing beside the DH a check by
// computation would take (about 50 µs a key, for every node of every
// path a member processes).
var (
	lowOrderX25519 = lowOrderEncodings(32, x25519P(),
		"325606250916557431795983626356110631294008115727848805560023387167927233504",
		"39382357235489614581723060781553021112529911719440698176882885853963445705823")
	lowOrderX448 = lowOrderEncodings(56, x448P())
)

func x25519P() *big.Int {
	p := new(big.Int).Lsh(big.NewInt(1), 255)
	return p.Sub(p, big.NewInt(19))
}

func x448P() *big.Int {
	p := new(big.Int).Lsh(big.NewInt(1), 448)
	p.Sub(p, new(big.Int).Lsh(big.NewInt(1), 224))
	return p.Sub(p, big.NewInt(1))
}

// lowOrderEncodings returns the little-endian encodings of 0, 1, p-1, p,
// p+1 and of the decimal values in more.
func lowOrderEncodings(size int, p *big.Int, more ...string) [][]byte {
	us := []*big.Int{big.NewInt(0), big.NewInt(1), new(big.Int).Sub(p, big.NewInt(1)), p, new(big.Int).Add(p, big.NewInt(1))}
	for _, s := range more {
		u, ok := new(big.Int).SetString(s, 10)
		if !ok {
			panic("ciphersuite: bad low-order constant " + s)
		}
		us = append(us, u)
	}
	out := make([][]byte, len(us))
	for i, u := range us {
		b := u.FillBytes(make([]byte, size)) // big-endian
		for l, r := 0, len(b)-1; l < r; l, r = l+1, r-1 {
			b[l], b[r] = b[r], b[l]
		}
		out[i] = b
	}
	return out
}

// isLowOrderX25519 reports whether pub (32 bytes) encodes a small-order
// X25519 point, its top bit ignored as X25519 does.
func isLowOrderX25519(pub []byte) bool {
	var k [32]byte
	copy(k[:], pub)
	k[31] &= 0x7f
	return inTable(lowOrderX25519, k[:])
}

// isLowOrderX448 reports whether pub (56 bytes) encodes a small-order
// X448 point.
func isLowOrderX448(pub []byte) bool { return inTable(lowOrderX448, pub) }

func inTable(table [][]byte, b []byte) bool {
	for _, t := range table {
		if bytes.Equal(t, b) {
			return true
		}
	}
	return false
}
