package mls

import (
	"bytes"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// testMember is a client with fresh keys and a signed key_package leaf.
type testMember struct {
	leaf    *LeafNode
	hpke    *ciphersuite.HPKEPrivateKey
	sig     *ciphersuite.SignaturePrivateKey
	initKey *ciphersuite.HPKEPrivateKey
}

func newTestMember(tb testing.TB, cs *ciphersuite.CipherSuite, identity string) *testMember {
	tb.Helper()
	hpkeKey, err := cs.GenerateHPKEKey()
	if err != nil {
		tb.Fatal(err)
	}
	initKey, err := cs.GenerateHPKEKey()
	if err != nil {
		tb.Fatal(err)
	}
	sig, err := cs.GenerateSignatureKey()
	if err != nil {
		tb.Fatal(err)
	}
	leaf := &LeafNode{
		EncryptionKey: hpkeKey.PublicKey(),
		SignatureKey:  sig.PublicKey(),
		Credential:    NewBasicCredential([]byte(identity)),
		Capabilities: Capabilities{
			Versions:     []ProtocolVersion{ProtocolMLS10},
			CipherSuites: []ciphersuite.Suite{cs.ID()},
			Extensions:   []ExtensionType{},
			Proposals:    []ProposalType{},
			Credentials:  []CredentialType{CredentialTypeBasic},
		},
		Source:     LeafNodeSourceKeyPackage,
		Lifetime:   Lifetime{NotBefore: 0, NotAfter: 1 << 62},
		Extensions: Extensions{},
	}
	if err := leaf.Sign(cs, sig, nil, 0); err != nil {
		tb.Fatal(err)
	}
	return &testMember{leaf: leaf, hpke: hpkeKey, sig: sig, initKey: initKey}
}

// keyPackage returns the member's signed KeyPackage.
func (m *testMember) keyPackage(tb testing.TB, cs *ciphersuite.CipherSuite) *KeyPackage {
	tb.Helper()
	kp := &KeyPackage{
		Version:     ProtocolMLS10,
		CipherSuite: cs.ID(),
		InitKey:     m.initKey.PublicKey(),
		LeafNode:    *m.leaf,
		Extensions:  Extensions{},
	}
	if err := kp.Sign(cs, m.sig); err != nil {
		tb.Fatal(err)
	}
	return kp
}

func mustSuite(tb testing.TB, id ciphersuite.Suite) *ciphersuite.CipherSuite {
	tb.Helper()
	cs, err := ciphersuite.Lookup(id)
	if err != nil {
		tb.Fatal(err)
	}
	return cs
}

// The tests run with the tree hash cache checked: every tree operation
// and every use of a cache compares each cached node hash with a
// computation from scratch, and panics on a difference (see treeCache).
func init() { verifyTreeCache.Store(true) }

// noCacheCheck turns that check off for benchmark b, which measures the
// cache rather than checking it.
func noCacheCheck(b *testing.B) {
	verifyTreeCache.Store(false)
	b.Cleanup(func() { verifyTreeCache.Store(true) })
}

// externalSendersExtension returns an external_senders extension naming
// one external sender whose basic credential holds id: a GroupContext
// extension every member supports, to see group context extensions
// applied (application_id, a LeafNode extension, may not be one).
func externalSendersExtension(tb testing.TB, id string) Extension {
	tb.Helper()
	b, err := ExternalSenders{{SignatureKey: bytes.Repeat([]byte{7}, 32), Credential: NewBasicCredential([]byte(id))}}.Marshal()
	if err != nil {
		tb.Fatal(err)
	}
	return Extension{Type: ExtensionTypeExternalSenders, Data: b}
}
