package lease

import (
	"fmt"
	"testing"
	"time"
)

// Members join and leave faster than a renewal period, while others stay:
// never two serve an installation at once, and once the churn stops every
// installation is served by the members left.
func TestShareChurn(t *testing.T) {
	cfg := startServer(t)
	insts := installations(12)
	tr := newTracker()
	startMember(t, newProc(t, cfg, "stay", "g", testTTL), tr, insts)
	var last *member
	for i := range 8 {
		mb := startMember(t, newProc(t, cfg, fmt.Sprintf("churn-%d", i), "g", 0), tr, insts)
		time.Sleep(testTTL / 5)
		if last != nil {
			last.stop()
		}
		last = mb
		tr.check(t)
	}
	last.stop()
	eventually(t, "the member that stayed to serve everything", func() bool {
		by, n := tr.servedBy()
		return n == len(insts) && by["stay"] == len(insts)
	})
	tr.check(t)
}
