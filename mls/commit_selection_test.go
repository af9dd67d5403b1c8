package mls

import (
	"bytes"
	"errors"
	"testing"
)

// commitRefs returns the proposal references a commit message carries.
func commitRefs(t *testing.T, m *MLSMessage) [][]byte {
	t.Helper()
	if m.PublicMessage == nil || m.PublicMessage.Content.Commit == nil {
		t.Fatal("not a PublicMessage commit")
	}
	var refs [][]byte
	for _, p := range m.PublicMessage.Content.Commit.Proposals {
		if p.Type == ProposalOrRefReference {
			refs = append(refs, p.Reference)
		}
	}
	return refs
}

// proposalRef returns the reference of a proposal message as its
// receivers cache it.
func proposalRef(t *testing.T, g *Group, m *MLSMessage) []byte {
	t.Helper()
	ng := mustProcess(t, g, m)
	return ng.proposals[len(ng.proposals)-1].ref
}

// A proposal delivered twice (a replay by the delivery service) is cached
// once: the receiver's next commit carries it once, and the others accept
// that commit.
func TestReplayedProposalCachedOnce(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	g1, prop, err := w.members[1].ProposeRemove(2)
	if err != nil {
		t.Fatal(err)
	}
	w.members[1] = g1
	g0 := mustProcess(t, mustProcess(t, w.members[0], prop), prop)
	if n := len(g0.proposals); n != 1 {
		t.Fatalf("%d proposals cached after a replay, want 1", n)
	}
	_, res, err := g0.Commit(CommitOptions{})
	if err != nil {
		t.Fatalf("commit after a replayed proposal: %v", err)
	}
	if refs := commitRefs(t, res.Commit); len(refs) != 1 {
		t.Errorf("commit carries %d references, want 1", len(refs))
	}
	if ng := mustProcess(t, w.members[1], res.Commit); ng.Tree().Leaf(2) != nil {
		t.Error("leaf 2 not removed by the commit")
	}
}

// Two members propose removing the same leaf (an ordinary race): the
// commit carries one of the Removes (RFC 9420 §12.2), not both, which it
// would itself refuse.
func TestCommitCarriesOneOfTwoRemovesOfALeaf(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 3)
	g1, p1, err := w.members[1].ProposeRemove(3)
	if err != nil {
		t.Fatal(err)
	}
	g2, p2, err := w.members[2].ProposeRemove(3)
	if err != nil {
		t.Fatal(err)
	}
	w.members[1], w.members[2] = g1, g2
	ref1 := proposalRef(t, w.members[0], p1)
	g0 := mustProcess(t, mustProcess(t, w.members[0], p1), p2)
	_, res, err := g0.Commit(CommitOptions{})
	if err != nil {
		t.Fatalf("commit after two Removes of the same leaf: %v", err)
	}
	if refs := commitRefs(t, res.Commit); len(refs) != 1 || !bytes.Equal(refs[0], ref1) {
		t.Errorf("commit carries references %x, want only the first Remove %x", refs, ref1)
	}
	g1 = mustProcess(t, mustProcess(t, w.members[1], p2), res.Commit)
	if g1.Tree().Leaf(3) != nil {
		t.Error("leaf 3 not removed by the commit")
	}
}

// A member sends two Updates in one epoch (a retry): the commit carries
// the most recent (§12.2), and the member can process it.
func TestCommitCarriesTheLatestUpdateOfALeaf(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	g1, u1, err := w.members[1].ProposeUpdate()
	if err != nil {
		t.Fatal(err)
	}
	g1, u2, err := g1.ProposeUpdate()
	if err != nil {
		t.Fatal(err)
	}
	w.members[1] = g1
	g0 := mustProcess(t, w.members[0], u1)
	ref2 := proposalRef(t, g0, u2)
	g0 = mustProcess(t, g0, u2)
	_, res, err := g0.Commit(CommitOptions{})
	if err != nil {
		t.Fatalf("commit after two Updates from one leaf: %v", err)
	}
	if refs := commitRefs(t, res.Commit); len(refs) != 1 || !bytes.Equal(refs[0], ref2) {
		t.Errorf("commit carries references %x, want only the second Update %x", refs, ref2)
	}
	if _, _, err := g1.Process(res.Commit); err != nil {
		t.Errorf("the updating member processes the commit: %v", err)
	}
}

// A Remove and an Update of the same leaf: the commit prefers the Remove.
func TestCommitPrefersRemoveToUpdate(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 3)
	g2, up, err := w.members[2].ProposeUpdate()
	if err != nil {
		t.Fatal(err)
	}
	g1, rm, err := w.members[1].ProposeRemove(2)
	if err != nil {
		t.Fatal(err)
	}
	w.members[1], w.members[2] = g1, g2
	refRm := proposalRef(t, mustProcess(t, w.members[0], up), rm)
	g0 := mustProcess(t, mustProcess(t, w.members[0], up), rm)
	_, res, err := g0.Commit(CommitOptions{})
	if err != nil {
		t.Fatalf("commit after an Update and a Remove of one leaf: %v", err)
	}
	if refs := commitRefs(t, res.Commit); len(refs) != 1 || !bytes.Equal(refs[0], refRm) {
		t.Errorf("commit carries references %x, want only the Remove %x", refs, refRm)
	}
}

// A proposal to add a KeyPackage whose keys are already in the group is
// valid on its own but can never be committed (§7.3): the commit leaves
// it out instead of failing on it in every receiver.
func TestCommitLeavesOutAnAddThatCannotJoin(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	j := newSCClient(t, "joiner")
	w.commit(0, CommitOptions{Add: []*KeyPackage{j.kp}}, j)
	g1, prop, err := w.members[1].ProposeAdd(j.kp)
	if err != nil {
		t.Fatal(err)
	}
	w.members[1] = g1
	g0 := mustProcess(t, w.members[0], prop)
	ng, res, err := g0.Commit(CommitOptions{})
	if err != nil {
		t.Fatalf("commit with an Add of a member's KeyPackage cached: %v", err)
	}
	if refs := commitRefs(t, res.Commit); len(refs) != 0 || res.Welcome != nil {
		t.Errorf("commit carries %d references and a Welcome %v, want the Add left out", len(refs), res.Welcome != nil)
	}
	if ng.Tree().LeafCount() != g0.Tree().LeafCount() {
		t.Error("the tree grew")
	}
	// A valid Add next to it is still committed.
	k := newSCClient(t, "another")
	g1, prop2, err := w.members[1].ProposeAdd(k.kp)
	if err != nil {
		t.Fatal(err)
	}
	w.members[1] = g1
	g0 = mustProcess(t, mustProcess(t, w.members[0], prop), prop2)
	_, res, err = g0.Commit(CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if refs := commitRefs(t, res.Commit); len(refs) != 1 || res.Welcome == nil {
		t.Errorf("commit carries %d references (Welcome %v), want the valid Add alone", len(refs), res.Welcome != nil)
	}
}

// A Welcome that does not decrypt (its group secrets or its GroupInfo
// altered) is ErrTampered and, like every failed open, ErrDecrypt.
func TestJoinUndecryptableWelcome(t *testing.T) {
	w := newSCWorld(t, Options{})
	j := newSCClient(t, "joiner")
	_, res, err := w.members[0].Commit(CommitOptions{Add: []*KeyPackage{j.kp}})
	if err != nil {
		t.Fatal(err)
	}
	for name, alter := range map[string]func(w *Welcome){
		"group secrets": func(w *Welcome) {
			c := &w.Secrets[0].EncryptedGroupSecrets
			c.Ciphertext = bytes.Clone(c.Ciphertext)
			c.Ciphertext[0] ^= 1
		},
		"group info": func(w *Welcome) {
			w.EncryptedGroupInfo = bytes.Clone(w.EncryptedGroupInfo)
			w.EncryptedGroupInfo[0] ^= 1
		},
	} {
		bad := *res.Welcome.Welcome
		bad.Secrets = append([]EncryptedGroupSecrets(nil), bad.Secrets...)
		alter(&bad)
		_, err := Join(&MLSMessage{Version: res.Welcome.Version, WireFormat: res.Welcome.WireFormat, Welcome: &bad}, j.kp, j.secrets, nil)
		if !errors.Is(err, ErrTampered) || !errors.Is(err, ErrDecrypt) {
			t.Errorf("Welcome with its %s altered: %v, want ErrTampered and ErrDecrypt", name, err)
		}
	}
	if _, err := Join(res.Welcome, j.kp, j.secrets, nil); err != nil {
		t.Fatalf("the Welcome as sent: %v", err)
	}
}

// An extensions proposal some member does not support is valid to cache
// but can never be committed: the commit leaves it out and keeps a Remove
// received with it.
func TestCommitLeavesOutUnsupportedExtensions(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 3)
	exts := Extensions{{Type: 0xff00, Data: []byte{1}}}
	g1, gce, _, err := w.members[1].propose(&Proposal{Type: ProposalTypeGroupContextExtensions, GroupContextExtensions: &GroupContextExtensions{Extensions: exts}})
	if err != nil {
		t.Fatal(err)
	}
	g1, rm, err := g1.ProposeRemove(3)
	if err != nil {
		t.Fatal(err)
	}
	w.members[1] = g1
	g0 := mustProcess(t, w.members[0], gce)
	refRm := proposalRef(t, g0, rm)
	g0 = mustProcess(t, g0, rm)
	ng, res, err := g0.Commit(CommitOptions{})
	if err != nil {
		t.Fatalf("commit with an unsupported extensions proposal cached: %v", err)
	}
	if refs := commitRefs(t, res.Commit); len(refs) != 1 || !bytes.Equal(refs[0], refRm) {
		t.Errorf("commit carries references %x, want only the Remove %x", refs, refRm)
	}
	if ng.Tree().Leaf(3) != nil || len(ng.GroupContext().Extensions) != 0 {
		t.Errorf("after the commit: leaf 3 %v, extensions %v; want leaf 3 removed and no extensions", ng.Tree().Leaf(3) != nil, ng.GroupContext().Extensions)
	}
}
