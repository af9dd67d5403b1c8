package mls

import (
	"bytes"
	"fmt"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

// welcome builds the Welcome for the members added by a commit (RFC 9420
// §12.4.3.1): the GroupInfo encrypted under the welcome secret, and per new
// member the joiner secret, the path secret of its lowest common ancestor
// with the committer, and the commit's PSK ids, encrypted to its init key.
func (g *Group) welcome(gi *GroupInfo, eff *proposalEffect, up *PathUpdate, psk keyschedule.Secret) (*MLSMessage, error) {
	giBytes, err := gi.Marshal()
	if err != nil {
		return nil, err
	}
	key, nonce, err := keyschedule.WelcomeKeyNonce(g.cs, g.secrets.WelcomeSecret)
	if err != nil {
		return nil, err
	}
	egi, err := g.cs.Seal(key.Bytes(), nonce.Bytes(), nil, giBytes)
	if err != nil {
		return nil, err
	}
	w := &Welcome{CipherSuite: g.ctx.CipherSuite, EncryptedGroupInfo: egi}
	psks := eff.psks
	if psks == nil {
		psks = []PreSharedKeyID{}
	}
	// Every new member's secrets are encrypted with egi as context, which
	// carries the ratchet tree: hashed once, not once per new member.
	enc, err := g.cs.NewLabeledEncrypter(labelWelcomeSecrets, egi)
	if err != nil {
		return nil, err
	}
	for i, l := range eff.added {
		kp := &eff.addedKPs[i]
		gs := GroupSecrets{JoinerSecret: g.joinerSecret, PSKs: psks}
		if up != nil {
			x := treemath.CommonAncestor(l.Node(), g.me.Node())
			ps, ok := up.PathSecret(x)
			if !ok {
				return nil, fmt.Errorf("mls: no path secret for node %d, common ancestor of leaves %d and %d", x, l, g.me)
			}
			gs.PathSecret = &PathSecret{PathSecret: ps}
		}
		plain, err := gs.Marshal()
		if err != nil {
			return nil, err
		}
		kem, ct, err := enc.Encrypt(kp.InitKey, plain)
		if err != nil {
			return nil, fmt.Errorf("mls: encrypting group secrets to leaf %d: %w", l, err)
		}
		ref, err := kp.Ref()
		if err != nil {
			return nil, err
		}
		w.Secrets = append(w.Secrets, EncryptedGroupSecrets{NewMember: ref, EncryptedGroupSecrets: HPKECiphertext{KEMOutput: kem, Ciphertext: ct}})
	}
	return &MLSMessage{Version: ProtocolMLS10, WireFormat: WireFormatWelcome, Welcome: w}, nil
}

// ExternalPSK is an external pre-shared key offered to [Join].
type ExternalPSK struct {
	ID     []byte
	Secret ciphersuite.Secret
}

// JoinOptions configures [Join]. The zero value gives defaults.
type JoinOptions struct {
	Options
	// RatchetTree is the group's tree when the Welcome's GroupInfo does
	// not carry the ratchet_tree extension.
	RatchetTree *RatchetTree
	// ExternalPSKs are the PSKs the Welcome may name.
	ExternalPSKs []ExternalPSK
	// Predecessors are groups this client holds that the Welcome may
	// name as the group it reinitialises or branches from (a resumption
	// PSK of usage reinit or branch, RFC 9420 §11.2, §11.3): the state
	// after the commit that carried the ReInit, or a state that still
	// holds the branched epoch. Join checks the new group against it.
	Predecessors []*Group
	// FindPredecessor, when set, is asked for a predecessor the list
	// does not hold, by group id (nil: not held).
	FindPredecessor func(groupID []byte) *Group
}

// Join processes a Welcome with one of this client's KeyPackages and its
// private keys, and returns the client's state in the group's epoch (RFC
// 9420 §12.4.3.1). It checks the GroupInfo signature, the ratchet tree
// (validity and tree hash), the path secret against the tree, that it
// gives the key of every non-blank node above the joiner that does not
// list it as unmerged, and the confirmation tag.
func Join(welcome *MLSMessage, kp *KeyPackage, secrets *KeyPackageSecrets, opts *JoinOptions) (*Group, error) {
	if welcome.WireFormat != WireFormatWelcome || welcome.Welcome == nil {
		return nil, fmt.Errorf("%w: wire format %d is not a Welcome", ErrDecode, welcome.WireFormat)
	}
	if opts == nil {
		opts = &JoinOptions{}
	}
	w := welcome.Welcome
	if w.CipherSuite != kp.CipherSuite {
		return nil, fmt.Errorf("%w: Welcome of suite %d for a key package of suite %d", ErrInvalidKeyPackage, w.CipherSuite, kp.CipherSuite)
	}
	cs, err := ciphersuite.Lookup(w.CipherSuite)
	if err != nil {
		return nil, err
	}
	if err := secrets.matches(kp); err != nil {
		return nil, err
	}
	g := &Group{cs: cs, opts: opts.Options, sig: secrets.SignatureKey, pendingUpdates: map[string]*ciphersuite.HPKEPrivateKey{}, psks: map[string]keyschedule.Secret{}}
	for _, p := range opts.ExternalPSKs {
		g.psks[string(p.ID)] = p.Secret
	}
	g.preds = &joinPredecessors{list: opts.Predecessors, find: opts.FindPredecessor}
	gi, gs, psk, err := g.openWelcome(w, kp, secrets.InitKey)
	preds := g.preds
	g.preds, g.lent = nil, nil
	if err != nil {
		return nil, err
	}
	if err := gi.checkExtensionLists(); err != nil {
		return nil, err
	}
	joiner := gs.JoinerSecret
	gc := gi.GroupContext
	if gc.CipherSuite != w.CipherSuite || gc.Version != ProtocolMLS10 {
		return nil, fmt.Errorf("%w: group info of suite %d, version %d in a Welcome of suite %d", ErrWrongGroup, gc.CipherSuite, gc.Version, w.CipherSuite)
	}
	var tree RatchetTree
	if e, ok := gi.Extensions.Find(ExtensionTypeRatchetTree); ok {
		if tree, err = UnmarshalRatchetTree(e.Data); err != nil {
			return nil, fmt.Errorf("%w: ratchet_tree extension: %w", ErrInvalidTree, err)
		}
	} else if opts.RatchetTree != nil {
		tree = *opts.RatchetTree
	} else {
		return nil, fmt.Errorf("%w: the Welcome carries no ratchet tree and none was given", ErrInvalidTree)
	}
	signer := tree.Leaf(gi.Signer)
	if signer == nil {
		return nil, fmt.Errorf("%w: group info signer %d is a blank leaf", ErrInvalidTree, gi.Signer)
	}
	if err := gi.VerifySignature(cs, signer.SignatureKey); err != nil {
		return nil, fmt.Errorf("mls: group info of group %x epoch %d: %w", gc.GroupID, gc.Epoch, err)
	}
	th, err := tree.TreeHash(cs)
	if err != nil {
		return nil, err
	}
	if !bytes.Equal(th, gc.TreeHash) {
		return nil, fmt.Errorf("%w: tree hash does not match the group context of group %x epoch %d", ErrInvalidTree, gc.GroupID, gc.Epoch)
	}
	if err := tree.Validate(cs, gc.GroupID, gc.Extensions); err != nil {
		return nil, err
	}
	if err := checkExtensionSupport(tree, gc.Extensions); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidTree, err)
	}
	me, ok := tree.FindLeaf(&kp.LeafNode)
	if !ok {
		return nil, fmt.Errorf("%w: the key package's leaf is not in the tree", ErrInvalidTree)
	}
	keys := NewTreePrivateKeys(me, secrets.EncryptionKey)
	if gs.PathSecret != nil {
		x := treemath.CommonAncestor(me.Node(), gi.Signer.Node())
		if keys, err = keys.ImplantPathSecret(cs, tree, gi.Signer, x, gs.PathSecret.PathSecret.Bytes()); err != nil {
			return nil, err
		}
	}
	if err := keys.CheckAgainst(tree); err != nil {
		return nil, err
	}
	if err := keys.checkCovers(tree); err != nil {
		return nil, err
	}
	g.ctx, g.tree, g.me, g.keys = gc, tree, me, keys
	gcBytes, err := gc.Marshal()
	if err != nil {
		return nil, err
	}
	if err := g.enterEpoch(joiner, psk, gcBytes); err != nil {
		return nil, err
	}
	if !cs.VerifyMAC(g.secrets.ConfirmationKey.Bytes(), gc.ConfirmedTranscriptHash, gi.ConfirmationTag) {
		return nil, fmt.Errorf("%w: confirmation tag of group info for group %x epoch %d", ErrTampered, gc.GroupID, gc.Epoch)
	}
	g.confirmationTag = bytes.Clone(gi.ConfirmationTag)
	if g.interim, err = interimTranscriptHash(cs, gc.ConfirmedTranscriptHash, g.confirmationTag); err != nil {
		return nil, err
	}
	for i := range gs.PSKs {
		if id := &gs.PSKs[i]; startsGroup(id) {
			if err := checkSuccession(g, preds.used, id); err != nil {
				return nil, err
			}
		}
	}
	return g, nil
}

// openWelcome decrypts the group secrets addressed to kp and the GroupInfo,
// and computes the psk_secret of the PSKs they name. Nothing is verified
// beyond decryption.
func (g *Group) openWelcome(w *Welcome, kp *KeyPackage, initKey *ciphersuite.HPKEPrivateKey) (_ *GroupInfo, _ *GroupSecrets, psk keyschedule.Secret, err error) {
	ref, err := kp.Ref()
	if err != nil {
		return nil, nil, keyschedule.Secret{}, err
	}
	var egs *EncryptedGroupSecrets
	for i := range w.Secrets {
		if bytes.Equal(w.Secrets[i].NewMember, ref) {
			egs = &w.Secrets[i]
		}
	}
	if egs == nil {
		return nil, nil, keyschedule.Secret{}, fmt.Errorf("%w: key package %x", ErrNoWelcomeSecrets, ref)
	}
	plain, err := g.cs.DecryptWithLabel(initKey, labelWelcomeSecrets, w.EncryptedGroupInfo, egs.EncryptedGroupSecrets.KEMOutput, egs.EncryptedGroupSecrets.Ciphertext)
	if err != nil {
		return nil, nil, keyschedule.Secret{}, fmt.Errorf("%w: group secrets for key package %x: %w", ErrTampered, ref, err)
	}
	var gs GroupSecrets
	if err := gs.Unmarshal(plain); err != nil {
		return nil, nil, keyschedule.Secret{}, fmt.Errorf("mls: group secrets: %w", err)
	}
	for i := range gs.PSKs {
		id := &gs.PSKs[i]
		if err := checkPSKNonce(g.cs, id); err != nil {
			return nil, nil, keyschedule.Secret{}, fmt.Errorf("%w: psk %d of the Welcome: %w", ErrInvalidProposal, i, err)
		}
		switch {
		case id.Type == PSKTypeExternal:
		case startsGroup(id):
			if len(g.lent) > 0 {
				return nil, nil, keyschedule.Secret{}, fmt.Errorf("%w: the Welcome names two resumption PSKs of usage reinit or branch", ErrInvalidProposal)
			}
			pred, s, ok := g.preds.lookup(id)
			if !ok {
				return nil, nil, keyschedule.Secret{}, fmt.Errorf("%w: the Welcome starts a group from group %x epoch %d (usage %d), which this client does not hold: give it in JoinOptions.Predecessors",
					ErrUnknownPSK, id.PSKGroupID, id.PSKEpoch, id.Usage)
			}
			g.lent = []lentPSK{{groupID: id.PSKGroupID, epoch: id.PSKEpoch, usage: id.Usage, secret: s}}
			g.preds.used = pred
		default:
			return nil, nil, keyschedule.Secret{}, fmt.Errorf("%w: a joiner holds no resumption PSK of usage %d (group %x, epoch %d)", ErrUnknownPSK, id.Usage, id.PSKGroupID, id.PSKEpoch)
		}
	}
	psk, err = g.pskSecretFor(gs.PSKs)
	if err != nil {
		return nil, nil, keyschedule.Secret{}, err
	}
	joiner := gs.JoinerSecret
	if joiner.Len() != g.cs.Nh() {
		return nil, nil, keyschedule.Secret{}, fmt.Errorf("%w: joiner secret of %d bytes", ErrTampered, joiner.Len())
	}
	ws, err := keyschedule.WelcomeSecret(g.cs, joiner, psk)
	if err != nil {
		return nil, nil, keyschedule.Secret{}, err
	}
	key, nonce, err := keyschedule.WelcomeKeyNonce(g.cs, ws)
	if err != nil {
		return nil, nil, keyschedule.Secret{}, err
	}
	giBytes, err := g.cs.Open(key.Bytes(), nonce.Bytes(), nil, w.EncryptedGroupInfo)
	if err != nil {
		return nil, nil, keyschedule.Secret{}, fmt.Errorf("%w: encrypted group info: %w", ErrTampered, err)
	}
	var gi GroupInfo
	if err := gi.Unmarshal(giBytes); err != nil {
		return nil, nil, keyschedule.Secret{}, fmt.Errorf("mls: group info: %w", err)
	}
	return &gi, &gs, psk, nil
}
