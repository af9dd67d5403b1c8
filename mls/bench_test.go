package mls

import (
	"fmt"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/treemath"
)

// benchGroup is a tree of n members with every parent populated (the
// state after everyone committed), and the keys needed to drive it.
type benchGroup struct {
	cs    *ciphersuite.CipherSuite
	tree  RatchetTree
	gc    GroupContext
	sig   *ciphersuite.SignaturePrivateKey
	privs map[NodeIndex]*ciphersuite.HPKEPrivateKey
}

var (
	benchMu     sync.Mutex
	benchGroups = map[int]*benchGroup{}
)

var benchSizes = []int{2, 100, 1000, 10000}

// getBenchGroup builds (once per size) a group of n members. All members
// share one signature key to keep setup short; nothing here verifies
// leaves other than the committer's.
func getBenchGroup(b *testing.B, n int) *benchGroup {
	benchMu.Lock()
	defer benchMu.Unlock()
	if g := benchGroups[n]; g != nil {
		return g
	}
	cs := mustSuite(b, ciphersuite.Default)
	sig, err := cs.GenerateSignatureKey()
	if err != nil {
		b.Fatal(err)
	}
	width := treemath.NodeWidth(treemath.LeafCountFor(uint32(n)))
	g := &benchGroup{cs: cs, sig: sig, privs: map[NodeIndex]*ciphersuite.HPKEPrivateKey{}}
	g.tree.nodes = make([]Node, width)
	newKey := func(x NodeIndex) HPKEPublicKey {
		k, err := cs.GenerateHPKEKey()
		if err != nil {
			b.Fatal(err)
		}
		g.privs[x] = k
		return k.PublicKey()
	}
	for i := 0; i < n; i++ {
		x := LeafIndex(i).Node()
		leaf := &LeafNode{
			EncryptionKey: newKey(x),
			SignatureKey:  sig.PublicKey(),
			Credential:    NewBasicCredential(fmt.Appendf(nil, "member-%d", i)),
			Capabilities: Capabilities{
				Versions: []ProtocolVersion{ProtocolMLS10}, CipherSuites: []ciphersuite.Suite{cs.ID()},
				Credentials: []CredentialType{CredentialTypeBasic},
			},
			Source:     LeafNodeSourceCommit,
			ParentHash: []byte{},
		}
		if err := leaf.Sign(cs, sig, []byte("bench"), LeafIndex(i)); err != nil {
			b.Fatal(err)
		}
		g.tree.nodes[x] = Node{Leaf: leaf}
	}
	for x := 1; x < int(width); x += 2 {
		if len(g.tree.Resolution(NodeIndex(x))) > 0 {
			g.tree.nodes[x] = Node{Parent: &ParentNode{EncryptionKey: newKey(NodeIndex(x)), ParentHash: []byte{}, UnmergedLeaves: []LeafIndex{}}}
		}
	}
	// Built in place without a hash cache; from here on it keeps one, as
	// every tree a group holds does.
	g.tree.cache = newTreeCache(len(g.tree.nodes))
	th, err := g.tree.TreeHash(cs)
	if err != nil {
		b.Fatal(err)
	}
	g.gc = GroupContext{Version: ProtocolMLS10, CipherSuite: cs.ID(), GroupID: []byte("bench"), Epoch: 1, TreeHash: th, ConfirmedTranscriptHash: []byte{}, Extensions: Extensions{}}
	benchGroups[n] = g
	return g
}

// receiverKeys returns the private state of leaf l: its leaf key and the
// keys of its direct path.
func (g *benchGroup) receiverKeys(l LeafIndex) *TreePrivateKeys {
	k := NewTreePrivateKeys(l, g.privs[l.Node()])
	for _, p := range treemath.DirectPath(l.Node(), g.tree.LeafCount()) {
		if key, ok := g.privs[p]; ok {
			k = k.WithKey(p, key)
		}
	}
	return k
}

// BenchmarkTreeHash hashes the whole tree from scratch, as a joiner does
// once (a tree without a hash cache).
func BenchmarkTreeHash(b *testing.B) {
	noCacheCheck(b)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			g := getBenchGroup(b, n)
			uncached := RatchetTree{nodes: g.tree.nodes}
			b.ResetTimer()
			for b.Loop() {
				if _, err := uncached.TreeHash(g.cs); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkCreateUpdatePath(b *testing.B) {
	noCacheCheck(b)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			g := getBenchGroup(b, n)
			b.ResetTimer()
			for b.Loop() {
				if _, err := g.tree.CreateUpdatePath(g.cs, g.gc, 0, g.tree.Leaf(0), g.sig, nil, nil); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkApplyUpdatePath(b *testing.B) {
	noCacheCheck(b)
	for _, n := range benchSizes {
		b.Run(fmt.Sprintf("leaves=%d", n), func(b *testing.B) {
			g := getBenchGroup(b, n)
			up, err := g.tree.CreateUpdatePath(g.cs, g.gc, 0, g.tree.Leaf(0), g.sig, nil, nil)
			if err != nil {
				b.Fatal(err)
			}
			recv := g.receiverKeys(LeafIndex(n - 1))
			b.ResetTimer()
			for b.Loop() {
				got, err := g.tree.ApplyUpdatePath(g.cs, g.gc, 0, &up.Path, recv, nil)
				if err != nil {
					b.Fatal(err)
				}
				if !got.CommitSecret.Equal(up.CommitSecret) {
					b.Fatal("commit secret mismatch")
				}
			}
		})
	}
}
