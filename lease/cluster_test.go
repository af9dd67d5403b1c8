package lease

import (
	"testing"
	"time"

	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/internal/natstest"
)

// On a 3-node cluster, the lease bucket's stream leader moves, then the
// node that led it is restarted, while two members share the
// installations: they may lose leases meanwhile, but never serve one at
// once, and afterwards every installation is served again.
func TestShareAcrossBucketLeaderChanges(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	cfg := logtest.ClusterConfig(c.URL())
	insts := installations(8)
	tr := newTracker()
	a := startMember(t, newProc(t, cfg, "A", "g", testTTL), tr, insts)
	b := startMember(t, newProc(t, cfg, "B", "g", 0), tr, insts)
	stream := "KV_" + a.bucket.Name()
	served := func(what string) {
		t.Helper()
		eventually(t, what, func() bool {
			_, n := tr.servedBy()
			na, _ := a.m.Members()
			nb, _ := b.m.Members()
			return n == len(insts) && na == 2 && nb == 2 && len(a.m.Held())+len(b.m.Held()) == len(insts)
		})
		tr.check(t)
	}
	served("both to share every installation")
	c.WaitStreamCurrent(stream)
	for _, n := range c.Nodes() {
		if n != c.StreamLeader(stream) {
			c.StepDownStream(stream, n)
			break
		}
	}
	time.Sleep(testTTL)
	served("every installation served after a step-down")
	leader := c.StreamLeader(stream)
	leader.Restart()
	time.Sleep(3 * testTTL) // renewals through the election and the catch-up
	served("every installation served after the leader's restart")
	c.WaitStreamCurrent(stream)
}
