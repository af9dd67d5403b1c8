package mls

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
)

// kpWithEncryptionKey returns a fresh client whose KeyPackage leaf carries
// encKey as encryption key, correctly re-signed by the client.
func kpWithEncryptionKey(t *testing.T, name string, encKey HPKEPublicKey) scClient {
	t.Helper()
	c := newSCClient(t, name)
	kp := *c.kp
	kp.LeafNode = *c.kp.LeafNode.Clone()
	kp.LeafNode.EncryptionKey = bytes.Clone(encKey)
	cs := mustSuite(t, scenarioSuite)
	if err := kp.LeafNode.Sign(cs, c.secrets.SignatureKey, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := kp.Sign(cs, c.secrets.SignatureKey); err != nil {
		t.Fatal(err)
	}
	c.kp = &kp
	return c
}

// kpWithX509Credential returns a fresh client whose KeyPackage leaf holds
// an x509 credential (and supports basic and x509), re-signed.
func kpWithX509Credential(t *testing.T, name string) *KeyPackage {
	t.Helper()
	cs := mustSuite(t, scenarioSuite)
	c := newSCClient(t, name)
	kp := *c.kp
	kp.LeafNode = *c.kp.LeafNode.Clone()
	kp.LeafNode.Credential = Credential{Type: CredentialTypeX509, Certificates: [][]byte{{0x30, 0x00}}}
	kp.LeafNode.Capabilities.Credentials = []CredentialType{CredentialTypeBasic, CredentialTypeX509}
	if err := kp.LeafNode.Sign(cs, c.secrets.SignatureKey, nil, 0); err != nil {
		t.Fatal(err)
	}
	if err := kp.Sign(cs, c.secrets.SignatureKey); err != nil {
		t.Fatal(err)
	}
	return &kp
}

// commitWithoutChecks builds a commit of g carrying props inline exactly
// as Group.Commit would, but without the committer's validation of the
// proposals, so that a receiver's checks are what is exercised. Only Add,
// PreSharedKey and GroupContextExtensions proposals are supported. With mod set, the commit
// carries an UpdatePath whose new leaf is g's leaf changed by mod.
func commitWithoutChecks(t *testing.T, g *Group, props []*Proposal, mod func(*LeafNode)) *MLSMessage {
	t.Helper()
	return commitWithoutChecksThen(t, g, props, mod, nil)
}

// commitWithoutChecksThen is commitWithoutChecks with a last say over the
// UpdatePath: after, if set, may change the path (and the merged tree to
// match) before the commit is framed.
func commitWithoutChecksThen(t *testing.T, g *Group, props []*Proposal, mod func(*LeafNode), after func(up *PathUpdate)) *MLSMessage {
	t.Helper()
	newCtx := g.ctx
	newCtx.Epoch++
	tree := g.tree
	var added []LeafIndex
	var psks []PreSharedKeyID
	list := []ProposalOrRef{}
	for _, p := range props {
		switch p.Type {
		case ProposalTypeAdd:
			var l LeafIndex
			tree, l = tree.AddLeaf(p.Add.KeyPackage.LeafNode.Clone())
			added = append(added, l)
		case ProposalTypePSK:
			psks = append(psks, p.PreSharedKey.PSK)
		case ProposalTypeGroupContextExtensions:
			newCtx.Extensions = p.GroupContextExtensions.Extensions
		default:
			t.Fatalf("commitWithoutChecks: proposal type %d", p.Type)
		}
		list = append(list, ProposalOrRef{Type: ProposalOrRefProposal, Proposal: p})
	}
	commit := &Commit{Proposals: list}
	commitSecret := keyschedule.Secret{}
	if mod != nil {
		leaf := tree.Leaf(g.me).Clone()
		mod(leaf)
		up, err := tree.CreateUpdatePath(g.cs, newCtx, g.me, leaf, g.sig, added, nil)
		if err != nil {
			t.Fatal(err)
		}
		if after != nil {
			after(up)
		}
		tree, commitSecret, commit.Path = up.Tree, up.CommitSecret, &up.Path
	}
	psk, err := g.pskSecretFor(psks)
	if err != nil {
		t.Fatal(err)
	}
	ac, err := g.frame(ContentTypeCommit, nil, nil, nil, commit)
	if err != nil {
		t.Fatal(err)
	}
	if newCtx.TreeHash, err = tree.TreeHash(g.cs); err != nil {
		t.Fatal(err)
	}
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHash(g.cs, g.interim, ac); err != nil {
		t.Fatal(err)
	}
	gcBytes, err := newCtx.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	joiner, err := keyschedule.JoinerSecret(g.cs, g.secrets.InitSecret, commitSecret, gcBytes)
	if err != nil {
		t.Fatal(err)
	}
	if ac.Auth.ConfirmationTag, err = confirmationTagFor(g.cs, joiner, psk, gcBytes, newCtx.ConfirmedTranscriptHash); err != nil {
		t.Fatal(err)
	}
	msg, err := g.clone().protect(ac)
	if err != nil {
		t.Fatal(err)
	}
	return msg
}

// TestCommitWithoutChecksIsSound checks that commitWithoutChecks builds commits
// a receiver accepts when nothing is wrong with them, so that the refusals
// below are due to the defect each one plants.
func TestCommitWithoutChecksIsSound(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	id, secret := []byte("psk"), bytes.Repeat([]byte{7}, 32)
	for l, g := range w.members {
		w.members[l] = g.WithExternalPSK(id, secret)
	}
	c := newSCClient(t, "fine")
	psk := PreSharedKeyID{Type: PSKTypeExternal, PSKID: id, PSKNonce: bytes.Repeat([]byte{1}, 32)}
	msg := commitWithoutChecks(t, w.members[0], []*Proposal{
		{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *c.kp}},
		{Type: ProposalTypePSK, PreSharedKey: &PreSharedKey{PSK: psk}},
	}, func(*LeafNode) {})
	if _, _, err := w.members[1].Process(msg); err != nil {
		t.Fatalf("a valid commit built without the committer's checks is refused: %v", err)
	}
}

// RFC 9420 §7.3: encryption_key must be unique among the members. An Add
// whose KeyPackage reuses an existing member's encryption key makes the
// commit invalid, for the committer and for the members processing it
// (the tree it produces would be refused by every joiner).
func TestCommitRefusesAddWithDuplicateEncryptionKey(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	victim := w.members[0].Tree().Leaf(1)
	evil := kpWithEncryptionKey(t, "evil", victim.EncryptionKey)
	honest := newSCClient(t, "honest")

	_, _, err := w.members[0].Commit(CommitOptions{Add: []*KeyPackage{evil.kp, honest.kp}})
	if !errors.Is(err, ErrInvalidKeyPackage) {
		t.Fatalf("committer: %v, want ErrInvalidKeyPackage for an Add whose encryption key duplicates leaf 1's", err)
	}
	msg := commitWithoutChecks(t, w.members[0], []*Proposal{
		{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *evil.kp}},
		{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *honest.kp}},
	}, nil)
	if _, _, err := w.members[2].Process(msg); !errors.Is(err, ErrInvalidKeyPackage) {
		t.Fatalf("receiver: %v, want ErrInvalidKeyPackage for an Add whose encryption key duplicates leaf 1's", err)
	}
}

// RFC 9420 §7.3: an Update's encryption_key must differ from the key of
// the leaf it replaces, and be unique among the members. Such an Update is
// refused on receipt, and by a committer that holds it.
func TestUpdateRefusedWithReusedEncryptionKey(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	for name, pick := range map[string]func(g *Group) HPKEPublicKey{
		"unchanged key":      func(g *Group) HPKEPublicKey { return g.tree.Leaf(1).EncryptionKey },
		"other member's key": func(g *Group) HPKEPublicKey { return g.tree.Leaf(2).EncryptionKey },
	} {
		g := w.members[1]
		ln := g.tree.Leaf(g.me).Clone()
		ln.EncryptionKey = bytes.Clone(pick(g))
		ln.Source = LeafNodeSourceUpdate
		ln.Lifetime, ln.ParentHash = Lifetime{}, nil
		if err := ln.Sign(g.cs, g.sig, g.ctx.GroupID, g.me); err != nil {
			t.Fatal(err)
		}
		p := &Proposal{Type: ProposalTypeUpdate, Update: &Update{LeafNode: *ln}}
		_, m, _, err := g.propose(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := w.members[0].Process(m); !errors.Is(err, ErrInvalidProposal) {
			t.Errorf("%s: on receipt: %v, want ErrInvalidProposal", name, err)
		}
		// The committer's check, for a proposal that got into the cache.
		held := []cachedProposal{{sender: Sender{Type: SenderTypeMember, LeafIndex: 1}, proposal: p}}
		if _, err := w.members[0].applyProposals(0, held); !errors.Is(err, ErrInvalidProposal) {
			t.Errorf("%s: when committed: %v, want ErrInvalidProposal", name, err)
		}
	}
}

// RFC 9420 §7.3: the credential type of a new leaf must be supported by
// all members. An Add of an x509 leaf into a basic-only group is refused
// by the committer and by the members processing the commit (every joiner
// would refuse the tree).
func TestCommitRefusesAddWithUnsupportedCredentialType(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	kp := kpWithX509Credential(t, "x509")
	wantAddRefused(t, w, kp, ErrInvalidProposal, "an Add of a credential type other members do not support")
}

// wantAddRefused fails t unless member 0 refuses to commit an Add of kp
// and member 1 refuses the same commit made without the committer's
// checks, both with want.
func wantAddRefused(t *testing.T, w *scWorld, kp *KeyPackage, want error, what string) {
	t.Helper()
	if _, _, err := w.members[0].Commit(CommitOptions{Add: []*KeyPackage{kp}}); !errors.Is(err, want) {
		t.Fatalf("committer: %v, want %v for %s", err, want, what)
	}
	msg := commitWithoutChecks(t, w.members[0], []*Proposal{{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *kp}}}, nil)
	if _, _, err := w.members[1].Process(msg); !errors.Is(err, want) {
		t.Fatalf("receiver: %v, want %v for %s", err, want, what)
	}
}

// RFC 9420 §8.4, §12.1.4: a PreSharedKey proposal whose psk_nonce is not
// KDF.Nh bytes long is invalid: refused by the committer, by the members
// processing the commit, and on receipt as a proposal.
func TestCommitRefusesPSKNonceOfWrongLength(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	id, secret := []byte("psk-short-nonce"), bytes.Repeat([]byte{7}, 32)
	for l, g := range w.members {
		w.members[l] = g.WithExternalPSK(id, secret)
	}
	for _, n := range []int{0, 31, 33} {
		psk := PreSharedKeyID{Type: PSKTypeExternal, PSKID: id, PSKNonce: make([]byte, n)}
		if _, _, err := w.members[0].Commit(CommitOptions{PSKs: []PreSharedKeyID{psk}}); !errors.Is(err, ErrInvalidProposal) {
			t.Errorf("committer, psk_nonce of %d bytes (want 32): %v, want ErrInvalidProposal", n, err)
		}
		p := &Proposal{Type: ProposalTypePSK, PreSharedKey: &PreSharedKey{PSK: psk}}
		msg := commitWithoutChecks(t, w.members[0], []*Proposal{p}, nil)
		if _, _, err := w.members[1].Process(msg); !errors.Is(err, ErrInvalidProposal) {
			t.Errorf("receiver of a commit, psk_nonce of %d bytes: %v, want ErrInvalidProposal", n, err)
		}
		_, m, _, err := w.members[0].propose(p)
		if err != nil {
			t.Fatal(err)
		}
		if _, _, err := w.members[1].Process(m); !errors.Is(err, ErrInvalidProposal) {
			t.Errorf("receiver of the proposal, psk_nonce of %d bytes: %v, want ErrInvalidProposal", n, err)
		}
	}
}

// RFC 9420 §12.4.3.1 with §8.4: a joiner refuses a Welcome naming a PSK
// whose psk_nonce is not KDF.Nh bytes long.
func TestJoinRefusesPSKNonceOfWrongLength(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	c := newSCClient(t, "joiner")
	g, res, err := w.members[0].Commit(CommitOptions{Add: []*KeyPackage{c.kp}})
	if err != nil {
		t.Fatal(err)
	}
	id := []byte("psk-short-nonce")
	eff := &proposalEffect{
		added:    []LeafIndex{2},
		addedKPs: []KeyPackage{*c.kp},
		psks:     []PreSharedKeyID{{Type: PSKTypeExternal, PSKID: id, PSKNonce: []byte{1, 2, 3}}},
	}
	welcome, err := g.welcome(res.GroupInfo, eff, nil, keyschedule.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	opts := &JoinOptions{ExternalPSKs: []ExternalPSK{{ID: id, Secret: ciphersuite.NewSecret(bytes.Repeat([]byte{7}, 32))}}}
	if _, err := Join(welcome, c.kp, c.secrets, opts); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("Join of a Welcome naming a psk_nonce of 3 bytes: %v, want ErrInvalidProposal", err)
	}
}

// RFC 9420 §7.3 (leaf validation applies to the leaf_node of an UpdatePath
// too): a path leaf that lacks the group's required_capabilities, or does
// not support a credential type in use, is refused; otherwise the member
// would accept it and then could not add anyone.
func TestCommitRefusesPathLeafBreakingGroupRules(t *testing.T) {
	const extX ExtensionType = 0xff00
	caps := &Capabilities{Versions: []ProtocolVersion{ProtocolMLS10}, Extensions: []ExtensionType{extX}, Proposals: []ProposalType{}}
	mk := func(name string) scClient {
		kp, sec, err := NewKeyPackage(scenarioSuite, NewBasicCredential([]byte(name)), nil, &KeyPackageOptions{Capabilities: caps})
		if err != nil {
			t.Fatal(err)
		}
		return scClient{kp, sec}
	}
	a, b := mk("a"), mk("b")
	ga, err := NewGroup([]byte("rc-group"), a.kp, a.secrets, nil)
	if err != nil {
		t.Fatal(err)
	}
	rc, err := (&RequiredCapabilities{Extensions: []ExtensionType{extX}, Proposals: []ProposalType{}, Credentials: []CredentialType{}}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	exts := Extensions{{Type: ExtensionTypeRequiredCapabilities, Data: rc}}
	ga, res, err := ga.Commit(CommitOptions{Add: []*KeyPackage{b.kp}, GroupContextExtensions: &exts})
	if err != nil {
		t.Fatal(err)
	}
	gb, err := Join(res.Welcome, b.kp, b.secrets, nil)
	if err != nil {
		t.Fatal(err)
	}
	for name, mod := range map[string]func(*LeafNode){
		"lacks the required extension": func(ln *LeafNode) { ln.Capabilities.Extensions = []ExtensionType{} },
		"x509 credential": func(ln *LeafNode) {
			ln.Credential = Credential{Type: CredentialTypeX509, Certificates: [][]byte{{0x30, 0x00}}}
			ln.Capabilities.Credentials = []CredentialType{CredentialTypeBasic, CredentialTypeX509}
		},
	} {
		msg := commitWithoutChecks(t, gb, nil, mod)
		ga2, _, err := ga.Process(msg)
		if !errors.Is(err, ErrInvalidUpdatePath) {
			t.Errorf("path leaf %s: %v, want ErrInvalidUpdatePath", name, err)
		}
		if err == nil {
			c := mk("c")
			_, _, cerr := ga2.Commit(CommitOptions{Add: []*KeyPackage{c.kp}})
			t.Logf("path leaf %s accepted; the member's next Add: %v", name, cerr)
		}
	}
	// The path derives the leaf's encryption key; a committer that plants
	// another member's key there (signing the leaf again) is refused too
	// (by ApplyUpdatePath's fresh-key check).
	plant := func(up *PathUpdate) {
		ln := &up.Path.LeafNode
		ln.EncryptionKey = slices.Clone(ga.Tree().Leaf(0).EncryptionKey)
		if err := ln.Sign(gb.cs, gb.sig, gb.GroupID(), gb.LeafIndex()); err != nil {
			t.Fatal(err)
		}
		up.Tree = up.Tree.clone()
		up.Tree.setNode(gb.LeafIndex().Node(), Node{Leaf: ln.Clone()})
	}
	if _, _, err := ga.Process(commitWithoutChecksThen(t, gb, nil, func(*LeafNode) {}, plant)); !errors.Is(err, ErrInvalidUpdatePath) {
		t.Errorf("path leaf with another member's encryption key: %v, want ErrInvalidUpdatePath", err)
	}
	if _, _, err := ga.Process(commitWithoutChecks(t, gb, nil, func(*LeafNode) {})); err != nil {
		t.Fatalf("a path leaf that keeps the group's rules: %v", err)
	}
}

// A commit builds (and signs over the whole tree) a GroupInfo only for
// its Welcome; one adding no one returns none, and the new epoch's is made
// on request, signed by the committer.
func TestCommitBuildsGroupInfoOnlyForAWelcome(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 2)
	g, res, err := w.members[0].Commit(CommitOptions{ForcePath: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.GroupInfo != nil || res.Welcome != nil {
		t.Fatalf("a commit adding no one: GroupInfo %v, Welcome %v; want neither", res.GroupInfo != nil, res.Welcome != nil)
	}
	gi, err := g.GroupInfo(true)
	if err != nil {
		t.Fatal(err)
	}
	cs, err := ciphersuite.Lookup(g.CipherSuite())
	if err != nil {
		t.Fatal(err)
	}
	leaf := g.Tree().Leaf(0)
	if gi.GroupContext.Epoch != g.Epoch() || gi.VerifySignature(cs, leaf.SignatureKey) != nil {
		t.Fatalf("the new epoch's GroupInfo: epoch %d (group at %d), signature %v", gi.GroupContext.Epoch, g.Epoch(), gi.VerifySignature(cs, leaf.SignatureKey))
	}
	c := newSCClient(t, "joiner")
	_, res, err = g.Commit(CommitOptions{Add: []*KeyPackage{c.kp}})
	if err != nil {
		t.Fatal(err)
	}
	if res.GroupInfo == nil || res.Welcome == nil {
		t.Fatalf("a commit adding a member: GroupInfo %v, Welcome %v; want both", res.GroupInfo != nil, res.Welcome != nil)
	}
	if _, err := Join(res.Welcome, c.kp, c.secrets, nil); err != nil {
		t.Fatalf("join from the Welcome: %v", err)
	}
}

// RFC 9420 §13 (Extensibility): "Any field containing a list of
// extensions MUST NOT have more than one extension of any given type."
// A KeyPackage whose own extensions repeat a type is invalid: refused by
// the committer that would add it and by the members processing a commit
// that does.
func TestCommitRefusesAddWithDuplicateKeyPackageExtensions(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	dup := Extensions{{Type: 0xff00, Data: []byte{1}}, {Type: 0xff00, Data: []byte{2}}}
	kp, _, err := NewKeyPackage(scenarioSuite, NewBasicCredential([]byte("dup")), nil, &KeyPackageOptions{Extensions: dup})
	if err != nil {
		t.Fatal(err)
	}
	if err := kp.Validate(); !errors.Is(err, ErrInvalidKeyPackage) {
		t.Fatalf("Validate of a key package with extension 0xff00 twice: %v, want ErrInvalidKeyPackage", err)
	}
	wantAddRefused(t, w, kp, ErrInvalidKeyPackage, "an Add of a key package with extension 0xff00 twice")
}

// RFC 9420 §13: no extension list may repeat a type, the GroupInfo's
// included. A joiner refuses a Welcome whose GroupInfo, properly signed
// by a member, carries an extension type twice (here the ratchet_tree,
// where which copy counts would be up to the implementation).
func TestJoinRefusesGroupInfoWithDuplicateExtensions(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	c := newSCClient(t, "joiner")
	g, res, err := w.members[0].Commit(CommitOptions{Add: []*KeyPackage{c.kp}})
	if err != nil {
		t.Fatal(err)
	}
	gi := *res.GroupInfo
	gi.Extensions = append(slices.Clone(gi.Extensions), gi.Extensions...)
	if err := gi.Sign(g.cs, g.sig); err != nil {
		t.Fatal(err)
	}
	eff := &proposalEffect{added: []LeafIndex{2}, addedKPs: []KeyPackage{*c.kp}}
	welcome, err := g.welcome(&gi, eff, nil, keyschedule.Secret{})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := Join(welcome, c.kp, c.secrets, nil); !errors.Is(err, ErrDecode) {
		t.Fatalf("Join of a GroupInfo with the ratchet_tree extension twice: %v, want ErrDecode", err)
	}
	// An external joiner too.
	egi, err := g.ExternalGroupInfo(true)
	if err != nil {
		t.Fatal(err)
	}
	egi.Extensions = append(slices.Clone(egi.Extensions), egi.Extensions...)
	if err := egi.Sign(g.cs, g.sig); err != nil {
		t.Fatal(err)
	}
	if _, _, err := JoinExternal(egi, NewBasicCredential([]byte("external")), c.secrets.SignatureKey, nil); !errors.Is(err, ErrDecode) {
		t.Fatalf("JoinExternal with a GroupInfo whose extensions repeat: %v, want ErrDecode", err)
	}
}

// An UpdatePath node whose encryption key is not a public key of the
// suite's KEM is refused (RFC 9420 §12.4.2 with §7.3, which checks the
// leaf's keys; a parent node's key is used the same way). Members below
// a higher node of the path never derive that node's key, so without
// the check they accepted the commit and then could not commit with a
// path again: every path encrypts to that node, the Remove that would
// expel the attacker included. A tree holding such a key is invalid for
// a joiner too.
func TestCommitRefusesPathWithInvalidNodeKey(t *testing.T) {
	w := insiderWorldFor(t)
	// FuzzInsiderCommit's encoding: no proposals; a path (mode 3) whose
	// node 0 gets (op 3) raw bytes as its key, the leaf signed again with
	// the parent hash that gives and the path secrets encrypted again
	// under the group context it gives: 5 bytes 1..5, or 32 zero bytes
	// (an X25519 point of low order, of the right length).
	for _, in := range []fuzzBytes{{0, 3, 0, 3, 5, 1, 2, 3, 4, 5}, {0, 3, 0, 3, 32}} {
		want := in[4]
		ic := w.commitFrom(&in)
		if ic.commit.Path == nil || len(ic.commit.Path.Nodes[0].EncryptionKey) != int(want) {
			t.Fatalf("the attacker's path does not carry the %d-byte key", want)
		}
		m := w.seal(&in, ic.commit)
		for _, l := range []LeafIndex{0, 2, 3} {
			if _, _, err := w.members[l].Process(m); !errors.Is(err, ErrInvalidUpdatePath) {
				t.Errorf("leaf %d: %v, want ErrInvalidUpdatePath for a path node key of %d bytes", l, err, want)
			}
		}
		g := w.members[2]
		pubs := make([]HPKEPublicKey, len(ic.commit.Path.Nodes))
		for i, n := range ic.commit.Path.Nodes {
			pubs[i] = n.EncryptionKey
		}
		merged, err := g.tree.mergePath(g.cs, insiderAttacker, pubs)
		if err != nil {
			t.Fatal(err)
		}
		merged.setLeaf(ic.commit.Path.LeafNode.Clone())
		if err := merged.tree.Validate(g.cs, g.ctx.GroupID, g.ctx.Extensions); !errors.Is(err, ErrInvalidTree) {
			t.Errorf("Validate of a tree with a parent key of %d bytes: %v, want ErrInvalidTree", want, err)
		}
	}
}

// RFC 9420 §4.1 (tree invariant: each member knows the private key of
// every non-blank node above it, unless it is an unmerged leaf there) and
// §12.4.3.1: a Welcome whose group secrets leave out the path secret, so
// that the joiner lacks the key of a non-blank node above it that does
// not list it as unmerged, is refused. Accepted, the joiner could decrypt
// no commit whose path encrypts to that node.
func TestJoinRefusesWelcomeLeavingAnAncestorKeyUnknown(t *testing.T) {
	w, iw := insiderWelcomeFor(t)
	// FuzzInsiderWelcome's encoding: one change (9), the path secret
	// dropped; tree hash and confirmation tag recomputed, signed by the
	// committer.
	in := fuzzBytes{1, 9}
	m := w.forgeWelcome(&in, iw)
	if m == nil {
		t.Fatal("forging the Welcome failed")
	}
	j := iw.joiner
	if _, err := Join(m, j.kp, j.secrets, insiderJoinOptions()); !errors.Is(err, ErrInvalidTree) {
		t.Fatalf("Join without the path secret: %v, want ErrInvalidTree", err)
	}
	in = fuzzBytes{0}
	if _, err := Join(w.forgeWelcome(&in, iw), j.kp, j.secrets, insiderJoinOptions()); err != nil {
		t.Fatalf("Join of the Welcome unchanged: %v", err)
	}
}

// This member makes no GroupContextExtensions proposal, inline or by
// reference, and no ReInit (whose extensions are the successor's group
// context's) carrying an extension the IANA registry assigns to other
// messages (RFC 9420 §17.3, column "Message(s)"): application_id
// (LeafNode), ratchet_tree and external_pub (GroupInfo), the GREASE
// values; ErrInvalidProposal names the type. The same received from a
// peer that makes them (mls-rs accepts them) is applied, as replay of a
// history recorded with them needs; a successor of a received ReInit
// carrying one starts.
func TestGroupContextExtensionsMadeOnlyOfGroupContextTypes(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 1)
	appID, err := ApplicationIDExtension([]byte("epochlog"))
	if err != nil {
		t.Fatal(err)
	}
	tree, err := w.members[0].Tree().Extension()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		ext  Extension
	}{
		{"application_id", appID},
		{"ratchet_tree", tree},
		{"external_pub", Extension{Type: ExtensionTypeExternalPub, Data: []byte{0}}},
		{"GREASE", Extension{Type: 0x3A3A, Data: []byte{}}},
	} {
		exts := Extensions{tc.ext}
		wantErr := func(what string, err error) {
			t.Helper()
			if !errors.Is(err, ErrInvalidProposal) || !strings.Contains(err.Error(), tc.name) {
				t.Errorf("%s %s: %v, want ErrInvalidProposal naming %s", what, tc.name, err, tc.name)
			}
		}
		_, _, err := w.members[0].Commit(CommitOptions{GroupContextExtensions: &exts})
		wantErr("committing", err)
		_, _, err = w.members[0].ProposeGroupContextExtensions(exts)
		wantErr("proposing", err)
		ri := ReInit{GroupID: []byte("successor"), Version: ProtocolMLS10, CipherSuite: scenarioSuite, Extensions: exts}
		_, _, err = w.members[0].ProposeReInit(ri)
		wantErr("proposing a ReInit with", err)
		_, _, err = w.members[0].Commit(CommitOptions{ReInit: &ri})
		wantErr("committing a ReInit with", err)
	}

	// Received: a proposal by reference, then a commit carrying one inline.
	gce := &Proposal{Type: ProposalTypeGroupContextExtensions, GroupContextExtensions: &GroupContextExtensions{Extensions: Extensions{appID}}}
	_, byRef, _, err := w.members[1].propose(gce)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := w.members[0].Process(byRef); err != nil {
		t.Fatalf("receiving a proposal of application_id: %v", err)
	}
	g0, _, err := w.members[0].Process(commitWithoutChecks(t, w.members[1], []*Proposal{gce}, func(*LeafNode) {}))
	if err != nil {
		t.Fatalf("receiving a commit of application_id: %v", err)
	}
	if e, found := g0.GroupContext().Extensions.Find(ExtensionTypeApplicationID); !found || !bytes.Equal(e.Data, appID.Data) {
		t.Fatal("a received application_id group context extension was not applied")
	}
}

// A ReInit received from a peer with an extension this member would not
// make is committed by reference and its successor started: the group
// agreed on it, so the successor's first commit carries it.
func TestSuccessorOfAReceivedReInitKeepsItsExtensions(t *testing.T) {
	cl, g := threeMembers(t, scenarioSuite)
	appID, err := ApplicationIDExtension([]byte("from-a-peer"))
	if err != nil {
		t.Fatal(err)
	}
	ri := ReInit{GroupID: []byte("the-successor"), Version: ProtocolMLS10, CipherSuite: scenarioSuite, Extensions: Extensions{appID}}
	// Made as a peer that allows it would (g[1].propose skips the
	// proposer's checks).
	var p *MLSMessage
	if g[1], p, _, err = g[1].propose(&Proposal{Type: ProposalTypeReInit, ReInit: &ri}); err != nil {
		t.Fatal(err)
	}
	if g[0], _, err = g[0].Process(p); err != nil {
		t.Fatalf("receiving the ReInit: %v", err)
	}
	g0, res, err := g[0].Commit(CommitOptions{})
	if err != nil {
		t.Fatalf("committing the received ReInit: %v", err)
	}
	if g[1], _, err = g[1].Process(res.Commit); err != nil {
		t.Fatalf("the proposer processes the commit: %v", err)
	}
	kp, secrets := cl[0].kp(scenarioSuite)
	kp1, _ := cl[1].kp(scenarioSuite)
	kp2, _ := cl[2].kp(scenarioSuite)
	next, _, err := g0.Reinitialize(kp, secrets, []*KeyPackage{kp1, kp2})
	if err != nil {
		t.Fatalf("the successor of a received ReInit with application_id: %v", err)
	}
	if _, found := next.GroupContext().Extensions.Find(ExtensionTypeApplicationID); !found {
		t.Fatal("the successor lacks the ReInit's extensions")
	}
}

// TestReInitCommitOptionsReusedAreChecked: the options
// PrepareReinitialize returns skip the checks on made extensions for the
// successor's first commit only. Reused for a later commit of the
// successor (with extensions this member may not make), or for the
// first commit of another group at epoch 0, they are checked as any
// (ErrInvalidProposal). Until 2026-12-07 the mark stayed on the value,
// and every commit made with it skipped the check.
func TestReInitCommitOptionsReusedAreChecked(t *testing.T) {
	cl, g := threeMembers(t, scenarioSuite)
	appID, err := ApplicationIDExtension([]byte("from-a-peer"))
	if err != nil {
		t.Fatal(err)
	}
	ri := ReInit{GroupID: []byte("the-successor"), Version: ProtocolMLS10, CipherSuite: scenarioSuite, Extensions: Extensions{appID}}
	var p *MLSMessage
	if g[1], p, _, err = g[1].propose(&Proposal{Type: ProposalTypeReInit, ReInit: &ri}); err != nil {
		t.Fatal(err)
	}
	if g[0], _, err = g[0].Process(p); err != nil {
		t.Fatal(err)
	}
	g0, _, err := g[0].Commit(CommitOptions{})
	if err != nil {
		t.Fatal(err)
	}
	kp, secrets := cl[0].kp(scenarioSuite)
	kp1, _ := cl[1].kp(scenarioSuite)
	kp2, _ := cl[2].kp(scenarioSuite)
	first, co, err := g0.PrepareReinitialize(kp, secrets, []*KeyPackage{kp1, kp2})
	if err != nil {
		t.Fatal(err)
	}
	next, _, err := first.Commit(co)
	if err != nil {
		t.Fatalf("the successor's first commit: %v", err)
	}
	other, err := ApplicationIDExtension([]byte("made-here"))
	if err != nil {
		t.Fatal(err)
	}
	reused := co
	reused.Add, reused.PSKs = nil, nil
	reused.GroupContextExtensions = &Extensions{other}
	if _, _, err := next.Commit(reused); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("a later commit of the successor with the ReInit's options reused and application_id set: %v, want ErrInvalidProposal", err)
	}
	// Another group at epoch 0 (no predecessor's PSK lent).
	kp3, secrets3 := cl[0].kp(scenarioSuite)
	fresh, err := NewGroup([]byte("another"), kp3, secrets3, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := fresh.Commit(reused); !errors.Is(err, ErrInvalidProposal) {
		t.Fatalf("a new group's first commit with the ReInit's options reused: %v, want ErrInvalidProposal", err)
	}
}
