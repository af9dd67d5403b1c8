package mls

import (
	"bytes"
	"fmt"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
)

// Signature labels (RFC 9420 §17.6).
const (
	labelLeafNodeTBS   = "LeafNodeTBS"
	labelKeyPackageTBS = "KeyPackageTBS"
	labelGroupInfoTBS  = "GroupInfoTBS"
)

// LeafNode describes one member (RFC 9420 §7.2). Lifetime is encoded only
// for the key_package source and ParentHash only for the commit source.
type LeafNode struct {
	EncryptionKey HPKEPublicKey
	SignatureKey  SignaturePublicKey
	Credential    Credential
	Capabilities  Capabilities
	Source        LeafNodeSource
	Lifetime      Lifetime
	ParentHash    []byte
	Extensions    Extensions
	// Signature is SignWithLabel(., "LeafNodeTBS", LeafNodeTBS).
	Signature []byte
}

// marshalContent writes the fields shared by LeafNode and LeafNodeTBS.
func (ln *LeafNode) marshalContent(w *codec.Writer) {
	w.OpaqueV(ln.EncryptionKey)
	w.OpaqueV(ln.SignatureKey)
	ln.Credential.marshal(w)
	ln.Capabilities.marshal(w)
	w.Uint8(uint8(ln.Source))
	switch ln.Source {
	case LeafNodeSourceKeyPackage:
		w.Uint64(ln.Lifetime.NotBefore)
		w.Uint64(ln.Lifetime.NotAfter)
	case LeafNodeSourceUpdate:
	case LeafNodeSourceCommit:
		w.OpaqueV(ln.ParentHash)
	default:
		w.Fail(fmt.Errorf("%w: leaf node source %d", codec.ErrEncode, ln.Source))
	}
	ln.Extensions.marshal(w)
}

func (ln *LeafNode) marshal(w *codec.Writer) {
	ln.marshalContent(w)
	w.OpaqueV(ln.Signature)
}

func (ln *LeafNode) unmarshal(r *codec.Reader) error {
	ln.EncryptionKey, _ = r.OpaqueV()
	ln.SignatureKey, _ = r.OpaqueV()
	if err := ln.Credential.unmarshal(r); err != nil {
		return err
	}
	if err := ln.Capabilities.unmarshal(r); err != nil {
		return err
	}
	src, err := r.Uint8()
	if err != nil {
		return err
	}
	ln.Source = LeafNodeSource(src)
	switch ln.Source {
	case LeafNodeSourceKeyPackage:
		ln.Lifetime.NotBefore, _ = r.Uint64()
		ln.Lifetime.NotAfter, _ = r.Uint64()
	case LeafNodeSourceUpdate:
	case LeafNodeSourceCommit:
		ln.ParentHash, _ = r.OpaqueV()
	default:
		return r.Failf("leaf node source %d is not defined", src)
	}
	ln.Extensions = readExtensions(r)
	ln.Signature, _ = r.OpaqueV()
	return r.Err()
}

// Marshal encodes the LeafNode.
func (ln *LeafNode) Marshal() ([]byte, error) { return marshalWire(ln) }

// Unmarshal decodes a LeafNode strictly.
func (ln *LeafNode) Unmarshal(b []byte) error { return unmarshalWire(b, ln) }

// Clone returns a deep copy, so that a copy can be changed and re-signed
// without touching a LeafNode held by a tree.
func (ln *LeafNode) Clone() *LeafNode {
	b, err := ln.Marshal()
	if err != nil {
		c := *ln
		return &c
	}
	var c LeafNode
	if err := c.Unmarshal(b); err != nil {
		c = *ln
	}
	return &c
}

// tbs encodes LeafNodeTBS; groupID and leaf are bound only for the update and
// commit sources.
func (ln *LeafNode) tbs(groupID []byte, leaf LeafIndex) ([]byte, error) {
	var w codec.Writer
	ln.marshalContent(&w)
	if ln.Source == LeafNodeSourceUpdate || ln.Source == LeafNodeSourceCommit {
		w.OpaqueV(groupID)
		w.Uint32(uint32(leaf))
	}
	return w.Finish()
}

// Sign sets Signature. groupID and leaf are ignored for a key_package leaf.
func (ln *LeafNode) Sign(cs *ciphersuite.CipherSuite, priv *ciphersuite.SignaturePrivateKey, groupID []byte, leaf LeafIndex) error {
	tbs, err := ln.tbs(groupID, leaf)
	if err != nil {
		return err
	}
	sig, err := cs.SignWithLabel(priv, labelLeafNodeTBS, tbs)
	if err != nil {
		return fmt.Errorf("mls: signing leaf node: %w", err)
	}
	ln.Signature = sig
	return nil
}

// VerifySignature checks Signature with the leaf's own signature key. The
// error wraps [ErrBadSignature] when the signature does not verify.
func (ln *LeafNode) VerifySignature(cs *ciphersuite.CipherSuite, groupID []byte, leaf LeafIndex) error {
	tbs, err := ln.tbs(groupID, leaf)
	if err != nil {
		return err
	}
	return cs.VerifyWithLabel(ln.SignatureKey, labelLeafNodeTBS, tbs, ln.Signature)
}

// Validate checks a LeafNode on its own (RFC 9420 §7.3): its source is
// want, its signature verifies, its credential type and non-default
// extensions are listed in its capabilities, its extensions are unique,
// its keys are well formed. Checks that need the whole group live in
// [RatchetTree.Validate]. The group's cipher suite is deliberately not
// required in the capabilities: §7.3 does not demand it, and the official
// vectors for suite 7 omit it.
func (ln *LeafNode) Validate(cs *ciphersuite.CipherSuite, want LeafNodeSource, groupID []byte, leaf LeafIndex) error {
	if ln.Source != want {
		return fmt.Errorf("%w: source is %d, want %d", ErrInvalidLeafNode, ln.Source, want)
	}
	if !ln.Capabilities.SupportsCredential(ln.Credential.Type) {
		return fmt.Errorf("%w: credential type %d not listed in its capabilities", ErrInvalidLeafNode, ln.Credential.Type)
	}
	if err := ln.Extensions.checkUnique(); err != nil {
		return fmt.Errorf("%w: %s", ErrInvalidLeafNode, err)
	}
	for _, e := range ln.Extensions {
		if !ln.Capabilities.SupportsExtension(e.Type) {
			return fmt.Errorf("%w: extension type %d not listed in its capabilities", ErrInvalidLeafNode, e.Type)
		}
	}
	if err := cs.ValidateSignaturePublicKey(ln.SignatureKey); err != nil {
		return fmt.Errorf("%w: signature key: %w", ErrInvalidLeafNode, err)
	}
	if err := cs.ValidateHPKEPublicKey(ln.EncryptionKey); err != nil {
		return fmt.Errorf("%w: encryption key: %w", ErrInvalidLeafNode, err)
	}
	if err := ln.VerifySignature(cs, groupID, leaf); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidLeafNode, err)
	}
	return nil
}

// KeyPackage advertises a client that can be added to a group (RFC 9420 §10).
type KeyPackage struct {
	Version     ProtocolVersion
	CipherSuite ciphersuite.Suite
	InitKey     HPKEPublicKey
	LeafNode    LeafNode
	Extensions  Extensions
	// Signature is SignWithLabel(., "KeyPackageTBS", KeyPackageTBS).
	Signature []byte
}

func (kp *KeyPackage) marshalTBS(w *codec.Writer) {
	w.Uint16(uint16(kp.Version))
	w.Uint16(uint16(kp.CipherSuite))
	w.OpaqueV(kp.InitKey)
	kp.LeafNode.marshal(w)
	kp.Extensions.marshal(w)
}

func (kp *KeyPackage) marshal(w *codec.Writer) {
	kp.marshalTBS(w)
	w.OpaqueV(kp.Signature)
}

func (kp *KeyPackage) unmarshal(r *codec.Reader) error {
	v, _ := r.Uint16()
	kp.Version = ProtocolVersion(v)
	kp.CipherSuite = readSuite(r)
	kp.InitKey, _ = r.OpaqueV()
	if err := kp.LeafNode.unmarshal(r); err != nil {
		return err
	}
	kp.Extensions = readExtensions(r)
	kp.Signature, _ = r.OpaqueV()
	return r.Err()
}

// Marshal encodes the KeyPackage.
func (kp *KeyPackage) Marshal() ([]byte, error) { return marshalWire(kp) }

// Unmarshal decodes a KeyPackage strictly.
func (kp *KeyPackage) Unmarshal(b []byte) error { return unmarshalWire(b, kp) }

// Sign sets Signature over KeyPackageTBS.
func (kp *KeyPackage) Sign(cs *ciphersuite.CipherSuite, priv *ciphersuite.SignaturePrivateKey) error {
	var w codec.Writer
	kp.marshalTBS(&w)
	tbs, err := w.Finish()
	if err != nil {
		return err
	}
	sig, err := cs.SignWithLabel(priv, labelKeyPackageTBS, tbs)
	if err != nil {
		return fmt.Errorf("mls: signing key package: %w", err)
	}
	kp.Signature = sig
	return nil
}

// Ref returns the KeyPackageRef: RefHash("MLS 1.0 KeyPackage Reference",
// encoded KeyPackage) under the key package's own suite.
func (kp *KeyPackage) Ref() ([]byte, error) {
	cs, err := ciphersuite.Lookup(kp.CipherSuite)
	if err != nil {
		return nil, err
	}
	b, err := kp.Marshal()
	if err != nil {
		return nil, err
	}
	return cs.MakeKeyPackageRef(b)
}

// Validate checks a KeyPackage (RFC 9420 §10.1): supported version and
// suite, a valid key_package leaf, its signature, an init key that
// differs from the leaf's encryption key, and extensions of distinct
// types (§13). Errors wrap [ErrInvalidKeyPackage].
func (kp *KeyPackage) Validate() error {
	if kp.Version != ProtocolMLS10 {
		return fmt.Errorf("%w: version %d", ErrInvalidKeyPackage, kp.Version)
	}
	cs, err := ciphersuite.Lookup(kp.CipherSuite)
	if err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKeyPackage, err)
	}
	if err := cs.ValidateHPKEPublicKey(kp.InitKey); err != nil {
		return fmt.Errorf("%w: init key: %w", ErrInvalidKeyPackage, err)
	}
	if bytes.Equal(kp.InitKey, kp.LeafNode.EncryptionKey) {
		return fmt.Errorf("%w: init key equals the leaf encryption key", ErrInvalidKeyPackage)
	}
	if err := kp.Extensions.checkUnique(); err != nil {
		return fmt.Errorf("%w: key package extensions: %s", ErrInvalidKeyPackage, err)
	}
	if err := kp.LeafNode.Validate(cs, LeafNodeSourceKeyPackage, nil, 0); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKeyPackage, err)
	}
	var w codec.Writer
	kp.marshalTBS(&w)
	tbs, err := w.Finish()
	if err != nil {
		return err
	}
	if err := cs.VerifyWithLabel(kp.LeafNode.SignatureKey, labelKeyPackageTBS, tbs, kp.Signature); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidKeyPackage, err)
	}
	return nil
}

// ParentNode is an interior node of the ratchet tree (RFC 9420 §7.1).
type ParentNode struct {
	EncryptionKey  HPKEPublicKey
	ParentHash     []byte
	UnmergedLeaves []LeafIndex
}

func (pn *ParentNode) marshal(w *codec.Writer) {
	w.OpaqueV(pn.EncryptionKey)
	w.OpaqueV(pn.ParentHash)
	w.VectorV(func(w *codec.Writer) {
		for _, l := range pn.UnmergedLeaves {
			w.Uint32(uint32(l))
		}
	})
}

func (pn *ParentNode) unmarshal(r *codec.Reader) error {
	pn.EncryptionKey, _ = r.OpaqueV()
	pn.ParentHash, _ = r.OpaqueV()
	pn.UnmergedLeaves = readList(r, func(sub *codec.Reader) (LeafIndex, error) {
		v, err := sub.Uint32()
		return LeafIndex(v), err
	})
	return r.Err()
}

// Marshal encodes the ParentNode.
func (pn *ParentNode) Marshal() ([]byte, error) { return marshalWire(pn) }

// Unmarshal decodes a ParentNode strictly.
func (pn *ParentNode) Unmarshal(b []byte) error { return unmarshalWire(b, pn) }
