package mls

import (
	"fmt"
	"testing"
)

// BenchmarkRemoveMembers times a commit removing half of a group's
// members in one go (the group built by one commit adding everyone).
// Until 2026-12-05 each Remove copied the whole tree: quadratic.
func BenchmarkRemoveMembers(b *testing.B) {
	noCacheCheck(b)
	for _, n := range []int{1000, 10000} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			if n > 1000 && testing.Short() {
				b.Skip("10,000 members only without -short")
			}
			s := scBenchGroup(b, n)
			var opts CommitOptions
			for l := n / 2; l < n; l++ {
				opts.Remove = append(opts.Remove, LeafIndex(l))
			}
			for b.Loop() {
				if _, _, err := s.creator.Commit(opts); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
