package ciphersuite

import (
	"crypto/hkdf"
	"crypto/hmac"
	"fmt"
	"math"

	"github.com/epochlog/epochlog/mls/codec"
)

// labelPrefix is prepended to every MLS KDF, signature, encryption and
// reference label.
const labelPrefix = "MLS 1.0 "

// Hash returns the suite hash of data.
func (cs *CipherSuite) Hash(data []byte) []byte {
	h := cs.newHash()
	h.Write(data)
	return h.Sum(nil)
}

// MAC returns HMAC(key, data) with the suite hash.
func (cs *CipherSuite) MAC(key, data []byte) []byte {
	m := hmac.New(cs.newHash, key)
	m.Write(data)
	return m.Sum(nil)
}

// VerifyMAC reports, in constant time, whether tag is MAC(key, data).
func (cs *CipherSuite) VerifyMAC(key, data, tag []byte) bool {
	return hmac.Equal(cs.MAC(key, data), tag)
}

// Extract is HKDF-Extract(salt, ikm) with the suite hash; an empty salt
// stands for Nh zero bytes, as in RFC 5869.
func (cs *CipherSuite) Extract(salt, ikm []byte) []byte {
	prk, err := hkdf.Extract(cs.newHash, ikm, salt)
	if err != nil {
		// hkdf.Extract only fails in FIPS-140-only mode for short inputs,
		// which MLS never produces; a panic here is a programming error.
		panic("mls/ciphersuite: HKDF-Extract failed: " + err.Error())
	}
	return prk
}

// Expand is HKDF-Expand(prk, info, length) with the suite hash.
func (cs *CipherSuite) Expand(prk, info []byte, length int) ([]byte, error) {
	if length < 0 || length > 255*cs.nh {
		return nil, fmt.Errorf("mls/ciphersuite: HKDF-Expand length %d out of range for %s", length, cs.id)
	}
	out, err := hkdf.Expand(cs.newHash, prk, string(info), length)
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: HKDF-Expand: %w", err)
	}
	return out, nil
}

// KDFLabel returns the encoding of the KDFLabel struct used by
// ExpandWithLabel: uint16 length, opaque label<V> ("MLS 1.0 " + label),
// opaque context<V>.
func KDFLabel(label string, context []byte, length int) ([]byte, error) {
	if length < 0 || length > math.MaxUint16 {
		return nil, fmt.Errorf("mls/ciphersuite: ExpandWithLabel length %d does not fit uint16", length)
	}
	var w codec.Writer
	w.Uint16(uint16(length))
	w.StringV(labelPrefix + label)
	w.OpaqueV(context)
	return w.Finish()
}

// ExpandWithLabel is KDF.Expand(secret, KDFLabel, length) (RFC 9420 §8).
func (cs *CipherSuite) ExpandWithLabel(secret []byte, label string, context []byte, length int) ([]byte, error) {
	info, err := KDFLabel(label, context, length)
	if err != nil {
		return nil, err
	}
	return cs.Expand(secret, info, length)
}

// DeriveSecret is ExpandWithLabel(secret, label, "", Nh).
func (cs *CipherSuite) DeriveSecret(secret []byte, label string) ([]byte, error) {
	return cs.ExpandWithLabel(secret, label, nil, cs.nh)
}

// DeriveTreeSecret is ExpandWithLabel(secret, label, generation as a
// big-endian uint32, length) (RFC 9420 §9.1).
func (cs *CipherSuite) DeriveTreeSecret(secret []byte, label string, generation uint32, length int) ([]byte, error) {
	g := []byte{byte(generation >> 24), byte(generation >> 16), byte(generation >> 8), byte(generation)}
	return cs.ExpandWithLabel(secret, label, g, length)
}

// RefHash is Hash(RefHashInput{label<V>, value<V>}) (RFC 9420 §5.2). The
// label is used as given, without the "MLS 1.0 " prefix.
func (cs *CipherSuite) RefHash(label string, value []byte) ([]byte, error) {
	var w codec.Writer
	w.StringV(label)
	w.OpaqueV(value)
	in, err := w.Finish()
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: RefHash input: %w", err)
	}
	return cs.Hash(in), nil
}

// MakeKeyPackageRef returns the KeyPackageRef of an encoded KeyPackage.
func (cs *CipherSuite) MakeKeyPackageRef(keyPackage []byte) ([]byte, error) {
	return cs.RefHash("MLS 1.0 KeyPackage Reference", keyPackage)
}

// MakeProposalRef returns the ProposalRef of an encoded AuthenticatedContent
// carrying a Proposal.
func (cs *CipherSuite) MakeProposalRef(authenticatedContent []byte) ([]byte, error) {
	return cs.RefHash("MLS 1.0 Proposal Reference", authenticatedContent)
}
