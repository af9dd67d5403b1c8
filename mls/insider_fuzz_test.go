package mls

import (
	"bytes"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
)

// The insider targets play a malicious member: it signs, tags and
// encrypts whatever the fuzzer describes with its real keys, so the input
// reaches proposal validation, path merging and the key schedule instead
// of stopping at a signature or MAC. The honest members must never panic,
// and whatever they accept must be a state RFC 9420 allows: see
// checkAccepted for the rules checked.

// insiderExt is a private-use extension type that members 0 to 2 list in
// their capabilities and member 3 does not.
const insiderExt ExtensionType = 0xff00

// insiderAttacker is the malicious member's leaf.
const insiderAttacker LeafIndex = 1

// insiderWorld is a group of four, in an epoch where every member has
// cached the same proposals, plus key packages the attacker may add. It is
// built once per process and only read: groups are values.
type insiderWorld struct {
	cs      *ciphersuite.CipherSuite
	members []*Group // by leaf
	cached  []cachedProposal
	fresh   scClient // a valid key package nobody used
	mutable scClient // a key package the fuzzer rewrites (re-signed with its key)
}

var (
	insiderOnce sync.Once
	insiderW    *insiderWorld
)

// insiderPSKID and insiderPSKSecret are an external PSK every member
// holds.
var insiderPSKID, insiderPSKSecret = []byte("insider-psk"), []byte("insider psk secret")

func newInsiderClient(tb testing.TB, name string, exts ...ExtensionType) scClient {
	tb.Helper()
	caps := &Capabilities{Versions: []ProtocolVersion{ProtocolMLS10}, CipherSuites: []ciphersuite.Suite{scenarioSuite},
		Extensions: append([]ExtensionType{}, exts...), Proposals: []ProposalType{}, Credentials: []CredentialType{CredentialTypeBasic, CredentialTypeX509}}
	kp, sec, err := NewKeyPackage(scenarioSuite, NewBasicCredential([]byte(name)), nil, &KeyPackageOptions{Capabilities: caps})
	if err != nil {
		tb.Fatal(err)
	}
	return scClient{kp, sec}
}

func insiderWorldFor(tb testing.TB) *insiderWorld {
	insiderOnce.Do(func() { insiderW = buildInsiderWorld(tb) })
	if insiderW == nil {
		tb.Fatal("insider world failed to build")
	}
	return insiderW
}

func buildInsiderWorld(tb testing.TB) *insiderWorld {
	tb.Helper()
	w := &insiderWorld{cs: mustSuite(tb, scenarioSuite)}
	clients := []scClient{
		newInsiderClient(tb, "m0", insiderExt), newInsiderClient(tb, "m1", insiderExt),
		newInsiderClient(tb, "m2", insiderExt), newInsiderClient(tb, "m3"),
	}
	g0, err := NewGroup([]byte("insider-group"), clients[0].kp, clients[0].secrets, nil)
	if err != nil {
		tb.Fatal(err)
	}
	g0, res, err := g0.Commit(CommitOptions{Add: []*KeyPackage{clients[1].kp, clients[2].kp, clients[3].kp}})
	if err != nil {
		tb.Fatal(err)
	}
	w.members = []*Group{g0}
	for _, c := range clients[1:] {
		g, err := Join(res.Welcome, c.kp, c.secrets, nil)
		if err != nil {
			tb.Fatal(err)
		}
		w.members = append(w.members, g)
	}
	for i, g := range w.members {
		w.members[i] = g.WithExternalPSK(insiderPSKID, insiderPSKSecret)
	}
	// A commit with a path by member 2, so parent nodes are set and leaf 3
	// sits below a node it shares with nobody else.
	w.do(tb, 2, func(g *Group) (*Group, *MLSMessage, error) {
		ng, res, err := g.Commit(CommitOptions{ForcePath: true})
		if err != nil {
			return nil, nil, err
		}
		return ng, res.Commit, nil
	})
	nonce := bytes.Repeat([]byte{7}, w.cs.Nh())
	w.do(tb, 2, func(g *Group) (*Group, *MLSMessage, error) { return g.ProposeUpdate() })
	w.do(tb, 3, func(g *Group) (*Group, *MLSMessage, error) { return g.ProposeRemove(2) })
	w.do(tb, 0, func(g *Group) (*Group, *MLSMessage, error) {
		return g.ProposeAdd(newInsiderClient(tb, "cached-add", insiderExt).kp)
	})
	w.do(tb, 2, func(g *Group) (*Group, *MLSMessage, error) {
		return g.ProposePreSharedKey(PreSharedKeyID{Type: PSKTypeExternal, PSKID: insiderPSKID, PSKNonce: nonce})
	})
	w.do(tb, 0, func(g *Group) (*Group, *MLSMessage, error) {
		return g.ProposeGroupContextExtensions(Extensions{externalSendersExtension(tb, "app")})
	})
	w.do(tb, 0, func(g *Group) (*Group, *MLSMessage, error) { return g.ProposeRemove(3) })
	w.do(tb, 3, func(g *Group) (*Group, *MLSMessage, error) { return g.ProposeUpdate() })
	w.do(tb, 0, func(g *Group) (*Group, *MLSMessage, error) {
		return g.ProposeReInit(ReInit{GroupID: []byte("insider-next"), Version: ProtocolMLS10, CipherSuite: scenarioSuite, Extensions: Extensions{}})
	})
	w.cached = w.members[insiderAttacker].proposals
	w.fresh = newInsiderClient(tb, "fresh", insiderExt)
	w.mutable = newInsiderClient(tb, "mutable", insiderExt)
	return w
}

// do has member by produce a message that every other member processes.
func (w *insiderWorld) do(tb testing.TB, by LeafIndex, f func(g *Group) (*Group, *MLSMessage, error)) {
	tb.Helper()
	g, m, err := f(w.members[by])
	if err != nil {
		tb.Fatalf("leaf %d: %v", by, err)
	}
	w.members[by] = g
	for i, o := range w.members {
		if LeafIndex(i) == by {
			continue
		}
		if w.members[i], _, err = o.Process(m); err != nil {
			tb.Fatalf("leaf %d processing from leaf %d: %v", i, by, err)
		}
	}
}

// fuzzBytes hands out the fuzzer's input a little at a time; past its end
// it gives zeros.
type fuzzBytes []byte

func (f *fuzzBytes) byte() byte {
	if len(*f) == 0 {
		return 0
	}
	b := (*f)[0]
	*f = (*f)[1:]
	return b
}

func (f *fuzzBytes) n(n int) int { return int(f.byte()) % n }

func (f *fuzzBytes) bytes(max int) []byte {
	n := f.n(max + 1)
	out := make([]byte, n)
	for i := range out {
		out[i] = f.byte()
	}
	return out
}

// insiderCommit is what the fuzzer made the attacker send.
type insiderCommit struct {
	props  []cachedProposal // resolved, in commit order
	commit *Commit
}

// extensionsFrom builds up to three extensions, duplicates and all.
func (w *insiderWorld) extensionsFrom(in *fuzzBytes) Extensions {
	exts := Extensions{}
	for range in.n(4) {
		var e Extension
		switch in.n(8) {
		case 0:
			e = Extension{Type: insiderExt, Data: in.bytes(4)}
		case 1:
			e = Extension{Type: 0xff01, Data: []byte{}}
		case 2:
			rc := RequiredCapabilities{Extensions: []ExtensionType{}, Proposals: []ProposalType{}, Credentials: []CredentialType{}}
			for range in.n(3) {
				switch in.n(5) {
				case 0:
					rc.Extensions = append(rc.Extensions, insiderExt)
				case 1:
					rc.Extensions = append(rc.Extensions, 0xff01)
				case 2:
					rc.Proposals = append(rc.Proposals, ProposalType(0xff00|uint16(in.n(2))))
				case 3:
					rc.Credentials = append(rc.Credentials, CredentialTypeX509)
				default:
					rc.Credentials = append(rc.Credentials, CredentialType(0xff00))
				}
			}
			b, _ := rc.Marshal()
			e = Extension{Type: ExtensionTypeRequiredCapabilities, Data: b}
		case 3:
			e = Extension{Type: ExtensionTypeRequiredCapabilities, Data: in.bytes(3)}
		case 4:
			e = Extension{Type: ExtensionTypeExternalSenders, Data: in.bytes(3)}
		case 5:
			e = Extension{Type: ExtensionTypeApplicationID, Data: in.bytes(3)}
		case 6:
			e = Extension{Type: ExtensionTypeRatchetTree, Data: in.bytes(3)}
		default:
			e = Extension{Type: ExtensionTypeExternalPub, Data: in.bytes(3)}
		}
		exts = append(exts, e)
	}
	return exts
}

// keyPackageFrom returns the mutable client's key package with the
// fuzzer's changes, signed again with the client's key (a malicious
// member controls the key packages it adds).
func (w *insiderWorld) keyPackageFrom(in *fuzzBytes) *KeyPackage {
	kp := *w.mutable.kp
	kp.LeafNode = *kp.LeafNode.Clone()
	sig := w.mutable.secrets.SignatureKey
	ln := &kp.LeafNode
	attacker := w.members[insiderAttacker]
	for range 1 + in.n(3) {
		switch in.n(12) {
		case 0:
			kp.CipherSuite = ciphersuite.Suite(1)
		case 1:
			kp.Version = ProtocolVersion(in.n(3))
		case 2:
			kp.InitKey = ln.EncryptionKey
		case 3: // the leaf key of a member
			ln.EncryptionKey = attacker.tree.Leaf(LeafIndex(in.n(4))).EncryptionKey
		case 4: // the attacker's own signature key
			ln.SignatureKey, sig = attacker.sig.PublicKey(), attacker.sig
		case 5:
			ln.Capabilities.Credentials = []CredentialType{CredentialTypeBasic}
		case 6:
			ln.Capabilities.Extensions = []ExtensionType{}
		case 7:
			ln.Extensions = Extensions{{Type: insiderExt, Data: in.bytes(2)}}
		case 8:
			ln.Credential = Credential{Type: CredentialTypeX509, Certificates: [][]byte{in.bytes(3)}}
		case 9:
			ln.Lifetime = Lifetime{NotBefore: uint64(in.byte()), NotAfter: uint64(in.byte())}
		case 10:
			ln.Credential = attacker.tree.Leaf(LeafIndex(in.n(4))).Credential
		default:
			ln.Capabilities.Credentials = append(ln.Capabilities.Credentials, CredentialType(0xff00))
		}
	}
	_ = ln.Sign(w.cs, sig, nil, 0)
	_ = kp.Sign(w.cs, sig)
	return &kp
}

// proposalFrom builds one entry of the commit's proposal list.
func (w *insiderWorld) proposalFrom(in *fuzzBytes) (ProposalOrRef, cachedProposal) {
	attacker := w.members[insiderAttacker]
	self := Sender{Type: SenderTypeMember, LeafIndex: insiderAttacker}
	var p *Proposal
	switch in.n(10) {
	case 0, 1:
		c := w.cached[in.n(len(w.cached))]
		return ProposalOrRef{Type: ProposalOrRefReference, Reference: c.ref}, c
	case 2:
		ref := bytes.Clone(w.cached[0].ref)
		ref[in.n(len(ref))] ^= 1 + in.byte()%255
		return ProposalOrRef{Type: ProposalOrRefReference, Reference: ref}, cachedProposal{ref: ref}
	case 3:
		p = &Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *w.fresh.kp}}
	case 4:
		p = &Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *w.keyPackageFrom(in)}}
	case 5:
		p = &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: LeafIndex(in.n(6))}}
	case 6: // an Update of the committer's own leaf, by value
		ln := attacker.tree.Leaf(insiderAttacker).Clone()
		key, _ := w.cs.GenerateHPKEKey()
		ln.EncryptionKey, ln.Source, ln.Lifetime, ln.ParentHash = key.PublicKey(), LeafNodeSourceUpdate, Lifetime{}, nil
		_ = ln.Sign(w.cs, attacker.sig, attacker.ctx.GroupID, insiderAttacker)
		p = &Proposal{Type: ProposalTypeUpdate, Update: &Update{LeafNode: *ln}}
	case 7:
		id := PreSharedKeyID{Type: PSKType(1 + in.n(2)), PSKID: insiderPSKID, Usage: ResumptionPSKUsage(1 + in.n(3)),
			PSKGroupID: attacker.ctx.GroupID, PSKEpoch: uint64(in.n(5)), PSKNonce: make([]byte, w.cs.Nh()-1+in.n(3))}
		if in.n(4) == 0 {
			id.PSKID, id.PSKGroupID = []byte("unknown"), []byte("other-group")
		}
		p = &Proposal{Type: ProposalTypePSK, PreSharedKey: &PreSharedKey{PSK: id}}
	case 8:
		p = &Proposal{Type: ProposalTypeGroupContextExtensions, GroupContextExtensions: &GroupContextExtensions{Extensions: w.extensionsFrom(in)}}
	default:
		if in.n(2) == 0 {
			p = &Proposal{Type: ProposalTypeExternalInit, ExternalInit: &ExternalInit{KEMOutput: in.bytes(32)}}
		} else {
			p = &Proposal{Type: ProposalTypeReInit, ReInit: &ReInit{GroupID: in.bytes(2), Version: ProtocolVersion(in.n(3)),
				CipherSuite: ciphersuite.Suite(in.n(8)), Extensions: w.extensionsFrom(in)}}
		}
	}
	return ProposalOrRef{Type: ProposalOrRefProposal, Proposal: p}, cachedProposal{sender: self, proposal: p}
}

// pathFrom makes the attacker's UpdatePath for the tree its proposals
// produce, as the fuzzer asks: honest, with an odd leaf, or with odd
// nodes. It returns nil when the fuzzer wants no path.
func (w *insiderWorld) pathFrom(in *fuzzBytes, props []cachedProposal) *UpdatePath {
	mode := in.n(4)
	if mode == 0 {
		return nil
	}
	attacker := w.members[insiderAttacker]
	ctx := attacker.ctx
	ctx.Epoch++
	tree := attacker.tree
	var exclude []LeafIndex
	known := slices.DeleteFunc(slices.Clone(props), func(p cachedProposal) bool { return p.proposal == nil })
	if eff, err := attacker.applyProposals(insiderAttacker, known); err == nil {
		tree, ctx.Extensions, exclude = eff.tree, eff.extensions, eff.added
	}
	leaf := tree.Leaf(insiderAttacker)
	if leaf == nil {
		return nil
	}
	leaf = leaf.Clone()
	sig := attacker.sig
	if mode == 2 {
		sig = w.oddLeaf(in, leaf, tree, sig)
	}
	up, err := tree.CreateUpdatePath(w.cs, ctx, insiderAttacker, leaf, sig, exclude, nil)
	if err != nil {
		return nil
	}
	path := up.Path
	if mode != 3 || len(path.Nodes) == 0 {
		return &path
	}
	nodes := append([]UpdatePathNode{}, path.Nodes...)
	i := in.n(len(nodes))
	op := in.n(7)
	switch op {
	case 0:
		nodes = nodes[:len(nodes)-1]
	case 1: // another node's key of the tree
		if other := tree.Leaf(LeafIndex(in.n(4))); other != nil {
			nodes[i].EncryptionKey = other.EncryptionKey
		}
	case 2:
		nodes[i].EncryptionKey = nodes[len(nodes)-1-i].EncryptionKey
	case 3:
		nodes[i].EncryptionKey = in.bytes(33)
	}
	path.Nodes = nodes
	// The attacker signs the leaf again with the parent hash its nodes
	// give and encrypts its path secrets again under the group context
	// they give, so that only the receivers' own checks stand in the way.
	pubs := make([]HPKEPublicKey, len(nodes))
	for j := range nodes {
		pubs[j] = nodes[j].EncryptionKey
	}
	m, err := tree.mergePath(w.cs, insiderAttacker, pubs)
	if err != nil {
		return &path
	}
	ln := path.LeafNode.Clone()
	ln.ParentHash = m.leafPH
	_ = ln.Sign(w.cs, sig, ctx.GroupID, insiderAttacker)
	path.LeafNode = *ln
	m.setLeaf(ln)
	_, gcBytes, err := withTreeHash(w.cs, ctx, m)
	if err != nil {
		return &path
	}
	for j, x := range m.fdp {
		secret, _ := up.PathSecret(x)
		node := UpdatePathNode{EncryptionKey: pubs[j]}
		for _, target := range m.tree.encryptionTargets(m.copath[j], exclude) {
			kem, ct, err := w.cs.EncryptWithLabel(m.tree.Node(target).encryptionKey(), labelUpdatePathNode, gcBytes, secret.Bytes())
			if err != nil {
				return &path
			}
			node.EncryptedPathSecret = append(node.EncryptedPathSecret, HPKECiphertext{KEMOutput: kem, Ciphertext: ct})
		}
		nodes[j] = node
	}
	switch n := len(nodes[i].EncryptedPathSecret); {
	case n == 0:
	case op == 4:
		nodes[i].EncryptedPathSecret = nodes[i].EncryptedPathSecret[:n-1]
	case op == 5:
		ct := nodes[i].EncryptedPathSecret[in.n(n)]
		ct.Ciphertext = bytes.Clone(ct.Ciphertext)
		ct.Ciphertext[in.n(len(ct.Ciphertext))] ^= 1
		nodes[i].EncryptedPathSecret = append(nodes[i].EncryptedPathSecret[1:], ct)
	case op == 6:
		nodes[i].EncryptedPathSecret = append(slices.Clone(nodes[i].EncryptedPathSecret), nodes[i].EncryptedPathSecret...)
	}
	return &path
}

// oddLeaf makes the fuzzer's changes to leaf, a copy of one of tree's,
// and returns the key to sign it with: sig, or a fresh key the leaf now
// carries.
func (w *insiderWorld) oddLeaf(in *fuzzBytes, leaf *LeafNode, tree RatchetTree, sig *ciphersuite.SignaturePrivateKey) *ciphersuite.SignaturePrivateKey {
	for range 1 + in.n(3) {
		switch in.n(8) {
		case 0:
			leaf.Capabilities.Extensions = []ExtensionType{}
		case 1:
			leaf.Capabilities.Credentials = []CredentialType{CredentialTypeX509}
			leaf.Credential = Credential{Type: CredentialTypeX509, Certificates: [][]byte{{1}}}
		case 2:
			leaf.Capabilities.Credentials = []CredentialType{CredentialTypeBasic}
		case 3:
			leaf.Extensions = Extensions{{Type: ExtensionType(0xff00 | uint16(in.n(2))), Data: []byte{}}}
		case 4:
			if other := tree.Leaf(LeafIndex(in.n(4))); other != nil {
				leaf.SignatureKey = other.SignatureKey
			}
		case 5:
			sig, _ = w.cs.GenerateSignatureKey()
			leaf.SignatureKey = sig.PublicKey()
		case 6:
			leaf.Capabilities.Credentials = append(leaf.Capabilities.Credentials, CredentialType(0xff00))
			leaf.Credential = Credential{Type: 0xff00, Identity: []byte("odd")}
		default:
			leaf.Capabilities.Versions = []ProtocolVersion{}
		}
	}
	return sig
}

// commitFrom decodes the fuzzer's input into the attacker's commit.
func (w *insiderWorld) commitFrom(in *fuzzBytes) *insiderCommit {
	ic := &insiderCommit{commit: &Commit{Proposals: []ProposalOrRef{}}}
	for range in.n(6) {
		por, cp := w.proposalFrom(in)
		ic.commit.Proposals = append(ic.commit.Proposals, por)
		ic.props = append(ic.props, cp)
	}
	ic.commit.Path = w.pathFrom(in, ic.props)
	return ic
}

// seal frames and protects the commit as the attacker, with a
// confirmation tag that the first honest member able to derive one
// derives: the strongest attacker there is.
func (w *insiderWorld) seal(in *fuzzBytes, c *Commit) *MLSMessage {
	attacker := w.members[insiderAttacker].WithHandshakeEncryption(in.n(2) == 1)
	ac, content, err := attacker.frameOf(ContentTypeCommit, in.bytes(3), nil, nil, c)
	if err != nil {
		return nil
	}
	ac.Auth.ConfirmationTag = make([]byte, w.cs.Nh())
	for l, g := range w.members {
		if LeafIndex(l) == insiderAttacker {
			continue
		}
		if n, removed, err := g.clone().commitEpoch(ac, content); err == nil && !removed {
			ac.Auth.ConfirmationTag = n.confirmationTag
			break
		}
	}
	m, err := attacker.protectOf(ac, content)
	if err != nil {
		return nil
	}
	return m
}

func FuzzInsiderCommit(f *testing.F) {
	// Seeds: each kind of proposal alone, with and without a path, and a
	// few mixes.
	for _, s := range [][]byte{
		{0, 1},          // empty commit, honest path
		{0, 0},          // empty commit without a path
		{1, 0, 0, 1},    // cached Update by reference
		{1, 0, 1, 1},    // cached Remove by reference
		{1, 0, 2, 0},    // cached Add by reference
		{1, 0, 3, 0},    // cached PSK by reference
		{1, 0, 4, 1},    // cached GCE by reference
		{1, 0, 7, 0},    // cached ReInit by reference
		{1, 3, 0},       // inline Add, no path
		{1, 3, 1},       // inline Add, path
		{1, 5, 0, 1},    // inline Remove of leaf 0
		{1, 5, 3, 2, 3}, // inline Remove of leaf 3, odd leaf
		{1, 6, 1},       // committer's own Update
		{1, 7, 0, 0, 0, 1, 1, 0},
		{1, 8, 1, 2, 1, 0, 1},
		{1, 9, 1, 1, 1, 1, 0, 0, 0},
		{1, 4, 0, 3, 1, 0},
		{2, 0, 0, 0, 1, 1, 3, 0, 0},
		{3, 3, 5, 3, 0, 5, 3, 1, 3, 1, 4},
		{0, 3, 0, 2},
		{0, 3, 0, 3},
		{0, 3, 1, 5},
		{0, 3, 1, 6},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w := insiderWorldFor(t)
		in := fuzzBytes(data)
		ic := w.commitFrom(&in)
		m := w.seal(&in, ic.commit)
		if m == nil {
			return
		}
		w.deliver(t, m, insiderAttacker, func(old, n *Group, _ *Received) { checkAccepted(t, w.cs, old, n, ic) })
	})
}

// isFuzzRefusal reports whether err, a refusal of what an attacker sent,
// wraps one of the sentinels a caller tests.
func isFuzzRefusal(err error) bool {
	for _, s := range []error{ErrInvalidProposal, ErrInvalidUpdatePath, ErrInvalidKeyPackage, ErrTampered, ErrUnknownPSK,
		ErrInvalidLeafNode, ErrInvalidTree, ErrBadSignature, ErrDecode, ErrWrongGroup, ErrWrongEpoch, ErrNotMember, ciphersuite.ErrUnsupportedSuite} {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

// deliver has every member but skip process m and checks what each
// accepts with check. Those that accept, and the followers (the sender's
// own state, when it is a joiner that must be in the same epoch), must
// agree, and the group must go on from there.
func (w *insiderWorld) deliver(t *testing.T, m *MLSMessage, skip LeafIndex, check func(old, n *Group, r *Received), followers ...*Group) {
	accepted := map[LeafIndex]*Group{}
	for l, g := range w.members {
		if LeafIndex(l) == skip {
			continue
		}
		ng, r, err := g.Process(m)
		if err != nil {
			if !isFuzzRefusal(err) {
				t.Errorf("leaf %d refused with an error of no sentinel: %v", l, err)
			}
			continue
		}
		if r.Removed {
			continue
		}
		check(g, ng, r)
		accepted[LeafIndex(l)] = ng
	}
	if len(accepted) > 0 {
		for _, f := range followers {
			accepted[f.me] = f
		}
	}
	var ref *Group
	for l, g := range accepted {
		if ref == nil {
			ref = g
			continue
		}
		if !bytes.Equal(g.EpochAuthenticator(), ref.EpochAuthenticator()) || !bytes.Equal(g.ctx.TreeHash, ref.ctx.TreeHash) {
			t.Fatalf("leaf %d and leaf %d accepted the commit and disagree on the epoch", l, ref.me)
		}
	}
	if ref == nil || ref.reinit != nil {
		return
	}
	// The group must go on: an honest member commits with a path and the
	// others that accepted follow.
	next, res, err := ref.Commit(CommitOptions{ForcePath: true})
	if err != nil {
		t.Fatalf("leaf %d cannot commit after accepting the commit: %v", ref.me, err)
	}
	for l, g := range accepted {
		if l == ref.me {
			continue
		}
		ng, _, err := g.Process(res.Commit)
		if err != nil {
			t.Fatalf("leaf %d cannot process leaf %d's next commit: %v", l, ref.me, err)
		}
		if !bytes.Equal(ng.EpochAuthenticator(), next.EpochAuthenticator()) {
			t.Fatalf("leaf %d and leaf %d disagree after the next commit", l, ref.me)
		}
	}
}

// checkAccepted checks the state n that an honest member accepted from
// old for the attacker's commit ic: it saves and loads to the same bytes,
// its tree validates, its private keys match, and none of RFC 9420's
// MUST-reject rules for a commit applies (§12.2, §12.1.x, §12.4.2, §7.3):
//   - an Update by the committer, a Remove of the committer;
//   - two Updates or Removes of one leaf; a Remove of a blank leaf;
//   - the same PSK twice; a psk_nonce not Nh bytes; a resumption PSK of
//     usage reinit or branch outside a new group;
//   - two GroupContextExtensions; a ReInit with any other proposal; a
//     ReInit to a lower version; an ExternalInit in a member's commit;
//   - an Add whose key package has another suite or version;
//   - no path when the list is empty or has an Update, Remove or GCE;
//   - a group context extension some member does not support, or required
//     capabilities some member lacks (via the tree check);
//   - a tree that breaks §7.3 / §7.9 (keys unique, signatures, credential
//     support), via RatchetTree.Validate.
func checkAccepted(t *testing.T, cs *ciphersuite.CipherSuite, old, n *Group, ic *insiderCommit) {
	t.Helper()
	if err := mustRejectRule(cs, old, ic); err != nil {
		t.Fatalf("leaf %d accepted a commit RFC 9420 says to reject: %v", old.me, err)
	}
	checkConsistent(t, cs, old, n)
}

// checkConsistent checks the state n that an honest member accepted from
// old: the next epoch, a tree that validates and matches the tree hash,
// private keys that match it, group context extensions every member
// supports, and a state that saves and loads to the same bytes.
func checkConsistent(t *testing.T, cs *ciphersuite.CipherSuite, old, n *Group) {
	t.Helper()
	if n.Epoch() != old.Epoch()+1 {
		t.Fatalf("leaf %d: epoch %d after epoch %d", old.me, n.Epoch(), old.Epoch())
	}
	checkState(t, cs, n)
}

// checkState is checkConsistent without the epoch: for a state that a
// client entered by joining.
func checkState(t *testing.T, cs *ciphersuite.CipherSuite, n *Group) {
	t.Helper()
	if err := n.tree.Validate(cs, n.ctx.GroupID, n.ctx.Extensions); err != nil {
		t.Fatalf("leaf %d accepted a commit that leaves an invalid tree: %v", n.me, err)
	}
	if th, err := n.tree.TreeHash(cs); err != nil || !bytes.Equal(th, n.ctx.TreeHash) {
		t.Fatalf("leaf %d: tree hash does not match the group context (%v)", n.me, err)
	}
	if err := n.keys.CheckAgainst(n.tree); err != nil {
		t.Fatalf("leaf %d: private keys do not match the tree: %v", n.me, err)
	}
	var bad error
	n.tree.Leaves(func(l LeafIndex, ln *LeafNode) {
		for _, e := range n.ctx.Extensions {
			if bad == nil && !ln.Capabilities.SupportsExtension(e.Type) {
				bad = fmt.Errorf("leaf %d does not support group context extension %d", l, e.Type)
			}
		}
	})
	if bad != nil {
		t.Fatalf("leaf %d accepted: %v", n.me, bad)
	}
	b, err := n.MarshalBinary()
	if err != nil {
		t.Fatalf("leaf %d: saving the accepted state: %v", n.me, err)
	}
	loaded, err := UnmarshalState(b)
	if err != nil {
		t.Fatalf("leaf %d: loading the accepted state: %v", n.me, err)
	}
	b2, err := loaded.MarshalBinary()
	if err != nil || !bytes.Equal(b, b2) || !bytes.Equal(loaded.EpochAuthenticator(), n.EpochAuthenticator()) {
		t.Fatalf("leaf %d: the accepted state does not load back the same (%v)", n.me, err)
	}
}

// mustRejectRule reports the first MUST-reject rule of RFC 9420 that the
// commit ic breaks for the member in old, checked independently of
// applyProposals.
func mustRejectRule(cs *ciphersuite.CipherSuite, old *Group, ic *insiderCommit) error {
	committer := insiderAttacker
	touched := map[LeafIndex]bool{}
	psks := map[string]bool{}
	gce, reinit := 0, false
	needPath := len(ic.props) == 0
	for i, p := range ic.props {
		if p.proposal == nil {
			return fmt.Errorf("§12.4.2: proposal %d references no cached proposal", i)
		}
		switch p.proposal.Type {
		case ProposalTypeUpdate:
			needPath = true
			l := p.sender.LeafIndex
			if l == committer {
				return fmt.Errorf("§12.2: Update %d from the committer", i)
			}
			if touched[l] {
				return fmt.Errorf("§12.2: leaf %d updated or removed twice", l)
			}
			touched[l] = true
		case ProposalTypeRemove:
			needPath = true
			l := p.proposal.Remove.Removed
			if l == committer {
				return fmt.Errorf("§12.2: Remove %d of the committer", i)
			}
			if touched[l] {
				return fmt.Errorf("§12.2: leaf %d updated or removed twice", l)
			}
			if old.tree.Leaf(l) == nil {
				return fmt.Errorf("§12.1.3: Remove of blank leaf %d", l)
			}
			touched[l] = true
		case ProposalTypePSK:
			id := p.proposal.PreSharedKey.PSK
			if len(id.PSKNonce) != cs.Nh() {
				return fmt.Errorf("§8.4: psk_nonce of %d bytes", len(id.PSKNonce))
			}
			if id.Type == PSKTypeResumption && id.Usage != ResumptionPSKUsageApplication {
				return fmt.Errorf("§12.1.4: resumption PSK of usage %d in a running group", id.Usage)
			}
			b, _ := id.Marshal()
			if psks[string(b)] {
				return fmt.Errorf("§12.2: PSK %d repeated", i)
			}
			psks[string(b)] = true
		case ProposalTypeGroupContextExtensions:
			needPath = true
			if gce++; gce > 1 {
				return fmt.Errorf("§12.2: two GroupContextExtensions")
			}
		case ProposalTypeReInit:
			reinit = true
			if p.proposal.ReInit.Version < old.ctx.Version {
				return fmt.Errorf("§12.1.5: ReInit to a lower version")
			}
		case ProposalTypeExternalInit:
			return fmt.Errorf("§12.2: ExternalInit in a member's commit")
		case ProposalTypeAdd:
			kp := p.proposal.Add.KeyPackage
			if kp.CipherSuite != old.ctx.CipherSuite || kp.Version != old.ctx.Version {
				return fmt.Errorf("§12.1.1: Add of a key package of suite %d version %d", kp.CipherSuite, kp.Version)
			}
			if err := kp.Validate(); err != nil {
				return fmt.Errorf("§12.1.1: Add of an invalid key package: %v", err)
			}
		}
	}
	if reinit && len(ic.props) > 1 {
		return fmt.Errorf("§12.2: ReInit with other proposals")
	}
	if needPath && ic.commit.Path == nil {
		return fmt.Errorf("§12.4: path required and absent")
	}
	return nil
}

// insiderWelcome is the attacker's honest commit adding a client, the
// starting point of the Welcomes FuzzInsiderWelcome forges.
type insiderWelcome struct {
	joiner scClient
	next   *Group // the attacker in the new epoch
	gi     *GroupInfo
	gs     GroupSecrets
}

var (
	insiderWelcomeOnce sync.Once
	insiderWelcomeW    *insiderWelcome
)

func insiderWelcomeFor(tb testing.TB) (*insiderWorld, *insiderWelcome) {
	w := insiderWorldFor(tb)
	insiderWelcomeOnce.Do(func() {
		j := newInsiderClient(tb, "joiner", insiderExt)
		next, res, err := w.members[insiderAttacker].Commit(CommitOptions{Add: []*KeyPackage{j.kp}, ForcePath: true})
		if err != nil {
			tb.Fatal(err)
		}
		l, _ := next.tree.FindLeaf(&j.kp.LeafNode)
		// The path secret of the joiner's common ancestor with the
		// attacker: what the honest Welcome carries.
		insiderWelcomeW = &insiderWelcome{joiner: j, next: next, gi: res.GroupInfo, gs: openGroupSecrets(tb, w.cs, res.Welcome.Welcome, j, l)}
	})
	if insiderWelcomeW == nil {
		tb.Fatal("insider Welcome failed to build")
	}
	return w, insiderWelcomeW
}

// openGroupSecrets decrypts the group secrets the Welcome wm holds for
// j, the joiner at leaf l.
func openGroupSecrets(tb testing.TB, cs *ciphersuite.CipherSuite, wm *Welcome, j scClient, l LeafIndex) GroupSecrets {
	tb.Helper()
	ref, _ := j.kp.Ref()
	i := slices.IndexFunc(wm.Secrets, func(s EncryptedGroupSecrets) bool { return bytes.Equal(s.NewMember, ref) })
	if i < 0 {
		tb.Fatal("the honest Welcome has no secrets for the joiner")
	}
	plain, err := cs.DecryptWithLabel(j.secrets.InitKey, labelWelcomeSecrets, wm.EncryptedGroupInfo, wm.Secrets[i].EncryptedGroupSecrets.KEMOutput, wm.Secrets[i].EncryptedGroupSecrets.Ciphertext)
	if err != nil {
		tb.Fatalf("opening the honest Welcome for leaf %d: %v", l, err)
	}
	var gs GroupSecrets
	if err := gs.Unmarshal(plain); err != nil {
		tb.Fatal(err)
	}
	return gs
}

// forgeWelcome builds the Welcome the fuzzer describes: the honest one's
// GroupInfo, tree and group secrets changed, the tree hash and
// confirmation tag recomputed unless the fuzzer says not to, signed by
// the attacker and encrypted to the joiner.
func (w *insiderWorld) forgeWelcome(in *fuzzBytes, iw *insiderWelcome) *MLSMessage {
	gi := *iw.gi
	gc := iw.next.GroupContext()
	gs := iw.gs
	gs.PSKs = slices.Clone(gs.PSKs)
	tree, err := UnmarshalRatchetTree(mustTreeExt(iw.gi))
	if err != nil {
		return nil
	}
	me, _ := tree.FindLeaf(&iw.joiner.kp.LeafNode)
	attacker := iw.next
	withTree, fixHash, fixTag := true, true, true
	parent := func() (NodeIndex, *ParentNode) {
		x := NodeIndex(2*in.n(tree.NodeWidth()/2) + 1)
		if p := tree.Node(x).Parent; p != nil {
			c := *p
			c.UnmergedLeaves = slices.Clone(c.UnmergedLeaves)
			return x, &c
		}
		return x, nil
	}
	for range in.n(4) {
		switch in.n(16) {
		case 0:
			x, _ := parent()
			tree.setNode(x, Node{})
		case 1:
			if x, p := parent(); p != nil {
				if i := slices.Index(p.UnmergedLeaves, me); i >= 0 {
					p.UnmergedLeaves = slices.Delete(p.UnmergedLeaves, i, i+1)
				} else {
					p.UnmergedLeaves = append(p.UnmergedLeaves, me)
					slices.Sort(p.UnmergedLeaves)
				}
				tree.setNode(x, Node{Parent: p})
			}
		case 2:
			if x, p := parent(); p != nil {
				if other := tree.Leaf(LeafIndex(in.n(int(tree.LeafCount())))); other != nil {
					p.EncryptionKey = other.EncryptionKey
				} else {
					p.EncryptionKey = in.bytes(33)
				}
				tree.setNode(x, Node{Parent: p})
			}
		case 3:
			if x, p := parent(); p != nil && len(p.ParentHash) > 0 {
				p.ParentHash = bytes.Clone(p.ParentHash)
				p.ParentHash[in.n(len(p.ParentHash))] ^= 1
				tree.setNode(x, Node{Parent: p})
			}
		case 4:
			gc.Epoch = uint64(in.byte())
		case 5:
			gc.Extensions = w.extensionsFrom(in)
		case 6:
			gi.Signer = LeafIndex(in.n(6))
		case 7:
			if l := LeafIndex(in.n(int(tree.LeafCount()))); l != me {
				tree.setNode(l.Node(), Node{})
			}
		case 8: // a leaf of the attacker's making at a blank or other leaf
			l := LeafIndex(in.n(int(tree.LeafCount())))
			ln := w.keyPackageFrom(in).LeafNode.Clone()
			tree.setNode(l.Node(), Node{Leaf: ln})
		case 9:
			gs.PathSecret = nil
		case 10:
			gs.PathSecret = &PathSecret{PathSecret: ciphersuite.NewSecret(in.bytes(33))}
		case 11:
			nonce := make([]byte, w.cs.Nh()-1+in.n(3))
			gs.PSKs = append(gs.PSKs, PreSharedKeyID{Type: PSKType(1 + in.n(2)), PSKID: insiderPSKID, Usage: ResumptionPSKUsage(1 + in.n(3)),
				PSKGroupID: gc.GroupID, PSKEpoch: uint64(in.n(6)), PSKNonce: nonce})
		case 12:
			withTree = false
		case 13:
			gc.ConfirmedTranscriptHash = in.bytes(32)
		case 14:
			fixHash = false
		default:
			fixTag = false
		}
	}
	gi.Extensions = Extensions{}
	if withTree {
		e, err := tree.Extension()
		if err != nil {
			return nil
		}
		gi.Extensions = append(gi.Extensions, e)
	}
	if fixHash {
		if gc.TreeHash, err = tree.TreeHash(w.cs); err != nil {
			return nil
		}
	}
	gi.GroupContext = gc
	psk, _ := attacker.pskSecretFor(gs.PSKs)
	gcBytes, err := gc.Marshal()
	if err != nil {
		return nil
	}
	joiner := gs.JoinerSecret
	if fixTag {
		if gi.ConfirmationTag, err = confirmationTagFor(w.cs, joiner, psk, gcBytes, gc.ConfirmedTranscriptHash); err != nil {
			return nil
		}
	}
	if err := gi.Sign(w.cs, attacker.sig); err != nil {
		return nil
	}
	giBytes, err := gi.Marshal()
	if err != nil {
		return nil
	}
	ws, err := keyschedule.WelcomeSecret(w.cs, joiner, psk)
	if err != nil {
		return nil
	}
	key, nonce, err := keyschedule.WelcomeKeyNonce(w.cs, ws)
	if err != nil {
		return nil
	}
	egi, err := w.cs.Seal(key.Bytes(), nonce.Bytes(), nil, giBytes)
	if err != nil {
		return nil
	}
	plain, err := gs.Marshal()
	if err != nil {
		return nil
	}
	kem, ct, err := w.cs.EncryptWithLabel(iw.joiner.kp.InitKey, labelWelcomeSecrets, egi, plain)
	if err != nil {
		return nil
	}
	ref, err := iw.joiner.kp.Ref()
	if err != nil {
		return nil
	}
	return &MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatWelcome, Welcome: &Welcome{CipherSuite: w.cs.ID(), EncryptedGroupInfo: egi,
		Secrets: []EncryptedGroupSecrets{{NewMember: ref, EncryptedGroupSecrets: HPKECiphertext{KEMOutput: kem, Ciphertext: ct}}}}}
}

// insiderJoinOptions gives a joiner the PSK every member holds.
func insiderJoinOptions() *JoinOptions {
	return &JoinOptions{ExternalPSKs: []ExternalPSK{{ID: insiderPSKID, Secret: ciphersuite.NewSecret(insiderPSKSecret)}}}
}

// mustTreeExt returns the ratchet_tree extension's data of gi.
func mustTreeExt(gi *GroupInfo) []byte {
	e, _ := gi.Extensions.Find(ExtensionTypeRatchetTree)
	return e.Data
}

// FuzzInsiderWelcome has a joiner process Welcomes a malicious member
// forged (GroupInfo, tree and group secrets, signed and encrypted with the
// real keys). What it accepts must hold together: the tree validates
// (RFC 9420 §12.4.3.1: signature, tree hash, §7.9 tree validity, the
// joiner's leaf, path secret matching the tree, confirmation tag), the
// private keys match it, the state saves and loads, and the joiner can
// commit in it.
func FuzzInsiderWelcome(f *testing.F) {
	for _, s := range [][]byte{
		{0}, {1, 0, 0}, {1, 1, 0}, {1, 2, 0}, {1, 3, 0}, {1, 4, 9}, {1, 5, 1, 2, 1, 0}, {1, 6, 3}, {1, 7, 2},
		{1, 8, 3, 1, 7, 1}, {1, 9}, {1, 10, 32}, {1, 11, 0, 1, 0, 1}, {1, 12}, {1, 13, 1}, {1, 14}, {1, 15},
		{2, 9, 1, 1, 0}, {3, 0, 1, 9, 7, 3},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, iw := insiderWelcomeFor(t)
		in := fuzzBytes(data)
		m := w.forgeWelcome(&in, iw)
		if m == nil {
			return
		}
		j := iw.joiner
		g, err := Join(m, j.kp, j.secrets, insiderJoinOptions())
		if err != nil {
			return
		}
		cs := w.cs
		if err := g.tree.Validate(cs, g.ctx.GroupID, g.ctx.Extensions); err != nil {
			t.Fatalf("joined with an invalid tree: %v", err)
		}
		if th, err := g.tree.TreeHash(cs); err != nil || !bytes.Equal(th, g.ctx.TreeHash) {
			t.Fatalf("joined a tree whose hash is not the group context's (%v)", err)
		}
		if err := g.keys.CheckAgainst(g.tree); err != nil {
			t.Fatalf("joined with private keys that do not match the tree: %v", err)
		}
		if !bytes.Equal(g.tree.Leaf(g.me).EncryptionKey, j.kp.LeafNode.EncryptionKey) {
			t.Fatalf("joined at leaf %d, which is not the key package's", g.me)
		}
		b, err := g.MarshalBinary()
		if err != nil {
			t.Fatalf("saving the joined state: %v", err)
		}
		loaded, err := UnmarshalState(b)
		if err != nil {
			t.Fatalf("loading the joined state: %v", err)
		}
		if b2, err := loaded.MarshalBinary(); err != nil || !bytes.Equal(b, b2) {
			t.Fatalf("the joined state does not load back the same (%v)", err)
		}
		if _, _, err := g.Commit(CommitOptions{ForcePath: true}); err != nil {
			t.Fatalf("the joiner cannot commit in the group it joined: %v", err)
		}
	})
}

// FuzzInsiderProposal has the malicious member send a proposal of the
// fuzzer's making (an Update with an odd leaf, an Add of an odd key
// package, a Remove, PSK, GroupContextExtensions, ReInit or ExternalInit),
// signed and protected with its real keys. The honest members must agree
// on whether to cache it, and a cached proposal must not stop the group:
// an honest member commits what it holds and the others follow.
func FuzzInsiderProposal(f *testing.F) {
	for _, s := range [][]byte{
		{0, 0, 0}, {0, 1, 1}, {0, 2, 3}, {0, 3, 5}, {0, 4, 6}, {0, 5, 0}, {0, 6, 2},
		{1, 3}, {1, 4, 0, 4}, {1, 4, 0, 3, 2}, {1, 5, 3}, {1, 5, 1}, {1, 7, 1, 0, 0, 1},
		{1, 8, 1, 2, 1, 0}, {1, 8, 1, 0}, {1, 9, 1, 1, 1, 1, 0}, {1, 9, 0, 3},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w := insiderWorldFor(t)
		in := fuzzBytes(data)
		p := w.standaloneProposal(&in)
		if p == nil {
			return
		}
		attacker := w.members[insiderAttacker].WithHandshakeEncryption(in.n(2) == 1)
		ac, content, err := attacker.frameOf(ContentTypeProposal, in.bytes(3), nil, p, nil)
		if err != nil {
			return
		}
		m, err := attacker.protectOf(ac, content)
		if err != nil {
			return
		}
		accepted := map[LeafIndex]*Group{}
		for l, g := range w.members {
			if LeafIndex(l) == insiderAttacker {
				continue
			}
			if ng, _, err := g.Process(m); err == nil {
				accepted[LeafIndex(l)] = ng
			}
		}
		if len(accepted) == 0 {
			return
		}
		if len(accepted) != len(w.members)-1 {
			t.Fatalf("only leaves %v of the honest members cached the proposal", slices.Collect(maps.Keys(accepted)))
		}
		next, res, err := accepted[0].Commit(CommitOptions{})
		if err != nil {
			t.Fatalf("leaf 0 cannot commit the proposals it holds: %v", err)
		}
		for l, g := range accepted {
			if l == 0 {
				continue
			}
			ng, r, err := g.Process(res.Commit)
			if err != nil {
				t.Fatalf("leaf %d cannot process leaf 0's commit of the proposals: %v", l, err)
			}
			if !r.Removed && !bytes.Equal(ng.EpochAuthenticator(), next.EpochAuthenticator()) {
				t.Fatalf("leaf %d and leaf 0 disagree after the commit", l)
			}
		}
	})
}

// standaloneProposal is a proposal the attacker sends on its own: an
// Update of its leaf with the fuzzer's changes, or one of proposalFrom's
// by-value proposals (nil for a reference).
func (w *insiderWorld) standaloneProposal(in *fuzzBytes) *Proposal {
	if in.n(2) == 1 {
		por, _ := w.proposalFrom(in)
		return por.Proposal
	}
	attacker := w.members[insiderAttacker]
	ln := attacker.tree.Leaf(insiderAttacker).Clone()
	key, err := w.cs.GenerateHPKEKey()
	if err != nil {
		return nil
	}
	ln.EncryptionKey, ln.Source, ln.Lifetime, ln.ParentHash = key.PublicKey(), LeafNodeSourceUpdate, Lifetime{}, nil
	sig := w.oddLeaf(in, ln, attacker.tree, attacker.sig)
	if err := ln.Sign(w.cs, sig, attacker.ctx.GroupID, insiderAttacker); err != nil {
		return nil
	}
	return &Proposal{Type: ProposalTypeUpdate, Update: &Update{LeafNode: *ln}}
}
