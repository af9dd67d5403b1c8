package mls

import (
	"fmt"
	"maps"
	"slices"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
	"github.com/epochlog/epochlog/mls/keyschedule"
	"github.com/epochlog/epochlog/mls/treemath"
)

// stateVersion is the leading byte of a serialized Group. Bump it when the
// layout changes and keep decoding the old ones.
const stateVersion = 1

// MarshalBinary serializes the full client state, secrets included, as
// stable versioned bytes: a version byte, then the fields in MLS
// presentation-language encoding. The bytes are as sensitive as the keys:
// store them encrypted. Past epochs are stored as their encryption secret
// and a log of the generations consumed, from which [UnmarshalState]
// rebuilds the same secret trees.
func (g *Group) MarshalBinary() ([]byte, error) {
	var w codec.Writer
	w.Uint8(stateVersion)
	w.Uint16(uint16(g.ctx.CipherSuite))
	w.Uint32(uint32(int32(g.opts.MaxPastEpochs)))
	w.Uint32(g.opts.MaxForwardRatchets)
	w.Optional(g.opts.EncryptHandshake)
	w.Uint16(g.opts.Padding)
	g.ctx.marshal(&w)
	g.tree.marshal(&w)
	w.Uint32(uint32(g.me))
	w.OpaqueV(g.sig.Bytes())
	w.Optional(g.keys != nil)
	if g.keys != nil {
		nodes := append([]NodeIndex{g.me.Node()}, treemath.DirectPath(g.me.Node(), g.tree.LeafCount())...)
		w.VectorV(func(w *codec.Writer) {
			for _, x := range nodes {
				if k, ok := g.keys.Key(x); ok {
					w.Uint32(uint32(x))
					w.OpaqueV(k.Bytes())
				}
			}
		})
	}
	w.OpaqueV(g.joinerSecret.Bytes())
	w.OpaqueV(g.pskSecret.Bytes())
	w.OpaqueV(g.confirmationTag)
	w.OpaqueV(g.interim)
	writeRatchetLog(&w, g.epochKeys.log)
	w.VectorV(func(w *codec.Writer) {
		for _, p := range g.proposals {
			w.OpaqueV(p.ref)
			p.sender.marshal(w)
			p.proposal.marshal(w)
		}
	})
	for _, m := range []map[string]keyschedule.Secret{hpkeSecrets(g.pendingUpdates), g.psks} {
		w.VectorV(func(w *codec.Writer) {
			for _, k := range slices.Sorted(maps.Keys(m)) {
				w.OpaqueV([]byte(k))
				w.OpaqueV(m[k].Bytes())
			}
		})
	}
	w.VectorV(func(w *codec.Writer) {
		for _, p := range g.past {
			p.ctx.marshal(w)
			p.tree.marshal(w)
			w.OpaqueV(p.senderDataSecret.Bytes())
			w.OpaqueV(p.resumptionPSK.Bytes())
			w.OpaqueV(p.keys.root.Bytes())
			writeRatchetLog(w, p.keys.log)
		}
	})
	return w.Finish()
}

func hpkeSecrets(m map[string]*ciphersuite.HPKEPrivateKey) map[string]keyschedule.Secret {
	out := make(map[string]keyschedule.Secret, len(m))
	for k, v := range m {
		out[k] = ciphersuite.NewSecret(v.Bytes())
	}
	return out
}

func writeRatchetLog(w *codec.Writer, log map[ratchetKey]*ratchetLog) {
	ids := slices.SortedFunc(maps.Keys(log), func(a, b ratchetKey) int {
		if a.leaf != b.leaf {
			return int(a.leaf) - int(b.leaf)
		}
		return int(a.typ) - int(b.typ)
	})
	w.VectorV(func(w *codec.Writer) {
		for _, id := range ids {
			l := log[id]
			w.Uint32(uint32(id.leaf))
			w.Uint8(uint8(id.typ))
			w.Uint32(l.next)
			w.VectorV(func(w *codec.Writer) {
				for _, g := range l.skipped {
					w.Uint32(g)
				}
			})
		}
	})
}

func readRatchetLog(r *codec.Reader) map[ratchetKey]*ratchetLog {
	log := map[ratchetKey]*ratchetLog{}
	_ = r.ForEachV(func(sub *codec.Reader) error {
		leaf, _ := sub.Uint32()
		typ, _ := sub.Uint8()
		next, _ := sub.Uint32()
		l := &ratchetLog{next: next, skipped: readList(sub, readUint32)}
		if typ != uint8(keyschedule.Handshake) && typ != uint8(keyschedule.Application) {
			return sub.Failf("ratchet type %d", typ)
		}
		if !slices.IsSorted(l.skipped) {
			return sub.Failf("skipped generations not sorted")
		}
		log[ratchetKey{LeafIndex(leaf), keyschedule.ContentType(typ)}] = l
		return sub.Err()
	})
	return log
}

// UnmarshalState restores a Group serialized by [Group.MarshalBinary].
// Errors wrap [ErrStateVersion] for an unknown version and [ErrDecode] for
// malformed input; they never include secret bytes.
func UnmarshalState(b []byte) (*Group, error) {
	r := codec.NewReader(b)
	v, err := r.Uint8()
	if err != nil {
		return nil, err
	}
	if v != stateVersion {
		return nil, fmt.Errorf("%w: %d (this build reads %d)", ErrStateVersion, v, stateVersion)
	}
	suite, _ := r.Uint16()
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(suite))
	if err != nil {
		return nil, err
	}
	g := &Group{cs: cs, pendingUpdates: map[string]*ciphersuite.HPKEPrivateKey{}, psks: map[string]keyschedule.Secret{}}
	mp, _ := r.Uint32()
	g.opts.MaxPastEpochs = int(int32(mp))
	g.opts.MaxForwardRatchets, _ = r.Uint32()
	g.opts.EncryptHandshake, _ = r.Optional()
	g.opts.Padding, _ = r.Uint16()
	if err := g.ctx.unmarshal(r); err != nil {
		return nil, err
	}
	if g.ctx.CipherSuite != cs.ID() {
		return nil, fmt.Errorf("%w: state suite %d, group context suite %d", ErrDecode, suite, g.ctx.CipherSuite)
	}
	if g.tree, err = readRatchetTree(r); err != nil {
		return nil, err
	}
	me, _ := r.Uint32()
	g.me = LeafIndex(me)
	sigBytes, err := r.OpaqueV()
	if err != nil {
		return nil, err
	}
	if g.sig, err = cs.ParseSignaturePrivateKey(sigBytes); err != nil {
		return nil, fmt.Errorf("%w: signature key: %w", ErrDecode, err)
	}
	active, err := r.Optional()
	if err != nil {
		return nil, err
	}
	if active {
		keys := map[NodeIndex]*ciphersuite.HPKEPrivateKey{}
		err := r.ForEachV(func(sub *codec.Reader) error {
			x, _ := sub.Uint32()
			kb, err := sub.OpaqueV()
			if err != nil {
				return err
			}
			k, err := cs.ParseHPKEPrivateKey(kb)
			if err != nil {
				return sub.Failf("private key of node %d", x)
			}
			keys[NodeIndex(x)] = k
			return nil
		})
		if err != nil {
			return nil, err
		}
		leafKey, ok := keys[g.me.Node()]
		if !ok {
			return nil, fmt.Errorf("%w: no private key for leaf %d", ErrDecode, g.me)
		}
		g.keys = NewTreePrivateKeys(g.me, leafKey)
		for x, k := range keys {
			g.keys = g.keys.WithKey(x, k)
		}
		if err := g.keys.CheckAgainst(g.tree); err != nil {
			return nil, err
		}
	}
	secret := func() keyschedule.Secret {
		s, _ := r.OpaqueV()
		return ciphersuite.NewSecret(s)
	}
	joiner, psk := secret(), secret()
	g.confirmationTag, _ = r.OpaqueV()
	g.interim, _ = r.OpaqueV()
	log := readRatchetLog(r)
	_ = r.ForEachV(func(sub *codec.Reader) error {
		var p cachedProposal
		p.ref, _ = sub.OpaqueV()
		if err := p.sender.unmarshal(sub); err != nil {
			return err
		}
		p.proposal = new(Proposal)
		if err := p.proposal.unmarshal(sub); err != nil {
			return err
		}
		g.proposals = append(g.proposals, p)
		return nil
	})
	var updates map[string]keyschedule.Secret
	for _, dst := range []*map[string]keyschedule.Secret{&updates, &g.psks} {
		m := map[string]keyschedule.Secret{}
		_ = r.ForEachV(func(sub *codec.Reader) error {
			k, _ := sub.OpaqueV()
			v, err := sub.OpaqueV()
			m[string(k)] = ciphersuite.NewSecret(v)
			return err
		})
		*dst = m
	}
	for ref, s := range updates {
		k, err := cs.ParseHPKEPrivateKey(s.Bytes())
		if err != nil {
			return nil, fmt.Errorf("%w: private key of a pending update", ErrDecode)
		}
		g.pendingUpdates[ref] = k
	}
	err = r.ForEachV(func(sub *codec.Reader) error {
		var p pastEpoch
		if err := p.ctx.unmarshal(sub); err != nil {
			return err
		}
		var err error
		if p.tree, err = readRatchetTree(sub); err != nil {
			return err
		}
		sds, _ := sub.OpaqueV()
		res, _ := sub.OpaqueV()
		root, _ := sub.OpaqueV()
		plog := readRatchetLog(sub)
		if err := sub.Err(); err != nil {
			return err
		}
		p.senderDataSecret, p.resumptionPSK = ciphersuite.NewSecret(sds), ciphersuite.NewSecret(res)
		if p.keys, err = restoreEpochKeys(cs, ciphersuite.NewSecret(root), p.tree.LeafCount(), g.opts.MaxForwardRatchets, plog); err != nil {
			return err
		}
		g.past = append(g.past, p)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := r.Done(); err != nil {
		return nil, err
	}
	gcBytes, err := g.ctx.Marshal()
	if err != nil {
		return nil, err
	}
	if err := g.enterEpoch(joiner, psk, gcBytes); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrDecode, err)
	}
	if g.epochKeys, err = restoreEpochKeys(cs, g.secrets.EncryptionSecret, g.tree.LeafCount(), g.opts.MaxForwardRatchets, log); err != nil {
		return nil, err
	}
	return g, nil
}
