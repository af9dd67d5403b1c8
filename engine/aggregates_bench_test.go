package engine

import (
	"context"
	"fmt"
	"testing"
)

// BenchmarkManyAggregates measures an installation's operations as it
// holds more aggregates (groups here; key packages count the same): a
// path update (a commit, applied to the read model from memory after a
// proof that nothing else of the installation landed) and a message
// sent, in one of 1, 100 or 1,000 groups of its own. The cost of an
// operation should not grow with the installation's other groups.
func BenchmarkManyAggregates(b *testing.B) {
	for _, n := range []int{1, 100, 1000} {
		b.Run(fmt.Sprintf("groups=%d", n), func(b *testing.B) {
			be := newBackend(b)
			in := be.create(alice)
			ctx := context.Background()
			var gid []byte
			for range n {
				g, err := in.CreateGroup(ctx, nil)
				if err != nil {
					b.Fatal(err)
				}
				gid = g.GroupID
			}
			b.Run("update", func(b *testing.B) {
				for b.Loop() {
					if _, err := in.Update(ctx, gid); err != nil {
						b.Fatal(err)
					}
				}
			})
			b.Run("send", func(b *testing.B) {
				for b.Loop() {
					if _, err := in.Send(ctx, gid, []byte("hello"), nil); err != nil {
						b.Fatal(err)
					}
				}
			})
		})
	}
}
