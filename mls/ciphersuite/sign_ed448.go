package ciphersuite

import (
	"crypto/rand"
	"fmt"

	"github.com/cloudflare/circl/ecc/goldilocks"
	"github.com/cloudflare/circl/sign/ed448"
	"github.com/epochlog/epochlog/internal/hidden"
)

// Ed448 signatures, for suites 4 and 6, on github.com/cloudflare/circl: the
// standard library has no Ed448. The exported functions in sign.go dispatch
// here when the suite's signature scheme is sigEd448.
//
// MLS signs with pure Ed448 (RFC 8032 §5.2) and an empty context string
// (RFC 9420 §5.1.2 puts its domain separation in SignContent's label
// instead), so ed448Context is "" everywhere.
const ed448Context = ""

func (cs *CipherSuite) wrapEd448(priv ed448.PrivateKey) *SignaturePrivateKey {
	pub := priv.Public().(ed448.PublicKey)
	return &SignaturePrivateKey{suite: cs.id, ed448: hidden.New(priv), pub: append([]byte(nil), pub...)}
}

func (cs *CipherSuite) generateEd448Key() (*SignaturePrivateKey, error) {
	_, priv, err := ed448.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: generating Ed448 key: %w", err)
	}
	return cs.wrapEd448(priv), nil
}

// parseEd448Key takes the RFC 8032 private key, the 57-byte seed, which is
// what the MLS test vectors carry. NewKeyFromSeed copies it.
func (cs *CipherSuite) parseEd448Key(b []byte) (*SignaturePrivateKey, error) {
	if len(b) != ed448.SeedSize {
		return nil, fmt.Errorf("%w: Ed448 private key is %d bytes, want %d", ErrInvalidKey, len(b), ed448.SeedSize)
	}
	return cs.wrapEd448(ed448.NewKeyFromSeed(b)), nil
}

// validateEd448PublicKey checks the length and that pub decodes to a curve
// point, the check Verify would otherwise make on every signature.
func (cs *CipherSuite) validateEd448PublicKey(pub []byte) error {
	if len(pub) != ed448.PublicKeySize {
		return fmt.Errorf("%w: Ed448 public key is %d bytes, want %d", ErrInvalidKey, len(pub), ed448.PublicKeySize)
	}
	if _, err := goldilocks.FromBytes(pub); err != nil {
		return fmt.Errorf("%w: Ed448 public key for %s is not a curve point", ErrInvalidKey, cs.id)
	}
	return nil
}

func signEd448(priv ed448.PrivateKey, msg []byte) []byte {
	return ed448.Sign(priv, msg, ed448Context)
}

// verifyEd448 reports every failure, a malformed key or signature included,
// as [ErrBadSignature]. ed448.Verify checks both lengths itself.
func verifyEd448(pub, msg, signature []byte) error {
	if !ed448.Verify(ed448.PublicKey(pub), msg, signature, ed448Context) {
		return ErrBadSignature
	}
	return nil
}
