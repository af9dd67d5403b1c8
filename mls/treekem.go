package mls

import (
	"bytes"
	"crypto/rand"
	"fmt"
	"io"
	"maps"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/treemath"
)

// labelUpdatePathNode is the EncryptWithLabel label of path secrets.
const labelUpdatePathNode = "UpdatePathNode"

// TreePrivateKeys holds the HPKE private keys one member knows for nodes of
// the ratchet tree: its own leaf and the parents on its direct path it has
// path secrets for. It is immutable: methods that change it return a copy.
// Its String, GoString and %v never print key bytes.
type TreePrivateKeys struct {
	leaf LeafIndex
	keys map[NodeIndex]*ciphersuite.HPKEPrivateKey
}

// NewTreePrivateKeys returns the private state of the member at leaf,
// holding its leaf's HPKE private key.
func NewTreePrivateKeys(leaf LeafIndex, leafKey *ciphersuite.HPKEPrivateKey) *TreePrivateKeys {
	return &TreePrivateKeys{leaf: leaf, keys: map[NodeIndex]*ciphersuite.HPKEPrivateKey{leaf.Node(): leafKey}}
}

// LeafIndex returns the member's leaf.
func (k *TreePrivateKeys) LeafIndex() LeafIndex { return k.leaf }

// Key returns the private key held for node x.
func (k *TreePrivateKeys) Key(x NodeIndex) (*ciphersuite.HPKEPrivateKey, bool) {
	key, ok := k.keys[x]
	return key, ok
}

// Nodes returns the number of nodes a key is held for.
func (k *TreePrivateKeys) Nodes() int { return len(k.keys) }

// String implements fmt.Stringer without revealing keys.
func (k *TreePrivateKeys) String() string {
	return fmt.Sprintf("TreePrivateKeys(leaf %d, %d keys, REDACTED)", k.leaf, len(k.keys))
}

// GoString implements fmt.GoStringer without revealing keys.
func (k *TreePrivateKeys) GoString() string { return k.String() }

// Format prints String for every verb, so no key bytes leak through %x.
func (k *TreePrivateKeys) Format(f fmt.State, _ rune) { fmt.Fprint(f, k.String()) }

// WithKey returns a copy that also holds key for node x.
func (k *TreePrivateKeys) WithKey(x NodeIndex, key *ciphersuite.HPKEPrivateKey) *TreePrivateKeys {
	c := &TreePrivateKeys{leaf: k.leaf, keys: maps.Clone(k.keys)}
	c.keys[x] = key
	return c
}

// WithPathSecret returns a copy that holds the key derived from pathSecret
// for node x (node_secret = DeriveSecret(path_secret, "node")).
func (k *TreePrivateKeys) WithPathSecret(cs *ciphersuite.CipherSuite, x NodeIndex, pathSecret []byte) (*TreePrivateKeys, error) {
	key, err := nodeKey(cs, pathSecret)
	if err != nil {
		return nil, err
	}
	return k.WithKey(x, key), nil
}

// CheckAgainst verifies that every key held is for a non-blank node of t
// whose public key matches. Errors wrap [ErrInvalidTree].
func (k *TreePrivateKeys) CheckAgainst(t RatchetTree) error {
	for x, key := range k.keys {
		n := t.Node(x)
		if n.IsBlank() {
			return fmt.Errorf("%w: private key held for blank node %d", ErrInvalidTree, x)
		}
		if !bytes.Equal(n.encryptionKey(), key.PublicKey()) {
			return fmt.Errorf("%w: private key for node %d does not match its public key", ErrInvalidTree, x)
		}
	}
	return nil
}

// checkCovers reports a non-blank node above the leaf of k in t whose
// private key k lacks although the leaf is not unmerged there: RFC 9420
// §4.1's tree invariant, which a joiner's keys must meet or it could not
// decrypt a path encrypted to that node. Errors wrap [ErrInvalidTree].
func (k *TreePrivateKeys) checkCovers(t RatchetTree) error {
	for _, x := range treemath.DirectPath(k.leaf.Node(), t.LeafCount()) {
		p := t.Node(x).Parent
		if p == nil || contains(p.UnmergedLeaves, k.leaf) {
			continue
		}
		if _, ok := k.keys[x]; !ok {
			return fmt.Errorf("%w: leaf %d is below node %d, not unmerged there, and holds no key for it", ErrInvalidTree, k.leaf, x)
		}
	}
	return nil
}

// ImplantPathSecret returns a copy that holds the keys derived from
// pathSecret for node x and, by repeated DeriveSecret(., "path"), for every
// node above x on the filtered direct path of sender in t, as a joiner
// does with the path secret of a Welcome (RFC 9420 §12.4.3.1). Each derived
// public key must match the tree.
func (k *TreePrivateKeys) ImplantPathSecret(cs *ciphersuite.CipherSuite, t RatchetTree, sender LeafIndex, x NodeIndex, pathSecret []byte) (*TreePrivateKeys, error) {
	fdp := t.FilteredDirectPath(sender)
	start := -1
	for i, p := range fdp {
		if p == x {
			start = i
		}
	}
	if start < 0 {
		return nil, fmt.Errorf("%w: node %d is not on the filtered direct path of leaf %d", ErrInvalidTree, x, sender)
	}
	c := &TreePrivateKeys{leaf: k.leaf, keys: maps.Clone(k.keys)}
	ps := pathSecret
	for i := start; i < len(fdp); i++ {
		if i > start {
			var err error
			if ps, err = cs.DeriveSecret(ps, "path"); err != nil {
				return nil, err
			}
		}
		key, err := nodeKey(cs, ps)
		if err != nil {
			return nil, err
		}
		if !bytes.Equal(key.PublicKey(), t.Node(fdp[i]).encryptionKey()) {
			return nil, fmt.Errorf("%w: key derived for node %d does not match the tree", ErrInvalidTree, fdp[i])
		}
		c.keys[fdp[i]] = key
	}
	return c, nil
}

// nodeKey derives a node's key pair from its path secret.
func nodeKey(cs *ciphersuite.CipherSuite, pathSecret []byte) (*ciphersuite.HPKEPrivateKey, error) {
	ns, err := cs.DeriveSecret(pathSecret, "node")
	if err != nil {
		return nil, err
	}
	return cs.DeriveKeyPair(ns)
}

// PathUpdate is the outcome of creating or applying an UpdatePath. It
// holds secrets (the commit secret, the path secrets, the private keys):
// its String, GoString and every fmt verb print only the epoch and the
// path length, and JSON marshaling refuses with
// [ciphersuite.ErrSecretMarshal].
type PathUpdate struct {
	// Tree is the ratchet tree with the path merged.
	Tree RatchetTree
	// Path is the UpdatePath (the one created, or the one applied).
	Path UpdatePath
	// GroupContext is the provisional group context: the one given, with
	// the tree hash of Tree. It was the HPKE context of the path secrets.
	GroupContext GroupContext
	// PrivateKeys is the member's private state after the update; nil when
	// the path was merged without decryption.
	PrivateKeys *TreePrivateKeys
	// CommitSecret is path_secret[n+1]; zero when the path was merged
	// without decryption.
	CommitSecret ciphersuite.Secret

	pathSecrets map[NodeIndex]ciphersuite.Secret
}

// String describes the update without secrets.
func (u PathUpdate) String() string {
	return fmt.Sprintf("mls.PathUpdate(group %x, epoch %d, %d path nodes, %d leaves, REDACTED)",
		u.GroupContext.GroupID, u.GroupContext.Epoch, len(u.Path.Nodes), u.Tree.LeafCount())
}

// GoString is String.
func (u PathUpdate) GoString() string { return u.String() }

// Format prints String for every verb.
func (u PathUpdate) Format(f fmt.State, _ rune) { fmt.Fprint(f, u.String()) }

// MarshalJSON refuses, with [ciphersuite.ErrSecretMarshal].
func (u PathUpdate) MarshalJSON() ([]byte, error) { return nil, ciphersuite.ErrSecretMarshal }

// PathSecret returns the path secret of node x on the committer's
// filtered direct path, if this side knows it: the committer knows all of
// them, a receiver those from the node it decrypted upwards. The committer
// puts the one of the common ancestor with each new member in its Welcome.
func (u *PathUpdate) PathSecret(x NodeIndex) (ciphersuite.Secret, bool) {
	s, ok := u.pathSecrets[x]
	return s, ok
}

// mergePath returns a copy of t with the direct path of sender blanked and
// the filtered direct path set to pubs (RFC 9420 §7.5), with the parent
// hash chain computed; it also returns the parent hash the sender's leaf
// must carry. The sender's leaf itself is left to the caller.
//
// The copy starts with the tree hashes of t (computed here if t lacks
// them) less those of the sender's leaf and direct path, the only nodes
// the merge changes: once the leaf is set, the new root hash costs
// O(log n) hashes (see [merged.treeHash]).
func (t RatchetTree) mergePath(cs *ciphersuite.CipherSuite, sender LeafIndex, pubs []HPKEPublicKey) (*merged, error) {
	fdp, copath := t.filteredDirectPath(sender)
	if len(pubs) != len(fdp) {
		return nil, fmt.Errorf("%w: %d path nodes for a filtered direct path of %d", ErrInvalidUpdatePath, len(pubs), len(fdp))
	}
	// The copath subtrees are not changed by the merge. Hashing from the
	// root fills the cache of t (a no-op when it is full, as after the
	// commit that made t), so that the copy inherits every hash.
	siblings := make([][]byte, len(copath))
	err := t.withMemo(cs, func(m nodeMemo) error {
		if _, err := t.subtreeHash(cs, treemath.Root(t.LeafCount()), nil, m); err != nil {
			return err
		}
		for i, c := range copath {
			siblings[i] = m.hashes[c]
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	m := &merged{tree: t.clone(), fdp: fdp, copath: copath, sender: sender}
	m.tree.blankDirectPath(sender)
	ph := []byte{}
	for i := len(fdp) - 1; i >= 0; i-- {
		p := &ParentNode{EncryptionKey: pubs[i], ParentHash: ph, UnmergedLeaves: []LeafIndex{}}
		m.tree.setNode(fdp[i], Node{Parent: p})
		if ph, err = parentHash(cs, p.EncryptionKey, p.ParentHash, siblings[i]); err != nil {
			return nil, err
		}
	}
	m.leafPH = ph
	return m, nil
}

// merged is a tree with an UpdatePath merged, before its leaf is set.
type merged struct {
	tree   RatchetTree
	sender LeafIndex
	fdp    []NodeIndex
	copath []NodeIndex
	leafPH []byte
}

// setLeaf sets the sender's leaf of the merged tree.
func (m *merged) setLeaf(leaf *LeafNode) {
	m.tree.setNode(m.sender.Node(), Node{Leaf: leaf})
	m.tree.checkCache()
}

// treeHash returns the root tree hash of m.tree; its cache lacks only the
// sender's leaf and direct path, which are recomputed.
func (m *merged) treeHash(cs *ciphersuite.CipherSuite) ([]byte, error) {
	h, err := m.tree.hashOf(cs, treemath.Root(m.tree.LeafCount()))
	return bytes.Clone(h), err
}

// encryptionTargets returns the resolution of copath node c without the
// leaves in exclude (members added by the same Commit).
func (t RatchetTree) encryptionTargets(c NodeIndex, exclude []LeafIndex) []NodeIndex {
	res := t.Resolution(c)
	if len(exclude) == 0 {
		return res
	}
	out := res[:0:0]
	for _, x := range res {
		if l, ok := x.Leaf(); ok && contains(exclude, l) {
			continue
		}
		out = append(out, x)
	}
	return out
}

// withTreeHash returns gc with the tree hash of the merged tree, and its
// encoding.
func withTreeHash(cs *ciphersuite.CipherSuite, gc GroupContext, m *merged) (GroupContext, []byte, error) {
	th, err := m.treeHash(cs)
	if err != nil {
		return GroupContext{}, nil, err
	}
	gc.TreeHash = th
	b, err := gc.Marshal()
	return gc, b, err
}

// CreateUpdatePath refreshes the path of sender (RFC 9420 §7.4-7.6): it
// draws a leaf secret from random (crypto/rand when nil), derives the path
// secrets and key pairs of the filtered direct path, signs a copy of leaf
// as a commit-source leaf carrying the new encryption key and parent hash,
// merges everything into a copy of t, and encrypts each path secret to the
// resolution of its copath child, leaving out the leaves in exclude (the
// members added by the same Commit). gc is the provisional group context;
// its tree hash is replaced by the new tree's.
func (t RatchetTree) CreateUpdatePath(cs *ciphersuite.CipherSuite, gc GroupContext, sender LeafIndex, leaf *LeafNode, sigKey *ciphersuite.SignaturePrivateKey, exclude []LeafIndex, random io.Reader) (*PathUpdate, error) {
	if t.Leaf(sender) == nil {
		return nil, fmt.Errorf("%w: sender leaf %d is blank", ErrInvalidTree, sender)
	}
	if random == nil {
		random = rand.Reader
	}
	leafSecret := make([]byte, cs.Nh())
	if _, err := io.ReadFull(random, leafSecret); err != nil {
		return nil, fmt.Errorf("mls: drawing leaf secret: %w", err)
	}
	leafKey, err := nodeKey(cs, leafSecret)
	if err != nil {
		return nil, err
	}
	fdp, _ := t.filteredDirectPath(sender)
	secrets := make([][]byte, len(fdp))
	keys := make([]*ciphersuite.HPKEPrivateKey, len(fdp))
	pubs := make([]HPKEPublicKey, len(fdp))
	ps := leafSecret
	for i := range fdp {
		if ps, err = cs.DeriveSecret(ps, "path"); err != nil {
			return nil, err
		}
		secrets[i] = ps
		if keys[i], err = nodeKey(cs, ps); err != nil {
			return nil, err
		}
		pubs[i] = keys[i].PublicKey()
	}
	commitSecret, err := cs.DeriveSecret(ps, "path")
	if err != nil {
		return nil, err
	}
	m, err := t.mergePath(cs, sender, pubs)
	if err != nil {
		return nil, err
	}
	nt, fdp, copath := m.tree, m.fdp, m.copath
	newLeaf := leaf.Clone()
	newLeaf.EncryptionKey = leafKey.PublicKey()
	newLeaf.Source = LeafNodeSourceCommit
	newLeaf.Lifetime = Lifetime{}
	newLeaf.ParentHash = m.leafPH
	if err := newLeaf.Sign(cs, sigKey, gc.GroupID, sender); err != nil {
		return nil, err
	}
	m.setLeaf(newLeaf)
	gc, ctx, err := withTreeHash(cs, gc, m)
	if err != nil {
		return nil, err
	}
	up := &PathUpdate{
		Tree:         nt,
		GroupContext: gc,
		PrivateKeys:  NewTreePrivateKeys(sender, leafKey),
		CommitSecret: ciphersuite.NewSecret(commitSecret),
		pathSecrets:  make(map[NodeIndex]ciphersuite.Secret, len(fdp)),
	}
	up.Path.LeafNode = *newLeaf
	up.Path.Nodes = make([]UpdatePathNode, len(fdp))
	for i, p := range fdp {
		up.PrivateKeys.keys[p] = keys[i]
		up.pathSecrets[p] = ciphersuite.NewSecret(secrets[i])
		node := UpdatePathNode{EncryptionKey: pubs[i]}
		for _, target := range nt.encryptionTargets(copath[i], exclude) {
			kem, ct, err := cs.EncryptWithLabel(nt.Node(target).encryptionKey(), labelUpdatePathNode, ctx, secrets[i])
			if err != nil {
				return nil, fmt.Errorf("mls: encrypting path secret of node %d to node %d: %w", p, target, err)
			}
			node.EncryptedPathSecret = append(node.EncryptedPathSecret, HPKECiphertext{KEMOutput: kem, Ciphertext: ct})
		}
		up.Path.Nodes[i] = node
	}
	return up, nil
}

// ApplyUpdatePath merges path, sent by sender, into a copy of t (RFC 9420
// §7.5): it checks the leaf (commit source, signature bound to the group
// and sender), that the path's keys are valid keys of the suite's KEM and
// new to the tree, the ciphertext counts and the parent hash in the leaf. With keys (the receiver's private
// state) it then decrypts the path secret of the lowest node above the
// receiver, derives the rest, checks that the derived public keys match,
// and returns the new private state and commit secret; with keys nil it only
// merges. gc is the provisional group context; its tree hash is replaced by
// the merged tree's. exclude lists the members added by the same Commit.
// Rules of the group rather than of the leaf (required capabilities,
// credential types supported by every member, unique signature keys) are
// the caller's to check on the merged tree; [Group] does.
func (t RatchetTree) ApplyUpdatePath(cs *ciphersuite.CipherSuite, gc GroupContext, sender LeafIndex, path *UpdatePath, keys *TreePrivateKeys, exclude []LeafIndex) (*PathUpdate, error) {
	old := t.Leaf(sender)
	if old == nil {
		return nil, fmt.Errorf("%w: sender leaf %d is blank", ErrInvalidUpdatePath, sender)
	}
	if err := path.LeafNode.Validate(cs, LeafNodeSourceCommit, gc.GroupID, sender); err != nil {
		return nil, fmt.Errorf("%w: leaf node: %w", ErrInvalidUpdatePath, err)
	}
	if bytes.Equal(old.EncryptionKey, path.LeafNode.EncryptionKey) {
		return nil, fmt.Errorf("%w: leaf encryption key is unchanged", ErrInvalidUpdatePath)
	}
	pubs := make([]HPKEPublicKey, len(path.Nodes))
	for i := range path.Nodes {
		pubs[i] = path.Nodes[i].EncryptionKey
		// A member below a higher node never derives this one's key; an
		// invalid key would let it accept a tree no path can encrypt to.
		if err := cs.ValidateHPKEPublicKey(pubs[i]); err != nil {
			return nil, fmt.Errorf("%w: key of path node %d: %w", ErrInvalidUpdatePath, i, err)
		}
	}
	if err := t.checkFreshKeys(sender, append([]HPKEPublicKey{path.LeafNode.EncryptionKey}, pubs...)); err != nil {
		return nil, err
	}
	m, err := t.mergePath(cs, sender, pubs)
	if err != nil {
		return nil, err
	}
	nt, fdp, copath := m.tree, m.fdp, m.copath
	if !bytes.Equal(m.leafPH, path.LeafNode.ParentHash) {
		return nil, fmt.Errorf("%w: parent hash in leaf %d does not match the path", ErrInvalidUpdatePath, sender)
	}
	m.setLeaf(path.LeafNode.Clone())
	for i := range fdp {
		if want := len(nt.encryptionTargets(copath[i], exclude)); len(path.Nodes[i].EncryptedPathSecret) != want {
			return nil, fmt.Errorf("%w: node %d has %d encrypted path secrets, want %d", ErrInvalidUpdatePath, fdp[i], len(path.Nodes[i].EncryptedPathSecret), want)
		}
	}
	gc, ctx, err := withTreeHash(cs, gc, m)
	if err != nil {
		return nil, err
	}
	up := &PathUpdate{Tree: nt, Path: *path, GroupContext: gc}
	if keys == nil {
		return up, nil
	}
	if err := up.decrypt(cs, t, sender, keys, fdp, copath, exclude, ctx); err != nil {
		return nil, err
	}
	return up, nil
}

// checkFreshKeys reports a path key already used by a node of t outside
// the sender's leaf and direct path (RFC 9420 §12.4.2), or used twice.
//
// It indexes the few path keys, not the tree: one pass over the nodes
// with a lookup each, without allocating per node.
func (t RatchetTree) checkFreshKeys(sender LeafIndex, pubs []HPKEPublicKey) error {
	fresh := make(map[string]bool, len(pubs))
	for _, pub := range pubs {
		if fresh[string(pub)] {
			return fmt.Errorf("%w: path public key repeated", ErrInvalidUpdatePath)
		}
		fresh[string(pub)] = true
	}
	for x, node := range t.nodes {
		if node.IsBlank() || !fresh[string(node.encryptionKey())] {
			continue
		}
		// The sender's own leaf and direct path (its ancestors, in a full
		// tree) are replaced by the path.
		if treemath.IsAncestor(NodeIndex(x), sender.Node()) {
			continue
		}
		return fmt.Errorf("%w: path public key already in the tree at node %d", ErrInvalidUpdatePath, x)
	}
	return nil
}

// decrypt recovers the receiver's path secrets from up.Path.
func (up *PathUpdate) decrypt(cs *ciphersuite.CipherSuite, t RatchetTree, sender LeafIndex, keys *TreePrivateKeys, fdp, copath []NodeIndex, exclude []LeafIndex, ctx []byte) error {
	me := keys.leaf
	if me == sender {
		return fmt.Errorf("%w: leaf %d cannot process its own path", ErrInvalidUpdatePath, me)
	}
	start := -1
	for i, p := range fdp {
		if treemath.IsAncestor(p, me.Node()) {
			start = i
			break
		}
	}
	if start < 0 {
		return fmt.Errorf("%w: leaf %d is not below the filtered direct path of leaf %d", ErrInvalidUpdatePath, me, sender)
	}
	targets := t.encryptionTargets(copath[start], exclude)
	var ps []byte
	for j, x := range targets {
		key, ok := keys.keys[x]
		if !ok {
			continue
		}
		ct := up.Path.Nodes[start].EncryptedPathSecret[j]
		var err error
		if ps, err = cs.DecryptWithLabel(key, labelUpdatePathNode, ctx, ct.KEMOutput, ct.Ciphertext); err != nil {
			return fmt.Errorf("%w: path secret of node %d: %w", ErrInvalidUpdatePath, fdp[start], err)
		}
		break
	}
	if ps == nil {
		return fmt.Errorf("%w: leaf %d holds no key for the resolution of node %d", ErrInvalidUpdatePath, me, copath[start])
	}
	nk := &TreePrivateKeys{leaf: me, keys: maps.Clone(keys.keys)}
	for _, p := range treemath.DirectPath(sender.Node(), t.LeafCount()) {
		delete(nk.keys, p)
	}
	up.pathSecrets = make(map[NodeIndex]ciphersuite.Secret, len(fdp)-start)
	for i := start; i < len(fdp); i++ {
		if i > start {
			var err error
			if ps, err = cs.DeriveSecret(ps, "path"); err != nil {
				return err
			}
		}
		key, err := nodeKey(cs, ps)
		if err != nil {
			return err
		}
		if !bytes.Equal(key.PublicKey(), up.Path.Nodes[i].EncryptionKey) {
			return fmt.Errorf("%w: public key derived for node %d does not match the path", ErrInvalidUpdatePath, fdp[i])
		}
		nk.keys[fdp[i]] = key
		up.pathSecrets[fdp[i]] = ciphersuite.NewSecret(ps)
	}
	cs2, err := cs.DeriveSecret(ps, "path")
	if err != nil {
		return err
	}
	up.CommitSecret = ciphersuite.NewSecret(cs2)
	up.PrivateKeys = nk
	return nil
}
