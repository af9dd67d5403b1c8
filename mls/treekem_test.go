package mls

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
	"github.com/epochlog/epochlog/mls/treemath"
)

type treeKEMCase struct {
	CipherSuite             uint16 `json:"cipher_suite"`
	GroupID                 hexb   `json:"group_id"`
	Epoch                   uint64 `json:"epoch"`
	ConfirmedTranscriptHash hexb   `json:"confirmed_transcript_hash"`
	RatchetTree             hexb   `json:"ratchet_tree"`
	LeavesPrivate           []struct {
		Index          uint32 `json:"index"`
		EncryptionPriv hexb   `json:"encryption_priv"`
		SignaturePriv  hexb   `json:"signature_priv"`
		PathSecrets    []struct {
			Node       uint32 `json:"node"`
			PathSecret hexb   `json:"path_secret"`
		} `json:"path_secrets"`
	} `json:"leaves_private"`
	UpdatePaths []struct {
		Sender        uint32 `json:"sender"`
		UpdatePath    hexb   `json:"update_path"`
		PathSecrets   []hexb `json:"path_secrets"`
		CommitSecret  hexb   `json:"commit_secret"`
		TreeHashAfter hexb   `json:"tree_hash_after"`
	} `json:"update_paths"`
}

func TestTreeKEMVectors(t *testing.T) {
	var cases []treeKEMCase
	vectortest.Load(t, "treekem.json", &cases)
	tally := vectortest.NewTally(t, "treekem.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d", i, tc.CipherSuite)
		cs := lookupSuite(t, tally, name, tc.CipherSuite)
		if cs == nil {
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) { runTreeKEMCase(t, cs, &tc) })
	}
}

func runTreeKEMCase(t *testing.T, cs *ciphersuite.CipherSuite, tc *treeKEMCase) {
	tree, err := UnmarshalRatchetTree(tc.RatchetTree)
	if err != nil {
		t.Fatalf("ratchet_tree: %v", err)
	}
	gc := GroupContext{
		Version:                 ProtocolMLS10,
		CipherSuite:             cs.ID(),
		GroupID:                 tc.GroupID,
		Epoch:                   tc.Epoch,
		ConfirmedTranscriptHash: tc.ConfirmedTranscriptHash,
		Extensions:              Extensions{},
	}
	// Private states, checked against the public tree.
	privs := map[LeafIndex]*TreePrivateKeys{}
	sigKeys := map[LeafIndex]*ciphersuite.SignaturePrivateKey{}
	for _, lp := range tc.LeavesPrivate {
		l := LeafIndex(lp.Index)
		leafKey, err := cs.ParseHPKEPrivateKey(lp.EncryptionPriv)
		if err != nil {
			t.Fatalf("leaf %d encryption_priv: %v", l, err)
		}
		k := NewTreePrivateKeys(l, leafKey)
		for _, ps := range lp.PathSecrets {
			if k, err = k.WithPathSecret(cs, NodeIndex(ps.Node), ps.PathSecret); err != nil {
				t.Fatalf("leaf %d path secret for node %d: %v", l, ps.Node, err)
			}
		}
		if err := k.CheckAgainst(tree); err != nil {
			t.Fatalf("leaf %d private state: %v", l, err)
		}
		privs[l] = k
		if sigKeys[l], err = cs.ParseSignaturePrivateKey(lp.SignaturePriv); err != nil {
			t.Fatalf("leaf %d signature_priv: %v", l, err)
		}
	}
	for _, up := range tc.UpdatePaths {
		sender := LeafIndex(up.Sender)
		var path UpdatePath
		if err := path.Unmarshal(up.UpdatePath); err != nil {
			t.Fatalf("update path of %d: %v", sender, err)
		}
		merged, err := tree.ApplyUpdatePath(cs, gc, sender, &path, nil, nil)
		if err != nil {
			t.Fatalf("merging path of %d: %v", sender, err)
		}
		vectortest.Equal(t, fmt.Sprintf("tree_hash_after (sender %d)", sender), merged.GroupContext.TreeHash, up.TreeHashAfter)
		if err := merged.Tree.VerifyParentHashes(cs); err != nil {
			t.Errorf("merged tree of sender %d: %v", sender, err)
		}
		for j, want := range up.PathSecrets {
			l := LeafIndex(j)
			if l == sender || tree.Leaf(l) == nil {
				continue
			}
			got, err := tree.ApplyUpdatePath(cs, gc, sender, &path, privs[l], nil)
			if err != nil {
				t.Errorf("leaf %d processing path of %d: %v", l, sender, err)
				continue
			}
			lca := treemath.CommonAncestor(sender.Node(), l.Node())
			ps, ok := got.PathSecret(lca)
			if !ok {
				t.Errorf("leaf %d: no path secret for common ancestor %d", l, lca)
				continue
			}
			vectortest.Equal(t, fmt.Sprintf("path secret of leaf %d from %d", l, sender), ps.Bytes(), want)
			vectortest.Equal(t, fmt.Sprintf("commit secret of leaf %d from %d", l, sender), got.CommitSecret.Bytes(), up.CommitSecret)
			if err := got.PrivateKeys.CheckAgainst(got.Tree); err != nil {
				t.Errorf("leaf %d private state after update: %v", l, err)
			}
		}

		// A fresh path from the same sender must be processable by everyone.
		created, err := tree.CreateUpdatePath(cs, gc, sender, tree.Leaf(sender), sigKeys[sender], nil, nil)
		if err != nil {
			t.Fatalf("creating path for %d: %v", sender, err)
		}
		if err := created.Tree.VerifyParentHashes(cs); err != nil {
			t.Errorf("created tree of sender %d: %v", sender, err)
		}
		if err := created.PrivateKeys.CheckAgainst(created.Tree); err != nil {
			t.Errorf("sender %d private state after create: %v", sender, err)
		}
		enc, err := created.Path.Marshal()
		if err != nil {
			t.Fatal(err)
		}
		var wire UpdatePath
		if err := wire.Unmarshal(enc); err != nil {
			t.Fatalf("created path does not decode: %v", err)
		}
		for l, k := range privs {
			if l == sender || tree.Leaf(l) == nil {
				continue
			}
			got, err := tree.ApplyUpdatePath(cs, gc, sender, &wire, k, nil)
			if err != nil {
				t.Errorf("leaf %d processing created path of %d: %v", l, sender, err)
				continue
			}
			if !got.CommitSecret.Equal(created.CommitSecret) {
				t.Errorf("leaf %d: commit secret differs from the creator's", l)
			}
			vectortest.Equal(t, fmt.Sprintf("tree hash seen by leaf %d", l), got.GroupContext.TreeHash, created.GroupContext.TreeHash)
		}
	}
}

// TestUpdatePathTampering checks that a receiver refuses a path whose keys,
// parent hash, signature or ciphertexts were changed, with the sentinel.
func TestUpdatePathTampering(t *testing.T) {
	var cases []treeKEMCase
	vectortest.Load(t, "treekem.json", &cases)
	var tc *treeKEMCase
	for i := range cases {
		if cases[i].CipherSuite == uint16(ciphersuite.Default) && len(cases[i].LeavesPrivate) >= 4 {
			tc = &cases[i]
			break
		}
	}
	if tc == nil {
		t.Fatal("no suite-3 treekem case with four members")
	}
	cs, err := ciphersuite.Lookup(ciphersuite.Default)
	if err != nil {
		t.Fatal(err)
	}
	tree, err := UnmarshalRatchetTree(tc.RatchetTree)
	if err != nil {
		t.Fatal(err)
	}
	gc := GroupContext{Version: ProtocolMLS10, CipherSuite: cs.ID(), GroupID: tc.GroupID, Epoch: tc.Epoch, ConfirmedTranscriptHash: tc.ConfirmedTranscriptHash}
	up := tc.UpdatePaths[0]
	sender := LeafIndex(up.Sender)
	var recv *TreePrivateKeys
	for _, lp := range tc.LeavesPrivate {
		if LeafIndex(lp.Index) != sender && tree.Leaf(LeafIndex(lp.Index)) != nil {
			key, err := cs.ParseHPKEPrivateKey(lp.EncryptionPriv)
			if err != nil {
				t.Fatal(err)
			}
			recv = NewTreePrivateKeys(LeafIndex(lp.Index), key)
			for _, ps := range lp.PathSecrets {
				recv, _ = recv.WithPathSecret(cs, NodeIndex(ps.Node), ps.PathSecret)
			}
			break
		}
	}
	fresh := func() *UpdatePath {
		var p UpdatePath
		if err := p.Unmarshal(up.UpdatePath); err != nil {
			t.Fatal(err)
		}
		return &p
	}
	if _, err := tree.ApplyUpdatePath(cs, gc, sender, fresh(), recv, nil); err != nil {
		t.Fatalf("untampered path refused: %v", err)
	}
	tamper := map[string]func(p *UpdatePath){
		"node key":     func(p *UpdatePath) { p.Nodes[len(p.Nodes)-1].EncryptionKey = p.LeafNode.EncryptionKey },
		"parent hash":  func(p *UpdatePath) { p.LeafNode.ParentHash[0] ^= 1 },
		"signature":    func(p *UpdatePath) { p.LeafNode.Signature[len(p.LeafNode.Signature)-1] ^= 1 },
		"missing node": func(p *UpdatePath) { p.Nodes = p.Nodes[:len(p.Nodes)-1] },
		"extra ct": func(p *UpdatePath) {
			p.Nodes[0].EncryptedPathSecret = append(p.Nodes[0].EncryptedPathSecret, p.Nodes[0].EncryptedPathSecret[0])
		},
		"ciphertext bit": func(p *UpdatePath) { flipAllCiphertexts(p) },
	}
	for name, fn := range tamper {
		p := fresh()
		fn(p)
		_, err := tree.ApplyUpdatePath(cs, gc, sender, p, recv, nil)
		if !errors.Is(err, ErrInvalidUpdatePath) {
			t.Errorf("%s: got %v, want ErrInvalidUpdatePath", name, err)
		}
	}
	// A different group context is a different HPKE context: decryption fails.
	other := gc
	other.Epoch++
	if _, err := tree.ApplyUpdatePath(cs, other, sender, fresh(), recv, nil); !errors.Is(err, ErrDecrypt) {
		t.Errorf("wrong group context: got %v, want ErrDecrypt", err)
	}
}

func flipAllCiphertexts(p *UpdatePath) {
	for i := range p.Nodes {
		for j := range p.Nodes[i].EncryptedPathSecret {
			p.Nodes[i].EncryptedPathSecret[j].Ciphertext[0] ^= 1
		}
	}
}

// A PathUpdate, returned by the exported CreateUpdatePath and
// ApplyUpdatePath, holds the path secrets (from which the commit secret
// derives) in an unexported map where fmt cannot reach Secret.Format: the
// type itself must redact under every verb and refuse JSON
// (docs/security.md).
func TestPathUpdateNeverPrintsSecrets(t *testing.T) {
	w := newSCWorld(t, Options{})
	w.grow(0, 3)
	g := w.members[0]
	newCtx := g.ctx
	newCtx.Epoch++
	up, err := g.tree.CreateUpdatePath(g.cs, newCtx, g.me, g.tree.Leaf(g.me), g.sig, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	fdp := g.tree.FilteredDirectPath(g.me)
	ps, ok := up.PathSecret(fdp[len(fdp)-1])
	if !ok {
		t.Fatal("no root path secret")
	}
	secret := ps.Bytes()
	dec, hex := strings.Trim(fmt.Sprint(secret), "[]"), fmt.Sprintf("%x", secret)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%d"} {
		for _, v := range []any{up, *up} {
			if out := fmt.Sprintf(verb, v); strings.Contains(out, dec) || strings.Contains(out, hex) {
				t.Errorf("fmt %s of %T prints the root path secret", verb, v)
			}
		}
	}
	for _, v := range []any{up, *up} {
		if _, err := json.Marshal(v); !errors.Is(err, ciphersuite.ErrSecretMarshal) {
			t.Errorf("json.Marshal(%T): %v, want ErrSecretMarshal", v, err)
		}
	}
}
