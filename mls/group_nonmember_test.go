package mls

import (
	"bytes"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// overWire sends m over the wire: what a receiver decodes.
func overWire(t *testing.T, m *MLSMessage) *MLSMessage {
	t.Helper()
	b, err := m.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	var out MLSMessage
	if err := out.Unmarshal(b); err != nil {
		t.Fatal(err)
	}
	return &out
}

// TestNonMemberProposals: a delivery service named in external_senders
// proposes a removal and a client proposes its own Add; members cache
// both, commit them by reference, and every party ends in the same epoch.
// Forged or out-of-bounds proposals are refused with the sentinel that
// names why.
func TestNonMemberProposals(t *testing.T) {
	for _, suite := range []ciphersuite.Suite{1, 2, 3, 5, 7} {
		t.Run(suite.String(), func(t *testing.T) {
			cs := mustSuite(t, suite)
			newClient := func(id string) (*KeyPackage, *KeyPackageSecrets, *ciphersuite.SignaturePrivateKey) {
				sig, err := cs.GenerateSignatureKey()
				if err != nil {
					t.Fatal(err)
				}
				kp, sec, err := NewKeyPackage(suite, NewBasicCredential([]byte(id)), sig, nil)
				if err != nil {
					t.Fatal(err)
				}
				return kp, sec, sig
			}
			dsKey, err := cs.GenerateSignatureKey()
			if err != nil {
				t.Fatal(err)
			}
			ext, err := ExternalSenders{{SignatureKey: dsKey.PublicKey(), Credential: NewBasicCredential([]byte("delivery-service"))}}.Marshal()
			if err != nil {
				t.Fatal(err)
			}
			exts := Extensions{{Type: ExtensionTypeExternalSenders, Data: ext}}

			kpA, secA, _ := newClient("alice")
			kpB, secB, _ := newClient("bob")
			kpD, secD, _ := newClient("dave")
			alice, err := NewGroup(nil, kpA, secA, nil)
			if err != nil {
				t.Fatal(err)
			}
			// Proposals from an external sender before the group names any.
			early, err := ExternalProposal(suite, dsKey, 0, alice.GroupContext().GroupID, alice.Epoch(), &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: 0}}, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := alice.Process(overWire(t, early)); !errors.Is(err, ErrNotMember) {
				t.Fatalf("external proposal with no external_senders: %v, want ErrNotMember", err)
			}
			alice, res, err := alice.Commit(CommitOptions{Add: []*KeyPackage{kpB, kpD}, GroupContextExtensions: &exts})
			if err != nil {
				t.Fatal(err)
			}
			bob, err := Join(res.Welcome, kpB, secB, nil)
			if err != nil {
				t.Fatal(err)
			}
			dave, err := Join(res.Welcome, kpD, secD, nil)
			if err != nil {
				t.Fatal(err)
			}
			if es, err := bob.ExternalSenders(); err != nil || len(es) != 1 {
				t.Fatalf("bob's external senders: %d, %v", len(es), err)
			}
			gid, epoch := alice.GroupContext().GroupID, alice.Epoch()

			// The delivery service removes dave.
			rm, err := ExternalProposal(suite, dsKey, 0, gid, epoch, &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: dave.LeafIndex()}}, []byte("policy"))
			if err != nil {
				t.Fatal(err)
			}
			wire := overWire(t, rm)
			for _, g := range []**Group{&alice, &bob, &dave} {
				ng, rec, err := (*g).Process(wire)
				if err != nil {
					t.Fatalf("process external remove: %v", err)
				}
				if rec.SenderType != SenderTypeExternal || rec.ExternalSenderIndex != 0 || !bytes.Equal(rec.SenderCredential.Identity, []byte("delivery-service")) ||
					rec.Proposal == nil || rec.Proposal.Type != ProposalTypeRemove || string(rec.AuthenticatedData) != "policy" {
					t.Fatalf("received: %+v", rec)
				}
				*g = ng
			}

			// Forgeries and misuse, each refused with its reason.
			other, _ := cs.GenerateSignatureKey()
			forged, _ := ExternalProposal(suite, other, 0, gid, epoch, &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: bob.LeafIndex()}}, nil)
			if _, _, err := alice.Process(overWire(t, forged)); !errors.Is(err, ErrBadSignature) {
				t.Fatalf("proposal signed by another key: %v, want ErrBadSignature", err)
			}
			outOfRange, _ := ExternalProposal(suite, dsKey, 1, gid, epoch, &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: bob.LeafIndex()}}, nil)
			if _, _, err := alice.Process(overWire(t, outOfRange)); !errors.Is(err, ErrNotMember) {
				t.Fatalf("external sender index 1 of 1: %v, want ErrNotMember", err)
			}
			if _, err := ExternalProposal(suite, dsKey, 0, gid, epoch, &Proposal{Type: ProposalTypeUpdate, Update: &Update{}}, nil); !errors.Is(err, ErrInvalidProposal) {
				t.Fatalf("framing an external Update: %v, want ErrInvalidProposal", err)
			}
			tagged := overWire(t, rm)
			tagged.PublicMessage.MembershipTag = make([]byte, 32)
			if _, _, err := alice.Process(tagged); !errors.Is(err, ErrTampered) {
				t.Fatalf("external proposal with a membership tag: %v, want ErrTampered", err)
			}
			stale, _ := ExternalProposal(suite, dsKey, 0, gid, epoch-1, &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: bob.LeafIndex()}}, nil)
			if _, _, err := alice.Process(overWire(t, stale)); !errors.Is(err, ErrWrongEpoch) {
				t.Fatalf("external proposal of the last epoch: %v, want ErrWrongEpoch", err)
			}

			// carol asks to be added; she signs with her key package's key.
			kpC, secC, sigC := newClient("carol")
			join, err := NewMemberProposal(sigC, kpC, gid, epoch, nil)
			if err != nil {
				t.Fatal(err)
			}
			wire = overWire(t, join)
			for _, g := range []**Group{&alice, &bob, &dave} {
				ng, rec, err := (*g).Process(wire)
				if err != nil {
					t.Fatalf("process new member proposal: %v", err)
				}
				if rec.SenderType != SenderTypeNewMemberProposal || !bytes.Equal(rec.SenderCredential.Identity, []byte("carol")) {
					t.Fatalf("received: %+v", rec)
				}
				*g = ng
			}
			mallory := *kpC
			mallory.LeafNode.Credential = NewBasicCredential([]byte("mallory"))
			if bad, err := NewMemberProposal(sigC, &mallory, gid, epoch, nil); err != nil {
				t.Fatal(err)
			} else if _, _, err := alice.Process(overWire(t, bad)); err == nil {
				t.Fatal("a new member proposal of a key package whose leaf signature does not verify was accepted")
			}
			notAdd := overWire(t, join)
			notAdd.PublicMessage.Content.Proposal = &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: bob.LeafIndex()}}
			if _, _, err := alice.Process(notAdd); !errors.Is(err, ErrInvalidProposal) {
				t.Fatalf("a new member proposing a Remove: %v, want ErrInvalidProposal", err)
			}

			// bob commits both by reference; alice and carol follow.
			bob, res, err = bob.Commit(CommitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Welcome == nil {
				t.Fatal("the commit of carol's Add has no Welcome")
			}
			alice, rec, err := alice.Process(overWire(t, res.Commit))
			if err != nil {
				t.Fatalf("alice processes bob's commit: %v", err)
			}
			if rec.SenderType != SenderTypeMember || rec.Sender != bob.LeafIndex() {
				t.Fatalf("commit received: %+v", rec)
			}
			_, rec, err = dave.Process(overWire(t, res.Commit))
			if err != nil || !rec.Removed {
				t.Fatalf("dave processes his removal: removed %v, %v", rec != nil && rec.Removed, err)
			}
			carol, err := Join(res.Welcome, kpC, secC, nil)
			if err != nil {
				t.Fatal(err)
			}
			for _, g := range []*Group{bob, carol} {
				if g.Epoch() != alice.Epoch() || !bytes.Equal(g.EpochAuthenticator(), alice.EpochAuthenticator()) {
					t.Fatalf("epoch %d vs alice's %d: authenticators differ", g.Epoch(), alice.Epoch())
				}
			}
			if n := len(alice.Members()); n != 3 {
				t.Fatalf("%d members after removing dave and adding carol, want 3", n)
			}
		})
	}
}
