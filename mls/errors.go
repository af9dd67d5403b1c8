package mls

import (
	"errors"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
)

// Sentinel errors. Every error returned by this package that a caller may
// want to branch on wraps one of these; test with errors.Is.
var (
	// ErrDecode is wrapped by every decoding failure (it is the codec's
	// sentinel, so errors.Is works with either name).
	ErrDecode = codec.ErrDecode

	// ErrBadSignature reports a signature that does not verify (it is the
	// ciphersuite's sentinel); the error never says why.
	ErrBadSignature = ciphersuite.ErrBadSignature

	// ErrDecrypt reports an HPKE or AEAD decryption failure (the
	// ciphersuite's opaque sentinel).
	ErrDecrypt = ciphersuite.ErrDecrypt

	// ErrInvalidTree reports a ratchet tree that violates RFC 9420: bad
	// shape, trailing blank, wrong tree or parent hash, inconsistent
	// unmerged leaves, duplicate keys, or an invalid leaf.
	ErrInvalidTree = errors.New("mls: invalid ratchet tree")

	// ErrInvalidLeafNode reports a LeafNode that fails validation (§7.3):
	// wrong source, unsupported credential or extension, bad signature.
	ErrInvalidLeafNode = errors.New("mls: invalid leaf node")

	// ErrInvalidKeyPackage reports a KeyPackage that fails validation, or
	// one added with a key already used in the group.
	ErrInvalidKeyPackage = errors.New("mls: invalid key package")

	// ErrInvalidUpdatePath reports an UpdatePath that does not fit the tree
	// (wrong length, wrong number of ciphertexts, derived public keys that do
	// not match, a bad parent hash, a leaf node that breaks a rule of the
	// group such as its required capabilities) or that cannot be decrypted
	// with the private keys held.
	ErrInvalidUpdatePath = errors.New("mls: invalid update path")
)
