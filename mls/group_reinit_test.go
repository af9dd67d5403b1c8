package mls

import (
	"bytes"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// client is a test client: one identity, key packages on demand in any
// suite.
type client struct {
	t    *testing.T
	id   string
	sigs map[ciphersuite.Suite]*ciphersuite.SignaturePrivateKey
}

func newClientFor(t *testing.T, id string) *client {
	return &client{t: t, id: id, sigs: map[ciphersuite.Suite]*ciphersuite.SignaturePrivateKey{}}
}

func (c *client) kp(suite ciphersuite.Suite) (*KeyPackage, *KeyPackageSecrets) {
	c.t.Helper()
	sig := c.sigs[suite]
	if sig == nil {
		var err error
		if sig, err = mustSuite(c.t, suite).GenerateSignatureKey(); err != nil {
			c.t.Fatal(err)
		}
		c.sigs[suite] = sig
	}
	kp, sec, err := NewKeyPackage(suite, NewBasicCredential([]byte(c.id)), sig, nil)
	if err != nil {
		c.t.Fatal(err)
	}
	return kp, sec
}

// threeMembers is a group of alice, bob and carol in suite, as each sees it.
func threeMembers(t *testing.T, suite ciphersuite.Suite) (clients [3]*client, groups [3]*Group) {
	t.Helper()
	for i, id := range []string{"alice", "bob", "carol"} {
		clients[i] = newClientFor(t, id)
	}
	kpA, secA := clients[0].kp(suite)
	kpB, secB := clients[1].kp(suite)
	kpC, secC := clients[2].kp(suite)
	a, err := NewGroup(nil, kpA, secA, nil)
	if err != nil {
		t.Fatal(err)
	}
	a, res, err := a.Commit(CommitOptions{Add: []*KeyPackage{kpB, kpC}})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Join(res.Welcome, kpB, secB, nil)
	if err != nil {
		t.Fatal(err)
	}
	c, err := Join(res.Welcome, kpC, secC, nil)
	if err != nil {
		t.Fatal(err)
	}
	return clients, [3]*Group{a, b, c}
}

func agreeAll(t *testing.T, gs ...*Group) {
	t.Helper()
	for _, g := range gs[1:] {
		if g.Epoch() != gs[0].Epoch() || !bytes.Equal(g.GroupID(), gs[0].GroupID()) || !bytes.Equal(g.EpochAuthenticator(), gs[0].EpochAuthenticator()) {
			t.Fatalf("group %x epoch %d vs group %x epoch %d: they disagree", g.GroupID(), g.Epoch(), gs[0].GroupID(), gs[0].Epoch())
		}
	}
}

// TestBranch: a member starts a subgroup of some members (RFC 9420
// §11.3); they join with the old group as the predecessor and agree. A
// joiner without it, a branch with an outsider, and a branch PSK
// proposed in an ordinary epoch are refused.
func TestBranch(t *testing.T) {
	for _, suite := range []ciphersuite.Suite{1, 2, 3, 7} {
		t.Run(suite.String(), func(t *testing.T) {
			cl, g := threeMembers(t, suite)
			kpA, secA := cl[0].kp(suite)
			kpB, secB := cl[1].kp(suite)
			sub, res, err := g[0].Branch(nil, kpA, secA, []*KeyPackage{kpB})
			if err != nil {
				t.Fatal(err)
			}
			if sub.Epoch() != 1 || len(sub.Members()) != 2 || bytes.Equal(sub.GroupID(), g[0].GroupID()) {
				t.Fatalf("branch %x at epoch %d with %d members", sub.GroupID(), sub.Epoch(), len(sub.Members()))
			}
			if _, err := Join(overWire(t, res.Welcome), kpB, secB, nil); !errors.Is(err, ErrUnknownPSK) {
				t.Fatalf("joining a branch without its predecessor: %v, want ErrUnknownPSK", err)
			}
			subB, err := Join(overWire(t, res.Welcome), kpB, secB, &JoinOptions{Predecessors: []*Group{g[1]}})
			if err != nil {
				t.Fatalf("bob joins the branch: %v", err)
			}
			agreeAll(t, sub, subB)
			// The branch moves on like any group.
			sub, res, err = sub.Commit(CommitOptions{ForcePath: true})
			if err != nil {
				t.Fatal(err)
			}
			if subB, _, err = subB.Process(overWire(t, res.Commit)); err != nil {
				t.Fatal(err)
			}
			agreeAll(t, sub, subB)

			// An outsider cannot be in a branch: refused when made, and
			// when a forged Welcome brings one, by the joiner.
			dave := newClientFor(t, "dave")
			kpD, _ := dave.kp(suite)
			kpA, secA = cl[0].kp(suite)
			if _, _, err := g[0].Branch(nil, kpA, secA, []*KeyPackage{kpD}); !errors.Is(err, ErrInvalidKeyPackage) {
				t.Fatalf("branch with an outsider: %v, want ErrInvalidKeyPackage", err)
			}
			kpB, secB = cl[1].kp(suite)
			_, res, err = g[0].successor(ResumptionPSKUsageBranch, nil, kpA, secA, []*KeyPackage{kpB, kpD}, nil, nil)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := Join(overWire(t, res.Welcome), kpB, secB, &JoinOptions{Predecessors: []*Group{g[1]}}); !errors.Is(err, ErrInvalidProposal) {
				t.Fatalf("a branch Welcome with an outsider: %v, want ErrInvalidProposal", err)
			}

			// A branch PSK outside a branch is invalid.
			nonce := make([]byte, mustSuite(t, suite).Nh())
			_, p, err := g[0].ProposePreSharedKey(PreSharedKeyID{Type: PSKTypeResumption, Usage: ResumptionPSKUsageBranch, PSKGroupID: g[0].GroupID(), PSKEpoch: g[0].Epoch(), PSKNonce: nonce})
			if err != nil {
				t.Fatal(err)
			}
			if _, _, err := g[1].Process(overWire(t, p)); !errors.Is(err, ErrInvalidProposal) {
				t.Fatalf("a proposed branch PSK: %v, want ErrInvalidProposal", err)
			}
		})
	}
}

// TestReInit: a member proposes a ReInit to another suite, another
// commits it alone; the group is closed (its state says so, also after a
// save and load), a member starts the successor with every member, and
// all join it with the closed group as predecessor and agree.
func TestReInit(t *testing.T) {
	for _, tc := range []struct{ from, to ciphersuite.Suite }{{1, 3}, {3, 2}, {2, 7}} {
		t.Run(tc.from.String()+"_to_"+tc.to.String(), func(t *testing.T) {
			cl, g := threeMembers(t, tc.from)
			senders := externalSendersExtension(t, "after-reinit")
			ri := ReInit{GroupID: []byte("the-successor"), Version: ProtocolMLS10, CipherSuite: tc.to, Extensions: Extensions{senders}}
			if _, _, err := g[0].Commit(CommitOptions{ReInit: &ri, ForcePath: true, Remove: []LeafIndex{2}}); !errors.Is(err, ErrInvalidProposal) {
				t.Fatalf("a ReInit with a Remove: %v, want ErrInvalidProposal", err)
			}
			var p *MLSMessage
			var err error
			if g[1], p, err = g[1].ProposeReInit(ri); err != nil {
				t.Fatal(err)
			}
			for _, i := range []int{0, 2} {
				if g[i], _, err = g[i].Process(overWire(t, p)); err != nil {
					t.Fatalf("member %d processes the ReInit proposal: %v", i, err)
				}
			}
			g0, res, err := g[0].Commit(CommitOptions{})
			if err != nil {
				t.Fatal(err)
			}
			g[0] = g0
			open := g[1] // bob before the ReInit's commit
			for _, i := range []int{1, 2} {
				if g[i], _, err = g[i].Process(overWire(t, res.Commit)); err != nil {
					t.Fatalf("member %d processes the ReInit commit: %v", i, err)
				}
			}
			agreeAll(t, g[:]...)
			for i, gi := range g {
				if r := gi.ReInit(); r == nil || !bytes.Equal(r.GroupID, ri.GroupID) || r.CipherSuite != tc.to {
					t.Fatalf("member %d: ReInit after the commit: %+v", i, r)
				}
			}
			// Closed: nothing more is sent; the state keeps the ReInit.
			if _, _, err := g[0].SealApplication([]byte("late"), nil); !errors.Is(err, ErrReInitialized) {
				t.Fatalf("sending in a closed group: %v, want ErrReInitialized", err)
			}
			if _, _, err := g[1].Commit(CommitOptions{ForcePath: true}); !errors.Is(err, ErrReInitialized) {
				t.Fatalf("committing in a closed group: %v, want ErrReInitialized", err)
			}
			b, err := g[2].MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if b[0] != stateVersionReInit {
				t.Fatalf("a closed group's state has version %d", b[0])
			}
			if g[2], err = UnmarshalState(b); err != nil || g[2].ReInit() == nil {
				t.Fatalf("reload of a closed group: ReInit lost (%v)", err)
			}
			// A closed group saved by an older build (version 3: version
			// 2's layout with the ReInit) still loads, closed.
			if old, err := g[2].marshalState(true); err != nil || old[0] != stateVersionV2ReInit {
				t.Fatalf("legacy state of a closed group: %v", err)
			} else if lg, err := UnmarshalState(old); err != nil || lg.ReInit() == nil {
				t.Fatalf("reload of a closed group's version 3 state: ReInit lost (%v)", err)
			}

			// carol starts the successor; she must bring everyone.
			kpA, secA := cl[0].kp(tc.to)
			kpB, secB := cl[1].kp(tc.to)
			kpC, secC := cl[2].kp(tc.to)
			if _, _, err := g[2].Reinitialize(kpC, secC, []*KeyPackage{kpA}); !errors.Is(err, ErrInvalidKeyPackage) {
				t.Fatalf("a successor without bob: %v, want ErrInvalidKeyPackage", err)
			}
			next, res, err := g[2].Reinitialize(kpC, secC, []*KeyPackage{kpA, kpB})
			if err != nil {
				t.Fatal(err)
			}
			if next.CipherSuite() != tc.to || !bytes.Equal(next.GroupID(), ri.GroupID) || next.Epoch() != 1 {
				t.Fatalf("successor %x suite %d epoch %d", next.GroupID(), next.CipherSuite(), next.Epoch())
			}
			if _, err := Join(overWire(t, res.Welcome), kpB, secB, &JoinOptions{Predecessors: []*Group{open}}); !errors.Is(err, ErrUnknownPSK) {
				t.Fatalf("joining the successor from the state before the ReInit's commit: %v, want ErrUnknownPSK", err)
			}
			nextA, err := Join(overWire(t, res.Welcome), kpA, secA, &JoinOptions{Predecessors: []*Group{g[0]}})
			if err != nil {
				t.Fatalf("alice joins the successor: %v", err)
			}
			nextB, err := Join(overWire(t, res.Welcome), kpB, secB, &JoinOptions{Predecessors: []*Group{g[1]}})
			if err != nil {
				t.Fatalf("bob joins the successor: %v", err)
			}
			agreeAll(t, next, nextA, nextB)
			if e, ok := nextA.GroupContext().Extensions.Find(ExtensionTypeExternalSenders); !ok || !bytes.Contains(e.Data, []byte("after-reinit")) {
				t.Fatal("the successor lacks the ReInit's extensions")
			}
			if _, _, err := nextA.SealApplication([]byte("hello"), nil); err != nil {
				t.Fatalf("sending in the successor: %v", err)
			}
		})
	}
}
