package ciphersuite

import (
	"crypto/ecdsa"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/subtle"
	"fmt"

	"github.com/cloudflare/circl/sign/ed448"
	"github.com/epochlog/epochlog/internal/hidden"
	"github.com/epochlog/epochlog/mls/codec"
)

// SignaturePrivateKey is a signature private key of one suite's signature
// scheme (Ed25519, ECDSA or Ed448). It is immutable; its bytes are
// unexported and never printed.
type SignaturePrivateKey struct {
	suite Suite
	// The private key of the suite's scheme, hidden (internal/hidden) so that
	// no verb prints it from a field fmt cannot call Format on.
	ed    hidden.Value[ed25519.PrivateKey]
	ec    hidden.Value[*ecdsa.PrivateKey]
	ed448 hidden.Value[ed448.PrivateKey]
	pub   []byte
}

// Suite returns the suite the key belongs to.
func (k *SignaturePrivateKey) Suite() Suite { return k.suite }

// PublicKey returns a copy of the public key in the MLS wire format
// (SignaturePublicKey content): 32 bytes for Ed25519, an uncompressed point
// for ECDSA, 57 bytes for Ed448.
func (k *SignaturePrivateKey) PublicKey() []byte { return append([]byte(nil), k.pub...) }

// Bytes returns the private key in the test-vector format: the 32-byte seed
// for Ed25519, the big-endian scalar for ECDSA, the 57-byte seed for Ed448.
func (k *SignaturePrivateKey) Bytes() []byte {
	if k.ed448.Get() != nil {
		return append([]byte(nil), k.ed448.Get().Seed()...)
	}
	if k.ec.Get() != nil {
		b, err := k.ec.Get().Bytes()
		if err != nil {
			panic("mls/ciphersuite: serializing a validated ECDSA private key failed")
		}
		return b
	}
	return append([]byte(nil), k.ed.Get().Seed()...)
}

// Equal reports in constant time whether k and o are the same key of the
// same suite.
func (k *SignaturePrivateKey) Equal(o *SignaturePrivateKey) bool {
	if k == nil || o == nil {
		return k == o
	}
	return k.suite == o.suite && subtle.ConstantTimeCompare(k.Bytes(), o.Bytes()) == 1
}

// String returns a placeholder.
func (k *SignaturePrivateKey) String() string { return "SignaturePrivateKey(REDACTED)" }

// GoString returns the same placeholder as String.
func (k *SignaturePrivateKey) GoString() string { return k.String() }

// Format prints the placeholder under every verb.
func (k *SignaturePrivateKey) Format(f fmt.State, _ rune) { fmt.Fprint(f, k.String()) }

// MarshalJSON refuses, with [ErrSecretMarshal].
func (k *SignaturePrivateKey) MarshalJSON() ([]byte, error) { return nil, ErrSecretMarshal }

// GenerateSignatureKey returns a fresh random signature key pair.
func (cs *CipherSuite) GenerateSignatureKey() (*SignaturePrivateKey, error) {
	if cs.sig == sigEd448 {
		return cs.generateEd448Key()
	}
	if cs.sig == sigEd25519 {
		_, priv, err := ed25519.GenerateKey(rand.Reader)
		if err != nil {
			return nil, fmt.Errorf("mls/ciphersuite: generating Ed25519 key: %w", err)
		}
		return &SignaturePrivateKey{suite: cs.id, ed: hidden.New(priv), pub: append([]byte(nil), priv.Public().(ed25519.PublicKey)...)}, nil
	}
	priv, err := ecdsa.GenerateKey(cs.curve, rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: generating ECDSA key for %s: %w", cs.id, err)
	}
	return cs.wrapECDSA(priv)
}

func (cs *CipherSuite) wrapECDSA(priv *ecdsa.PrivateKey) (*SignaturePrivateKey, error) {
	pub, err := priv.PublicKey.Bytes()
	if err != nil {
		return nil, fmt.Errorf("%w: ECDSA public key for %s", ErrInvalidKey, cs.id)
	}
	return &SignaturePrivateKey{suite: cs.id, ec: hidden.New(priv), pub: pub}, nil
}

// ParseSignaturePrivateKey parses a private key in the test-vector format
// (Ed25519 32-byte seed; ECDSA big-endian scalar of the curve's size; Ed448
// 57-byte seed), copying it. An ECDSA scalar shorter than the curve's size
// is taken as having lost its leading zero bytes and is left-padded: some
// implementations serialize minimal-length integers, as the official MLS
// test vectors do for a P-521 key. The error never echoes the input.
func (cs *CipherSuite) ParseSignaturePrivateKey(b []byte) (*SignaturePrivateKey, error) {
	if cs.sig == sigEd448 {
		return cs.parseEd448Key(b)
	}
	if cs.sig == sigEd25519 {
		if len(b) != ed25519.SeedSize {
			return nil, fmt.Errorf("%w: Ed25519 private key is %d bytes, want %d", ErrInvalidKey, len(b), ed25519.SeedSize)
		}
		priv := ed25519.NewKeyFromSeed(b)
		return &SignaturePrivateKey{suite: cs.id, ed: hidden.New(priv), pub: append([]byte(nil), priv.Public().(ed25519.PublicKey)...)}, nil
	}
	priv, err := ecdsa.ParseRawPrivateKey(cs.curve, cs.padScalar(b))
	if err != nil {
		return nil, fmt.Errorf("%w: ECDSA private key of %d bytes for %s", ErrInvalidKey, len(b), cs.id)
	}
	return cs.wrapECDSA(priv)
}

// ValidateSignaturePublicKey checks that pub is a valid signature public key
// of the suite in the MLS wire format.
func (cs *CipherSuite) ValidateSignaturePublicKey(pub []byte) error {
	if cs.sig == sigEd448 {
		return cs.validateEd448PublicKey(pub)
	}
	if cs.sig == sigEd25519 {
		if len(pub) != ed25519.PublicKeySize {
			return fmt.Errorf("%w: Ed25519 public key is %d bytes, want %d", ErrInvalidKey, len(pub), ed25519.PublicKeySize)
		}
		return nil
	}
	if _, err := ecdsa.ParseUncompressedPublicKey(cs.curve, pub); err != nil {
		return fmt.Errorf("%w: ECDSA public key of %d bytes for %s", ErrInvalidKey, len(pub), cs.id)
	}
	return nil
}

// SignContent returns the encoding of the SignContent struct:
// opaque label<V> ("MLS 1.0 " + label), opaque content<V>.
func SignContent(label string, content []byte) ([]byte, error) {
	var w codec.Writer
	w.StringV(labelPrefix + label)
	w.OpaqueV(content)
	return w.Finish()
}

// SignWithLabel signs SignContent(label, content) (RFC 9420 §5.1.2). ECDSA
// signatures are DER-encoded; Ed25519 and Ed448 signatures are R || S.
func (cs *CipherSuite) SignWithLabel(priv *SignaturePrivateKey, label string, content []byte) ([]byte, error) {
	if priv == nil || priv.suite != cs.id {
		return nil, fmt.Errorf("%w: signature private key is not for %s", ErrInvalidKey, cs.id)
	}
	msg, err := SignContent(label, content)
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: SignWithLabel %q: %w", label, err)
	}
	if priv.ed.Get() != nil {
		return ed25519.Sign(priv.ed.Get(), msg), nil
	}
	if priv.ed448.Get() != nil {
		return signEd448(priv.ed448.Get(), msg), nil
	}
	sig, err := ecdsa.SignASN1(rand.Reader, priv.ec.Get(), cs.Hash(msg))
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: ECDSA signing for %s: %w", cs.id, err)
	}
	return sig, nil
}

// VerifyWithLabel verifies signature over SignContent(label, content) with
// pub in the MLS wire format. Every failure, including a malformed public key
// or signature, is [ErrBadSignature].
func (cs *CipherSuite) VerifyWithLabel(pub []byte, label string, content, signature []byte) error {
	msg, err := SignContent(label, content)
	if err != nil {
		return fmt.Errorf("mls/ciphersuite: VerifyWithLabel %q: %w", label, err)
	}
	if cs.sig == sigEd448 {
		return verifyEd448(pub, msg, signature)
	}
	if cs.sig == sigEd25519 {
		if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, msg, signature) {
			return ErrBadSignature
		}
		return nil
	}
	pk, err := ecdsa.ParseUncompressedPublicKey(cs.curve, pub)
	if err != nil || !ecdsa.VerifyASN1(pk, cs.Hash(msg), signature) {
		return ErrBadSignature
	}
	return nil
}

// padScalar left-pads a big-endian NIST curve scalar shorter than the
// curve's size with zeros (returning a copy); other inputs come back as
// they are, for the parser to judge.
func (cs *CipherSuite) padScalar(b []byte) []byte {
	if cs.curve == nil || len(b) == 0 {
		return b
	}
	size := (cs.curve.Params().BitSize + 7) / 8
	if len(b) >= size {
		return b
	}
	return append(make([]byte, size-len(b), size), b...)
}
