package lease

import (
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/telemetry"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
)

// A holder whose system was suspended past its leases' validity (the
// server's TTL ran on meanwhile) finds them over when it resumes, before
// any renewal: Check refuses at once, and a lease nobody checks is ended
// by its renewer at its next tick instead of renewed.
func TestSuspendPastValidityEndsLease(t *testing.T) {
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	jump := jumpClock(a.bucket)
	ctx := context.Background()
	checked, err := a.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	unchecked, err := a.bucket.Acquire(ctx, "bob-laptop")
	if err != nil {
		t.Fatal(err)
	}
	if err := checked.Check(); err != nil {
		t.Fatalf("fresh lease: %v", err)
	}

	jump(testTTL) // suspended for a TTL: the server may have freed both

	if err := checked.Check(); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "not renewed in time") {
		t.Fatalf("Check after a suspend of a TTL: %v, want ErrLeaseLost (not renewed in time)", err)
	}
	select {
	case <-checked.Done():
	default:
		t.Fatal("the lease Check found over is not done")
	}
	eventually(t, "the renewer to end the lease nobody checked", func() bool { return unchecked.Err() != nil })
	if err := unchecked.Err(); !errors.Is(err, ErrLeaseLost) || !strings.Contains(err.Error(), "suspended") {
		t.Fatalf("the unchecked lease ended with %v, want ErrLeaseLost naming a suspend", err)
	}
	if err := unchecked.Check(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("Check of the lease its renewer ended: %v", err)
	}
	if v := telemetrytest.Value(t, a.metrics, "epochlog_lease_losses_total", "reason", telemetry.LeaseExpired); v != 2 {
		t.Errorf("losses (expired) %v, want 2", v)
	}
	for _, ls := range []*Lease{checked, unchecked} {
		if err := ls.Release(ctx); err != nil {
			t.Fatal(err)
		}
	}
}
