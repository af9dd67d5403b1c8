package lease

import (
	"context"
	"fmt"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// A long-running member forgets the members that left: a restarted
// process joins as a new member (a new id), so a member that remembered
// every one it saw would grow by one entry per restart of any other
// member, for as long as it runs. Until 2026-12-06 it did.
func TestShareMemberForgetsMembersThatLeft(t *testing.T) {
	cfg := startServer(t)
	p := newProc(t, cfg, "a", "forget", testTTL)
	a := p.bucket.NewMember("a")
	r := a.newRun(func() []events.InstallationID { return nil }, func(ctx context.Context, _ *Lease) { <-ctx.Done() })
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- r.loop(ctx) }()
	eventually(t, "a joined", func() bool { n, joined := a.Members(); return joined && n == 1 })
	const restarts = 10
	for i := range restarts {
		q := newProc(t, cfg, fmt.Sprintf("b%d", i), "forget", 0)
		b := startMember(t, q, newTracker(), nil)
		eventually(t, "a saw b join", func() bool { n, _ := a.Members(); return n == 2 })
		b.stop()
		eventually(t, "a saw b leave", func() bool { n, _ := a.Members(); return n == 1 })
	}
	cancel()
	<-done
	var kept []string
	for key := range r.view {
		if id, ok := strings.CutPrefix(key, membersPrefix); ok && id != a.ID() {
			kept = append(kept, id)
		}
	}
	// The last one to leave may still be in view (seen after the last pass).
	if len(kept) > 1 {
		t.Fatalf("after %d other members joined and left, the member still holds %d of them: %v", restarts, len(kept), kept)
	}
}
