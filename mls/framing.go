package mls

import (
	"crypto/rand"
	"fmt"
	"io"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/keyschedule"
)

// Labels of framing (RFC 9420 §6, §12.4.3.1).
const (
	labelFramedContentTBS = "FramedContentTBS"
	labelWelcomeSecrets   = "Welcome"
	reuseGuardLen         = 4
)

// encodeFramedContent encodes fc. The signature, the membership tag and
// the confirmed transcript hash all cover this encoding: the paths that
// compute more than one of them (creating and processing a commit) encode
// it once and pass it on, since a commit with a path is large (82 KiB in a
// group of 1,000 whose parents are blank, 805 KiB at 10,000).
func encodeFramedContent(fc *FramedContent) ([]byte, error) {
	var w codec.Writer
	fc.marshal(&w)
	return w.Finish()
}

// contentOr is content, or, when the caller has not encoded it (nil), the
// encoding of fc.
func contentOr(content []byte, fc *FramedContent) ([]byte, error) {
	if content != nil {
		return content, nil
	}
	return encodeFramedContent(fc)
}

// framedContentTBSOf encodes FramedContentTBS (RFC 9420 §6.1) of content,
// the encoding of a FramedContent from a sender of type sender; the group
// context is bound for member and new-member-commit senders only.
func framedContentTBSOf(wf WireFormat, sender SenderType, content []byte, gc *GroupContext) ([]byte, error) {
	var w codec.Writer
	w.Grow(4 + len(content) + tbsContextRoom)
	writeFramedContentTBS(&w, wf, sender, content, gc)
	return w.Finish()
}

// tbsContextRoom is room enough for a group context without extensions
// (its three hashes and fixed fields), so that a large content is not
// copied again when the context is appended.
const tbsContextRoom = 256

// writeFramedContentTBS writes framedContentTBSOf's encoding to w.
func writeFramedContentTBS(w *codec.Writer, wf WireFormat, sender SenderType, content []byte, gc *GroupContext) {
	w.Uint16(uint16(ProtocolMLS10))
	w.Uint16(uint16(wf))
	w.Raw(content)
	switch sender {
	case SenderTypeMember, SenderTypeNewMemberCommit:
		if gc == nil {
			w.Fail(fmt.Errorf("mls: FramedContentTBS of a member sender needs the group context"))
			return
		}
		gc.marshal(w)
	}
}

// signFramedContent returns the signature of fc sent as wf.
func signFramedContent(cs *ciphersuite.CipherSuite, priv *ciphersuite.SignaturePrivateKey, wf WireFormat, fc *FramedContent, gc *GroupContext) ([]byte, error) {
	content, err := encodeFramedContent(fc)
	if err != nil {
		return nil, err
	}
	return signFramedContentOf(cs, priv, wf, fc.Sender.Type, content, gc)
}

// signFramedContentOf is signFramedContent of content, fc's encoding.
func signFramedContentOf(cs *ciphersuite.CipherSuite, priv *ciphersuite.SignaturePrivateKey, wf WireFormat, sender SenderType, content []byte, gc *GroupContext) ([]byte, error) {
	tbs, err := framedContentTBSOf(wf, sender, content, gc)
	if err != nil {
		return nil, err
	}
	sig, err := cs.SignWithLabel(priv, labelFramedContentTBS, tbs)
	if err != nil {
		return nil, fmt.Errorf("mls: signing framed content: %w", err)
	}
	return sig, nil
}

// verifyFramedContent checks the signature of ac with the sender's key;
// the error wraps ErrBadSignature.
func verifyFramedContent(cs *ciphersuite.CipherSuite, pub SignaturePublicKey, ac *AuthenticatedContent, gc *GroupContext) error {
	return verifyFramedContentOf(cs, pub, ac, nil, gc)
}

// verifyFramedContentOf is verifyFramedContent with content, the encoding
// of ac.Content, made already (nil: encoded here).
func verifyFramedContentOf(cs *ciphersuite.CipherSuite, pub SignaturePublicKey, ac *AuthenticatedContent, content []byte, gc *GroupContext) error {
	content, err := contentOr(content, &ac.Content)
	if err != nil {
		return err
	}
	tbs, err := framedContentTBSOf(ac.WireFormat, ac.Content.Sender.Type, content, gc)
	if err != nil {
		return err
	}
	if err := cs.VerifyWithLabel(pub, labelFramedContentTBS, tbs, ac.Auth.Signature); err != nil {
		return fmt.Errorf("mls: %s from %s in epoch %d: %w", contentName(ac.Content.ContentType), senderString(ac.Content.Sender), ac.Content.Epoch, err)
	}
	return nil
}

// membershipTagInput encodes AuthenticatedContentTBM, with content the
// encoding of ac.Content made already (nil: encoded here).
func membershipTagInput(ac *AuthenticatedContent, content []byte, gc *GroupContext) ([]byte, error) {
	content, err := contentOr(content, &ac.Content)
	if err != nil {
		return nil, err
	}
	var w codec.Writer
	w.Grow(4 + len(content) + tbsContextRoom + len(ac.Auth.Signature) + len(ac.Auth.ConfirmationTag) + 8)
	writeFramedContentTBS(&w, ac.WireFormat, ac.Content.Sender.Type, content, gc)
	ac.Auth.marshalFor(&w, ac.Content.ContentType)
	return w.Finish()
}

// protectPublic wraps ac, already signed, in a PublicMessage with the
// membership tag of a member sender.
func protectPublic(cs *ciphersuite.CipherSuite, ac *AuthenticatedContent, gc *GroupContext, membershipKey keyschedule.Secret) (*PublicMessage, error) {
	return protectPublicOf(cs, ac, nil, gc, membershipKey)
}

// protectPublicOf is protectPublic with content, the encoding of
// ac.Content made already (nil: encoded here if needed).
func protectPublicOf(cs *ciphersuite.CipherSuite, ac *AuthenticatedContent, content []byte, gc *GroupContext, membershipKey keyschedule.Secret) (*PublicMessage, error) {
	if ac.WireFormat != WireFormatPublicMessage {
		return nil, fmt.Errorf("mls: content framed for wire format %d, not a public message", ac.WireFormat)
	}
	if ac.Content.ContentType == ContentTypeApplication {
		return nil, fmt.Errorf("mls: application data is never sent as a public message")
	}
	pm := &PublicMessage{Content: ac.Content, Auth: ac.Auth}
	if ac.Content.Sender.Type == SenderTypeMember {
		in, err := membershipTagInput(ac, content, gc)
		if err != nil {
			return nil, err
		}
		pm.MembershipTag = cs.MAC(membershipKey.Bytes(), in)
	}
	return pm, nil
}

// unprotectPublic checks the membership tag of a member's PublicMessage
// (the signature is the caller's job: it knows the sender's key).
func unprotectPublic(cs *ciphersuite.CipherSuite, pm *PublicMessage, gc *GroupContext, membershipKey keyschedule.Secret) (*AuthenticatedContent, error) {
	return unprotectPublicOf(cs, pm, nil, gc, membershipKey)
}

// unprotectPublicOf is unprotectPublic with content, the encoding of
// pm.Content made already (nil: encoded here if needed).
func unprotectPublicOf(cs *ciphersuite.CipherSuite, pm *PublicMessage, content []byte, gc *GroupContext, membershipKey keyschedule.Secret) (*AuthenticatedContent, error) {
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: pm.Content, Auth: pm.Auth}
	if ac.Content.ContentType == ContentTypeApplication {
		return nil, fmt.Errorf("%w: application data in a public message", ErrTampered)
	}
	if pm.Content.Sender.Type == SenderTypeMember {
		in, err := membershipTagInput(ac, content, gc)
		if err != nil {
			return nil, err
		}
		if !cs.VerifyMAC(membershipKey.Bytes(), in, pm.MembershipTag) {
			return nil, fmt.Errorf("%w: membership tag of a %s from leaf %d in epoch %d", ErrTampered, contentName(ac.Content.ContentType), pm.Content.Sender.LeafIndex, pm.Content.Epoch)
		}
	}
	return ac, nil
}

// senderString names a sender in errors.
func senderString(s Sender) string {
	switch s.Type {
	case SenderTypeMember:
		return fmt.Sprintf("leaf %d", s.LeafIndex)
	case SenderTypeExternal:
		return fmt.Sprintf("external sender %d", s.SenderIndex)
	case SenderTypeNewMemberCommit:
		return "new member (commit)"
	case SenderTypeNewMemberProposal:
		return "new member (proposal)"
	}
	return fmt.Sprintf("sender type %d", s.Type)
}

// contentName names a content type in errors.
func contentName(ct ContentType) string {
	switch ct {
	case ContentTypeApplication:
		return "application message"
	case ContentTypeProposal:
		return "proposal"
	case ContentTypeCommit:
		return "commit"
	}
	return fmt.Sprintf("content type %d", uint8(ct))
}

// ratchetFor selects the secret-tree ratchet of a content type.
func ratchetFor(ct ContentType) keyschedule.ContentType {
	if ct == ContentTypeApplication {
		return keyschedule.Application
	}
	return keyschedule.Handshake
}

// keySource hands out per-sender keys of one epoch: the secret tree, or a
// wrapper that also records what was consumed.
type keySource interface {
	Next(leaf LeafIndex, typ keyschedule.ContentType) (keyschedule.KeyNonce, error)
	Get(leaf LeafIndex, typ keyschedule.ContentType, generation uint32) (keyschedule.KeyNonce, error)
}

func senderDataAAD(groupID []byte, epoch uint64, ct ContentType) ([]byte, error) {
	var w codec.Writer
	w.OpaqueV(groupID)
	w.Uint64(epoch)
	w.Uint8(uint8(ct))
	return w.Finish()
}

func privateContentAAD(groupID []byte, epoch uint64, ct ContentType, authData []byte) ([]byte, error) {
	var w codec.Writer
	w.OpaqueV(groupID)
	w.Uint64(epoch)
	w.Uint8(uint8(ct))
	w.OpaqueV(authData)
	return w.Finish()
}

// guardNonce XORs the reuse guard into the first bytes of the nonce.
func guardNonce(nonce keyschedule.Secret, guard []byte) []byte {
	n := nonce.Bytes()
	for i := range reuseGuardLen {
		n[i] ^= guard[i]
	}
	return n
}

// protectPrivate encrypts ac, already signed and framed for the private
// wire format, as a PrivateMessage of a member sender (RFC 9420 §6.3),
// padding the content with padding zero bytes.
func protectPrivate(cs *ciphersuite.CipherSuite, keys keySource, senderDataSecret keyschedule.Secret, ac *AuthenticatedContent, padding int, random io.Reader) (*PrivateMessage, error) {
	fc := &ac.Content
	if ac.WireFormat != WireFormatPrivateMessage {
		return nil, fmt.Errorf("mls: content framed for wire format %d, not a private message", ac.WireFormat)
	}
	if fc.Sender.Type != SenderTypeMember {
		return nil, fmt.Errorf("mls: only members send private messages, not %s", senderString(fc.Sender))
	}
	if random == nil {
		random = rand.Reader
	}
	var w codec.Writer
	marshalContentBody(&w, fc.ContentType, fc.ApplicationData, fc.Proposal, fc.Commit)
	ac.Auth.marshalFor(&w, fc.ContentType)
	w.Raw(make([]byte, padding))
	plain, err := w.Finish()
	if err != nil {
		return nil, err
	}
	kn, err := keys.Next(fc.Sender.LeafIndex, ratchetFor(fc.ContentType))
	if err != nil {
		return nil, err
	}
	guard := make([]byte, reuseGuardLen)
	if _, err := io.ReadFull(random, guard); err != nil {
		return nil, fmt.Errorf("mls: drawing reuse guard: %w", err)
	}
	aad, err := privateContentAAD(fc.GroupID, fc.Epoch, fc.ContentType, fc.AuthenticatedData)
	if err != nil {
		return nil, err
	}
	ct, err := cs.Seal(kn.Key.Bytes(), guardNonce(kn.Nonce, guard), aad, plain)
	if err != nil {
		return nil, err
	}
	var sd codec.Writer
	sd.Uint32(uint32(fc.Sender.LeafIndex))
	sd.Uint32(kn.Generation)
	sd.Raw(guard)
	senderData, err := sd.Finish()
	if err != nil {
		return nil, err
	}
	sdKey, sdNonce, err := keyschedule.SenderDataKeyNonce(cs, senderDataSecret, ct)
	if err != nil {
		return nil, err
	}
	sdAAD, err := senderDataAAD(fc.GroupID, fc.Epoch, fc.ContentType)
	if err != nil {
		return nil, err
	}
	esd, err := cs.Seal(sdKey.Bytes(), sdNonce.Bytes(), sdAAD, senderData)
	if err != nil {
		return nil, err
	}
	return &PrivateMessage{
		GroupID:             append([]byte(nil), fc.GroupID...),
		Epoch:               fc.Epoch,
		ContentType:         fc.ContentType,
		AuthenticatedData:   append([]byte(nil), fc.AuthenticatedData...),
		EncryptedSenderData: esd,
		Ciphertext:          ct,
	}, nil
}

// unprotectPrivate decrypts a PrivateMessage (RFC 9420 §6.3.2) and returns
// its content and the generation of the sender's ratchet it used; the
// signature is left to the caller. leaves bounds the sender's leaf index.
// Decryption failures wrap ErrTampered; replays wrap ErrGenerationReused.
func unprotectPrivate(cs *ciphersuite.CipherSuite, keys keySource, senderDataSecret keyschedule.Secret, pm *PrivateMessage, leaves uint32) (*AuthenticatedContent, uint32, error) {
	sdKey, sdNonce, err := keyschedule.SenderDataKeyNonce(cs, senderDataSecret, pm.Ciphertext)
	if err != nil {
		return nil, 0, err
	}
	sdAAD, err := senderDataAAD(pm.GroupID, pm.Epoch, pm.ContentType)
	if err != nil {
		return nil, 0, err
	}
	senderData, err := cs.Open(sdKey.Bytes(), sdNonce.Bytes(), sdAAD, pm.EncryptedSenderData)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: sender data of a %s in epoch %d: %w", ErrTampered, contentName(pm.ContentType), pm.Epoch, err)
	}
	r := codec.NewReader(senderData)
	leaf, _ := r.Uint32()
	gen, _ := r.Uint32()
	guard, _ := r.Raw(reuseGuardLen)
	if err := r.Done(); err != nil {
		return nil, 0, fmt.Errorf("%w: sender data: %w", ErrTampered, err)
	}
	if leaf >= leaves {
		return nil, 0, fmt.Errorf("%w: sender leaf %d outside a tree of %d leaves", ErrNotMember, leaf, leaves)
	}
	kn, err := keys.Get(LeafIndex(leaf), ratchetFor(pm.ContentType), gen)
	if err != nil {
		return nil, 0, err
	}
	aad, err := privateContentAAD(pm.GroupID, pm.Epoch, pm.ContentType, pm.AuthenticatedData)
	if err != nil {
		return nil, 0, err
	}
	plain, err := cs.Open(kn.Key.Bytes(), guardNonce(kn.Nonce, guard), aad, pm.Ciphertext)
	if err != nil {
		return nil, 0, fmt.Errorf("%w: %s from leaf %d, generation %d, epoch %d: %w", ErrTampered, contentName(pm.ContentType), leaf, gen, pm.Epoch, err)
	}
	ac := &AuthenticatedContent{WireFormat: WireFormatPrivateMessage, Content: FramedContent{
		GroupID:           append([]byte(nil), pm.GroupID...),
		Epoch:             pm.Epoch,
		Sender:            Sender{Type: SenderTypeMember, LeafIndex: LeafIndex(leaf)},
		AuthenticatedData: append([]byte(nil), pm.AuthenticatedData...),
		ContentType:       pm.ContentType,
	}}
	cr := codec.NewReader(plain)
	fc := &ac.Content
	if fc.ApplicationData, fc.Proposal, fc.Commit, err = unmarshalContentBody(cr, pm.ContentType); err != nil {
		return nil, 0, fmt.Errorf("%w: content of a %s from leaf %d: %w", ErrTampered, contentName(pm.ContentType), leaf, err)
	}
	if err := ac.Auth.unmarshalFor(cr, pm.ContentType); err != nil {
		return nil, 0, fmt.Errorf("%w: auth data of a %s from leaf %d: %w", ErrTampered, contentName(pm.ContentType), leaf, err)
	}
	pad, _ := cr.Raw(cr.Len())
	for _, b := range pad {
		if b != 0 {
			return nil, 0, fmt.Errorf("%w: non-zero padding in a %s from leaf %d", ErrTampered, contentName(pm.ContentType), leaf)
		}
	}
	return ac, gen, nil
}

// confirmedTranscriptHash returns Hash(interim_transcript_hash_before ||
// ConfirmedTranscriptHashInput) for a commit (RFC 9420 §8.2).
func confirmedTranscriptHash(cs *ciphersuite.CipherSuite, interimBefore []byte, ac *AuthenticatedContent) ([]byte, error) {
	return confirmedTranscriptHashOf(cs, interimBefore, ac, nil)
}

// confirmedTranscriptHashOf is confirmedTranscriptHash with content, the
// encoding of ac.Content made already (nil: encoded here).
func confirmedTranscriptHashOf(cs *ciphersuite.CipherSuite, interimBefore []byte, ac *AuthenticatedContent, content []byte) ([]byte, error) {
	content, err := contentOr(content, &ac.Content)
	if err != nil {
		return nil, err
	}
	var w codec.Writer
	w.Grow(len(interimBefore) + 2 + len(content) + len(ac.Auth.Signature) + 4)
	w.Raw(interimBefore)
	w.Uint16(uint16(ac.WireFormat))
	w.Raw(content)
	w.OpaqueV(ac.Auth.Signature)
	b, err := w.Finish()
	if err != nil {
		return nil, err
	}
	return cs.Hash(b), nil
}

// interimTranscriptHash returns Hash(confirmed_transcript_hash ||
// InterimTranscriptHashInput).
func interimTranscriptHash(cs *ciphersuite.CipherSuite, confirmed, confirmationTag []byte) ([]byte, error) {
	var w codec.Writer
	w.Raw(confirmed)
	w.OpaqueV(confirmationTag)
	b, err := w.Finish()
	if err != nil {
		return nil, err
	}
	return cs.Hash(b), nil
}
