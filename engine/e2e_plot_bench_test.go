package engine

import (
	"fmt"
	"os"
	"strconv"
	"testing"

	"github.com/epochlog/epochlog/projections"
)

// envPlotMaxMembers caps BenchmarkE2EGroupSweep's largest group (default
// 100), so that `make plots` can be made shorter.
const envPlotMaxMembers = "EPOCHLOG_PLOT_MAX_MEMBERS"

// e2eSweepSizes are the group sizes of BenchmarkE2EGroupSweep.
var e2eSweepSizes = []int{2, 5, 10, 20, 50, 100}

// BenchmarkE2EGroupSweep is BenchmarkE2EGroup100 at several group sizes
// (docs/plots/e2e.svg): one op is one application message from one member
// sent, fanned out and received, recorded and acknowledged by each of the
// others; it reports msgs/s and deliveries/s. It runs with SQLCipher's
// cipher_memory_security OFF and ON (see BenchmarkE2EGroup100). Sizes
// above $EPOCHLOG_PLOT_MAX_MEMBERS are skipped.
func BenchmarkE2EGroupSweep(b *testing.B) {
	limit := e2eSweepSizes[len(e2eSweepSizes)-1]
	if s := os.Getenv(envPlotMaxMembers); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 2 {
			b.Fatalf("$%s=%q: want a number of at least 2", envPlotMaxMembers, s)
		}
		limit = v
	}
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("memsec=%v", on), func(b *testing.B) {
			prev, err := projections.MemorySecurity()
			if err != nil {
				b.Fatal(err)
			}
			if err := projections.SetMemorySecurity(on); err != nil {
				b.Fatal(err)
			}
			// Restored after the sizes' backends closed their databases.
			b.Cleanup(func() { _ = projections.SetMemorySecurity(prev) })
			for _, n := range e2eSweepSizes {
				if n > limit {
					break
				}
				b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) { benchGroup(b, n) })
			}
		})
	}
}
