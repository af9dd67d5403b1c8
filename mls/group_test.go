package mls

import (
	"bytes"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

func TestGroupEverySuite(t *testing.T) {
	for _, suite := range ciphersuite.SupportedSuites() {
		t.Run(fmt.Sprint(suite), func(t *testing.T) {
			mk := func(name string) (*KeyPackage, *KeyPackageSecrets) {
				kp, sec, err := NewKeyPackage(suite, NewBasicCredential([]byte(name)), nil, nil)
				if err != nil {
					t.Fatal(err)
				}
				return kp, sec
			}
			akp, asec := mk("alice")
			bkp, bsec := mk("bob")
			a, err := NewGroup(nil, akp, asec, nil)
			if err != nil {
				t.Fatal(err)
			}
			a, res, err := a.Commit(CommitOptions{Add: []*KeyPackage{bkp}, ForcePath: true})
			if err != nil {
				t.Fatal(err)
			}
			b, err := Join(res.Welcome, bkp, bsec, nil)
			if err != nil {
				t.Fatal(err)
			}
			b, res, err = b.Commit(CommitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if a, _, err = a.ProcessCommit(res.Commit); err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(a.EpochAuthenticator(), b.EpochAuthenticator()) || a.Epoch() != 2 {
				t.Fatal("members disagree after a commit")
			}
			_, m, err := a.SealApplication([]byte("hi"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, data, err := b.OpenApplication(m); err != nil || string(data) != "hi" {
				t.Fatalf("open: %q %v", data, err)
			}
		})
	}
}

func TestProposalsByReference(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	// Member 1 proposes an Add; member 2 commits it and welcomes the joiner.
	j := newSCClient(t, "by-reference")
	g, prop, err := w.members[1].ProposeAdd(j.kp)
	if err != nil {
		t.Fatal(err)
	}
	w.members[1] = g
	w.broadcast(1, prop)
	w.commit(2, CommitOptions{}, j)
	if len(w.members) != 4 {
		t.Fatalf("%d members, want 4", len(w.members))
	}
	// A commit referencing a proposal the receiver never saw is refused.
	g, prop, err = w.members[1].ProposeRemove(3)
	if err != nil {
		t.Fatal(err)
	}
	w.members[1] = g
	_, res, err := mustProcess(t, w.members[2], prop).Commit(CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.members[0].ProcessCommit(res.Commit); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("unknown reference: %v, want ErrInvalidProposal", err)
	}
}

func mustProcess(t *testing.T, g *Group, m *MLSMessage) *Group {
	t.Helper()
	ng, _, err := g.Process(m)
	if err != nil {
		t.Fatal(err)
	}
	return ng
}

func TestExternalPSKAndExtensions(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	id, secret := []byte("psk-1"), bytes.Repeat([]byte{7}, 32)
	psk := PreSharedKeyID{Type: PSKTypeExternal, PSKID: id, PSKNonce: bytes.Repeat([]byte{1}, 32)}
	if _, _, err := w.members[0].Commit(CommitOptions{PSKs: []PreSharedKeyID{psk}}); !errors.Is(err, ErrUnknownPSK) {
		t.Fatalf("commit with an unknown PSK: %v, want ErrUnknownPSK", err)
	}
	for l, g := range w.members {
		w.members[l] = g.WithExternalPSK(id, secret)
	}
	unknown := Extensions{{Type: 0xff00, Data: []byte{}}}
	if _, _, err := w.members[0].Commit(CommitOptions{GroupContextExtensions: &unknown}); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("unsupported group context extension: %v, want ErrInvalidProposal", err)
	}
	j := newSCClient(t, "psk-joiner")
	senders := externalSendersExtension(t, "epochlog")
	g, res, err := w.members[0].Commit(CommitOptions{PSKs: []PreSharedKeyID{psk}, Add: []*KeyPackage{j.kp},
		GroupContextExtensions: &Extensions{senders}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(res.Welcome, j.kp, j.secrets, nil); !errors.Is(err, ErrUnknownPSK) {
		t.Fatalf("join without the PSK: %v, want ErrUnknownPSK", err)
	}
	joined, err := Join(res.Welcome, j.kp, j.secrets, &JoinOptions{ExternalPSKs: []ExternalPSK{{ID: id, Secret: ciphersuite.NewSecret(secret)}}})
	if err != nil {
		t.Fatal(err)
	}
	one, _, err := w.members[1].ProcessCommit(res.Commit)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*Group{one, joined} {
		if !bytes.Equal(o.EpochAuthenticator(), g.EpochAuthenticator()) {
			t.Fatal("PSK commit: members disagree")
		}
		if e, ok := o.GroupContext().Extensions.Find(ExtensionTypeExternalSenders); !ok || !bytes.Equal(e.Data, senders.Data) {
			t.Fatal("group context extension not applied")
		}
	}
}

func TestRemovedMember(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	late := w.seal(0, "before removal")
	removed := w.members[2]
	g, res, err := w.members[0].Commit(CommitOptions{Remove: []LeafIndex{2}})
	if err != nil {
		t.Fatal(err)
	}
	w.members[0] = g
	gone, r, err := removed.ProcessCommit(res.Commit)
	if err != nil {
		t.Fatal(err)
	}
	if !r.Removed || gone.Active() {
		t.Fatal("removal not reported")
	}
	if _, data, err := gone.OpenApplication(late); err != nil || string(data) != "before removal" {
		t.Fatalf("late message after removal: %q %v", data, err)
	}
	if _, _, err := gone.SealApplication([]byte("x"), nil); !errors.Is(err, ErrNotMember) {
		t.Fatalf("seal after removal: %v, want ErrNotMember", err)
	}
	_, res, err = g.Commit(CommitOptions{ForcePath: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := gone.ProcessCommit(res.Commit); !errors.Is(err, ErrNotMember) {
		t.Fatalf("commit after removal: %v, want ErrNotMember", err)
	}
}

func TestKeyPackageLifecycle(t *testing.T) {
	now := time.Now()
	kp, sec, err := NewKeyPackage(scenarioSuite, NewBasicCredential([]byte("kp")), nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := ValidateKeyPackage(kp, scenarioSuite, now); err != nil {
		t.Fatal(err)
	}
	for name, err := range map[string]error{
		"other suite":  ValidateKeyPackage(kp, ciphersuite.MLS128DHKEMX25519AES128GCMSHA256Ed25519, now),
		"not yet":      ValidateKeyPackage(kp, scenarioSuite, now.Add(-2*time.Hour)),
		"expired":      ValidateKeyPackage(kp, scenarioSuite, now.Add(DefaultKeyPackageLifetime+time.Hour)),
		"wrong secret": (&KeyPackageSecrets{InitKey: sec.EncryptionKey, EncryptionKey: sec.EncryptionKey, SignatureKey: sec.SignatureKey}).matches(kp),
	} {
		if !errors.Is(err, ErrInvalidKeyPackage) {
			t.Errorf("%s: %v, want ErrInvalidKeyPackage", name, err)
		}
	}
	if _, err := NewGroup(nil, kp, &KeyPackageSecrets{InitKey: sec.InitKey, EncryptionKey: sec.InitKey, SignatureKey: sec.SignatureKey}, nil); !errors.Is(err, ErrInvalidKeyPackage) {
		t.Fatalf("group from mismatched secrets: %v", err)
	}
	// A caller-supplied signature key is reused across key packages.
	kp2, _, err := NewKeyPackage(scenarioSuite, NewBasicCredential([]byte("kp")), sec.SignatureKey, &KeyPackageOptions{NotAfter: now.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(kp2.LeafNode.SignatureKey, kp.LeafNode.SignatureKey) || bytes.Equal(kp2.InitKey, kp.InitKey) {
		t.Fatal("signature key not reused or init key reused")
	}
	var m MLSMessage
	b, err := (&MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatKeyPackage, KeyPackage: kp2}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Unmarshal(b); err != nil || ValidateKeyPackage(m.KeyPackage, scenarioSuite, now) != nil {
		t.Fatalf("round-tripped key package: %v", err)
	}
}

func TestBadProposalRefusedOnReceipt(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	kp := *newSCClient(t, "tampered").kp
	kp.Signature = bytes.Clone(kp.Signature)
	kp.Signature[1] ^= 1
	if _, _, err := w.members[1].ProposeAdd(&kp); !errors.Is(err, ErrInvalidKeyPackage) {
		t.Fatalf("proposing a bad key package: %v", err)
	}
	// Bypass the sender-side check to see the receiver refuse it too.
	_, m, _, err := w.members[1].propose(&Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: kp}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.members[0].Process(m); !errors.Is(err, ErrInvalidKeyPackage) {
		t.Fatalf("receiving a bad key package: %v, want ErrInvalidKeyPackage", err)
	}
	_, m, _, err = w.members[1].propose(&Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: 9}})
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.members[0].Process(m); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("removal of a missing leaf: %v, want ErrInvalidProposal", err)
	}
}
