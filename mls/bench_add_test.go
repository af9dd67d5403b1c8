package mls

import (
	"fmt"
	"testing"
)

// BenchmarkAddMembers times a commit adding n-1 members to a new group in
// one go (how a large group is created), Welcome included, and the join
// of one of them from that Welcome. Before 2026-12-05 the commit was
// quadratic in the group's size twice over: each add copied the whole
// tree, and each new member's group secrets were encrypted with HPKE
// hashing the encrypted GroupInfo (ratchet tree included) again.
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
