package mls

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"slices"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/keyschedule"
)

// Reinitialisation (RFC 9420 §11.2) and subgroup branching (§11.3): a new
// group whose first commit injects a resumption PSK of its predecessor
// (usage reinit or branch), so that joining it proves membership of the
// old one. A ReInit is committed alone and closes the old group
// (ErrReInitialized); any member then starts the successor with
// Reinitialize. Branch starts a subgroup of some members at once. Joiners
// name the old group in JoinOptions.Predecessors; Join checks the rules
// of §12.4.3.1 against it.

// lentPSK is a resumption secret of another group, lent to a new group
// for its first commit.
type lentPSK struct {
	groupID []byte
	epoch   uint64
	usage   ResumptionPSKUsage
	secret  keyschedule.Secret
}

// startsGroup reports whether id is a resumption PSK of usage reinit or
// branch: one that only the first commit of a new group may carry.
func startsGroup(id *PreSharedKeyID) bool {
	return id.Type == PSKTypeResumption && (id.Usage == ResumptionPSKUsageReInit || id.Usage == ResumptionPSKUsageBranch)
}

func (g *Group) lentPSK(id *PreSharedKeyID) (keyschedule.Secret, bool) {
	for _, l := range g.lent {
		if l.usage == id.Usage && l.epoch == id.PSKEpoch && bytes.Equal(l.groupID, id.PSKGroupID) {
			return l.secret, true
		}
	}
	return keyschedule.Secret{}, false
}

// checkReInit validates a ReInit against the group it would close: a
// version this package speaks (no lower than the group's), a suite it
// implements, extensions without duplicates.
func checkReInit(gc *GroupContext, ri *ReInit) error {
	if ri.Version < gc.Version {
		return fmt.Errorf("ReInit to version %d, below the group's %d", ri.Version, gc.Version)
	}
	if ri.Version != ProtocolMLS10 {
		return fmt.Errorf("ReInit to version %d, which this implementation does not speak", ri.Version)
	}
	if _, err := ciphersuite.Lookup(ri.CipherSuite); err != nil {
		return fmt.Errorf("ReInit to suite %d: %w", ri.CipherSuite, err)
	}
	if len(ri.GroupID) == 0 {
		return fmt.Errorf("ReInit names no group id")
	}
	return ri.Extensions.checkUnique()
}

func cloneReInit(ri *ReInit) ReInit {
	c := *ri
	c.GroupID = bytes.Clone(ri.GroupID)
	c.Extensions = cloneExtensions(ri.Extensions)
	return c
}

func cloneExtensions(es Extensions) Extensions {
	if es == nil {
		return nil
	}
	out := make(Extensions, len(es))
	for i, e := range es {
		out[i] = Extension{Type: e.Type, Data: bytes.Clone(e.Data)}
	}
	return out
}

// ReInit returns the ReInit the group's last commit carried (nil if
// none): the parameters of the group that succeeds it.
func (g *Group) ReInit() *ReInit {
	if g.reinit == nil {
		return nil
	}
	ri := cloneReInit(g.reinit)
	return &ri
}

// ProposeReInit proposes reinitialising the group with ri (a commit of
// the cache then carries it alone).
func (g *Group) ProposeReInit(ri ReInit) (*Group, *MLSMessage, error) {
	if err := checkReInit(&g.ctx, &ri); err != nil {
		return nil, nil, fmt.Errorf("%w: %w", ErrInvalidProposal, err)
	}
	if err := checkMadeExtensions("ReInit", ri.Extensions); err != nil {
		return nil, nil, err
	}
	ri = cloneReInit(&ri)
	ng, m, _, err := g.propose(&Proposal{Type: ProposalTypeReInit, ReInit: &ri})
	return ng, m, err
}

// successor starts a new group as this client, from kp (with its
// secrets), holding a resumption PSK of g's current epoch with usage, and
// commits the adds in its first commit (epoch 1) with that PSK. The
// commit itself goes to no one (the creator is the only member before
// it); the Welcome goes to the added members.
func (g *Group) successor(usage ResumptionPSKUsage, groupID []byte, kp *KeyPackage, secrets *KeyPackageSecrets, adds []*KeyPackage, exts Extensions, opts *Options) (*Group, *CommitResult, error) {
	first, co, err := g.prepareSuccessor(usage, groupID, kp, secrets, adds, exts, opts)
	if err != nil {
		return nil, nil, err
	}
	return first.Commit(co)
}

// prepareSuccessor returns the new group at epoch 0, holding the PSK
// (lent, never saved), and the options of its first commit.
func (g *Group) prepareSuccessor(usage ResumptionPSKUsage, groupID []byte, kp *KeyPackage, secrets *KeyPackageSecrets, adds []*KeyPackage, exts Extensions, opts *Options) (*Group, CommitOptions, error) {
	if g.keys == nil {
		return nil, CommitOptions{}, fmt.Errorf("%w: leaf %d was removed from group %x", ErrNotMember, g.me, g.ctx.GroupID)
	}
	if g.secrets.ResumptionPSK.IsZero() {
		return nil, CommitOptions{}, fmt.Errorf("%w: group %x epoch %d holds no resumption secret", ErrUnknownPSK, g.ctx.GroupID, g.ctx.Epoch)
	}
	if !sameIdentity(kp.LeafNode.Credential, g.tree.Leaf(g.me).Credential) {
		return nil, CommitOptions{}, fmt.Errorf("%w: the new group's creator must be this member of group %x", ErrInvalidKeyPackage, g.ctx.GroupID)
	}
	o := g.opts
	if opts != nil {
		o = *opts
	}
	ng, err := NewGroup(groupID, kp, secrets, &o)
	if err != nil {
		return nil, CommitOptions{}, err
	}
	nonce := make([]byte, ng.cs.Nh())
	if _, err := rand.Read(nonce); err != nil {
		return nil, CommitOptions{}, err
	}
	id := PreSharedKeyID{Type: PSKTypeResumption, Usage: usage, PSKGroupID: bytes.Clone(g.ctx.GroupID), PSKEpoch: g.ctx.Epoch, PSKNonce: nonce}
	ng.lent = []lentPSK{{groupID: id.PSKGroupID, epoch: id.PSKEpoch, usage: usage, secret: g.secrets.ResumptionPSK}}
	copts := CommitOptions{Add: adds, PSKs: []PreSharedKeyID{id}, fromReInit: true}
	if len(exts) > 0 {
		copts.GroupContextExtensions = &exts
	}
	return ng, copts, nil
}

// Branch starts a subgroup of g (RFC 9420 §11.3): a new group (groupID
// nil: random) of the same version and suite, created by this member
// from its fresh key package kp, with the members whose key packages are
// given, each of whom must be a member of g (same credential). Its first
// commit carries a resumption PSK of g's current epoch with usage
// branch; the result's Welcome goes to the members.
func (g *Group) Branch(groupID []byte, kp *KeyPackage, secrets *KeyPackageSecrets, members []*KeyPackage) (*Group, *CommitResult, error) {
	first, co, err := g.PrepareBranch(groupID, kp, secrets, members)
	if err != nil {
		return nil, nil, err
	}
	return first.Commit(co)
}

// PrepareBranch is Branch in two steps, for a caller that records the
// new group's first state (epoch 0) before its first commit: it returns
// that state, holding g's PSK for the one commit (the PSK is never
// saved: MarshalBinary leaves it out), and the options of the commit.
func (g *Group) PrepareBranch(groupID []byte, kp *KeyPackage, secrets *KeyPackageSecrets, members []*KeyPackage) (*Group, CommitOptions, error) {
	if err := g.checkActive(); err != nil {
		return nil, CommitOptions{}, err
	}
	if kp.CipherSuite != g.ctx.CipherSuite || kp.Version != g.ctx.Version {
		return nil, CommitOptions{}, fmt.Errorf("%w: a branch keeps the suite and version of group %x", ErrInvalidKeyPackage, g.ctx.GroupID)
	}
	for i, m := range members {
		if !g.hasIdentity(m.LeafNode.Credential) {
			return nil, CommitOptions{}, fmt.Errorf("%w: member %d of the branch is not a member of group %x", ErrInvalidKeyPackage, i, g.ctx.GroupID)
		}
	}
	return g.prepareSuccessor(ResumptionPSKUsageBranch, groupID, kp, secrets, members, nil, nil)
}

// Reinitialize starts the group that succeeds g after a committed ReInit
// (RFC 9420 §11.2): the ReInit's group id, suite and extensions, created
// by this member from its fresh key package kp (of the new suite), with
// every other member of g added from the key packages given (one each,
// of the new suite). Its first commit carries a resumption PSK of g's
// current epoch (the one the ReInit's commit started) with usage reinit.
func (g *Group) Reinitialize(kp *KeyPackage, secrets *KeyPackageSecrets, members []*KeyPackage) (*Group, *CommitResult, error) {
	first, co, err := g.PrepareReinitialize(kp, secrets, members)
	if err != nil {
		return nil, nil, err
	}
	return first.Commit(co)
}

// PrepareReinitialize is Reinitialize in two steps, as PrepareBranch is
// Branch.
func (g *Group) PrepareReinitialize(kp *KeyPackage, secrets *KeyPackageSecrets, members []*KeyPackage) (*Group, CommitOptions, error) {
	ri := g.reinit
	if ri == nil {
		return nil, CommitOptions{}, fmt.Errorf("%w: group %x epoch %d: no ReInit was committed", ErrInvalidProposal, g.ctx.GroupID, g.ctx.Epoch)
	}
	if kp.CipherSuite != ri.CipherSuite || kp.Version != ri.Version {
		return nil, CommitOptions{}, fmt.Errorf("%w: the ReInit asks for suite %d, version %d", ErrInvalidKeyPackage, ri.CipherSuite, ri.Version)
	}
	added := map[LeafIndex]bool{g.me: true}
	for i, m := range members {
		l, ok := g.leafOf(m.LeafNode.Credential)
		if !ok {
			return nil, CommitOptions{}, fmt.Errorf("%w: key package %d is not of a member of group %x", ErrInvalidKeyPackage, i, g.ctx.GroupID)
		}
		added[l] = true
	}
	for _, l := range g.Members() {
		if !added[l] {
			return nil, CommitOptions{}, fmt.Errorf("%w: member at leaf %d of group %x has no key package; a reinitialised group keeps every member", ErrInvalidKeyPackage, l, g.ctx.GroupID)
		}
	}
	opts := g.opts
	return g.prepareSuccessor(ResumptionPSKUsageReInit, ri.GroupID, kp, secrets, members, ri.Extensions, &opts)
}

func (g *Group) leafOf(c Credential) (LeafIndex, bool) {
	found, at := false, LeafIndex(0)
	g.tree.Leaves(func(l LeafIndex, ln *LeafNode) {
		if !found && sameIdentity(ln.Credential, c) {
			found, at = true, l
		}
	})
	return at, found
}

func (g *Group) hasIdentity(c Credential) bool {
	_, ok := g.leafOf(c)
	return ok
}

// joinPredecessors are the groups a joiner offers as the one a Welcome
// reinitialises or branches from, and the one it used.
type joinPredecessors struct {
	list []*Group
	find func(groupID []byte) *Group
	used *Group
}

// lookup finds the resumption secret a Welcome's reinit or branch PSK
// names among the groups the joiner holds.
func (jp *joinPredecessors) lookup(id *PreSharedKeyID) (*Group, keyschedule.Secret, bool) {
	if jp == nil {
		return nil, keyschedule.Secret{}, false
	}
	list := jp.list
	if jp.find != nil {
		if p := jp.find(bytes.Clone(id.PSKGroupID)); p != nil {
			list = append(slices.Clone(list), p)
		}
	}
	for _, p := range list {
		if p != nil && bytes.Equal(p.ctx.GroupID, id.PSKGroupID) {
			if s, ok := p.resumptionPSK(id.PSKEpoch); ok {
				return p, s, true
			}
		}
	}
	return nil, keyschedule.Secret{}, false
}

// checkSuccession applies RFC 9420 §12.4.3.1 to a group joined from a
// Welcome whose PSKs include a reinit or branch one (from pred): the new
// group is in epoch 1; a reinitialisation matches the ReInit pred's last
// commit carried and keeps every member of pred; a branch keeps pred's
// version and suite and has only members of pred.
func checkSuccession(g *Group, pred *Group, id *PreSharedKeyID) error {
	if g.ctx.Epoch != 1 {
		return fmt.Errorf("%w: a group started with a resumption PSK of usage %d is in epoch %d, not 1", ErrInvalidProposal, id.Usage, g.ctx.Epoch)
	}
	var members []Credential
	g.tree.Leaves(func(_ LeafIndex, ln *LeafNode) { members = append(members, ln.Credential) })
	switch id.Usage {
	case ResumptionPSKUsageReInit:
		ri := pred.reinit
		if ri == nil || id.PSKEpoch != pred.ctx.Epoch {
			return fmt.Errorf("%w: group %x epoch %d is not the epoch a ReInit started", ErrInvalidProposal, id.PSKGroupID, id.PSKEpoch)
		}
		ext, err := marshalExtensions(ri.Extensions)
		if err != nil {
			return err
		}
		got, err := marshalExtensions(g.ctx.Extensions)
		if err != nil {
			return err
		}
		if !bytes.Equal(ri.GroupID, g.ctx.GroupID) || ri.Version != g.ctx.Version || ri.CipherSuite != g.ctx.CipherSuite || !bytes.Equal(ext, got) {
			return fmt.Errorf("%w: group %x does not match the ReInit of group %x", ErrInvalidProposal, g.ctx.GroupID, id.PSKGroupID)
		}
		var missing bool
		pred.tree.Leaves(func(_ LeafIndex, ln *LeafNode) {
			if !g.hasIdentity(ln.Credential) {
				missing = true
			}
		})
		if missing {
			return fmt.Errorf("%w: group %x leaves out a member of group %x it reinitialises", ErrInvalidProposal, g.ctx.GroupID, id.PSKGroupID)
		}
	case ResumptionPSKUsageBranch:
		if g.ctx.Version != pred.ctx.Version || g.ctx.CipherSuite != pred.ctx.CipherSuite {
			return fmt.Errorf("%w: branch %x changes the version or suite of group %x", ErrInvalidProposal, g.ctx.GroupID, id.PSKGroupID)
		}
		for _, c := range members {
			if !pred.hasIdentity(c) {
				return fmt.Errorf("%w: branch %x has a member that is not in group %x", ErrInvalidProposal, g.ctx.GroupID, id.PSKGroupID)
			}
		}
	}
	return nil
}

func marshalExtensions(es Extensions) ([]byte, error) {
	var w codec.Writer
	es.marshal(&w)
	return w.Finish()
}
