package mls

import (
	"fmt"
	"time"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// DefaultKeyPackageLifetime is how long a KeyPackage made by
// [NewKeyPackage] stays valid when no lifetime is given.
const DefaultKeyPackageLifetime = 90 * 24 * time.Hour

// KeyPackageSecrets are the private keys behind a KeyPackage. The caller
// keeps them until the KeyPackage is used to join a group. Printing them
// never shows key bytes (each key type redacts itself).
type KeyPackageSecrets struct {
	// InitKey decrypts the GroupSecrets of a Welcome.
	InitKey *ciphersuite.HPKEPrivateKey
	// EncryptionKey is the private key of the leaf's encryption key.
	EncryptionKey *ciphersuite.HPKEPrivateKey
	// SignatureKey signs as the leaf's signature key.
	SignatureKey *ciphersuite.SignaturePrivateKey
}

// KeyPackageOptions tunes [NewKeyPackage]; the zero value gives defaults.
type KeyPackageOptions struct {
	// NotBefore and NotAfter bound the lifetime; zero values mean one
	// hour ago and now plus DefaultKeyPackageLifetime.
	NotBefore, NotAfter time.Time
	// Capabilities replaces the default capabilities (mls10, the suite,
	// basic credentials). The suite and credential type are added if
	// missing.
	Capabilities *Capabilities
	// Extensions of the KeyPackage and of its leaf node.
	Extensions, LeafExtensions Extensions
}

// NewKeyPackage creates a KeyPackage for credential, signed with sigKey
// (a fresh key when nil), with fresh init and encryption keys. The private
// keys are returned to the caller, who must keep them to join.
func NewKeyPackage(suite ciphersuite.Suite, credential Credential, sigKey *ciphersuite.SignaturePrivateKey, opts *KeyPackageOptions) (*KeyPackage, *KeyPackageSecrets, error) {
	cs, err := ciphersuite.Lookup(suite)
	if err != nil {
		return nil, nil, err
	}
	if opts == nil {
		opts = &KeyPackageOptions{}
	}
	if sigKey == nil {
		if sigKey, err = cs.GenerateSignatureKey(); err != nil {
			return nil, nil, err
		}
	} else if sigKey.Suite() != suite {
		return nil, nil, fmt.Errorf("mls: signature key is for suite %d, key package for %d", sigKey.Suite(), suite)
	}
	initKey, err := cs.GenerateHPKEKey()
	if err != nil {
		return nil, nil, err
	}
	encKey, err := cs.GenerateHPKEKey()
	if err != nil {
		return nil, nil, err
	}
	now := time.Now()
	nb, na := opts.NotBefore, opts.NotAfter
	if nb.IsZero() {
		nb = now.Add(-time.Hour)
	}
	if na.IsZero() {
		na = now.Add(DefaultKeyPackageLifetime)
	}
	if !na.After(nb) {
		return nil, nil, fmt.Errorf("mls: key package lifetime ends (%s) before it starts (%s)", na, nb)
	}
	caps := Capabilities{
		Versions:     []ProtocolVersion{ProtocolMLS10},
		CipherSuites: []ciphersuite.Suite{suite},
		Extensions:   []ExtensionType{},
		Proposals:    []ProposalType{},
		Credentials:  []CredentialType{credential.Type},
	}
	if opts.Capabilities != nil {
		caps = *opts.Capabilities
		if !contains(caps.CipherSuites, suite) {
			caps.CipherSuites = append(caps.CipherSuites, suite)
		}
		if !contains(caps.Credentials, credential.Type) {
			caps.Credentials = append(caps.Credentials, credential.Type)
		}
	}
	leafExt, kpExt := opts.LeafExtensions, opts.Extensions
	if leafExt == nil {
		leafExt = Extensions{}
	}
	if kpExt == nil {
		kpExt = Extensions{}
	}
	kp := &KeyPackage{
		Version:     ProtocolMLS10,
		CipherSuite: suite,
		InitKey:     initKey.PublicKey(),
		LeafNode: LeafNode{
			EncryptionKey: encKey.PublicKey(),
			SignatureKey:  sigKey.PublicKey(),
			Credential:    credential,
			Capabilities:  caps,
			Source:        LeafNodeSourceKeyPackage,
			Lifetime:      Lifetime{NotBefore: uint64(nb.Unix()), NotAfter: uint64(na.Unix())},
			Extensions:    leafExt,
		},
		Extensions: kpExt,
	}
	if err := kp.LeafNode.Sign(cs, sigKey, nil, 0); err != nil {
		return nil, nil, err
	}
	if err := kp.Sign(cs, sigKey); err != nil {
		return nil, nil, err
	}
	return kp, &KeyPackageSecrets{InitKey: initKey, EncryptionKey: encKey, SignatureKey: sigKey}, nil
}

// ValidateKeyPackage checks kp as a group of the given suite must before
// adding it (RFC 9420 §10.1, §12.2): [KeyPackage.Validate] (version,
// signatures, init key distinct from the encryption key, capabilities
// covering the credential and extensions), the suite, and that now lies
// within the leaf's lifetime. Errors wrap [ErrInvalidKeyPackage].
func ValidateKeyPackage(kp *KeyPackage, suite ciphersuite.Suite, now time.Time) error {
	if kp.CipherSuite != suite {
		return fmt.Errorf("%w: suite %d in a group of suite %d", ErrInvalidKeyPackage, kp.CipherSuite, suite)
	}
	if err := kp.Validate(); err != nil {
		return err
	}
	lt := kp.LeafNode.Lifetime
	if t := now.Unix(); t < 0 || uint64(t) < lt.NotBefore || uint64(t) > lt.NotAfter {
		return fmt.Errorf("%w: lifetime %d..%d does not cover %d", ErrInvalidKeyPackage, lt.NotBefore, lt.NotAfter, now.Unix())
	}
	return nil
}

// matches reports whether s holds the private keys of kp.
func (s *KeyPackageSecrets) matches(kp *KeyPackage) error {
	if s == nil || s.InitKey == nil || s.EncryptionKey == nil || s.SignatureKey == nil {
		return fmt.Errorf("%w: key package secrets incomplete", ErrInvalidKeyPackage)
	}
	if string(s.InitKey.PublicKey()) != string(kp.InitKey) {
		return fmt.Errorf("%w: init private key does not match the key package", ErrInvalidKeyPackage)
	}
	if string(s.EncryptionKey.PublicKey()) != string(kp.LeafNode.EncryptionKey) {
		return fmt.Errorf("%w: encryption private key does not match the leaf", ErrInvalidKeyPackage)
	}
	if string(s.SignatureKey.PublicKey()) != string(kp.LeafNode.SignatureKey) {
		return fmt.Errorf("%w: signature private key does not match the leaf", ErrInvalidKeyPackage)
	}
	return nil
}
