package mls

import (
	"bytes"
	"fmt"
	"maps"
	"slices"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
)

// The external targets play attackers from outside the group: a client
// that got a GroupInfo and sends an external commit of the fuzzer's
// making (FuzzExternalCommit), a malicious member that serves a forged
// GroupInfo to an honest joiner (FuzzExternalGroupInfo), and an external
// sender listed in the group's external_senders or a client proposing its
// own Add (FuzzExternalProposal). They reuse the insider world: its group
// of four, in an epoch with proposals cached, and its input decoders.

// outsider is what an external attacker holds: the GroupInfo a member
// served, the external init it derives from it, and leaves of two
// identities (its own, and member 2's, for a resync), with their keys.
type outsider struct {
	gi        *GroupInfo
	kemOutput []byte
	init      []byte // the init secret kemOutput gives
	leaves    [2]*LeafNode
	sigs      [2]*ciphersuite.SignaturePrivateKey
}

var (
	outsiderOnce sync.Once
	outsiderV    *outsider
)

// outsiderLeaf returns a fresh leaf of credential, and its signature key.
func outsiderLeaf(tb testing.TB, cs *ciphersuite.CipherSuite, credential Credential) (*LeafNode, *ciphersuite.SignaturePrivateKey) {
	tb.Helper()
	sig, err := cs.GenerateSignatureKey()
	if err != nil {
		tb.Fatal(err)
	}
	caps := &Capabilities{Versions: []ProtocolVersion{ProtocolMLS10}, CipherSuites: []ciphersuite.Suite{scenarioSuite},
		Extensions: []ExtensionType{insiderExt}, Proposals: []ProposalType{}, Credentials: []CredentialType{CredentialTypeBasic, CredentialTypeX509}}
	kp, _, err := NewKeyPackage(scenarioSuite, credential, sig, &KeyPackageOptions{Capabilities: caps})
	if err != nil {
		tb.Fatal(err)
	}
	return kp.LeafNode.Clone(), sig
}

func outsiderFor(tb testing.TB) (*insiderWorld, *outsider) {
	w := insiderWorldFor(tb)
	outsiderOnce.Do(func() {
		gi, err := w.members[0].ExternalGroupInfo(true)
		if err != nil {
			tb.Fatal(err)
		}
		e, _ := gi.Extensions.Find(ExtensionTypeExternalPub)
		var pub ExternalPub
		if err := pub.Unmarshal(e.Data); err != nil {
			tb.Fatal(err)
		}
		o := &outsider{gi: gi}
		if o.kemOutput, o.init, err = w.cs.ExportSend(pub.ExternalPub, labelExternalInit, w.cs.Nh()); err != nil {
			tb.Fatal(err)
		}
		o.leaves[0], o.sigs[0] = outsiderLeaf(tb, w.cs, NewBasicCredential([]byte("outsider")))
		o.leaves[1], o.sigs[1] = outsiderLeaf(tb, w.cs, w.members[2].tree.Leaf(2).Credential)
		outsiderV = o
	})
	if outsiderV == nil {
		tb.Fatal("outsider failed to build")
	}
	return w, outsiderV
}

// externalProposalFrom builds one entry of an external commit's list: an
// ExternalInit (the attacker's, or odd bytes), a Remove, or any of the
// insider's proposals (references, Adds, Updates, PSKs, ...).
func (w *insiderWorld) externalProposalFrom(in *fuzzBytes, o *outsider) (ProposalOrRef, cachedProposal) {
	self := Sender{Type: SenderTypeNewMemberCommit}
	var p *Proposal
	switch in.n(6) {
	case 0, 1:
		p = &Proposal{Type: ProposalTypeExternalInit, ExternalInit: &ExternalInit{KEMOutput: o.kemOutput}}
	case 2:
		var kem []byte
		switch in.n(3) {
		case 0:
			kem = in.bytes(33)
		case 1: // a point of the group's: a leaf key
			kem = w.members[0].tree.Leaf(LeafIndex(in.n(4))).EncryptionKey
		default: // a point of low order
			kem = make([]byte, 32)
		}
		p = &Proposal{Type: ProposalTypeExternalInit, ExternalInit: &ExternalInit{KEMOutput: kem}}
	case 3:
		p = &Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: LeafIndex(in.n(6))}}
	default:
		por, cp := w.proposalFrom(in)
		if por.Type == ProposalOrRefProposal {
			cp.sender = self
		}
		return por, cp
	}
	return ProposalOrRef{Type: ProposalOrRefProposal, Proposal: p}, cachedProposal{sender: self, proposal: p}
}

// externalCommitFrom builds the outsider's external commit as the fuzzer
// describes: its proposals, a path from the leftmost free leaf (honest,
// with an odd leaf, or none), signed with the path leaf's key, and a
// confirmation tag the outsider derives from its init secret (or odd
// bytes).
func (w *insiderWorld) externalCommitFrom(in *fuzzBytes, o *outsider) (*MLSMessage, *insiderCommit) {
	cs, g0 := w.cs, w.members[0]
	who := in.n(2)
	ic := &insiderCommit{commit: &Commit{Proposals: []ProposalOrRef{}}}
	for range in.n(5) {
		por, cp := w.externalProposalFrom(in, o)
		ic.commit.Proposals = append(ic.commit.Proposals, por)
		ic.props = append(ic.props, cp)
	}
	gc := o.gi.GroupContext
	newCtx := gc
	newCtx.Epoch++
	tree := g0.tree
	var psks []PreSharedKeyID
	known := slices.DeleteFunc(slices.Clone(ic.props), func(p cachedProposal) bool {
		return p.proposal == nil || p.proposal.Type == ProposalTypeExternalInit
	})
	if eff, err := g0.applyProposals(noLeaf, known); err == nil {
		tree, newCtx.Extensions, psks = eff.tree, eff.extensions, eff.psks
	}
	leaf, sig := o.leaves[who].Clone(), o.sigs[who]
	commitSecret := keyschedule.Secret{}
	if mode := in.n(4); mode != 0 {
		if mode == 2 {
			sig = w.oddLeaf(in, leaf, tree, sig)
			if _, err := leaf.Marshal(); err != nil {
				return nil, nil // a leaf no wire carries
			}
		}
		t2, me := tree.AddLeaf(leaf)
		up, err := t2.CreateUpdatePath(cs, newCtx, me, t2.Leaf(me), sig, nil, nil)
		if err != nil {
			return nil, nil
		}
		ic.commit.Path = &up.Path
		commitSecret = up.CommitSecret
		if newCtx.TreeHash, err = up.Tree.TreeHash(cs); err != nil {
			return nil, nil
		}
	}
	ac := &AuthenticatedContent{WireFormat: WireFormatPublicMessage, Content: FramedContent{
		GroupID: gc.GroupID, Epoch: gc.Epoch, Sender: Sender{Type: SenderTypeNewMemberCommit},
		AuthenticatedData: in.bytes(3), ContentType: ContentTypeCommit, Commit: ic.commit,
	}}
	var err error
	if ac.Auth.Signature, err = signFramedContent(cs, sig, ac.WireFormat, &ac.Content, &gc); err != nil {
		return nil, nil
	}
	interim, err := interimTranscriptHash(cs, gc.ConfirmedTranscriptHash, o.gi.ConfirmationTag)
	if err != nil {
		return nil, nil
	}
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHash(cs, interim, ac); err != nil {
		return nil, nil
	}
	gcBytes, err := newCtx.Marshal()
	if err != nil {
		return nil, nil
	}
	psk, _ := g0.pskSecretFor(psks)
	joiner, err := keyschedule.JoinerSecret(cs, ciphersuite.NewSecret(o.init), commitSecret, gcBytes)
	if err != nil {
		return nil, nil
	}
	if ac.Auth.ConfirmationTag, err = confirmationTagFor(cs, joiner, psk, gcBytes, newCtx.ConfirmedTranscriptHash); err != nil {
		return nil, nil
	}
	if in.n(8) == 7 {
		ac.Auth.ConfirmationTag = in.bytes(32)
	}
	pm, err := protectPublic(cs, ac, &gc, keyschedule.Secret{})
	if err != nil {
		return nil, nil
	}
	return onWire(&MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatPublicMessage, PublicMessage: pm}), ic
}

// onWire returns m as a receiver decodes it from the wire (nil if it has
// no encoding).
func onWire(m *MLSMessage) *MLSMessage {
	b, err := m.Marshal()
	if err != nil {
		return nil
	}
	var out MLSMessage
	if err := out.Unmarshal(b); err != nil {
		return nil
	}
	return &out
}

// externalMustReject reports the first rule of RFC 9420 §12.4.3.2 (and
// the proposal rules of §12.2, §12.1.x, §8.4 it refers to) that the
// external commit ic breaks for the member in old.
func externalMustReject(cs *ciphersuite.CipherSuite, old *Group, ic *insiderCommit) error {
	c := ic.commit
	if c.Path == nil {
		return fmt.Errorf("§12.4.3.2: external commit without a path")
	}
	inits, removes := 0, 0
	psks := map[string]bool{}
	for i, por := range c.Proposals {
		if por.Type != ProposalOrRefProposal {
			return fmt.Errorf("§12.4.3.2: proposal %d by reference", i)
		}
		switch p := por.Proposal; p.Type {
		case ProposalTypeExternalInit:
			inits++
		case ProposalTypeRemove:
			if removes++; removes > 1 {
				return fmt.Errorf("§12.4.3.2: two Removes")
			}
			ln := old.tree.Leaf(p.Remove.Removed)
			if ln == nil {
				return fmt.Errorf("§12.1.3: Remove of blank leaf %d", p.Remove.Removed)
			}
			if !sameIdentity(ln.Credential, c.Path.LeafNode.Credential) {
				return fmt.Errorf("§12.4.3.2: Remove of leaf %d, another identity than the joiner's", p.Remove.Removed)
			}
		case ProposalTypePSK:
			id := p.PreSharedKey.PSK
			if len(id.PSKNonce) != cs.Nh() {
				return fmt.Errorf("§8.4: psk_nonce of %d bytes", len(id.PSKNonce))
			}
			if startsGroup(&id) {
				return fmt.Errorf("§12.1.4: resumption PSK of usage %d in a running group", id.Usage)
			}
			b, _ := id.Marshal()
			if psks[string(b)] {
				return fmt.Errorf("§12.2: PSK %d repeated", i)
			}
			psks[string(b)] = true
		default:
			return fmt.Errorf("§12.4.3.2: proposal %d of type %d in an external commit", i, p.Type)
		}
	}
	if inits != 1 {
		return fmt.Errorf("§12.4.3.2: %d ExternalInit proposals", inits)
	}
	return nil
}

// leftmostFree is the leaf an external joiner takes in old's tree once
// the commit's Remove (if any) is applied (RFC 9420 §12.4.3.2).
func leftmostFree(old *Group, ic *insiderCommit) LeafIndex {
	removed := LeafIndex(noLeaf)
	for _, por := range ic.commit.Proposals {
		if p := por.Proposal; p != nil && p.Type == ProposalTypeRemove {
			removed = p.Remove.Removed
		}
	}
	for l := range LeafIndex(old.tree.LeafCount()) {
		if l == removed || old.tree.Leaf(l) == nil {
			return l
		}
	}
	return LeafIndex(old.tree.LeafCount())
}

// FuzzExternalCommit has every member process an external commit that a
// non-member, holding a GroupInfo of the epoch, made as the fuzzer
// describes (its proposals, path and confirmation tag; signed with the
// path leaf's key). What a member accepts must break no rule of RFC 9420
// §12.4.3.2 (see externalMustReject), place the joiner at the leftmost
// free leaf and be consistent (see checkConsistent); the members that
// accept must agree and be able to go on.
func FuzzExternalCommit(f *testing.F) {
	for _, s := range [][]byte{
		{0, 1, 0, 1},          // honest join
		{1, 2, 0, 3, 2, 1},    // honest resync of leaf 2
		{1, 2, 0, 3, 1, 1},    // resync removing another identity
		{0, 1, 0, 0},          // no path
		{0, 0, 1},             // no ExternalInit
		{0, 2, 0, 0, 1},       // two ExternalInits
		{0, 1, 2, 0, 1},       // odd ExternalInit
		{0, 1, 2, 2, 1},       // low-order ExternalInit
		{0, 2, 0, 4, 0, 0, 1}, // a reference to a cached proposal
		{0, 2, 0, 4, 3, 1},    // an inline Add
		{0, 2, 0, 5, 7, 1, 0, 0, 1, 1, 0, 1},
		{0, 2, 0, 4, 8, 1, 0, 1, 1},
		{0, 1, 0, 2, 1, 2},
		{0, 1, 0, 2, 0, 5},
		{0, 1, 0, 1, 7},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, o := outsiderFor(t)
		in := fuzzBytes(data)
		m, ic := w.externalCommitFrom(&in, o)
		if m == nil {
			return
		}
		w.deliver(t, m, noLeaf, func(old, n *Group, r *Received) {
			if err := externalMustReject(w.cs, old, ic); err != nil {
				t.Fatalf("leaf %d accepted an external commit RFC 9420 says to reject: %v", old.me, err)
			}
			if want := leftmostFree(old, ic); r.Sender != want {
				t.Fatalf("leaf %d placed the joiner at leaf %d, not the leftmost free leaf %d", old.me, r.Sender, want)
			}
			checkConsistent(t, w.cs, old, n)
		})
	})
}

// externalJoiner is an honest client that joins by external commit.
type externalJoiner struct {
	credential Credential
	sig        *ciphersuite.SignaturePrivateKey
	caps       *Capabilities
}

var (
	externalJoinerOnce sync.Once
	externalJoinerV    *externalJoiner
)

func externalJoinerFor(tb testing.TB) *externalJoiner {
	externalJoinerOnce.Do(func() {
		leaf, sig := outsiderLeaf(tb, mustSuite(tb, scenarioSuite), NewBasicCredential([]byte("joiner")))
		externalJoinerV = &externalJoiner{credential: leaf.Credential, sig: sig, caps: &leaf.Capabilities}
	})
	if externalJoinerV == nil {
		tb.Fatal("external joiner failed to build")
	}
	return externalJoinerV
}

// forgeGroupInfo returns the GroupInfo for external joins that the
// attacker serves, as the fuzzer describes: its honest one with the tree,
// group context, signer, confirmation tag or external_pub changed, the
// tree hash recomputed unless the fuzzer says not to, signed with the
// attacker's key. The second result is the tree to give the joiner when
// the GroupInfo carries none (nil: none).
func (w *insiderWorld) forgeGroupInfo(in *fuzzBytes) (*GroupInfo, *RatchetTree) {
	attacker := w.members[insiderAttacker]
	gi, err := attacker.ExternalGroupInfo(true)
	if err != nil {
		return nil, nil
	}
	tree := attacker.tree.clone()
	gc := gi.GroupContext
	epub, _ := gi.Extensions.Find(ExtensionTypeExternalPub)
	extra := Extensions{}
	withTree, giveTree, fixHash := true, false, true
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
				if other := tree.Leaf(LeafIndex(in.n(4))); other != nil {
					p.EncryptionKey = other.EncryptionKey
				} else {
					p.EncryptionKey = in.bytes(33)
				}
				tree.setNode(x, Node{Parent: p})
			}
		case 2:
			if x, p := parent(); p != nil {
				p.UnmergedLeaves = append(p.UnmergedLeaves, LeafIndex(in.n(4)))
				slices.Sort(p.UnmergedLeaves)
				tree.setNode(x, Node{Parent: p})
			}
		case 3:
			tree.setNode(LeafIndex(in.n(4)).Node(), Node{})
		case 4:
			l := LeafIndex(in.n(4))
			tree.setNode(l.Node(), Node{Leaf: w.keyPackageFrom(in).LeafNode.Clone()})
		case 5:
			gc.Extensions = w.extensionsFrom(in)
		case 6:
			gc.Epoch = uint64(in.byte())
		case 7:
			gc.CipherSuite = ciphersuite.Suite(in.n(8))
		case 8:
			gc.Version = ProtocolVersion(in.n(3))
		case 9:
			gc.ConfirmedTranscriptHash = in.bytes(32)
		case 10:
			gi.Signer = LeafIndex(in.n(6))
		case 11:
			gi.ConfirmationTag = in.bytes(32)
		case 12: // another external_pub: odd bytes, a member's key, a point of low order
			var pub []byte
			switch in.n(3) {
			case 0:
				pub = in.bytes(33)
			case 1:
				pub = tree.Node(LeafIndex(in.n(4)).Node()).encryptionKey()
			default:
				pub = make([]byte, 32)
			}
			b, _ := (&ExternalPub{ExternalPub: pub}).Marshal()
			epub.Data = b
		case 13:
			if in.n(2) == 0 {
				epub.Data = nil
			} else {
				extra = append(extra, w.extensionsFrom(in)...)
			}
		case 14:
			withTree, giveTree = false, in.n(2) == 0
		default:
			fixHash = false
		}
	}
	gi.Extensions = Extensions{}
	if epub.Data != nil {
		gi.Extensions = append(gi.Extensions, epub)
	}
	if withTree {
		e, err := tree.Extension()
		if err != nil {
			return nil, nil
		}
		gi.Extensions = append(gi.Extensions, e)
	}
	gi.Extensions = append(gi.Extensions, extra...)
	if fixHash {
		if gc.TreeHash, err = tree.TreeHash(w.cs); err != nil {
			return nil, nil
		}
	}
	gi.GroupContext = gc
	if err := gi.Sign(w.cs, attacker.sig); err != nil {
		return nil, nil
	}
	if giveTree {
		return gi, &tree
	}
	return gi, nil
}

// FuzzExternalGroupInfo has an honest client join by external commit
// from a GroupInfo a malicious member forged and signed. What JoinExternal
// accepts must be consistent (the tree validates against the group
// context, every member supports its extensions, the state saves and
// loads: RFC 9420 §12.4.3.2 has the joiner check the GroupInfo and tree
// as a Welcome's, §12.4.3.1); the members that accept the joiner's commit
// must agree with it and go on.
func FuzzExternalGroupInfo(f *testing.F) {
	for _, s := range [][]byte{
		{0}, {1, 0, 1}, {1, 1, 1, 1}, {1, 2, 3}, {1, 3, 3}, {1, 4, 1, 1}, {1, 5, 1, 0, 1}, {1, 5, 1, 2, 1, 0},
		{1, 6, 9}, {1, 7, 1}, {1, 8, 0}, {1, 9, 0}, {1, 10, 3}, {1, 11, 0}, {1, 12, 0, 3}, {1, 12, 1, 2}, {1, 12, 2},
		{1, 13, 0}, {1, 13, 1, 1, 0, 1, 2}, {1, 14, 0}, {1, 14, 1}, {1, 15},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w := insiderWorldFor(t)
		j := externalJoinerFor(t)
		in := fuzzBytes(data)
		gi, tree := w.forgeGroupInfo(&in)
		if gi == nil {
			return
		}
		g, m, err := JoinExternal(gi, j.credential, j.sig, &ExternalJoinOptions{RatchetTree: tree, Capabilities: j.caps})
		if err != nil {
			if !isFuzzRefusal(err) {
				t.Fatalf("JoinExternal refused with an error of no sentinel: %v", err)
			}
			return
		}
		checkState(t, w.cs, g)
		w.deliver(t, m, insiderAttacker, func(old, n *Group, _ *Received) {
			checkConsistent(t, w.cs, old, n)
			if !bytes.Equal(n.EpochAuthenticator(), g.EpochAuthenticator()) {
				t.Fatalf("leaf %d accepted the joiner's commit and disagrees with it", old.me)
			}
		}, g)
	})
}

// senderWorld is a group of four honest members whose group context
// lists two external senders; the attacker holds the first one's key.
type senderWorld struct {
	members []*Group
	keys    [2]*ciphersuite.SignaturePrivateKey
}

var (
	senderOnce sync.Once
	senderW    *senderWorld
)

func senderWorldFor(tb testing.TB) (*insiderWorld, *senderWorld) {
	w := insiderWorldFor(tb)
	senderOnce.Do(func() {
		sw := &senderWorld{}
		var es ExternalSenders
		for i := range sw.keys {
			k, err := w.cs.GenerateSignatureKey()
			if err != nil {
				tb.Fatal(err)
			}
			sw.keys[i] = k
			es = append(es, ExternalSender{SignatureKey: k.PublicKey(), Credential: NewBasicCredential(fmt.Appendf(nil, "ds%d", i))})
		}
		b, err := es.Marshal()
		if err != nil {
			tb.Fatal(err)
		}
		clients := []scClient{
			newInsiderClient(tb, "s0", insiderExt), newInsiderClient(tb, "s1", insiderExt),
			newInsiderClient(tb, "s2", insiderExt), newInsiderClient(tb, "s3"),
		}
		g0, err := NewGroup([]byte("sender-group"), clients[0].kp, clients[0].secrets, nil)
		if err != nil {
			tb.Fatal(err)
		}
		exts := Extensions{{Type: ExtensionTypeExternalSenders, Data: b}}
		g0, res, err := g0.Commit(CommitOptions{Add: []*KeyPackage{clients[1].kp, clients[2].kp, clients[3].kp}, GroupContextExtensions: &exts})
		if err != nil {
			tb.Fatal(err)
		}
		sw.members = []*Group{g0.WithExternalPSK(insiderPSKID, insiderPSKSecret)}
		for _, c := range clients[1:] {
			g, err := Join(res.Welcome, c.kp, c.secrets, insiderJoinOptions())
			if err != nil {
				tb.Fatal(err)
			}
			sw.members = append(sw.members, g.WithExternalPSK(insiderPSKID, insiderPSKSecret))
		}
		senderW = sw
	})
	if senderW == nil {
		tb.Fatal("sender world failed to build")
	}
	return w, senderW
}

// nonMemberFrom builds the proposal the fuzzer describes, from an
// external sender (the attacker's listed key, or an index it does not
// hold) or a new member, of any type, signed and sent on the wire.
func (w *insiderWorld) nonMemberFrom(in *fuzzBytes, sw *senderWorld) (*MLSMessage, Sender) {
	g := sw.members[0]
	var p *Proposal
	if in.n(4) == 0 {
		p = &Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *w.keyPackageFrom(in)}}
	} else if p = w.standaloneProposal(in); p == nil {
		return nil, Sender{}
	}
	s := Sender{Type: SenderTypeExternal}
	priv := sw.keys[0]
	switch in.n(4) {
	case 0: // the attacker's listed key
	case 1: // an index it does not hold, or none listed
		s.SenderIndex = uint32(1 + in.n(3))
	default: // the Add of a new member, signed with the key package's key
		s.Type, priv = SenderTypeNewMemberProposal, w.mutable.secrets.SignatureKey
	}
	epoch := g.Epoch()
	if in.n(8) == 7 {
		epoch += uint64(in.n(3)) - 1
	}
	m, err := nonMemberProposal(w.cs.ID(), priv, s, g.ctx.GroupID, epoch, p, in.bytes(3))
	if err != nil {
		return nil, Sender{}
	}
	if in.n(8) == 7 { // a membership tag no non-member may send
		m.PublicMessage.MembershipTag = in.bytes(32)
	}
	return onWire(m), s
}

// nonMemberMustReject reports the first rule of RFC 9420 §12.1.8 and
// §6.2 a non-member's proposal breaks: an external sender's index must
// name an entry of external_senders (whose key signs it) and its type be
// one of §17.4's "External" column (Add, Remove, PSK, ReInit,
// GroupContextExtensions); a new member proposes only an Add (of its own
// key package: the signature is by its leaf's key); no membership tag.
func nonMemberMustReject(m *MLSMessage, s Sender) error {
	pm := m.PublicMessage
	if len(pm.MembershipTag) != 0 {
		return fmt.Errorf("§6.2: membership tag from %s", senderString(s))
	}
	p := pm.Content.Proposal
	switch s.Type {
	case SenderTypeExternal:
		if s.SenderIndex != 0 {
			return fmt.Errorf("§12.1.8.1: external sender %d, whose key the attacker does not hold", s.SenderIndex)
		}
		switch p.Type {
		case ProposalTypeAdd, ProposalTypeRemove, ProposalTypePSK, ProposalTypeReInit, ProposalTypeGroupContextExtensions:
		default:
			return fmt.Errorf("§17.4: proposal type %d from an external sender", p.Type)
		}
	case SenderTypeNewMemberProposal:
		if p.Type != ProposalTypeAdd {
			return fmt.Errorf("§12.1.8: proposal type %d from a new member", p.Type)
		}
	}
	return nil
}

// FuzzExternalProposal has the members of a group with external_senders
// process a proposal of the fuzzer's making from an external sender (the
// attacker's listed key, or one it does not hold) or a new member. What
// they cache must break no rule of RFC 9420 §12.1.8 (see
// nonMemberMustReject); they must agree on caching it, and a cached
// proposal must not stop the group: a member commits what it holds and
// the others follow.
func FuzzExternalProposal(f *testing.F) {
	for _, s := range [][]byte{
		{0, 0, 0}, {0, 0, 2}, {0, 0, 1, 1}, {0, 1, 0, 0}, {1, 1, 5, 3, 0}, {1, 1, 5, 0, 2}, {1, 1, 3, 0}, {1, 1, 3, 2},
		{1, 1, 7, 1, 0, 0, 1, 0}, {1, 1, 8, 1, 2, 1, 0, 0}, {1, 1, 8, 1, 0, 0}, {1, 1, 9, 1, 1, 1, 1, 0, 0}, {1, 1, 9, 0, 3, 0},
		{1, 0, 0, 0, 0}, {1, 1, 5, 3, 0, 0}, {1, 1, 5, 3, 0, 1, 0}, {1, 1, 6, 0}, {0, 0, 7, 0, 2}, {0, 0, 5, 2}, {1, 1, 5, 3, 1, 0},
		{1, 1, 5, 3, 0, 7, 0}, {1, 1, 5, 3, 0, 0, 7},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, sw := senderWorldFor(t)
		in := fuzzBytes(data)
		m, s := w.nonMemberFrom(&in, sw)
		if m == nil {
			return
		}
		accepted := map[LeafIndex]*Group{}
		for l, g := range sw.members {
			ng, _, err := g.Process(m)
			if err != nil {
				if !isFuzzRefusal(err) {
					t.Errorf("leaf %d refused with an error of no sentinel: %v", l, err)
				}
				continue
			}
			accepted[LeafIndex(l)] = ng
		}
		if len(accepted) == 0 {
			return
		}
		if err := nonMemberMustReject(m, s); err != nil {
			t.Fatalf("members cached a proposal RFC 9420 says to reject: %v", err)
		}
		if len(accepted) != len(sw.members) {
			t.Fatalf("only leaves %v of the members cached the proposal", slices.Collect(maps.Keys(accepted)))
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
			if r.Removed {
				continue
			}
			checkConsistent(t, w.cs, g, ng)
			if !bytes.Equal(ng.EpochAuthenticator(), next.EpochAuthenticator()) {
				t.Fatalf("leaf %d and leaf 0 disagree after the commit", l)
			}
		}
	})
}

// successor is a group the attacker (leaf 1 of the insider world) starts
// from the insider group by ReInit or branch, and the honest joiner
// (member 2, with a fresh key package) it welcomes, holding pred, its
// state in the group the new one succeeds.
type successor struct {
	iw    *insiderWelcome // next holds every PSK the attacker may name
	pred  *Group
	usage ResumptionPSKUsage
}

var (
	successorOnce sync.Once
	successorV    [2]*successor
)

func successorsFor(tb testing.TB) (*insiderWorld, [2]*successor) {
	w := insiderWorldFor(tb)
	successorOnce.Do(func() {
		kps := func(names ...string) (out []scClient, kp []*KeyPackage) {
			for _, n := range names {
				c := newInsiderClient(tb, n, insiderExt)
				out, kp = append(out, c), append(kp, c.kp)
			}
			return out, kp
		}
		// ReInit: the attacker commits the cached ReInit; member 2
		// follows; the attacker starts the new group with everyone.
		closed, res, err := w.members[insiderAttacker].Commit(CommitOptions{})
		if err != nil || closed.ReInit() == nil {
			tb.Fatalf("committing the cached ReInit: %v", err)
		}
		pred, _, err := w.members[2].Process(res.Commit)
		if err != nil {
			tb.Fatal(err)
		}
		cs, kp := kps("m1", "m0", "m2", "m3")
		first, co, err := closed.PrepareReinitialize(cs[0].kp, cs[0].secrets, kp[1:])
		if err != nil {
			tb.Fatal(err)
		}
		successorV[0] = w.successorOf(tb, closed, first, co, cs[2], pred, ResumptionPSKUsageReInit)
		// Branch: the attacker branches the insider group with member 2.
		cs, kp = kps("m1", "m2")
		first, co, err = w.members[insiderAttacker].PrepareBranch([]byte("insider-branch"), cs[0].kp, cs[0].secrets, kp[1:])
		if err != nil {
			tb.Fatal(err)
		}
		successorV[1] = w.successorOf(tb, w.members[insiderAttacker], first, co, cs[1], w.members[2], ResumptionPSKUsageBranch)
	})
	if successorV[0] == nil || successorV[1] == nil {
		tb.Fatal("successor groups failed to build")
	}
	return w, successorV
}

// successorOf commits first's first commit co and keeps what the attacker
// needs to forge its Welcome to j: the PSKs of old's current and last
// epochs with either usage, lent to the new group.
func (w *insiderWorld) successorOf(tb testing.TB, old, first *Group, co CommitOptions, j scClient, pred *Group, usage ResumptionPSKUsage) *successor {
	tb.Helper()
	next, res, err := first.Commit(co)
	if err != nil {
		tb.Fatal(err)
	}
	l, _ := next.tree.FindLeaf(&j.kp.LeafNode)
	gs := openGroupSecrets(tb, w.cs, res.Welcome.Welcome, j, l)
	next = next.clone()
	for _, ep := range []uint64{old.Epoch(), old.Epoch() - 1} {
		s, ok := old.resumptionPSK(ep)
		if !ok {
			tb.Fatalf("the attacker holds no resumption PSK of epoch %d", ep)
		}
		for _, u := range []ResumptionPSKUsage{ResumptionPSKUsageReInit, ResumptionPSKUsageBranch} {
			next.lent = append(next.lent, lentPSK{groupID: old.ctx.GroupID, epoch: ep, usage: u, secret: s})
		}
	}
	return &successor{iw: &insiderWelcome{joiner: j, next: next, gi: res.GroupInfo, gs: gs}, pred: pred, usage: usage}
}

// successionMustReject reports the first rule of RFC 9420 §12.4.3.1
// (and §11.2, §11.3) that the group g, joined with the PSKs psks, breaks
// for a joiner holding pred.
func successionMustReject(g, pred *Group, psks []PreSharedKeyID) error {
	var ids []*PreSharedKeyID
	for i := range psks {
		if startsGroup(&psks[i]) {
			ids = append(ids, &psks[i])
		}
	}
	if len(ids) == 0 {
		return nil
	}
	if len(ids) > 1 {
		return fmt.Errorf("§12.4.3.1: %d resumption PSKs of usage reinit or branch", len(ids))
	}
	id := ids[0]
	if g.Epoch() != 1 {
		return fmt.Errorf("§12.4.3.1: a group started with usage %d in epoch %d", id.Usage, g.Epoch())
	}
	if !bytes.Equal(id.PSKGroupID, pred.ctx.GroupID) {
		return nil // names a group the joiner does not hold: it cannot have joined
	}
	var missing, extra bool
	pred.tree.Leaves(func(_ LeafIndex, ln *LeafNode) { missing = missing || !g.hasIdentity(ln.Credential) })
	g.tree.Leaves(func(_ LeafIndex, ln *LeafNode) { extra = extra || !pred.hasIdentity(ln.Credential) })
	switch id.Usage {
	case ResumptionPSKUsageReInit:
		ri := pred.reinit
		if ri == nil || id.PSKEpoch != pred.Epoch() {
			return fmt.Errorf("§11.2: reinit PSK of epoch %d, not the epoch after a ReInit", id.PSKEpoch)
		}
		a, _ := marshalExtensions(ri.Extensions)
		b, _ := marshalExtensions(g.ctx.Extensions)
		if !bytes.Equal(ri.GroupID, g.ctx.GroupID) || ri.Version != g.ctx.Version || ri.CipherSuite != g.ctx.CipherSuite || !bytes.Equal(a, b) {
			return fmt.Errorf("§12.4.3.1: the new group does not match the ReInit")
		}
		if missing {
			return fmt.Errorf("§12.4.3.1: a member of the old group is not in the reinitialised one")
		}
	case ResumptionPSKUsageBranch:
		if g.ctx.Version != pred.ctx.Version || g.ctx.CipherSuite != pred.ctx.CipherSuite {
			return fmt.Errorf("§12.4.3.1: a branch of another version or suite")
		}
		if extra {
			return fmt.Errorf("§11.3: a member of the branch is not in the old group")
		}
	}
	return nil
}

// FuzzSuccessorWelcome has an honest member join the group a malicious
// member started from theirs by ReInit or branch, from a Welcome it
// forged: the reinit or branch PSK changed (usage, epoch, group, a second
// one, none), then the GroupInfo, tree and group secrets as
// FuzzInsiderWelcome changes them. What Join accepts must keep the rules
// of RFC 9420 §12.4.3.1 (see successionMustReject) and be consistent.
func FuzzSuccessorWelcome(f *testing.F) {
	for _, s := range [][]byte{
		{0, 0, 0}, {1, 0, 0}, {0, 1, 0, 0}, {1, 1, 0, 0}, {0, 1, 1, 0, 0}, {0, 1, 1, 2, 0}, {1, 1, 1, 0, 0}, {0, 1, 2, 0},
		{0, 1, 3, 0}, {1, 1, 3, 0}, {0, 1, 4, 0}, {0, 1, 5, 0}, {0, 0, 1, 4, 9}, {0, 0, 1, 5, 1, 2, 1, 0}, {0, 0, 1, 7, 0},
		{1, 0, 1, 7, 0}, {1, 0, 1, 8, 3, 1, 7, 1}, {0, 0, 1, 6, 2}, {0, 0, 1, 11, 1, 1, 0, 1},
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		w, succ := successorsFor(t)
		in := fuzzBytes(data)
		sc := succ[in.n(2)]
		iw := *sc.iw
		iw.gs.PSKs = slices.Clone(iw.gs.PSKs)
		psks := iw.gs.PSKs
		for range in.n(3) {
			if len(psks) == 0 {
				break
			}
			id := &psks[0]
			switch in.n(6) {
			case 0:
				id.Usage = ResumptionPSKUsageReInit + ResumptionPSKUsageBranch - id.Usage
			case 1:
				id.PSKEpoch += uint64(in.n(3)) - 1
			case 2:
				id.PSKGroupID = []byte("insider-next")
			case 3: // a second one, of the other usage
				two := *id
				two.Usage = ResumptionPSKUsageReInit + ResumptionPSKUsageBranch - id.Usage
				psks = append(psks, two)
			case 4:
				psks = psks[1:]
			default:
				id.Usage = ResumptionPSKUsageApplication
			}
		}
		iw.gs.PSKs = psks
		m := w.forgeWelcome(&in, &iw)
		if m == nil {
			return
		}
		m = onWire(m)
		if m == nil {
			return
		}
		j := iw.joiner
		opts := insiderJoinOptions()
		opts.Predecessors = []*Group{sc.pred}
		g, err := Join(m, j.kp, j.secrets, opts)
		if err != nil {
			if !isFuzzRefusal(err) {
				t.Fatalf("Join refused with an error of no sentinel: %v", err)
			}
			return
		}
		if err := successionMustReject(g, sc.pred, psks); err != nil {
			t.Fatalf("joined a group RFC 9420 says to refuse: %v", err)
		}
		checkState(t, w.cs, g)
		if _, _, err := g.Commit(CommitOptions{ForcePath: true}); err != nil {
			t.Fatalf("the joiner cannot commit in the group it joined: %v", err)
		}
	})
}
