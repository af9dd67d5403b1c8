package mls

import (
	"fmt"
	"time"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
)

// ProtocolVersion is an MLS protocol version (RFC 9420 §6).
type ProtocolVersion uint16

// ProtocolMLS10 is the only protocol version this package speaks.
const ProtocolMLS10 ProtocolVersion = 1

// WireFormat identifies the kind of message an MLSMessage carries.
type WireFormat uint16

// Wire formats (RFC 9420 §17.2).
const (
	WireFormatPublicMessage  WireFormat = 1
	WireFormatPrivateMessage WireFormat = 2
	WireFormatWelcome        WireFormat = 3
	WireFormatGroupInfo      WireFormat = 4
	WireFormatKeyPackage     WireFormat = 5
)

// ContentType identifies what a FramedContent carries.
type ContentType uint8

// Content types (RFC 9420 §6).
const (
	ContentTypeApplication ContentType = 1
	ContentTypeProposal    ContentType = 2
	ContentTypeCommit      ContentType = 3
)

// SenderType identifies who sent a FramedContent.
type SenderType uint8

// Sender types (RFC 9420 §6).
const (
	SenderTypeMember            SenderType = 1
	SenderTypeExternal          SenderType = 2
	SenderTypeNewMemberProposal SenderType = 3
	SenderTypeNewMemberCommit   SenderType = 4
)

// ProposalType identifies a proposal (RFC 9420 §17.4).
type ProposalType uint16

// Proposal types defined by RFC 9420.
const (
	ProposalTypeAdd                    ProposalType = 1
	ProposalTypeUpdate                 ProposalType = 2
	ProposalTypeRemove                 ProposalType = 3
	ProposalTypePSK                    ProposalType = 4
	ProposalTypeReInit                 ProposalType = 5
	ProposalTypeExternalInit           ProposalType = 6
	ProposalTypeGroupContextExtensions ProposalType = 7
)

// ExtensionType identifies an extension (RFC 9420 §17.3).
type ExtensionType uint16

// Extension types defined by RFC 9420.
const (
	ExtensionTypeApplicationID        ExtensionType = 1
	ExtensionTypeRatchetTree          ExtensionType = 2
	ExtensionTypeRequiredCapabilities ExtensionType = 3
	ExtensionTypeExternalPub          ExtensionType = 4
	ExtensionTypeExternalSenders      ExtensionType = 5
)

// CredentialType identifies a credential format (RFC 9420 §17.5).
type CredentialType uint16

// Credential types defined by RFC 9420.
const (
	CredentialTypeBasic CredentialType = 1
	CredentialTypeX509  CredentialType = 2
)

// LeafNodeSource records how a LeafNode entered the tree (RFC 9420 §7.2).
type LeafNodeSource uint8

// Leaf node sources.
const (
	LeafNodeSourceKeyPackage LeafNodeSource = 1
	LeafNodeSourceUpdate     LeafNodeSource = 2
	LeafNodeSourceCommit     LeafNodeSource = 3
)

// HPKEPublicKey is an HPKE public key in its serialized KEM form.
type HPKEPublicKey []byte

// SignaturePublicKey is a signature public key in its MLS wire form.
type SignaturePublicKey []byte

// Credential binds an identity to a signature key (RFC 9420 §5.3). Only the
// field matching Type is encoded.
type Credential struct {
	Type CredentialType
	// Identity is the application-defined identity of a basic credential.
	Identity []byte
	// Certificates is the DER certificate chain of an x509 credential,
	// end-entity first; it is carried, not parsed.
	Certificates [][]byte
}

// NewBasicCredential returns a basic credential for identity (copied).
func NewBasicCredential(identity []byte) Credential {
	return Credential{Type: CredentialTypeBasic, Identity: append([]byte{}, identity...)}
}

func (c *Credential) marshal(w *codec.Writer) {
	w.Uint16(uint16(c.Type))
	switch c.Type {
	case CredentialTypeBasic:
		w.OpaqueV(c.Identity)
	case CredentialTypeX509:
		w.VectorV(func(w *codec.Writer) {
			for _, cert := range c.Certificates {
				w.OpaqueV(cert)
			}
		})
	default:
		w.Fail(fmt.Errorf("%w: credential type %d has no known encoding", codec.ErrEncode, c.Type))
	}
}

func (c *Credential) unmarshal(r *codec.Reader) error {
	t, _ := r.Uint16()
	c.Type = CredentialType(t)
	switch {
	case r.Err() != nil:
	case c.Type == CredentialTypeBasic:
		c.Identity, _ = r.OpaqueV()
	case c.Type == CredentialTypeX509:
		c.Certificates = readList(r, readOpaque)
	default:
		r.Failf("credential type %d is not supported", t)
	}
	return r.Err()
}

// Capabilities lists what a client supports (RFC 9420 §7.2). Unknown values
// (GREASE) are carried unchanged.
type Capabilities struct {
	Versions     []ProtocolVersion
	CipherSuites []ciphersuite.Suite
	Extensions   []ExtensionType
	Proposals    []ProposalType
	Credentials  []CredentialType
}

func (c *Capabilities) marshal(w *codec.Writer) {
	writeUint16List(w, c.Versions)
	writeUint16List(w, c.CipherSuites)
	writeUint16List(w, c.Extensions)
	writeUint16List(w, c.Proposals)
	writeUint16List(w, c.Credentials)
}

func (c *Capabilities) unmarshal(r *codec.Reader) error {
	c.Versions = readUint16List[ProtocolVersion](r)
	c.CipherSuites = readUint16List[ciphersuite.Suite](r)
	c.Extensions = readUint16List[ExtensionType](r)
	c.Proposals = readUint16List[ProposalType](r)
	c.Credentials = readUint16List[CredentialType](r)
	return r.Err()
}

// SupportsExtension reports whether t is listed or is a default extension.
func (c *Capabilities) SupportsExtension(t ExtensionType) bool {
	return isDefaultExtension(t) || contains(c.Extensions, t)
}

// SupportsProposal reports whether t is listed or is a default proposal.
func (c *Capabilities) SupportsProposal(t ProposalType) bool {
	return (t >= ProposalTypeAdd && t <= ProposalTypeGroupContextExtensions) || contains(c.Proposals, t)
}

// SupportsCredential reports whether credential type t is listed.
func (c *Capabilities) SupportsCredential(t CredentialType) bool {
	return contains(c.Credentials, t)
}

func isDefaultExtension(t ExtensionType) bool {
	return t >= ExtensionTypeApplicationID && t <= ExtensionTypeExternalSenders
}

func contains[T comparable](list []T, v T) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// Lifetime bounds the validity of a KeyPackage's leaf, in seconds since the
// Unix epoch.
type Lifetime struct {
	NotBefore uint64
	NotAfter  uint64
}

// Valid reports whether now lies within the lifetime (both ends
// inclusive).
func (l Lifetime) Valid(now time.Time) bool {
	sec := now.Unix()
	return sec >= 0 && uint64(sec) >= l.NotBefore && uint64(sec) <= l.NotAfter
}

// Extension is one typed extension with opaque data (RFC 9420 §13).
type Extension struct {
	Type ExtensionType
	Data []byte
}

func (e *Extension) marshal(w *codec.Writer) {
	w.Uint16(uint16(e.Type))
	w.OpaqueV(e.Data)
}

func (e *Extension) unmarshal(r *codec.Reader) error {
	t, _ := r.Uint16()
	e.Type = ExtensionType(t)
	e.Data, _ = r.OpaqueV()
	return r.Err()
}

// Extensions is an extension list.
type Extensions []Extension

// Find returns the first extension of type t.
func (es Extensions) Find(t ExtensionType) (Extension, bool) {
	for _, e := range es {
		if e.Type == t {
			return e, true
		}
	}
	return Extension{}, false
}

func (es Extensions) marshal(w *codec.Writer) { writeStructList(w, []Extension(es)) }

func readExtensions(r *codec.Reader) Extensions {
	return Extensions(readStructList[Extension](r))
}

// checkUnique reports a duplicated extension type, which RFC 9420 §13
// forbids in any extension list.
func (es Extensions) checkUnique() error {
	seen := make(map[ExtensionType]bool, len(es))
	for _, e := range es {
		if seen[e.Type] {
			return fmt.Errorf("extension type %d appears twice", e.Type)
		}
		seen[e.Type] = true
	}
	return nil
}

// RequiredCapabilities is the required_capabilities extension payload.
type RequiredCapabilities struct {
	Extensions  []ExtensionType
	Proposals   []ProposalType
	Credentials []CredentialType
}

func (rc *RequiredCapabilities) marshal(w *codec.Writer) {
	writeUint16List(w, rc.Extensions)
	writeUint16List(w, rc.Proposals)
	writeUint16List(w, rc.Credentials)
}

func (rc *RequiredCapabilities) unmarshal(r *codec.Reader) error {
	rc.Extensions = readUint16List[ExtensionType](r)
	rc.Proposals = readUint16List[ProposalType](r)
	rc.Credentials = readUint16List[CredentialType](r)
	return r.Err()
}

// Marshal encodes the extension payload.
func (rc *RequiredCapabilities) Marshal() ([]byte, error) { return marshalWire(rc) }

// Unmarshal decodes the extension payload strictly.
func (rc *RequiredCapabilities) Unmarshal(b []byte) error { return unmarshalWire(b, rc) }

// ExternalSender is one entry of the external_senders extension.
type ExternalSender struct {
	SignatureKey SignaturePublicKey
	Credential   Credential
}

func (es *ExternalSender) marshal(w *codec.Writer) {
	w.OpaqueV(es.SignatureKey)
	es.Credential.marshal(w)
}

func (es *ExternalSender) unmarshal(r *codec.Reader) error {
	es.SignatureKey, _ = r.OpaqueV()
	return es.Credential.unmarshal(r)
}

// Marshal encodes the ExternalSender.
func (es *ExternalSender) Marshal() ([]byte, error) { return marshalWire(es) }

// Unmarshal decodes an ExternalSender strictly.
func (es *ExternalSender) Unmarshal(b []byte) error { return unmarshalWire(b, es) }

// ExternalSenders is the external_senders extension payload.
type ExternalSenders []ExternalSender

// Marshal encodes the extension payload.
func (s ExternalSenders) Marshal() ([]byte, error) {
	var w codec.Writer
	writeStructList(&w, []ExternalSender(s))
	return w.Finish()
}

// UnmarshalExternalSenders decodes an external_senders payload strictly.
func UnmarshalExternalSenders(b []byte) (ExternalSenders, error) {
	r := codec.NewReader(b)
	list := readStructList[ExternalSender](r)
	if err := r.Done(); err != nil {
		return nil, err
	}
	return ExternalSenders(list), nil
}

// ExternalPub is the external_pub GroupInfo extension payload.
type ExternalPub struct {
	ExternalPub HPKEPublicKey
}

func (e *ExternalPub) marshal(w *codec.Writer) { w.OpaqueV(e.ExternalPub) }

func (e *ExternalPub) unmarshal(r *codec.Reader) error {
	e.ExternalPub, _ = r.OpaqueV()
	return r.Err()
}

// Marshal encodes the extension payload.
func (e *ExternalPub) Marshal() ([]byte, error) { return marshalWire(e) }

// Unmarshal decodes the extension payload strictly.
func (e *ExternalPub) Unmarshal(b []byte) error { return unmarshalWire(b, e) }

// ApplicationIDExtension returns the application_id extension carrying id,
// whose payload is the opaque<V> application identifier.
func ApplicationIDExtension(id []byte) (Extension, error) {
	var w codec.Writer
	w.OpaqueV(id)
	b, err := w.Finish()
	return Extension{Type: ExtensionTypeApplicationID, Data: b}, err
}

// ApplicationID decodes the payload of an application_id extension.
func ApplicationID(e Extension) ([]byte, error) {
	if e.Type != ExtensionTypeApplicationID {
		return nil, fmt.Errorf("%w: extension type %d is not application_id", ErrDecode, e.Type)
	}
	r := codec.NewReader(e.Data)
	id, _ := r.OpaqueV()
	if err := r.Done(); err != nil {
		return nil, err
	}
	return id, nil
}
