package mls

import (
	"fmt"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
)

// Sender identifies the author of a FramedContent (RFC 9420 §6).
type Sender struct {
	Type SenderType
	// LeafIndex is set for a member sender.
	LeafIndex LeafIndex
	// SenderIndex indexes the external_senders extension for an external
	// sender.
	SenderIndex uint32
}

func (s *Sender) marshal(w *codec.Writer) {
	w.Uint8(uint8(s.Type))
	switch s.Type {
	case SenderTypeMember:
		w.Uint32(uint32(s.LeafIndex))
	case SenderTypeExternal:
		w.Uint32(s.SenderIndex)
	case SenderTypeNewMemberProposal, SenderTypeNewMemberCommit:
	default:
		w.Fail(fmt.Errorf("%w: sender type %d", codec.ErrEncode, s.Type))
	}
}

func (s *Sender) unmarshal(r *codec.Reader) error {
	t, err := r.Uint8()
	if err != nil {
		return err
	}
	*s = Sender{Type: SenderType(t)}
	switch s.Type {
	case SenderTypeMember:
		v, _ := r.Uint32()
		s.LeafIndex = LeafIndex(v)
	case SenderTypeExternal:
		s.SenderIndex, _ = r.Uint32()
	case SenderTypeNewMemberProposal, SenderTypeNewMemberCommit:
	default:
		return r.Failf("sender type %d is not defined", t)
	}
	return r.Err()
}

// FramedContent is a proposal, commit or application message with its
// framing (RFC 9420 §6). Exactly the body matching ContentType is set.
type FramedContent struct {
	GroupID           []byte
	Epoch             uint64
	Sender            Sender
	AuthenticatedData []byte
	ContentType       ContentType
	ApplicationData   []byte
	Proposal          *Proposal
	Commit            *Commit
}

// marshalContentBody writes the content selected by ct (shared with
// PrivateMessageContent).
func marshalContentBody(w *codec.Writer, ct ContentType, app []byte, p *Proposal, c *Commit) {
	switch {
	case ct == ContentTypeApplication:
		w.OpaqueV(app)
	case ct == ContentTypeProposal && p != nil:
		p.marshal(w)
	case ct == ContentTypeCommit && c != nil:
		c.marshal(w)
	default:
		w.Fail(fmt.Errorf("%w: content type %d without a matching body", codec.ErrEncode, ct))
	}
}

// unmarshalContentBody reads the content selected by ct.
func unmarshalContentBody(r *codec.Reader, ct ContentType) (app []byte, p *Proposal, c *Commit, err error) {
	switch ct {
	case ContentTypeApplication:
		app, err = r.OpaqueV()
	case ContentTypeProposal:
		p = new(Proposal)
		err = p.unmarshal(r)
	case ContentTypeCommit:
		c = new(Commit)
		err = c.unmarshal(r)
	default:
		err = r.Failf("content type %d is not defined", ct)
	}
	return app, p, c, err
}

func readContentType(r *codec.Reader) ContentType {
	v, err := r.Uint8()
	if err == nil && (v < uint8(ContentTypeApplication) || v > uint8(ContentTypeCommit)) {
		r.Failf("content type %d is not defined", v)
	}
	return ContentType(v)
}

func (fc *FramedContent) marshal(w *codec.Writer) {
	w.OpaqueV(fc.GroupID)
	w.Uint64(fc.Epoch)
	fc.Sender.marshal(w)
	w.OpaqueV(fc.AuthenticatedData)
	w.Uint8(uint8(fc.ContentType))
	marshalContentBody(w, fc.ContentType, fc.ApplicationData, fc.Proposal, fc.Commit)
}

func (fc *FramedContent) unmarshal(r *codec.Reader) error {
	*fc = FramedContent{}
	fc.GroupID, _ = r.OpaqueV()
	fc.Epoch, _ = r.Uint64()
	if err := fc.Sender.unmarshal(r); err != nil {
		return err
	}
	fc.AuthenticatedData, _ = r.OpaqueV()
	fc.ContentType = readContentType(r)
	if err := r.Err(); err != nil {
		return err
	}
	var err error
	fc.ApplicationData, fc.Proposal, fc.Commit, err = unmarshalContentBody(r, fc.ContentType)
	return err
}

// Marshal encodes the FramedContent.
func (fc *FramedContent) Marshal() ([]byte, error) { return marshalWire(fc) }

// Unmarshal decodes a FramedContent strictly.
func (fc *FramedContent) Unmarshal(b []byte) error { return unmarshalWire(b, fc) }

// FramedContentAuthData authenticates a FramedContent. ConfirmationTag is
// encoded only for commits, so its encoding depends on the content type.
type FramedContentAuthData struct {
	Signature       []byte
	ConfirmationTag []byte
}

// marshalFor writes the auth data for content of type ct.
func (a *FramedContentAuthData) marshalFor(w *codec.Writer, ct ContentType) {
	w.OpaqueV(a.Signature)
	if ct == ContentTypeCommit {
		w.OpaqueV(a.ConfirmationTag)
	}
}

func (a *FramedContentAuthData) unmarshalFor(r *codec.Reader, ct ContentType) error {
	a.Signature, _ = r.OpaqueV()
	a.ConfirmationTag = nil
	if ct == ContentTypeCommit {
		a.ConfirmationTag, _ = r.OpaqueV()
	}
	return r.Err()
}

// MarshalFor encodes the auth data for content of type ct.
func (a *FramedContentAuthData) MarshalFor(ct ContentType) ([]byte, error) {
	var w codec.Writer
	a.marshalFor(&w, ct)
	return w.Finish()
}

// AuthenticatedContent is a FramedContent with its wire format and
// authentication data (RFC 9420 §6); it is the input of proposal references
// and transcript hashes.
type AuthenticatedContent struct {
	WireFormat WireFormat
	Content    FramedContent
	Auth       FramedContentAuthData
}

func (ac *AuthenticatedContent) marshal(w *codec.Writer) {
	w.Uint16(uint16(ac.WireFormat))
	ac.Content.marshal(w)
	ac.Auth.marshalFor(w, ac.Content.ContentType)
}

func (ac *AuthenticatedContent) unmarshal(r *codec.Reader) error {
	v, _ := r.Uint16()
	ac.WireFormat = WireFormat(v)
	if err := ac.Content.unmarshal(r); err != nil {
		return err
	}
	return ac.Auth.unmarshalFor(r, ac.Content.ContentType)
}

// Marshal encodes the AuthenticatedContent.
func (ac *AuthenticatedContent) Marshal() ([]byte, error) { return marshalWire(ac) }

// Unmarshal decodes an AuthenticatedContent strictly.
func (ac *AuthenticatedContent) Unmarshal(b []byte) error { return unmarshalWire(b, ac) }

// PublicMessage is a signed, unencrypted handshake or application message.
// MembershipTag is encoded only for member senders.
type PublicMessage struct {
	Content       FramedContent
	Auth          FramedContentAuthData
	MembershipTag []byte
}

func (pm *PublicMessage) marshal(w *codec.Writer) {
	pm.Content.marshal(w)
	pm.Auth.marshalFor(w, pm.Content.ContentType)
	if pm.Content.Sender.Type == SenderTypeMember {
		w.OpaqueV(pm.MembershipTag)
	}
}

func (pm *PublicMessage) unmarshal(r *codec.Reader) error {
	if err := pm.Content.unmarshal(r); err != nil {
		return err
	}
	if err := pm.Auth.unmarshalFor(r, pm.Content.ContentType); err != nil {
		return err
	}
	pm.MembershipTag = nil
	if pm.Content.Sender.Type == SenderTypeMember {
		pm.MembershipTag, _ = r.OpaqueV()
	}
	return r.Err()
}

// Marshal encodes the PublicMessage.
func (pm *PublicMessage) Marshal() ([]byte, error) { return marshalWire(pm) }

// Unmarshal decodes a PublicMessage strictly.
func (pm *PublicMessage) Unmarshal(b []byte) error { return unmarshalWire(b, pm) }

// PrivateMessage is an encrypted handshake or application message.
type PrivateMessage struct {
	GroupID             []byte
	Epoch               uint64
	ContentType         ContentType
	AuthenticatedData   []byte
	EncryptedSenderData []byte
	Ciphertext          []byte
}

func (pm *PrivateMessage) marshal(w *codec.Writer) {
	w.OpaqueV(pm.GroupID)
	w.Uint64(pm.Epoch)
	w.Uint8(uint8(pm.ContentType))
	w.OpaqueV(pm.AuthenticatedData)
	w.OpaqueV(pm.EncryptedSenderData)
	w.OpaqueV(pm.Ciphertext)
}

func (pm *PrivateMessage) unmarshal(r *codec.Reader) error {
	pm.GroupID, _ = r.OpaqueV()
	pm.Epoch, _ = r.Uint64()
	pm.ContentType = readContentType(r)
	pm.AuthenticatedData, _ = r.OpaqueV()
	pm.EncryptedSenderData, _ = r.OpaqueV()
	pm.Ciphertext, _ = r.OpaqueV()
	return r.Err()
}

// Marshal encodes the PrivateMessage.
func (pm *PrivateMessage) Marshal() ([]byte, error) { return marshalWire(pm) }

// Unmarshal decodes a PrivateMessage strictly.
func (pm *PrivateMessage) Unmarshal(b []byte) error { return unmarshalWire(b, pm) }

// GroupContext summarizes the state of a group in an epoch (RFC 9420 §8.1).
type GroupContext struct {
	Version                 ProtocolVersion
	CipherSuite             ciphersuite.Suite
	GroupID                 []byte
	Epoch                   uint64
	TreeHash                []byte
	ConfirmedTranscriptHash []byte
	Extensions              Extensions
}

func (gc *GroupContext) marshal(w *codec.Writer) {
	w.Uint16(uint16(gc.Version))
	w.Uint16(uint16(gc.CipherSuite))
	w.OpaqueV(gc.GroupID)
	w.Uint64(gc.Epoch)
	w.OpaqueV(gc.TreeHash)
	w.OpaqueV(gc.ConfirmedTranscriptHash)
	gc.Extensions.marshal(w)
}

func (gc *GroupContext) unmarshal(r *codec.Reader) error {
	v, _ := r.Uint16()
	gc.Version = ProtocolVersion(v)
	gc.CipherSuite = readSuite(r)
	gc.GroupID, _ = r.OpaqueV()
	gc.Epoch, _ = r.Uint64()
	gc.TreeHash, _ = r.OpaqueV()
	gc.ConfirmedTranscriptHash, _ = r.OpaqueV()
	gc.Extensions = readExtensions(r)
	return r.Err()
}

// Marshal encodes the GroupContext.
func (gc *GroupContext) Marshal() ([]byte, error) { return marshalWire(gc) }

// Unmarshal decodes a GroupContext strictly.
func (gc *GroupContext) Unmarshal(b []byte) error { return unmarshalWire(b, gc) }

// MLSMessage is the top-level message container (RFC 9420 §6). Exactly the
// body matching WireFormat is set.
type MLSMessage struct {
	Version        ProtocolVersion
	WireFormat     WireFormat
	PublicMessage  *PublicMessage
	PrivateMessage *PrivateMessage
	Welcome        *Welcome
	GroupInfo      *GroupInfo
	KeyPackage     *KeyPackage
}

func (m *MLSMessage) body(alloc bool) wireStruct {
	switch m.WireFormat {
	case WireFormatPublicMessage:
		if alloc {
			m.PublicMessage = new(PublicMessage)
		}
		if m.PublicMessage != nil {
			return m.PublicMessage
		}
	case WireFormatPrivateMessage:
		if alloc {
			m.PrivateMessage = new(PrivateMessage)
		}
		if m.PrivateMessage != nil {
			return m.PrivateMessage
		}
	case WireFormatWelcome:
		if alloc {
			m.Welcome = new(Welcome)
		}
		if m.Welcome != nil {
			return m.Welcome
		}
	case WireFormatGroupInfo:
		if alloc {
			m.GroupInfo = new(GroupInfo)
		}
		if m.GroupInfo != nil {
			return m.GroupInfo
		}
	case WireFormatKeyPackage:
		if alloc {
			m.KeyPackage = new(KeyPackage)
		}
		if m.KeyPackage != nil {
			return m.KeyPackage
		}
	}
	return nil
}

func (m *MLSMessage) marshal(w *codec.Writer) {
	w.Uint16(uint16(m.Version))
	w.Uint16(uint16(m.WireFormat))
	b := m.body(false)
	if b == nil {
		w.Fail(fmt.Errorf("%w: wire format %d without a matching body", codec.ErrEncode, m.WireFormat))
		return
	}
	b.marshal(w)
}

func (m *MLSMessage) unmarshal(r *codec.Reader) error {
	v, _ := r.Uint16()
	wf, err := r.Uint16()
	if err != nil {
		return err
	}
	if ProtocolVersion(v) != ProtocolMLS10 {
		return r.Failf("protocol version %d is not mls10", v)
	}
	*m = MLSMessage{Version: ProtocolVersion(v), WireFormat: WireFormat(wf)}
	b := m.body(true)
	if b == nil {
		return r.Failf("wire format %d is not supported", wf)
	}
	return b.unmarshal(r)
}

// Marshal encodes the MLSMessage.
func (m *MLSMessage) Marshal() ([]byte, error) { return marshalWire(m) }

// Unmarshal decodes an MLSMessage strictly; only version mls10 is accepted.
func (m *MLSMessage) Unmarshal(b []byte) error { return unmarshalWire(b, m) }
