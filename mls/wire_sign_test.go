package mls

import (
	"bytes"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// TestKeyPackageSignValidate covers the KeyPackage life cycle on every
// supported suite: sign, validate, reference, carry in an MLSMessage, and
// refuse tampering.
func TestKeyPackageSignValidate(t *testing.T) {
	for _, id := range ciphersuite.SupportedSuites() {
		t.Run(id.String(), func(t *testing.T) {
			cs := mustSuite(t, id)
			m := newTestMember(t, cs, "alice")
			kp := m.keyPackage(t, cs)
			if err := kp.Validate(); err != nil {
				t.Fatalf("fresh key package: %v", err)
			}
			enc, err := kp.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			ref, err := kp.Ref()
			if err != nil {
				t.Fatal(err)
			}
			want, err := cs.RefHash("MLS 1.0 KeyPackage Reference", enc)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(ref, want) || len(ref) != cs.Nh() {
				t.Fatalf("Ref = %x, want %x", ref, want)
			}
			msg := MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatKeyPackage, KeyPackage: kp}
			b, err := msg.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			var back MLSMessage
			if err := back.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			if err := back.KeyPackage.Validate(); err != nil {
				t.Fatalf("decoded key package: %v", err)
			}

			other, err := cs.GenerateHPKEKey()
			if err != nil {
				t.Fatal(err)
			}
			tampered := *kp
			tampered.InitKey = other.PublicKey()
			if err := tampered.Validate(); !errors.Is(err, ErrInvalidKeyPackage) || !errors.Is(err, ErrBadSignature) {
				t.Errorf("changed init key: got %v, want ErrInvalidKeyPackage wrapping ErrBadSignature", err)
			}
			same := *kp
			same.InitKey = kp.LeafNode.EncryptionKey
			if err := same.Validate(); !errors.Is(err, ErrInvalidKeyPackage) {
				t.Errorf("init key equal to leaf key: got %v", err)
			}
			wrongSource := *kp
			wrongSource.LeafNode = *kp.LeafNode.Clone()
			wrongSource.LeafNode.Source = LeafNodeSourceUpdate
			if err := wrongSource.Validate(); !errors.Is(err, ErrInvalidKeyPackage) || !errors.Is(err, ErrInvalidLeafNode) {
				t.Errorf("update-source leaf in key package: got %v", err)
			}
		})
	}
}

// TestGroupInfoSignVerify checks GroupInfo signatures and the leaf
// signature's binding to group id and leaf index.
func TestGroupInfoSignVerify(t *testing.T) {
	cs := mustSuite(t, ciphersuite.Default)
	m := newTestMember(t, cs, "bob")
	tree := NewRatchetTree(m.leaf)
	th, err := tree.TreeHash(cs)
	if err != nil {
		t.Fatal(err)
	}
	ext, err := tree.Extension()
	if err != nil {
		t.Fatal(err)
	}
	gi := GroupInfo{
		GroupContext:    GroupContext{Version: ProtocolMLS10, CipherSuite: cs.ID(), GroupID: []byte("group"), TreeHash: th, ConfirmedTranscriptHash: []byte{}, Extensions: Extensions{}},
		Extensions:      Extensions{ext},
		ConfirmationTag: bytes.Repeat([]byte{7}, cs.Nh()),
		Signer:          0,
	}
	if err := gi.Sign(cs, m.sig); err != nil {
		t.Fatal(err)
	}
	if err := gi.VerifySignature(cs, m.leaf.SignatureKey); err != nil {
		t.Fatal(err)
	}
	enc, err := gi.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var back GroupInfo
	if err := back.Unmarshal(enc); err != nil {
		t.Fatal(err)
	}
	e, ok := back.Extensions.Find(ExtensionTypeRatchetTree)
	if !ok {
		t.Fatal("ratchet_tree extension lost")
	}
	got, err := UnmarshalRatchetTree(e.Data)
	if err != nil {
		t.Fatal(err)
	}
	if gth, _ := got.TreeHash(cs); !bytes.Equal(gth, th) {
		t.Fatal("tree from the extension hashes differently")
	}
	back.Signer = 1
	if err := back.VerifySignature(cs, m.leaf.SignatureKey); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("changed signer: got %v, want ErrBadSignature", err)
	}

	// An update leaf's signature covers the group id and leaf index.
	upd := m.leaf.Clone()
	upd.Source = LeafNodeSourceUpdate
	if err := upd.Sign(cs, m.sig, []byte("group"), 3); err != nil {
		t.Fatal(err)
	}
	if err := upd.Validate(cs, LeafNodeSourceUpdate, []byte("group"), 3); err != nil {
		t.Fatal(err)
	}
	if err := upd.VerifySignature(cs, []byte("group"), 4); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other leaf index: got %v", err)
	}
	if err := upd.VerifySignature(cs, []byte("other"), 3); !errors.Is(err, ErrBadSignature) {
		t.Fatalf("other group: got %v", err)
	}
}
