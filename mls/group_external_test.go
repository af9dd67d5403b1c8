package mls

import (
	"bytes"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// A client joins by external commit from a GroupInfo with external_pub;
// a member who lost its state rejoins by a resync that removes its old
// leaf. Every member agrees on the epoch authenticator after each, in
// every cipher suite.
func TestExternalJoinAndResync(t *testing.T) {
	for _, suite := range []ciphersuite.Suite{1, 2, 3, 4, 5, 6, 7} {
		t.Run(suite.String(), func(t *testing.T) {
			cs, err := ciphersuite.Lookup(suite)
			if err != nil {
				t.Fatal(err)
			}
			newMember := func(id string) (*KeyPackage, *KeyPackageSecrets, *ciphersuite.SignaturePrivateKey) {
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
			kpA, secA, _ := newMember("alice")
			kpB, secB, sigB := newMember("bob")
			alice, err := NewGroup(nil, kpA, secA, &Options{EncryptHandshake: true})
			if err != nil {
				t.Fatal(err)
			}
			alice, res, err := alice.Commit(CommitOptions{Add: []*KeyPackage{kpB}})
			if err != nil {
				t.Fatal(err)
			}
			bob, err := Join(res.Welcome, kpB, secB, nil)
			if err != nil {
				t.Fatal(err)
			}
			agree := func(gs ...*Group) {
				t.Helper()
				for _, g := range gs[1:] {
					if g.Epoch() != gs[0].Epoch() || !bytes.Equal(g.EpochAuthenticator(), gs[0].EpochAuthenticator()) {
						t.Fatalf("epoch %d vs %d, authenticators equal: %v", gs[0].Epoch(), g.Epoch(), bytes.Equal(g.EpochAuthenticator(), gs[0].EpochAuthenticator()))
					}
				}
			}
			// carol joins from a GroupInfo without the tree (given apart).
			gi, err := alice.ExternalGroupInfo(false)
			if err != nil {
				t.Fatal(err)
			}
			var giw GroupInfo
			b, _ := gi.Marshal()
			if err := giw.Unmarshal(b); err != nil {
				t.Fatal(err)
			}
			tree := alice.Tree()
			_, _, sigC := newMember("carol")
			carol, commit, err := JoinExternal(&giw, NewBasicCredential([]byte("carol")), sigC, &ExternalJoinOptions{RatchetTree: &tree})
			if err != nil {
				t.Fatal(err)
			}
			if !IsExternalCommit(commit) {
				t.Fatal("not an external commit")
			}
			wire, _ := commit.Marshal()
			var m MLSMessage
			if err := m.Unmarshal(wire); err != nil {
				t.Fatal(err)
			}
			alice, rec, err := alice.ProcessExternalCommit(&m)
			if err != nil {
				t.Fatal(err)
			}
			if string(rec.SenderCredential.Identity) != "carol" || rec.Sender != carol.LeafIndex() {
				t.Fatalf("received from %q at %d, carol is at %d", rec.SenderCredential.Identity, rec.Sender, carol.LeafIndex())
			}
			if bob, _, err = bob.ProcessExternalCommit(&m); err != nil {
				t.Fatal(err)
			}
			agree(alice, bob, carol)
			// The commit applies once: again, it is for a past epoch.
			if _, _, err := alice.ProcessExternalCommit(&m); !errors.Is(err, ErrWrongEpoch) {
				t.Fatalf("external commit again: %v", err)
			}
			// Messages flow with the joiner.
			carol2, msg, err := carol.SealApplication([]byte("hi"), nil)
			if err != nil {
				t.Fatal(err)
			}
			carol = carol2
			if _, pt, err := bob.OpenApplication(msg); err != nil || string(pt) != "hi" {
				t.Fatalf("open: %q, %v", pt, err)
			}
			// bob loses his state and resyncs with his signature key.
			gi, err = carol.ExternalGroupInfo(true)
			if err != nil {
				t.Fatal(err)
			}
			old := bob
			bob, commit, err = JoinExternal(gi, NewBasicCredential([]byte("bob")), sigB, &ExternalJoinOptions{Resync: true, RemoveLeaf: old.LeafIndex()})
			if err != nil {
				t.Fatal(err)
			}
			if alice, _, err = alice.ProcessExternalCommit(commit); err != nil {
				t.Fatal(err)
			}
			if carol, _, err = carol.ProcessExternalCommit(commit); err != nil {
				t.Fatal(err)
			}
			if _, rec, err := old.ProcessExternalCommit(commit); err != nil || !rec.Removed {
				t.Fatalf("the old state processes the resync: %+v, %v", rec, err)
			}
			agree(alice, bob, carol)
			if len(alice.Members()) != 3 {
				t.Fatalf("%d members after the resync", len(alice.Members()))
			}
			// A resync may not remove someone else.
			gi, _ = alice.ExternalGroupInfo(true)
			if _, _, err := JoinExternal(gi, NewBasicCredential([]byte("mallory")), sigB, &ExternalJoinOptions{Resync: true, RemoveLeaf: alice.LeafIndex()}); !errors.Is(err, ErrInvalidProposal) {
				t.Fatalf("resync removing another identity: %v", err)
			}
			// And the group goes on.
			alice, res, err = alice.Commit(CommitOptions{ForcePath: true})
			if err != nil {
				t.Fatal(err)
			}
			if bob, _, err = bob.ProcessCommit(res.Commit); err != nil {
				t.Fatal(err)
			}
			if carol, _, err = carol.ProcessCommit(res.Commit); err != nil {
				t.Fatal(err)
			}
			agree(alice, bob, carol)
		})
	}
}

// A member may serve a GroupInfo it forged and signed. JoinExternal
// refuses one whose external_pub is no key of the suite's KEM or an
// X25519 point of small order (RFC 9420 §8.3 derives the external init
// from it with the suite's HPKE; RFC 9180 §7.1.4 refuses a DH to such a
// point), or whose suite is not that of the joiner's signature key, with
// a sentinel that says why (before, the KEM's own error or a bare string).
func TestJoinExternalForgedGroupInfoSentinels(t *testing.T) {
	w := insiderWorldFor(t)
	j := externalJoinerFor(t)
	attacker := w.members[insiderAttacker]
	forge := func(change func(gi *GroupInfo)) *GroupInfo {
		gi, err := attacker.ExternalGroupInfo(true)
		if err != nil {
			t.Fatal(err)
		}
		change(gi)
		if err := gi.Sign(w.cs, attacker.sig); err != nil {
			t.Fatal(err)
		}
		return gi
	}
	withPub := func(pub []byte) func(gi *GroupInfo) {
		return func(gi *GroupInfo) {
			b, err := (&ExternalPub{ExternalPub: pub}).Marshal()
			if err != nil {
				t.Fatal(err)
			}
			for i := range gi.Extensions {
				if gi.Extensions[i].Type == ExtensionTypeExternalPub {
					gi.Extensions[i].Data = b
				}
			}
		}
	}
	for _, c := range []struct {
		name   string
		change func(gi *GroupInfo)
		want   []error
	}{
		{"low-order external_pub", withPub(make([]byte, 32)), []error{ErrInvalidProposal, ciphersuite.ErrInvalidKey}},
		{"short external_pub", withPub([]byte{1, 2, 3}), []error{ErrInvalidProposal, ciphersuite.ErrInvalidKey}},
		{"another suite", func(gi *GroupInfo) { gi.GroupContext.CipherSuite = ciphersuite.Suite(1) }, []error{ErrWrongGroup}},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := JoinExternal(forge(c.change), j.credential, j.sig, &ExternalJoinOptions{Capabilities: j.caps})
			for _, want := range c.want {
				if !errors.Is(err, want) {
					t.Fatalf("JoinExternal: %v, want %v", err, want)
				}
			}
		})
	}
}
