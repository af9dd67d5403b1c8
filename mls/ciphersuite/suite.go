package ciphersuite

import (
	"crypto/ecdh"
	"crypto/elliptic"
	"crypto/hpke"
	"crypto/sha256"
	"crypto/sha512"
	"errors"
	"fmt"
	"hash"

	circlhpke "github.com/cloudflare/circl/hpke"
)

// ErrUnsupportedSuite is returned by [Lookup] for a cipher suite that RFC 9420
// does not register (every registered suite, 1 to 7, is implemented).
var ErrUnsupportedSuite = errors.New("mls/ciphersuite: unsupported cipher suite")

// ErrBadSignature is returned when a signature does not verify. It never says
// why (wrong key, malformed encoding, or mismatch).
var ErrBadSignature = errors.New("mls/ciphersuite: signature verification failed")

// ErrDecrypt is returned when AEAD or HPKE decryption fails. It is opaque on
// purpose: a wrong key, a bad tag and a malformed KEM output look the same.
var ErrDecrypt = errors.New("mls/ciphersuite: decryption failed")

// ErrInvalidKey is returned when key bytes have the wrong length or do not
// encode a valid key for the suite. The error never echoes the key.
var ErrInvalidKey = errors.New("mls/ciphersuite: invalid key")

// Suite is an MLS CipherSuite identifier (uint16 on the wire).
type Suite uint16

// The cipher suites registered by RFC 9420 §17.1.
const (
	MLS128DHKEMX25519AES128GCMSHA256Ed25519        Suite = 0x0001
	MLS128DHKEMP256AES128GCMSHA256P256             Suite = 0x0002
	MLS128DHKEMX25519ChaCha20Poly1305SHA256Ed25519 Suite = 0x0003
	MLS256DHKEMX448AES256GCMSHA512Ed448            Suite = 0x0004
	MLS256DHKEMP521AES256GCMSHA512P521             Suite = 0x0005
	MLS256DHKEMX448ChaCha20Poly1305SHA512Ed448     Suite = 0x0006
	MLS256DHKEMP384AES256GCMSHA384P384             Suite = 0x0007
)

// Default is the suite epochlog uses unless configured otherwise.
const Default = MLS128DHKEMX25519ChaCha20Poly1305SHA256Ed25519

var suiteNames = map[Suite]string{
	0x0001: "MLS_128_DHKEMX25519_AES128GCM_SHA256_Ed25519",
	0x0002: "MLS_128_DHKEMP256_AES128GCM_SHA256_P256",
	0x0003: "MLS_128_DHKEMX25519_CHACHA20POLY1305_SHA256_Ed25519",
	0x0004: "MLS_256_DHKEMX448_AES256GCM_SHA512_Ed448",
	0x0005: "MLS_256_DHKEMP521_AES256GCM_SHA512_P521",
	0x0006: "MLS_256_DHKEMX448_CHACHA20POLY1305_SHA512_Ed448",
	0x0007: "MLS_256_DHKEMP384_AES256GCM_SHA384_P384",
}

// String returns the RFC 9420 name of the suite, or "CipherSuite(0x....)"
// for an unregistered value.
func (s Suite) String() string {
	if n, ok := suiteNames[s]; ok {
		return n
	}
	return fmt.Sprintf("CipherSuite(0x%04x)", uint16(s))
}

// Supported reports whether this package implements s.
func (s Suite) Supported() bool {
	_, ok := suites[s]
	return ok
}

// SupportedSuites returns the implemented suites in ascending order.
func SupportedSuites() []Suite {
	return []Suite{1, 2, 3, 4, 5, 6, 7}
}

type aeadKind int

const (
	aeadAESGCM aeadKind = iota
	aeadChaCha20Poly1305
)

type sigKind int

const (
	sigEd25519 sigKind = iota
	sigECDSA
	sigEd448
)

// CipherSuite holds the algorithms of one implemented suite. Obtain it with
// [Lookup]; it is immutable and safe for concurrent use.
//
// HPKE runs on crypto/hpke (kem, kdf, hpAEAD) for every suite but 4 and 6,
// which use x448 instead: crypto/hpke has no X448 KEM and cannot be given one.
type CipherSuite struct {
	id      Suite
	newHash func() hash.Hash
	nh      int
	aead    aeadKind
	nk      int
	kem     hpke.KEM
	kdf     hpke.KDF
	hpAEAD  hpke.AEAD
	x448    *x448HPKE // X448 suites only; kem, kdf and hpAEAD are then nil
	sig     sigKind
	curve   elliptic.Curve // ECDSA suites only
	ecdh    ecdh.Curve
}

var suites = map[Suite]*CipherSuite{
	1: {id: 1, newHash: sha256.New, nh: 32, aead: aeadAESGCM, nk: 16,
		kem: hpke.DHKEM(ecdh.X25519()), kdf: hpke.HKDFSHA256(), hpAEAD: hpke.AES128GCM(),
		sig: sigEd25519, ecdh: ecdh.X25519()},
	2: {id: 2, newHash: sha256.New, nh: 32, aead: aeadAESGCM, nk: 16,
		kem: hpke.DHKEM(ecdh.P256()), kdf: hpke.HKDFSHA256(), hpAEAD: hpke.AES128GCM(),
		sig: sigECDSA, curve: elliptic.P256(), ecdh: ecdh.P256()},
	3: {id: 3, newHash: sha256.New, nh: 32, aead: aeadChaCha20Poly1305, nk: 32,
		kem: hpke.DHKEM(ecdh.X25519()), kdf: hpke.HKDFSHA256(), hpAEAD: hpke.ChaCha20Poly1305(),
		sig: sigEd25519, ecdh: ecdh.X25519()},
	4: {id: 4, newHash: sha512.New, nh: 64, aead: aeadAESGCM, nk: 32,
		x448: newX448HPKE(circlhpke.AEAD_AES256GCM), sig: sigEd448},
	5: {id: 5, newHash: sha512.New, nh: 64, aead: aeadAESGCM, nk: 32,
		kem: hpke.DHKEM(ecdh.P521()), kdf: hpke.HKDFSHA512(), hpAEAD: hpke.AES256GCM(),
		sig: sigECDSA, curve: elliptic.P521(), ecdh: ecdh.P521()},
	6: {id: 6, newHash: sha512.New, nh: 64, aead: aeadChaCha20Poly1305, nk: 32,
		x448: newX448HPKE(circlhpke.AEAD_ChaCha20Poly1305), sig: sigEd448},
	7: {id: 7, newHash: sha512.New384, nh: 48, aead: aeadAESGCM, nk: 32,
		kem: hpke.DHKEM(ecdh.P384()), kdf: hpke.HKDFSHA384(), hpAEAD: hpke.AES256GCM(),
		sig: sigECDSA, curve: elliptic.P384(), ecdh: ecdh.P384()},
}

// Lookup returns the implementation of suite id, or an error wrapping
// [ErrUnsupportedSuite] that names the suite.
func Lookup(id Suite) (*CipherSuite, error) {
	if cs, ok := suites[id]; ok {
		return cs, nil
	}
	return nil, fmt.Errorf("%w: %d (%s) is not a registered MLS cipher suite", ErrUnsupportedSuite, uint16(id), id)
}

// ID returns the suite identifier.
func (cs *CipherSuite) ID() Suite { return cs.id }

// String returns the suite's RFC 9420 name.
func (cs *CipherSuite) String() string { return cs.id.String() }

// Nh returns the output size in bytes of the suite's hash and KDF.Extract.
func (cs *CipherSuite) Nh() int { return cs.nh }

// Nk returns the AEAD key size in bytes.
func (cs *CipherSuite) Nk() int { return cs.nk }

// Nn returns the AEAD nonce size in bytes (12 for every MLS suite).
func (cs *CipherSuite) Nn() int { return 12 }
