package ciphersuite

import (
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha512"
	"fmt"

	circlhpke "github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/kem"
	"github.com/epochlog/epochlog/internal/hidden"
)

// HPKE with DHKEM(X448, HKDF-SHA512), for suites 4 and 6.
//
// crypto/hpke has no X448 KEM, and its KEM, PrivateKey and PublicKey
// interfaces have unexported methods (as does ecdh.Curve), so one cannot be
// plugged in from outside the standard library. These suites therefore run
// HPKE on github.com/cloudflare/circl/hpke. The exported functions in
// hpke.go dispatch here when [CipherSuite] has x448 set, so the API, the
// key type and the errors are the same for every suite.

// x448KeySize is Nsk = Npk = Nenc of DHKEM(X448, HKDF-SHA512) (RFC 9180 §7.1).
const x448KeySize = 56

// x448KEMSuiteID is the KEM suite_id of RFC 9180 §4.1: "KEM" followed by
// the KEM identifier 0x0021 as a big-endian uint16.
var x448KEMSuiteID = []byte{'K', 'E', 'M', 0x00, 0x21}

// x448HPKE is the circl HPKE suite of one X448 MLS cipher suite.
type x448HPKE struct {
	suite  circlhpke.Suite
	scheme kem.Scheme
}

func newX448HPKE(aead circlhpke.AEAD) *x448HPKE {
	return &x448HPKE{
		suite:  circlhpke.NewSuite(circlhpke.KEM_X448_HKDF_SHA512, circlhpke.KDF_HKDF_SHA512, aead),
		scheme: circlhpke.KEM_X448_HKDF_SHA512.Scheme(),
	}
}

// deriveKeyPair is DeriveKeyPair(ikm) of RFC 9180 §7.1.3 for X448:
//
//	dkp_prk = LabeledExtract("", "dkp_prk", ikm)
//	sk = LabeledExpand(dkp_prk, "sk", "", Nsk)
//
// circl's Scheme.DeriveKeyPair computes the same but panics unless ikm is
// exactly Nsk (56) bytes, while MLS derives node keys from Nh = 64-byte
// secrets, so the two labeled HKDF steps are done here.
func (x *x448HPKE) deriveKeyPair(ikm []byte) (kem.PrivateKey, error) {
	prk, err := hkdf.Extract(sha512.New, concat([]byte("HPKE-v1"), x448KEMSuiteID, []byte("dkp_prk"), ikm), nil)
	if err != nil {
		return nil, err
	}
	info := concat([]byte{0, x448KeySize}, []byte("HPKE-v1"), x448KEMSuiteID, []byte("sk"))
	sk, err := hkdf.Expand(sha512.New, prk, string(info), x448KeySize)
	if err != nil {
		return nil, err
	}
	return x.parsePrivateKey(sk)
}

// generateKey returns a key made of Nsk random bytes: once clamped, every
// 56-byte string is a valid X448 private key.
func (x *x448HPKE) generateKey() (kem.PrivateKey, error) {
	b := make([]byte, x448KeySize)
	if _, err := rand.Read(b); err != nil {
		return nil, err
	}
	return x.parsePrivateKey(b)
}

// parsePrivateKey is DeserializePrivateKey, which RFC 9180 §7.1.2 says MUST
// clamp its input. The key is stored clamped, so Bytes (SerializePrivateKey,
// which MUST clamp too) and Equal see the clamped form, as crypto/hpke's
// X25519 Bytes does. b is not modified.
func (x *x448HPKE) parsePrivateKey(b []byte) (kem.PrivateKey, error) {
	if len(b) != x448KeySize {
		return nil, kem.ErrPrivKeySize
	}
	c := append([]byte(nil), b...)
	c[0] &= 252
	c[x448KeySize-1] |= 128
	return x.scheme.UnmarshalBinaryPrivateKey(c)
}

// publicKey is DeserializePublicKey. Like crypto/ecdh's X25519 it checks
// only the length: a low-order point is refused when used, since circl
// rejects an all-zero shared secret.
func (x *x448HPKE) publicKey(pub []byte) (kem.PublicKey, error) {
	return x.scheme.UnmarshalBinaryPublicKey(pub)
}

// seal is SealBase(pkR, info, aad = "", pt) (RFC 9180 §6.1).
func (x *x448HPKE) seal(pkR kem.PublicKey, info, pt []byte) (enc, ct []byte, err error) {
	s, err := x.suite.NewSender(pkR, info)
	if err != nil {
		return nil, nil, err
	}
	enc, sealer, err := s.Setup(rand.Reader)
	if err != nil {
		return nil, nil, err
	}
	ct, err = sealer.Seal(pt, nil)
	if err != nil {
		return nil, nil, err
	}
	return enc, ct, nil
}

// open is OpenBase(enc, skR, info, aad = "", ct).
func (x *x448HPKE) open(skR kem.PrivateKey, enc, info, ct []byte) ([]byte, error) {
	r, err := x.suite.NewReceiver(skR, info)
	if err != nil {
		return nil, err
	}
	opener, err := r.Setup(enc)
	if err != nil {
		return nil, err
	}
	return opener.Open(ct, nil)
}

// wrapX448 builds the exported key type around a circl X448 key.
func (cs *CipherSuite) wrapX448(k kem.PrivateKey) (*HPKEPrivateKey, error) {
	pub, err := k.Public().MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("%w: X448 public key for %s", ErrInvalidKey, cs.id)
	}
	return &HPKEPrivateKey{suite: cs.id, x: hidden.New(k), pub: pub}, nil
}

// x448Bytes is [HPKEPrivateKey.Bytes] for an X448 key: the clamped 56 bytes.
func (k *HPKEPrivateKey) x448Bytes() []byte {
	b, err := k.x.Get().MarshalBinary()
	if err != nil {
		// circl's X448 MarshalBinary only copies the stored bytes.
		panic("mls/ciphersuite: serializing a validated X448 private key failed")
	}
	return b
}

// The methods below are the X448 bodies of the exported HPKE functions of
// the same name. Their errors wrap the package sentinels with a fixed text:
// circl's errors are dropped so that no key material can be echoed.

func (cs *CipherSuite) deriveKeyPairX448(ikm []byte) (*HPKEPrivateKey, error) {
	k, err := cs.x448.deriveKeyPair(ikm)
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE DeriveKeyPair for %s", ErrInvalidKey, cs.id)
	}
	return cs.wrapX448(k)
}

func (cs *CipherSuite) generateHPKEKeyX448() (*HPKEPrivateKey, error) {
	k, err := cs.x448.generateKey()
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: generating HPKE key for %s: %w", cs.id, err)
	}
	return cs.wrapX448(k)
}

func (cs *CipherSuite) parseHPKEPrivateKeyX448(b []byte) (*HPKEPrivateKey, error) {
	k, err := cs.x448.parsePrivateKey(b)
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE private key of %d bytes for %s", ErrInvalidKey, len(b), cs.id)
	}
	return cs.wrapX448(k)
}

func (cs *CipherSuite) validateHPKEPublicKeyX448(pub []byte) error {
	if _, err := cs.x448.publicKey(pub); err != nil {
		return fmt.Errorf("%w: HPKE public key of %d bytes for %s", ErrInvalidKey, len(pub), cs.id)
	}
	if isLowOrderX448(pub) {
		return fmt.Errorf("%w: HPKE public key for %s is a point of small order", ErrInvalidKey, cs.id)
	}
	return nil
}

func (cs *CipherSuite) encryptWithLabelX448(pub []byte, label string, context, plaintext []byte) (kemOutput, ciphertext []byte, err error) {
	pk, err := cs.x448.publicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: HPKE public key of %d bytes for %s", ErrInvalidKey, len(pub), cs.id)
	}
	info, err := EncryptContext(label, context)
	if err != nil {
		return nil, nil, fmt.Errorf("mls/ciphersuite: EncryptWithLabel %q: %w", label, err)
	}
	enc, ct, err := cs.x448.seal(pk, info, plaintext)
	if err != nil {
		// Setup fails for a low-order public key (all-zero DH output);
		// that is a bad key, not an internal fault.
		return nil, nil, fmt.Errorf("%w: HPKE seal for %s refused the public key", ErrInvalidKey, cs.id)
	}
	return enc, ct, nil
}

// concat returns the concatenation of parts in a new slice.
func concat(parts ...[]byte) []byte {
	n := 0
	for _, p := range parts {
		n += len(p)
	}
	out := make([]byte, 0, n)
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}
