package ciphersuite

import (
	"crypto/ecdh"
	"crypto/hpke"
	"crypto/subtle"
	"fmt"

	"github.com/cloudflare/circl/kem"
	"github.com/epochlog/epochlog/internal/hidden"
	"github.com/epochlog/epochlog/mls/codec"
)

// HPKEPrivateKey is an HPKE private key of one suite's KEM. It is immutable;
// its bytes are unexported and never printed.
type HPKEPrivateKey struct {
	suite Suite
	// The private key, hidden (internal/hidden) so that no verb prints it
	// from a field fmt cannot call Format on.
	k   hidden.Value[hpke.PrivateKey] // crypto/hpke suites
	x   hidden.Value[kem.PrivateKey]  // X448 suites (circl), stored clamped
	pub []byte
}

// Suite returns the suite the key belongs to.
func (k *HPKEPrivateKey) Suite() Suite { return k.suite }

// PublicKey returns a copy of the public key in the MLS wire format
// (HPKEPublicKey content, RFC 9180 SerializePublicKey).
func (k *HPKEPrivateKey) PublicKey() []byte { return append([]byte(nil), k.pub...) }

// Bytes returns the private key serialized as RFC 9180 SerializePrivateKey.
func (k *HPKEPrivateKey) Bytes() []byte {
	if k.x.Get() != nil {
		return k.x448Bytes()
	}
	b, err := k.k.Get().Bytes()
	if err != nil {
		// The key was validated when it was built; serialization of a
		// valid DHKEM key cannot fail.
		panic("mls/ciphersuite: serializing a validated HPKE private key failed")
	}
	return b
}

// Equal reports in constant time whether k and o are the same key of the
// same suite.
func (k *HPKEPrivateKey) Equal(o *HPKEPrivateKey) bool {
	if k == nil || o == nil {
		return k == o
	}
	return k.suite == o.suite && subtle.ConstantTimeCompare(k.Bytes(), o.Bytes()) == 1
}

// String returns a placeholder that names the suite only.
func (k *HPKEPrivateKey) String() string { return "HPKEPrivateKey(REDACTED)" }

// GoString returns the same placeholder as String.
func (k *HPKEPrivateKey) GoString() string { return k.String() }

// Format prints the placeholder under every verb.
func (k *HPKEPrivateKey) Format(f fmt.State, _ rune) { fmt.Fprint(f, k.String()) }

// MarshalJSON refuses, with [ErrSecretMarshal].
func (k *HPKEPrivateKey) MarshalJSON() ([]byte, error) { return nil, ErrSecretMarshal }

func (cs *CipherSuite) wrapHPKE(k hpke.PrivateKey) *HPKEPrivateKey {
	return &HPKEPrivateKey{suite: cs.id, k: hidden.New(k), pub: k.PublicKey().Bytes()}
}

// DeriveKeyPair is the KEM's DeriveKeyPair(ikm) (RFC 9180 §7.1.3), used for
// tree node keys and the external key pair.
func (cs *CipherSuite) DeriveKeyPair(ikm []byte) (*HPKEPrivateKey, error) {
	if cs.x448 != nil {
		return cs.deriveKeyPairX448(ikm)
	}
	k, err := cs.kem.DeriveKeyPair(ikm)
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE DeriveKeyPair for %s", ErrInvalidKey, cs.id)
	}
	return cs.wrapHPKE(k), nil
}

// GenerateHPKEKey returns a fresh random HPKE key pair.
func (cs *CipherSuite) GenerateHPKEKey() (*HPKEPrivateKey, error) {
	if cs.x448 != nil {
		return cs.generateHPKEKeyX448()
	}
	k, err := cs.kem.GenerateKey()
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: generating HPKE key for %s: %w", cs.id, err)
	}
	return cs.wrapHPKE(k), nil
}

// ParseHPKEPrivateKey parses an RFC 9180 serialized private key (copying
// it). A NIST curve scalar shorter than the curve's size is left-padded,
// as [CipherSuite.ParseSignaturePrivateKey] does. An X448 key is clamped,
// as RFC 9180 §7.1.2 requires, so Bytes returns the clamped form.
func (cs *CipherSuite) ParseHPKEPrivateKey(b []byte) (*HPKEPrivateKey, error) {
	if cs.x448 != nil {
		return cs.parseHPKEPrivateKeyX448(b)
	}
	k, err := cs.kem.NewPrivateKey(append([]byte(nil), cs.padScalar(b)...))
	if err != nil {
		return nil, fmt.Errorf("%w: HPKE private key of %d bytes for %s", ErrInvalidKey, len(b), cs.id)
	}
	return cs.wrapHPKE(k), nil
}

// ValidateHPKEPublicKey checks that pub is a valid public key of the suite's
// KEM in the MLS wire format.
func (cs *CipherSuite) ValidateHPKEPublicKey(pub []byte) error {
	if cs.x448 != nil {
		return cs.validateHPKEPublicKeyX448(pub)
	}
	if _, err := cs.kem.NewPublicKey(pub); err != nil {
		return fmt.Errorf("%w: HPKE public key of %d bytes for %s", ErrInvalidKey, len(pub), cs.id)
	}
	if cs.ecdh == ecdh.X25519() && isLowOrderX25519(pub) {
		return fmt.Errorf("%w: HPKE public key for %s is a point of small order", ErrInvalidKey, cs.id)
	}
	return nil
}

// EncryptContext returns the encoding of the EncryptContext struct:
// opaque label<V> ("MLS 1.0 " + label), opaque context<V>.
func EncryptContext(label string, context []byte) ([]byte, error) {
	var w codec.Writer
	w.StringV(labelPrefix + label)
	w.OpaqueV(context)
	return w.Finish()
}

// EncryptWithLabel is SealBase(pub, EncryptContext, "", plaintext) (RFC 9420
// §5.1.3). pub is in the MLS wire format.
func (cs *CipherSuite) EncryptWithLabel(pub []byte, label string, context, plaintext []byte) (kemOutput, ciphertext []byte, err error) {
	if cs.x448 != nil {
		return cs.encryptWithLabelX448(pub, label, context, plaintext)
	}
	pk, err := cs.kem.NewPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: HPKE public key of %d bytes for %s", ErrInvalidKey, len(pub), cs.id)
	}
	info, err := EncryptContext(label, context)
	if err != nil {
		return nil, nil, fmt.Errorf("mls/ciphersuite: EncryptWithLabel %q: %w", label, err)
	}
	enc, s, err := hpke.NewSender(pk, cs.kdf, cs.hpAEAD, info)
	if err != nil {
		// Setup fails for a low-order public key (an all-zero X25519
		// output); that is a bad key, as for X448.
		return nil, nil, fmt.Errorf("%w: HPKE setup for %s refused the public key: %w", ErrInvalidKey, cs.id, err)
	}
	ct, err := s.Seal(nil, plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("mls/ciphersuite: HPKE seal for %s: %w", cs.id, err)
	}
	return enc, ct, nil
}

// DecryptWithLabel is OpenBase(kemOutput, priv, EncryptContext, "",
// ciphertext). Every failure, including a malformed kemOutput, is
// [ErrDecrypt].
func (cs *CipherSuite) DecryptWithLabel(priv *HPKEPrivateKey, label string, context, kemOutput, ciphertext []byte) ([]byte, error) {
	if priv == nil || priv.suite != cs.id {
		return nil, fmt.Errorf("%w: HPKE private key is not for %s", ErrInvalidKey, cs.id)
	}
	info, err := EncryptContext(label, context)
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: DecryptWithLabel %q: %w", label, err)
	}
	if cs.x448 != nil {
		pt, err := cs.x448.open(priv.x.Get(), kemOutput, info, ciphertext)
		if err != nil {
			return nil, ErrDecrypt
		}
		return pt, nil
	}
	r, err := hpke.NewRecipient(kemOutput, priv.k.Get(), cs.kdf, cs.hpAEAD, info)
	if err != nil {
		return nil, ErrDecrypt
	}
	pt, err := r.Open(nil, ciphertext)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}
