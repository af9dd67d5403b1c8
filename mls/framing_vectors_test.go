package mls

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

type vxb = vectortest.HexBytes

type messageProtectionCase struct {
	CipherSuite             uint16 `json:"cipher_suite"`
	GroupID                 vxb    `json:"group_id"`
	Epoch                   uint64 `json:"epoch"`
	TreeHash                vxb    `json:"tree_hash"`
	ConfirmedTranscriptHash vxb    `json:"confirmed_transcript_hash"`
	SignaturePriv           vxb    `json:"signature_priv"`
	SignaturePub            vxb    `json:"signature_pub"`
	EncryptionSecret        vxb    `json:"encryption_secret"`
	SenderDataSecret        vxb    `json:"sender_data_secret"`
	MembershipKey           vxb    `json:"membership_key"`
	Proposal                vxb    `json:"proposal"`
	ProposalPub             vxb    `json:"proposal_pub"`
	ProposalPriv            vxb    `json:"proposal_priv"`
	Commit                  vxb    `json:"commit"`
	CommitPub               vxb    `json:"commit_pub"`
	CommitPriv              vxb    `json:"commit_priv"`
	Application             vxb    `json:"application"`
	ApplicationPriv         vxb    `json:"application_priv"`
}

func TestMessageProtectionVectors(t *testing.T) {
	var cases []messageProtectionCase
	vectortest.Load(t, "message-protection.json", &cases)
	tally := vectortest.NewTally(t, "message-protection.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d", i, tc.CipherSuite)
		cs, err := ciphersuite.Lookup(ciphersuite.Suite(tc.CipherSuite))
		if errors.Is(err, ciphersuite.ErrUnsupportedSuite) {
			tally.Skip(t, name, tc.CipherSuite, err.Error())
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			if err != nil {
				t.Fatal(err)
			}
			runMessageProtection(t, cs, &tc)
		})
	}
}

func runMessageProtection(t *testing.T, cs *ciphersuite.CipherSuite, tc *messageProtectionCase) {
	gc := &GroupContext{Version: ProtocolMLS10, CipherSuite: cs.ID(), GroupID: tc.GroupID, Epoch: tc.Epoch,
		TreeHash: tc.TreeHash, ConfirmedTranscriptHash: tc.ConfirmedTranscriptHash, Extensions: Extensions{}}
	priv := parseVectorSigKey(t, cs, tc.SignaturePriv)
	membership := keyschedule.Secret(ciphersuite.NewSecret(tc.MembershipKey))
	sds := ciphersuite.NewSecret(tc.SenderDataSecret)
	newTree := func(t *testing.T) *keyschedule.SecretTree {
		st, err := keyschedule.NewSecretTree(cs, ciphersuite.NewSecret(tc.EncryptionSecret), treemath.LeafCount(2), nil)
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	bodyOf := func(t *testing.T, fc *FramedContent) []byte {
		t.Helper()
		var b []byte
		var err error
		switch fc.ContentType {
		case ContentTypeApplication:
			return fc.ApplicationData
		case ContentTypeProposal:
			b, err = fc.Proposal.Marshal()
		case ContentTypeCommit:
			b, err = fc.Commit.Marshal()
		}
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	frame := func(t *testing.T, ct ContentType, raw []byte, wf WireFormat) *AuthenticatedContent {
		t.Helper()
		fc := FramedContent{GroupID: tc.GroupID, Epoch: tc.Epoch, Sender: Sender{Type: SenderTypeMember, LeafIndex: 1},
			AuthenticatedData: []byte{}, ContentType: ct}
		switch ct {
		case ContentTypeApplication:
			fc.ApplicationData = raw
		case ContentTypeProposal:
			fc.Proposal = new(Proposal)
			if err := fc.Proposal.Unmarshal(raw); err != nil {
				t.Fatal(err)
			}
		case ContentTypeCommit:
			fc.Commit = new(Commit)
			if err := fc.Commit.Unmarshal(raw); err != nil {
				t.Fatal(err)
			}
		}
		ac := &AuthenticatedContent{WireFormat: wf, Content: fc}
		sig, err := signFramedContent(cs, priv, wf, &fc, gc)
		if err != nil {
			t.Fatal(err)
		}
		ac.Auth.Signature = sig
		if ct == ContentTypeCommit {
			// Any MAC-sized value: the confirmation tag is opaque to framing.
			ac.Auth.ConfirmationTag = cs.MAC(tc.MembershipKey, raw)
		}
		return ac
	}
	checkPublic := func(t *testing.T, pm *PublicMessage, raw []byte) {
		t.Helper()
		ac, err := unprotectPublic(cs, pm, gc, membership)
		if err != nil {
			t.Fatal(err)
		}
		if err := verifyFramedContent(cs, SignaturePublicKey(tc.SignaturePub), ac, gc); err != nil {
			t.Fatal(err)
		}
		vectortest.Equal(t, "public content", bodyOf(t, &ac.Content), raw)
	}
	checkPrivate := func(t *testing.T, st *keyschedule.SecretTree, pm *PrivateMessage, raw []byte) {
		t.Helper()
		ac, _, err := unprotectPrivate(cs, st, sds, pm, 2)
		if err != nil {
			t.Fatal(err)
		}
		if ac.Content.Sender.LeafIndex != 1 {
			t.Fatalf("sender leaf %d, want 1", ac.Content.Sender.LeafIndex)
		}
		if err := verifyFramedContent(cs, SignaturePublicKey(tc.SignaturePub), ac, gc); err != nil {
			t.Fatal(err)
		}
		vectortest.Equal(t, "private content", bodyOf(t, &ac.Content), raw)
	}
	for _, c := range []struct {
		name       string
		ct         ContentType
		raw        []byte
		pub, privM []byte
	}{
		{"proposal", ContentTypeProposal, tc.Proposal, tc.ProposalPub, tc.ProposalPriv},
		{"commit", ContentTypeCommit, tc.Commit, tc.CommitPub, tc.CommitPriv},
		{"application", ContentTypeApplication, tc.Application, nil, tc.ApplicationPriv},
	} {
		t.Run(c.name, func(t *testing.T) {
			if c.pub != nil {
				var m MLSMessage
				if err := m.Unmarshal(c.pub); err != nil || m.PublicMessage == nil {
					t.Fatalf("decoding %s_pub: %v", c.name, err)
				}
				checkPublic(t, m.PublicMessage, c.raw)
				pm, err := protectPublic(cs, frame(t, c.ct, c.raw, WireFormatPublicMessage), gc, membership)
				if err != nil {
					t.Fatal(err)
				}
				checkPublic(t, pm, c.raw)
				pm.MembershipTag[0] ^= 1
				if _, err := unprotectPublic(cs, pm, gc, membership); !errors.Is(err, ErrTampered) {
					t.Fatalf("flipped membership tag: %v, want ErrTampered", err)
				}
			} else if _, err := protectPublic(cs, frame(t, c.ct, c.raw, WireFormatPublicMessage), gc, membership); err == nil {
				t.Fatal("application data protected as a public message")
			}
			var m MLSMessage
			if err := m.Unmarshal(c.privM); err != nil || m.PrivateMessage == nil {
				t.Fatalf("decoding %s_priv: %v", c.name, err)
			}
			checkPrivate(t, newTree(t), m.PrivateMessage, c.raw)

			sender, receiver := newTree(t), newTree(t)
			pm, err := protectPrivate(cs, sender, sds, frame(t, c.ct, c.raw, WireFormatPrivateMessage), 7, nil)
			if err != nil {
				t.Fatal(err)
			}
			checkPrivate(t, receiver, pm, c.raw)
			if _, _, err := unprotectPrivate(cs, receiver, sds, pm, 2); !errors.Is(err, ErrGenerationReused) {
				t.Fatalf("replay: %v, want ErrGenerationReused", err)
			}
			tampered := *pm
			tampered.Ciphertext = bytes.Clone(pm.Ciphertext)
			tampered.Ciphertext[len(tampered.Ciphertext)-1] ^= 1
			if _, _, err := unprotectPrivate(cs, newTree(t), sds, &tampered, 2); !errors.Is(err, ErrTampered) {
				t.Fatalf("tampered ciphertext: %v, want ErrTampered", err)
			}
		})
	}
}

type transcriptHashCase struct {
	CipherSuite                  uint16 `json:"cipher_suite"`
	ConfirmationKey              vxb    `json:"confirmation_key"`
	AuthenticatedContent         vxb    `json:"authenticated_content"`
	InterimTranscriptHashBefore  vxb    `json:"interim_transcript_hash_before"`
	ConfirmedTranscriptHashAfter vxb    `json:"confirmed_transcript_hash_after"`
	InterimTranscriptHashAfter   vxb    `json:"interim_transcript_hash_after"`
}

func TestTranscriptHashVectors(t *testing.T) {
	var cases []transcriptHashCase
	vectortest.Load(t, "transcript-hashes.json", &cases)
	tally := vectortest.NewTally(t, "transcript-hashes.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d", i, tc.CipherSuite)
		cs, err := ciphersuite.Lookup(ciphersuite.Suite(tc.CipherSuite))
		if errors.Is(err, ciphersuite.ErrUnsupportedSuite) {
			tally.Skip(t, name, tc.CipherSuite, err.Error())
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			if err != nil {
				t.Fatal(err)
			}
			var ac AuthenticatedContent
			if err := ac.Unmarshal(tc.AuthenticatedContent); err != nil {
				t.Fatal(err)
			}
			if ac.Content.ContentType != ContentTypeCommit {
				t.Fatalf("content type %d, want commit", ac.Content.ContentType)
			}
			if !cs.VerifyMAC(tc.ConfirmationKey, tc.ConfirmedTranscriptHashAfter, ac.Auth.ConfirmationTag) {
				t.Fatal("confirmation tag does not verify")
			}
			confirmed, err := confirmedTranscriptHash(cs, tc.InterimTranscriptHashBefore, &ac)
			if err != nil {
				t.Fatal(err)
			}
			vectortest.Equal(t, "confirmed transcript hash", confirmed, tc.ConfirmedTranscriptHashAfter)
			interim, err := interimTranscriptHash(cs, confirmed, ac.Auth.ConfirmationTag)
			if err != nil {
				t.Fatal(err)
			}
			vectortest.Equal(t, "interim transcript hash", interim, tc.InterimTranscriptHashAfter)
		})
	}
}

// parseVectorSigKey parses a vector's signature private key. Some ECDSA
// scalars in the official vectors drop leading zero bytes (a 65-byte P-521
// key); the parser left-pads them.
func parseVectorSigKey(t testing.TB, cs *ciphersuite.CipherSuite, b []byte) *ciphersuite.SignaturePrivateKey {
	t.Helper()
	priv, err := cs.ParseSignaturePrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}

// parseVectorHPKEKey parses a vector's HPKE private key (a P-521 scalar
// may have lost its leading zero byte, as above).
func parseVectorHPKEKey(t testing.TB, cs *ciphersuite.CipherSuite, b []byte) *ciphersuite.HPKEPrivateKey {
	t.Helper()
	priv, err := cs.ParseHPKEPrivateKey(b)
	if err != nil {
		t.Fatal(err)
	}
	return priv
}
