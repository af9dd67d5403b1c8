package mls

import (
	"bytes"
	"fmt"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

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
// another member (RFC 9420 §12.4.2), content being the encoding of
// ac.Content, once its confirmation tag verifies. It returns whether this
// member was removed.
func (g *Group) applyCommit(ac *AuthenticatedContent, content []byte) (*Group, bool, error) {
	n, removed, err := g.commitEpoch(ac, content)
	if err != nil || removed {
		return n, removed, err
	}
	if !g.cs.VerifyMAC(n.secrets.ConfirmationKey.Bytes(), n.ctx.ConfirmedTranscriptHash, ac.Auth.ConfirmationTag) {
		return nil, false, fmt.Errorf("%w: confirmation tag of the commit from leaf %d for epoch %d", ErrTampered, ac.Content.Sender.LeafIndex, n.ctx.Epoch)
	}
	return n, false, nil
}

// commitEpoch is applyCommit without the check of the confirmation tag:
// the group in the commit's epoch, with the tag this member derives.
func (g *Group) commitEpoch(ac *AuthenticatedContent, content []byte) (*Group, bool, error) {
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
	if newCtx.ConfirmedTranscriptHash, err = confirmedTranscriptHashOf(g.cs, g.interim, ac, content); err != nil {
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
	n.confirmationTag = tag
	if n.interim, err = interimTranscriptHash(g.cs, newCtx.ConfirmedTranscriptHash, tag); err != nil {
		return nil, false, err
	}
	n.proposals, n.pendingUpdates = nil, map[string]*ciphersuite.HPKEPrivateKey{}
	n.reinit = eff.reinit
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
	if g.reinit != nil {
		return fmt.Errorf("%w: group %x epoch %d sends nothing more; its successor is group %x", ErrReInitialized, g.ctx.GroupID, g.ctx.Epoch, g.reinit.GroupID)
	}
	return nil
}
