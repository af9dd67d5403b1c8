package mls

import (
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/mls/codec"
)

// BenchmarkAddMembers times a commit adding n-1 members to a new group in
// one go (how a large group is created), Welcome included, and the join
// of one of them from that Welcome. Before 2026-12-05 the commit was
// quadratic in the group's size twice over: each add copied the whole
// tree, and each new member's group secrets were encrypted with HPKE
// hashing the encrypted GroupInfo (ratchet tree included) again.
//
// raw is the commit's building blocks for the same members, which the
// protocol requires of it: per member, the key package's two signature
// checks (the package's and its leaf node's) and one HPKE encryption of
// the group secrets under a small context.
func BenchmarkAddMembers(b *testing.B) {
	noCacheCheck(b)
	for _, n := range []int{100, 1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			if n > 1000 && testing.Short() {
				b.Skip("10,000 members only without -short")
			}
			c := newSCClient(b, "creator")
			var opts CommitOptions
			var joiners []scClient
			for i := 1; i < n; i++ {
				j := newSCClient(b, fmt.Sprint("m", i))
				joiners = append(joiners, j)
				opts.Add = append(opts.Add, j.kp)
			}
			b.Run("raw", func(b *testing.B) {
				cs := mustSuite(b, scenarioSuite)
				secrets := make([]byte, 2*cs.Nh())
				tbs := make([][]byte, len(joiners))
				for i, j := range joiners {
					var w codec.Writer
					j.kp.marshalTBS(&w)
					var err error
					if tbs[i], err = w.Finish(); err != nil {
						b.Fatal(err)
					}
				}
				for b.Loop() {
					for i, j := range joiners {
						kp := j.kp
						// The package's signature, and as many again for its
						// leaf node's (the same cost).
						for range 2 {
							if err := cs.VerifyWithLabel(kp.LeafNode.SignatureKey, labelKeyPackageTBS, tbs[i], kp.Signature); err != nil {
								b.Fatal(err)
							}
						}
						if _, _, err := cs.EncryptWithLabel(kp.InitKey, labelWelcomeSecrets, secrets[:64], secrets); err != nil {
							b.Fatal(err)
						}
					}
				}
			})
			var welcome *MLSMessage
			b.Run("commit", func(b *testing.B) {
				for b.Loop() {
					g, err := NewGroup([]byte("bench-add"), c.kp, c.secrets, nil)
					if err != nil {
						b.Fatal(err)
					}
					_, res, err := g.Commit(opts)
					if err != nil {
						b.Fatal(err)
					}
					welcome = res.Welcome
				}
			})
			if welcome == nil {
				return
			}
			b.Run("join", func(b *testing.B) {
				j := joiners[len(joiners)-1]
				for b.Loop() {
					if _, err := Join(welcome, j.kp, j.secrets, nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
