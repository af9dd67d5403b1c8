package mls

import (
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// BenchmarkRawHPKEPathSecret is the raw building block of a commit's cost
// per member right after a mass add (every parent blank, so the path
// secret goes to every other leaf): one EncryptWithLabel of an Nh-byte
// path secret to a member's leaf key, in the default suite. Compare its
// ns/op with BenchmarkCommitWithPath's per-member figure.
func BenchmarkRawHPKEPathSecret(b *testing.B) {
	noCacheCheck(b)
	cs := mustSuite(b, ciphersuite.Default)
	k, err := cs.GenerateHPKEKey()
	if err != nil {
		b.Fatal(err)
	}
	pub, secret, ctx := k.PublicKey(), make([]byte, cs.Nh()), make([]byte, 64)
	for b.Loop() {
		if _, _, err := cs.EncryptWithLabel(pub, labelUpdatePathNode, ctx, secret); err != nil {
			b.Fatal(err)
		}
	}
}
