package mls

import (
	"fmt"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
)

// GroupInfo describes a group to new members (RFC 9420 §12.4.3).
type GroupInfo struct {
	GroupContext    GroupContext
	Extensions      Extensions
	ConfirmationTag []byte
	Signer          LeafIndex
	// Signature is SignWithLabel(., "GroupInfoTBS", GroupInfoTBS).
	Signature []byte
}

// checkExtensionLists reports an extension type that appears twice in
// the GroupInfo's extensions or in its GroupContext's, which RFC 9420 §13
// forbids in any extension list; which copy counted would be up to the
// reader. The error wraps [ErrDecode].
func (gi *GroupInfo) checkExtensionLists() error {
	if err := gi.Extensions.checkUnique(); err != nil {
		return fmt.Errorf("%w: group info extensions: %s", ErrDecode, err)
	}
	if err := gi.GroupContext.Extensions.checkUnique(); err != nil {
		return fmt.Errorf("%w: group context extensions: %s", ErrDecode, err)
	}
	return nil
}

func (gi *GroupInfo) marshalTBS(w *codec.Writer) {
	gi.GroupContext.marshal(w)
	gi.Extensions.marshal(w)
	w.OpaqueV(gi.ConfirmationTag)
	w.Uint32(uint32(gi.Signer))
}

func (gi *GroupInfo) marshal(w *codec.Writer) {
	gi.marshalTBS(w)
	w.OpaqueV(gi.Signature)
}

func (gi *GroupInfo) unmarshal(r *codec.Reader) error {
	if err := gi.GroupContext.unmarshal(r); err != nil {
		return err
	}
	gi.Extensions = readExtensions(r)
	gi.ConfirmationTag, _ = r.OpaqueV()
	s, _ := r.Uint32()
	gi.Signer = LeafIndex(s)
	gi.Signature, _ = r.OpaqueV()
	return r.Err()
}

// Marshal encodes the GroupInfo.
func (gi *GroupInfo) Marshal() ([]byte, error) { return marshalWire(gi) }

// Unmarshal decodes a GroupInfo strictly.
func (gi *GroupInfo) Unmarshal(b []byte) error { return unmarshalWire(b, gi) }

// TBS returns the encoded GroupInfoTBS.
func (gi *GroupInfo) TBS() ([]byte, error) {
	var w codec.Writer
	gi.marshalTBS(&w)
	return w.Finish()
}

// Sign sets Signature with the signer's private key.
func (gi *GroupInfo) Sign(cs *ciphersuite.CipherSuite, priv *ciphersuite.SignaturePrivateKey) error {
	tbs, err := gi.TBS()
	if err != nil {
		return err
	}
	sig, err := cs.SignWithLabel(priv, labelGroupInfoTBS, tbs)
	if err != nil {
		return fmt.Errorf("mls: signing group info: %w", err)
	}
	gi.Signature = sig
	return nil
}

// VerifySignature checks Signature against the signer's public key; the
// error wraps [ErrBadSignature] when it does not verify.
func (gi *GroupInfo) VerifySignature(cs *ciphersuite.CipherSuite, pub SignaturePublicKey) error {
	tbs, err := gi.TBS()
	if err != nil {
		return err
	}
	return cs.VerifyWithLabel(pub, labelGroupInfoTBS, tbs, gi.Signature)
}

// PathSecret carries the path secret a new member needs (RFC 9420 §12.4.3.1).
// It holds a secret: no fmt verb prints the bytes, and JSON and text
// marshaling refuse with [ciphersuite.ErrSecretMarshal].
type PathSecret struct {
	PathSecret ciphersuite.Secret
}

// String implements fmt.Stringer without revealing the secret.
func (ps PathSecret) String() string { return "PathSecret(REDACTED)" }

// GoString implements fmt.GoStringer without revealing the secret.
func (ps PathSecret) GoString() string { return ps.String() }

// Format prints String for every verb, so %x and %d cannot leak the bytes.
func (ps PathSecret) Format(f fmt.State, _ rune) { fmt.Fprint(f, ps.String()) }

// MarshalJSON refuses, with [ciphersuite.ErrSecretMarshal].
func (ps PathSecret) MarshalJSON() ([]byte, error) { return nil, ciphersuite.ErrSecretMarshal }

// MarshalText refuses, with [ciphersuite.ErrSecretMarshal].
func (ps PathSecret) MarshalText() ([]byte, error) { return nil, ciphersuite.ErrSecretMarshal }

// GroupSecrets is the per-joiner payload of a Welcome. It holds secrets: no
// fmt verb prints them, and JSON and text marshaling refuse with
// [ciphersuite.ErrSecretMarshal].
type GroupSecrets struct {
	JoinerSecret ciphersuite.Secret
	// PathSecret is nil when absent.
	PathSecret *PathSecret
	PSKs       []PreSharedKeyID
}

// String implements fmt.Stringer without revealing the secrets.
func (gs GroupSecrets) String() string {
	return fmt.Sprintf("GroupSecrets(REDACTED, path secret %t, %d psks)", gs.PathSecret != nil, len(gs.PSKs))
}

// GoString implements fmt.GoStringer without revealing the secrets.
func (gs GroupSecrets) GoString() string { return gs.String() }

// Format prints String for every verb, so %x and %d cannot leak the
// secrets.
func (gs GroupSecrets) Format(f fmt.State, _ rune) { fmt.Fprint(f, gs.String()) }

// MarshalJSON refuses, with [ciphersuite.ErrSecretMarshal].
func (gs GroupSecrets) MarshalJSON() ([]byte, error) { return nil, ciphersuite.ErrSecretMarshal }

// MarshalText refuses, with [ciphersuite.ErrSecretMarshal].
func (gs GroupSecrets) MarshalText() ([]byte, error) { return nil, ciphersuite.ErrSecretMarshal }

func (gs *GroupSecrets) marshal(w *codec.Writer) {
	w.OpaqueV(gs.JoinerSecret.Bytes())
	w.Optional(gs.PathSecret != nil)
	if gs.PathSecret != nil {
		w.OpaqueV(gs.PathSecret.PathSecret.Bytes())
	}
	writeStructList(w, gs.PSKs)
}

func (gs *GroupSecrets) unmarshal(r *codec.Reader) error {
	js, _ := r.OpaqueV()
	gs.JoinerSecret = ciphersuite.NewSecret(js)
	present, err := r.Optional()
	if err != nil {
		return err
	}
	gs.PathSecret = nil
	if present {
		ps, _ := r.OpaqueV()
		gs.PathSecret = &PathSecret{PathSecret: ciphersuite.NewSecret(ps)}
	}
	gs.PSKs = readStructList[PreSharedKeyID](r)
	return r.Err()
}

// Marshal encodes the GroupSecrets.
func (gs *GroupSecrets) Marshal() ([]byte, error) { return marshalWire(gs) }

// Unmarshal decodes GroupSecrets strictly.
func (gs *GroupSecrets) Unmarshal(b []byte) error { return unmarshalWire(b, gs) }

// EncryptedGroupSecrets is GroupSecrets encrypted to one new member's init
// key, identified by its KeyPackageRef.
type EncryptedGroupSecrets struct {
	NewMember             []byte
	EncryptedGroupSecrets HPKECiphertext
}

func (e *EncryptedGroupSecrets) marshal(w *codec.Writer) {
	w.OpaqueV(e.NewMember)
	e.EncryptedGroupSecrets.marshal(w)
}

func (e *EncryptedGroupSecrets) unmarshal(r *codec.Reader) error {
	e.NewMember, _ = r.OpaqueV()
	return e.EncryptedGroupSecrets.unmarshal(r)
}

// Welcome brings new members into a group (RFC 9420 §12.4.3.1).
type Welcome struct {
	CipherSuite        ciphersuite.Suite
	Secrets            []EncryptedGroupSecrets
	EncryptedGroupInfo []byte
}

func (wm *Welcome) marshal(w *codec.Writer) {
	w.Uint16(uint16(wm.CipherSuite))
	writeStructList(w, wm.Secrets)
	w.OpaqueV(wm.EncryptedGroupInfo)
}

func (wm *Welcome) unmarshal(r *codec.Reader) error {
	wm.CipherSuite = readSuite(r)
	wm.Secrets = readStructList[EncryptedGroupSecrets](r)
	wm.EncryptedGroupInfo, _ = r.OpaqueV()
	return r.Err()
}

// Marshal encodes the Welcome.
func (wm *Welcome) Marshal() ([]byte, error) { return marshalWire(wm) }

// Unmarshal decodes a Welcome strictly.
func (wm *Welcome) Unmarshal(b []byte) error { return unmarshalWire(b, wm) }
