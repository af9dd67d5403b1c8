package mls

import (
	"bytes"
	"fmt"
	"slices"
	"time"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

// proposalEffect is the result of applying a commit's proposal list.
type proposalEffect struct {
	tree       RatchetTree
	extensions Extensions
	added      []LeafIndex
	addedKPs   []KeyPackage
	psks       []PreSharedKeyID
	needPath   bool
	selfUpdate []byte // ref of this member's committed Update
	removed    bool   // this member was removed
}

// resolveProposals turns a commit's proposal list into (sender, proposal)
// pairs, resolving references against the cache.
func (g *Group) resolveProposals(committer LeafIndex, list []ProposalOrRef) ([]cachedProposal, error) {
	out := make([]cachedProposal, 0, len(list))
	for i, por := range list {
		switch por.Type {
		case ProposalOrRefProposal:
			out = append(out, cachedProposal{sender: Sender{Type: SenderTypeMember, LeafIndex: committer}, proposal: por.Proposal})
		case ProposalOrRefReference:
			j := slices.IndexFunc(g.proposals, func(c cachedProposal) bool { return bytes.Equal(c.ref, por.Reference) })
			if j < 0 {
				return nil, fmt.Errorf("%w: proposal %d references unknown proposal %x", ErrInvalidProposal, i, por.Reference)
			}
			out = append(out, g.proposals[j])
		}
	}
	return out, nil
}

// applyProposals validates and applies a proposal list (RFC 9420 §12.2,
// §12.3) to the tree and extensions of g. The committer's UpdatePath is
// checked separately, by [checkPathLeaf] once the path is merged.
func (g *Group) applyProposals(committer LeafIndex, props []cachedProposal) (*proposalEffect, error) {
	eff := &proposalEffect{tree: g.tree, extensions: g.ctx.Extensions, needPath: len(props) == 0}
	touched := map[LeafIndex]bool{}
	var updates, removes, adds []int // indices into props
	pskSeen := map[string]bool{}
	gce := 0
	for i, p := range props {
		switch p.proposal.Type {
		case ProposalTypeGroupContextExtensions:
			gce++
			eff.extensions = p.proposal.GroupContextExtensions.Extensions
			eff.needPath = true
		case ProposalTypeUpdate:
			if p.sender.LeafIndex == committer {
				return nil, fmt.Errorf("%w: proposal %d is an Update from the committer", ErrInvalidProposal, i)
			}
			updates = append(updates, i)
			eff.needPath = true
		case ProposalTypeRemove:
			removes = append(removes, i)
			eff.needPath = true
		case ProposalTypeAdd:
			adds = append(adds, i)
		case ProposalTypePSK:
			id := p.proposal.PreSharedKey.PSK
			if err := checkPSKNonce(g.cs, &id); err != nil {
				return nil, fmt.Errorf("%w: proposal %d: %w", ErrInvalidProposal, i, err)
			}
			enc, err := id.Marshal()
			if err != nil {
				return nil, err
			}
			if pskSeen[string(enc)] {
				return nil, fmt.Errorf("%w: proposal %d repeats a PSK", ErrInvalidProposal, i)
			}
			pskSeen[string(enc)] = true
			eff.psks = append(eff.psks, id)
		default:
			return nil, fmt.Errorf("%w: proposal %d of type %d is not supported in commits", ErrInvalidProposal, i, p.proposal.Type)
		}
	}
	if gce > 1 {
		return nil, fmt.Errorf("%w: %d GroupContextExtensions proposals", ErrInvalidProposal, gce)
	}
	var err error
	updated := map[LeafIndex]bool{}
	for _, i := range updates {
		p := props[i]
		l := p.sender.LeafIndex
		if touched[l] {
			return nil, fmt.Errorf("%w: leaf %d updated or removed twice", ErrInvalidProposal, l)
		}
		touched[l], updated[l] = true, true
		ln := p.proposal.Update.LeafNode
		if err := ln.Validate(g.cs, LeafNodeSourceUpdate, g.ctx.GroupID, l); err != nil {
			return nil, fmt.Errorf("%w: update of leaf %d: %w", ErrInvalidProposal, l, err)
		}
		if old := eff.tree.Leaf(l); old != nil && bytes.Equal(old.EncryptionKey, ln.EncryptionKey) {
			return nil, fmt.Errorf("%w: proposal %d: update of leaf %d keeps the encryption key it replaces", ErrInvalidProposal, i, l)
		}
		if eff.tree, err = eff.tree.UpdateLeaf(l, ln.Clone()); err != nil {
			return nil, err
		}
		if l == g.me {
			eff.selfUpdate = p.ref
		}
	}
	for _, i := range removes {
		l := props[i].proposal.Remove.Removed
		if touched[l] {
			return nil, fmt.Errorf("%w: leaf %d updated or removed twice", ErrInvalidProposal, l)
		}
		touched[l] = true
		if l == committer {
			return nil, fmt.Errorf("%w: committer removes itself", ErrInvalidProposal)
		}
		if eff.tree, err = eff.tree.RemoveLeaf(l); err != nil {
			return nil, fmt.Errorf("%w: remove: %w", ErrInvalidProposal, err)
		}
		if l == g.me {
			eff.removed = true
		}
	}
	if len(updates)+len(adds) == 0 {
		// The leaves are those of the last epoch, less removed ones: only
		// new group context extensions can break a rule of the group.
		if err := checkExtensionSupport(eff.tree, eff.extensions); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalidProposal, err)
		}
		return eff, nil
	}
	// Keys are unique among the members once Updates and Removes are
	// applied (RFC 9420 §7.3); the updated leaves are checked against the
	// rest, then each added leaf against everything before it.
	keys := newKeyIndex(eff.tree, updated)
	for _, i := range updates {
		l := props[i].sender.LeafIndex
		if err := keys.add(l, eff.tree.Leaf(l)); err != nil {
			return nil, fmt.Errorf("%w: proposal %d: update of leaf %d: %w", ErrInvalidProposal, i, l, err)
		}
	}
	for _, i := range adds {
		kp := props[i].proposal.Add.KeyPackage
		if kp.CipherSuite != g.ctx.CipherSuite || kp.Version != g.ctx.Version {
			return nil, fmt.Errorf("%w: proposal %d: key package of suite %d, version %d", ErrInvalidKeyPackage, i, kp.CipherSuite, kp.Version)
		}
		if err := kp.Validate(); err != nil {
			return nil, fmt.Errorf("mls: proposal %d: %w", i, err)
		}
		var l LeafIndex
		eff.tree, l = eff.tree.AddLeaf(kp.LeafNode.Clone())
		if err := keys.add(l, eff.tree.Leaf(l)); err != nil {
			return nil, fmt.Errorf("%w: proposal %d: add at leaf %d: %w", ErrInvalidKeyPackage, i, l, err)
		}
		eff.added = append(eff.added, l)
		eff.addedKPs = append(eff.addedKPs, kp)
	}
	if err := checkGroupLeaves(eff.tree, eff.extensions); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidProposal, err)
	}
	return eff, nil
}

// checkPSKNonce reports a psk_nonce that is not KDF.Nh bytes long (RFC
// 9420 §8.4).
func checkPSKNonce(cs *ciphersuite.CipherSuite, id *PreSharedKeyID) error {
	if len(id.PSKNonce) != cs.Nh() {
		return fmt.Errorf("psk_nonce of %d bytes, want %d", len(id.PSKNonce), cs.Nh())
	}
	return nil
}

// keyIndex maps the encryption keys of a tree's non-blank nodes to their
// node and the signature keys of its leaves to their leaf, to find keys
// used twice (RFC 9420 §7.3).
type keyIndex struct {
	enc map[string]NodeIndex
	sig map[string]LeafIndex
}

// newKeyIndex indexes the keys of t, leaving out the leaves in skip.
func newKeyIndex(t RatchetTree, skip map[LeafIndex]bool) keyIndex {
	k := keyIndex{enc: make(map[string]NodeIndex, len(t.nodes)), sig: make(map[string]LeafIndex, len(t.nodes)/2+1)}
	for x, n := range t.nodes {
		if n.IsBlank() {
			continue
		}
		if l, ok := NodeIndex(x).Leaf(); ok {
			if skip[l] {
				continue
			}
			k.sig[string(n.Leaf.SignatureKey)] = l
		}
		k.enc[string(n.encryptionKey())] = NodeIndex(x)
	}
	return k
}

// add indexes the keys of ln, the leaf at l, or reports the node or leaf
// that already holds one of them.
func (k keyIndex) add(l LeafIndex, ln *LeafNode) error {
	if x, dup := k.enc[string(ln.EncryptionKey)]; dup {
		return fmt.Errorf("encryption key already used by node %d", x)
	}
	if m, dup := k.sig[string(ln.SignatureKey)]; dup {
		return fmt.Errorf("signature key already used by leaf %d", m)
	}
	k.enc[string(ln.EncryptionKey)] = l.Node()
	k.sig[string(ln.SignatureKey)] = l
	return nil
}

// checkGroupLeaves reports a leaf of tree that breaks a rule of the group
// rather than of the leaf alone (RFC 9420 §7.3, §11.1, §12.1.7): every
// leaf supports every group context extension, the group's required
// capabilities and every credential type used in the tree. Commits run it
// on the tree their proposals produce when these added or updated leaves
// (keys are checked by keyIndex as they go). The error names the leaf and
// wraps no sentinel; callers add theirs.
func checkGroupLeaves(tree RatchetTree, exts Extensions) error {
	if err := checkExtensionSupport(tree, exts); err != nil {
		return err
	}
	return tree.checkCredentialSupport()
}

// checkPathLeaf reports how the committer's new leaf, merged into tree,
// breaks a rule of the group (RFC 9420 §7.3): it must support the group
// context extensions, the required capabilities and every credential type
// in use, every member must support its credential type, and its
// signature key must be no other leaf's. (Its encryption keys are checked
// against the tree by ApplyUpdatePath.) The other leaves passed these
// checks already, so one pass over the leaves suffices: a commit with a
// path is the common case, in groups of thousands. The error wraps no
// sentinel.
func checkPathLeaf(tree RatchetTree, exts Extensions, committer LeafIndex, path *UpdatePath) error {
	ln := &path.LeafNode
	if err := checkLeafExtensions(ln, exts); err != nil {
		return fmt.Errorf("leaf %d: %w", committer, err)
	}
	var err error
	tree.Leaves(func(l LeafIndex, other *LeafNode) {
		switch {
		case err != nil || l == committer:
		case bytes.Equal(other.SignatureKey, ln.SignatureKey):
			err = fmt.Errorf("leaf %d uses the signature key of leaf %d", committer, l)
		case !other.Capabilities.SupportsCredential(ln.Credential.Type):
			err = fmt.Errorf("leaf %d does not support credential type %d of leaf %d", l, ln.Credential.Type, committer)
		case !ln.Capabilities.SupportsCredential(other.Credential.Type):
			err = fmt.Errorf("leaf %d does not support credential type %d used by leaf %d", committer, other.Credential.Type, l)
		}
	})
	return err
}

// checkExtensionSupport reports a member of tree that does not support a
// group context extension or the group's required capabilities (RFC 9420
// §11.1, §12.1.7). The error wraps no sentinel.
func checkExtensionSupport(tree RatchetTree, exts Extensions) error {
	if len(exts) == 0 {
		return nil
	}
	if err := exts.checkUnique(); err != nil {
		return fmt.Errorf("group context extensions: %s", err)
	}
	required, err := requiredCapabilities(exts)
	if err != nil {
		return err
	}
	tree.Leaves(func(l LeafIndex, ln *LeafNode) {
		if err == nil {
			if lerr := leafSupports(ln, exts, required); lerr != nil {
				err = fmt.Errorf("leaf %d: %w", l, lerr)
			}
		}
	})
	return err
}

// checkLeafExtensions is checkExtensionSupport for one leaf.
func checkLeafExtensions(ln *LeafNode, exts Extensions) error {
	if len(exts) == 0 {
		return nil
	}
	required, err := requiredCapabilities(exts)
	if err != nil {
		return err
	}
	return leafSupports(ln, exts, required)
}

// requiredCapabilities decodes the required_capabilities extension of
// exts; nil if there is none.
func requiredCapabilities(exts Extensions) (*RequiredCapabilities, error) {
	e, ok := exts.Find(ExtensionTypeRequiredCapabilities)
	if !ok {
		return nil, nil
	}
	rc := new(RequiredCapabilities)
	if err := rc.Unmarshal(e.Data); err != nil {
		return nil, fmt.Errorf("required_capabilities: %w", err)
	}
	return rc, nil
}

// leafSupports reports a group context extension or required capability
// ln does not support.
func leafSupports(ln *LeafNode, exts Extensions, required *RequiredCapabilities) error {
	for _, e := range exts {
		if !ln.Capabilities.SupportsExtension(e.Type) {
			return fmt.Errorf("does not support group context extension %d", e.Type)
		}
	}
	return required.checkLeaf(ln)
}

// pskSecretFor computes psk_secret for the PSKs of a commit or Welcome.
func (g *Group) pskSecretFor(ids []PreSharedKeyID) (keyschedule.Secret, error) {
	if len(ids) == 0 {
		return keyschedule.Secret{}, nil
	}
	psks := make([]keyschedule.PSK, len(ids))
	for i := range ids {
		id := &ids[i]
		b, err := id.Marshal()
		if err != nil {
			return keyschedule.Secret{}, err
		}
		var s keyschedule.Secret
		var ok bool
		switch id.Type {
		case PSKTypeExternal:
			s, ok = g.psks[string(id.PSKID)]
		case PSKTypeResumption:
			if id.Usage == ResumptionPSKUsageApplication && bytes.Equal(id.PSKGroupID, g.ctx.GroupID) {
				s, ok = g.resumptionPSK(id.PSKEpoch)
			}
		}
		if !ok {
			return keyschedule.Secret{}, fmt.Errorf("%w: psk %d (type %d, id %x, epoch %d)", ErrUnknownPSK, i, id.Type, id.PSKID, id.PSKEpoch)
		}
		psks[i] = keyschedule.PSK{ID: b, Secret: s}
	}
	return keyschedule.PSKSecret(g.cs, psks)
}

func (g *Group) resumptionPSK(epoch uint64) (keyschedule.Secret, bool) {
	if epoch == g.ctx.Epoch && !g.secrets.ResumptionPSK.IsZero() {
		return g.secrets.ResumptionPSK, true
	}
	for _, p := range g.past {
		if p.ctx.Epoch == epoch {
			return p.resumptionPSK, true
		}
	}
	return keyschedule.Secret{}, false
}

// privateKeysFor keeps the private keys of g that still match tree, with
// leafKey (when set) as the new leaf key.
func (g *Group) privateKeysFor(tree RatchetTree, leafKey *ciphersuite.HPKEPrivateKey) *TreePrivateKeys {
	lk, _ := g.keys.Key(g.me.Node())
	if leafKey != nil {
		lk = leafKey
	}
	k := NewTreePrivateKeys(g.me, lk)
	for _, x := range treemath.DirectPath(g.me.Node(), tree.LeafCount()) {
		key, ok := g.keys.Key(x)
		if ok && bytes.Equal(tree.Node(x).encryptionKey(), key.PublicKey()) {
			k = k.WithKey(x, key)
		}
	}
	return k
}

// applyCommit moves a clone of the group to the epoch of a commit by
// another member (RFC 9420 §12.4.2). It returns whether this member was
// removed.
func (g *Group) applyCommit(ac *AuthenticatedContent) (*Group, bool, error) {
	committer := ac.Content.Sender.LeafIndex
	commit := ac.Content.Commit
	props, err := g.resolveProposals(committer, commit.Proposals)
	if err != nil {
		return nil, false, err
	}
	eff, err := g.applyProposals(committer, props)
	if err != nil {
		return nil, false, err
	}
	if eff.needPath && commit.Path == nil {
		return nil, false, fmt.Errorf("%w: commit from leaf %d lacks a required path", ErrInvalidProposal, committer)
	}
	newCtx := g.ctx
	newCtx.Epoch++
	newCtx.Extensions = eff.extensions
	tree := eff.tree
	var leafKey *ciphersuite.HPKEPrivateKey
	if eff.selfUpdate != nil {
		if leafKey = g.pendingUpdates[string(eff.selfUpdate)]; leafKey == nil {
			return nil, false, fmt.Errorf("%w: committed Update of leaf %d has no private key", ErrInvalidProposal, g.me)
		}
	}
	var keys *TreePrivateKeys
	if !eff.removed {
		keys = g.privateKeysFor(tree, leafKey)
	}
	commitSecret := keyschedule.Secret{}
	if commit.Path != nil {
		up, err := tree.ApplyUpdatePath(g.cs, newCtx, committer, commit.Path, keys, eff.added)
		if err != nil {
			return nil, false, err
		}
		if err := checkPathLeaf(up.Tree, newCtx.Extensions, committer, commit.Path); err != nil {
			return nil, false, fmt.Errorf("%w: %w", ErrInvalidUpdatePath, err)
		}
		tree = up.Tree
		if !eff.removed {
			keys, commitSecret = up.PrivateKeys, up.CommitSecret
		}
	}
	if eff.removed {
		return g.removedState(), true, nil
	}
	psk, err := g.pskSecretFor(eff.psks)
	if err != nil {
		return nil, false, err
	}
	if newCtx.TreeHash, err = tree.TreeHash(g.cs); err != nil {
		return nil, false, err
	}
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHash(g.cs, g.interim, ac); err != nil {
		return nil, false, err
	}
	gcBytes, err := newCtx.Marshal()
	if err != nil {
		return nil, false, err
	}
	joiner, err := keyschedule.JoinerSecret(g.cs, g.secrets.InitSecret, commitSecret, gcBytes)
	if err != nil {
		return nil, false, err
	}
	n := g.clone()
	n.retireEpoch()
	n.ctx, n.tree, n.keys = newCtx, tree, keys
	if err := n.enterEpoch(joiner, psk, gcBytes); err != nil {
		return nil, false, err
	}
	tag, err := n.secrets.ConfirmationTag(newCtx.ConfirmedTranscriptHash)
	if err != nil {
		return nil, false, err
	}
	if !g.cs.VerifyMAC(n.secrets.ConfirmationKey.Bytes(), newCtx.ConfirmedTranscriptHash, ac.Auth.ConfirmationTag) {
		return nil, false, fmt.Errorf("%w: confirmation tag of the commit from leaf %d for epoch %d", ErrTampered, committer, newCtx.Epoch)
	}
	n.confirmationTag = tag
	if n.interim, err = interimTranscriptHash(g.cs, newCtx.ConfirmedTranscriptHash, tag); err != nil {
		return nil, false, err
	}
	n.proposals, n.pendingUpdates = nil, map[string]*ciphersuite.HPKEPrivateKey{}
	return n, false, nil
}

// removedState is what is left of a member removed by a commit: it can no
// longer send or follow the group, but still opens late application
// messages of the epoch it was removed in and of the retained past ones.
func (g *Group) removedState() *Group {
	n := g.clone()
	n.keys = nil
	n.proposals, n.pendingUpdates = nil, map[string]*ciphersuite.HPKEPrivateKey{}
	return n
}

// Active reports whether this client is still a member able to send.
func (g *Group) Active() bool { return g.keys != nil }

func (g *Group) checkActive() error {
	if g.keys == nil {
		return fmt.Errorf("%w: leaf %d was removed from group %x", ErrNotMember, g.me, g.ctx.GroupID)
	}
	return nil
}

// propose frames, protects and caches a proposal of this member.
func (g *Group) propose(p *Proposal) (*Group, *MLSMessage, []byte, error) {
	if err := g.checkActive(); err != nil {
		return nil, nil, nil, err
	}
	ac, err := g.frame(ContentTypeProposal, nil, nil, p, nil)
	if err != nil {
		return nil, nil, nil, err
	}
	c := g.clone()
	m, err := c.protect(ac)
	if err != nil {
		return nil, nil, nil, err
	}
	if err := c.cacheProposal(ac); err != nil {
		return nil, nil, nil, err
	}
	return c, m, c.proposals[len(c.proposals)-1].ref, nil
}

// ProposeAdd proposes adding the client of kp, which must be valid now.
func (g *Group) ProposeAdd(kp *KeyPackage) (*Group, *MLSMessage, error) {
	if err := ValidateKeyPackage(kp, g.ctx.CipherSuite, time.Now()); err != nil {
		return nil, nil, err
	}
	ng, m, _, err := g.propose(&Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *kp}})
	return ng, m, err
}

// ProposeRemove proposes removing the member at leaf.
func (g *Group) ProposeRemove(leaf LeafIndex) (*Group, *MLSMessage, error) {
	if g.tree.Leaf(leaf) == nil {
		return nil, nil, fmt.Errorf("%w: leaf %d is blank", ErrInvalidProposal, leaf)
	}
	ng, m, _, err := g.propose(&Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: leaf}})
	return ng, m, err
}

// ProposeUpdate proposes replacing this member's leaf with one holding a
// fresh encryption key; the private key is kept until another member
// commits the proposal.
func (g *Group) ProposeUpdate() (*Group, *MLSMessage, error) {
	if err := g.checkActive(); err != nil {
		return nil, nil, err
	}
	key, err := g.cs.GenerateHPKEKey()
	if err != nil {
		return nil, nil, err
	}
	ln := g.tree.Leaf(g.me).Clone()
	ln.EncryptionKey = key.PublicKey()
	ln.Source = LeafNodeSourceUpdate
	ln.Lifetime, ln.ParentHash = Lifetime{}, nil
	if err := ln.Sign(g.cs, g.sig, g.ctx.GroupID, g.me); err != nil {
		return nil, nil, err
	}
	ng, m, ref, err := g.propose(&Proposal{Type: ProposalTypeUpdate, Update: &Update{LeafNode: *ln}})
	if err != nil {
		return nil, nil, err
	}
	ng.pendingUpdates[string(ref)] = key
	return ng, m, nil
}

// CommitOptions selects what a commit carries besides the proposals cached
// in the current epoch, which are committed by reference as far as they
// can be together (see [Group.Commit]).
type CommitOptions struct {
	// Add, Remove and PSKs are proposed inline.
	Add    []*KeyPackage
	Remove []LeafIndex
	PSKs   []PreSharedKeyID
	// GroupContextExtensions, when set, replaces the group context
	// extensions.
	GroupContextExtensions *Extensions
	// ForcePath includes an UpdatePath even when no proposal requires one
	// (an empty commit always has one).
	ForcePath bool
	// AuthenticatedData is sent with the commit.
	AuthenticatedData []byte
	// OmitRatchetTree leaves the ratchet_tree extension out of the
	// Welcome's GroupInfo; joiners then need the tree from elsewhere.
	OmitRatchetTree bool
}

// committable selects the cached proposals a commit with opts can carry
// together (see [Group.Commit]), in the order they were received.
func (g *Group) committable(opts CommitOptions) []cachedProposal {
	inlineRemoved := map[LeafIndex]bool{}
	for _, l := range opts.Remove {
		inlineRemoved[l] = true
	}
	inlinePSK := map[string]bool{}
	for i := range opts.PSKs {
		if b, err := opts.PSKs[i].Marshal(); err == nil {
			inlinePSK[string(b)] = true
		}
	}
	removed := map[LeafIndex]bool{}
	lastUpdate := map[LeafIndex]int{} // leaf -> index in g.proposals
	lastGCE := -1
	for i, p := range g.proposals {
		switch p.proposal.Type {
		case ProposalTypeRemove:
			removed[p.proposal.Remove.Removed] = true
		case ProposalTypeUpdate:
			lastUpdate[p.sender.LeafIndex] = i
		case ProposalTypeGroupContextExtensions:
			lastGCE = i
		}
	}
	var out []cachedProposal
	var adds []cachedProposal
	removing := map[LeafIndex]bool{}
	psks := map[string]bool{}
	for i, p := range g.proposals {
		switch p.proposal.Type {
		case ProposalTypeRemove:
			l := p.proposal.Remove.Removed
			if l == g.me || removing[l] || inlineRemoved[l] || g.tree.Leaf(l) == nil {
				continue
			}
			removing[l] = true
		case ProposalTypeUpdate:
			l := p.sender.LeafIndex
			if l == g.me || removed[l] || inlineRemoved[l] || lastUpdate[l] != i {
				continue
			}
		case ProposalTypeGroupContextExtensions:
			if opts.GroupContextExtensions != nil || i != lastGCE {
				continue
			}
		case ProposalTypePSK:
			b, err := p.proposal.PreSharedKey.PSK.Marshal()
			if err != nil || psks[string(b)] || inlinePSK[string(b)] {
				continue
			}
			if _, err := g.pskSecretFor([]PreSharedKeyID{p.proposal.PreSharedKey.PSK}); err != nil {
				continue
			}
			psks[string(b)] = true
		case ProposalTypeAdd:
			adds = append(adds, p)
		}
		if p.proposal.Type != ProposalTypeAdd {
			out = append(out, p)
		}
	}
	// Adds last, as applyProposals applies them. That all fit together is
	// the usual case, checked once; otherwise each is kept if it still
	// fits with those kept before it (an Add whose keys are in the group,
	// an extensions proposal some member does not support, is left out).
	all := append(out, adds...)
	if len(all) == 0 {
		return nil
	}
	if _, err := g.applyProposals(g.me, all); err == nil {
		return all
	}
	var kept []cachedProposal
	for _, p := range all {
		if _, err := g.applyProposals(g.me, append(slices.Clone(kept), p)); err == nil {
			kept = append(kept, p)
		}
	}
	return kept
}

// CommitResult holds the messages a commit produces.
type CommitResult struct {
	// Commit goes to the current members.
	Commit *MLSMessage
	// Welcome goes to the added members; nil when none were added.
	Welcome *MLSMessage
	// GroupInfo describes the new epoch (signed, with the ratchet tree
	// unless omitted).
	GroupInfo *GroupInfo
}

// Commit creates a commit of the cached proposals and those in opts, and
// returns the group in the new epoch with the commit and the Welcome for
// added members (RFC 9420 §12.4.1).
//
// Cached proposals are committed by reference as far as they can be
// together with opts (RFC 9420 §12.2): a Remove is preferred to an Update
// of the same leaf, and the most recent Update of a leaf to earlier ones;
// a leaf removed twice, a PreSharedKey proposed twice or not held, an
// extensions proposal when opts sets the extensions, an Add that cannot
// join the group (its keys already in it), an extensions proposal some
// member does not support, this member's own Updates and its own removal
// are left out. Otherwise one member's proposal, or two
// members proposing the same removal, would stop every receiver from
// committing for the rest of the epoch. Proposals in opts are never left
// out: a conflict among them is an error.
func (g *Group) Commit(opts CommitOptions) (*Group, *CommitResult, error) {
	if err := g.checkActive(); err != nil {
		return nil, nil, err
	}
	var list []ProposalOrRef
	var props []cachedProposal
	for _, p := range g.committable(opts) {
		list = append(list, ProposalOrRef{Type: ProposalOrRefReference, Reference: p.ref})
		props = append(props, p)
	}
	inline := func(p *Proposal) {
		list = append(list, ProposalOrRef{Type: ProposalOrRefProposal, Proposal: p})
		props = append(props, cachedProposal{sender: Sender{Type: SenderTypeMember, LeafIndex: g.me}, proposal: p})
	}
	if opts.GroupContextExtensions != nil {
		inline(&Proposal{Type: ProposalTypeGroupContextExtensions, GroupContextExtensions: &GroupContextExtensions{Extensions: *opts.GroupContextExtensions}})
	}
	for _, l := range opts.Remove {
		inline(&Proposal{Type: ProposalTypeRemove, Remove: &Remove{Removed: l}})
	}
	for _, kp := range opts.Add {
		if err := ValidateKeyPackage(kp, g.ctx.CipherSuite, time.Now()); err != nil {
			return nil, nil, err
		}
		inline(&Proposal{Type: ProposalTypeAdd, Add: &Add{KeyPackage: *kp}})
	}
	for i := range opts.PSKs {
		inline(&Proposal{Type: ProposalTypePSK, PreSharedKey: &PreSharedKey{PSK: opts.PSKs[i]}})
	}
	eff, err := g.applyProposals(g.me, props)
	if err != nil {
		return nil, nil, err
	}
	if eff.removed {
		return nil, nil, fmt.Errorf("%w: a commit cannot remove its committer", ErrInvalidProposal)
	}
	newCtx := g.ctx
	newCtx.Epoch++
	newCtx.Extensions = eff.extensions
	tree := eff.tree
	keys := g.privateKeysFor(tree, nil)
	commit := &Commit{Proposals: list}
	if list == nil {
		commit.Proposals = []ProposalOrRef{}
	}
	commitSecret := keyschedule.Secret{}
	var up *PathUpdate
	if eff.needPath || opts.ForcePath {
		if up, err = tree.CreateUpdatePath(g.cs, newCtx, g.me, tree.Leaf(g.me), g.sig, eff.added, g.rand()); err != nil {
			return nil, nil, err
		}
		if err := checkPathLeaf(up.Tree, newCtx.Extensions, g.me, &up.Path); err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrInvalidUpdatePath, err)
		}
		tree, keys, commitSecret = up.Tree, up.PrivateKeys, up.CommitSecret
		commit.Path = &up.Path
	}
	psk, err := g.pskSecretFor(eff.psks)
	if err != nil {
		return nil, nil, err
	}
	ac, err := g.frame(ContentTypeCommit, opts.AuthenticatedData, nil, nil, commit)
	if err != nil {
		return nil, nil, err
	}
	if newCtx.TreeHash, err = tree.TreeHash(g.cs); err != nil {
		return nil, nil, err
	}
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHash(g.cs, g.interim, ac); err != nil {
		return nil, nil, err
	}
	gcBytes, err := newCtx.Marshal()
	if err != nil {
		return nil, nil, err
	}
	joiner, err := keyschedule.JoinerSecret(g.cs, g.secrets.InitSecret, commitSecret, gcBytes)
	if err != nil {
		return nil, nil, err
	}
	n := g.clone()
	// The commit is protected with the old epoch's keys.
	if ac.Auth.ConfirmationTag, err = confirmationTagFor(g.cs, joiner, psk, gcBytes, newCtx.ConfirmedTranscriptHash); err != nil {
		return nil, nil, err
	}
	msg, err := n.protect(ac)
	if err != nil {
		return nil, nil, err
	}
	n.retireEpoch()
	n.ctx, n.tree, n.keys = newCtx, tree, keys
	if err := n.enterEpoch(joiner, psk, gcBytes); err != nil {
		return nil, nil, err
	}
	n.confirmationTag = ac.Auth.ConfirmationTag
	if n.interim, err = interimTranscriptHash(g.cs, newCtx.ConfirmedTranscriptHash, n.confirmationTag); err != nil {
		return nil, nil, err
	}
	n.proposals, n.pendingUpdates = nil, map[string]*ciphersuite.HPKEPrivateKey{}
	res := &CommitResult{Commit: msg}
	if res.GroupInfo, err = n.groupInfo(!opts.OmitRatchetTree); err != nil {
		return nil, nil, err
	}
	if len(eff.added) > 0 {
		if res.Welcome, err = n.welcome(res.GroupInfo, eff, up, psk); err != nil {
			return nil, nil, err
		}
	}
	return n, res, nil
}

// confirmationTagFor derives the new epoch's confirmation tag.
func confirmationTagFor(cs *ciphersuite.CipherSuite, joiner, psk keyschedule.Secret, gcBytes, confirmed []byte) ([]byte, error) {
	s, err := keyschedule.FromJoinerSecret(cs, joiner, psk, gcBytes)
	if err != nil {
		return nil, err
	}
	return s.ConfirmationTag(confirmed)
}

// GroupInfo returns a signed GroupInfo of the current epoch, with the
// ratchet_tree extension when withTree is set.
func (g *Group) GroupInfo(withTree bool) (*GroupInfo, error) {
	if err := g.checkActive(); err != nil {
		return nil, err
	}
	return g.groupInfo(withTree)
}

func (g *Group) groupInfo(withTree bool) (*GroupInfo, error) {
	gi := &GroupInfo{GroupContext: g.GroupContext(), Extensions: Extensions{}, ConfirmationTag: bytes.Clone(g.confirmationTag), Signer: g.me}
	if withTree {
		e, err := g.tree.Extension()
		if err != nil {
			return nil, err
		}
		gi.Extensions = append(gi.Extensions, e)
	}
	if err := gi.Sign(g.cs, g.sig); err != nil {
		return nil, err
	}
	return gi, nil
}
