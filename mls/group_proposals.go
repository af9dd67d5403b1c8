package mls

import (
	"bytes"
	"fmt"
	"slices"
	"time"
)

// cacheProposal records a proposal for commits of this epoch.
func (g *Group) cacheProposal(ac *AuthenticatedContent) error {
	b, err := ac.Marshal()
	if err != nil {
		return err
	}
	ref, err := g.cs.MakeProposalRef(b)
	if err != nil {
		return err
	}
	if slices.ContainsFunc(g.proposals, func(c cachedProposal) bool { return bytes.Equal(c.ref, ref) }) {
		return nil // a replay: cached once
	}
	g.proposals = append(g.proposals, cachedProposal{ref: ref, sender: ac.Content.Sender, proposal: ac.Content.Proposal})
	return nil
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
