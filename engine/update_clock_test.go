package engine

import (
	"context"
	"testing"
	"time"
)

// A process of alice whose clock ran a year ahead created the group: its
// last path update is recorded a year in the future. Her other process,
// whose clock is right, saw that update as not due for a year plus
// UpdateInterval, and sent without refreshing its path (no
// post-compromise security for a year). An update recorded further in
// the future than UpdateInterval is due now.
func TestPathUpdateRecordedByClockAhead(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	ahead := b.secondProcess(alice, &InstallationOptions{Now: func() time.Time { return b.now.AddDate(1, 0, 0) }, UpdateInterval: time.Hour})
	gid := []byte("update-clock-group")
	if _, err := ahead.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if err := b.insts[alice].CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	out, err := b.insts[alice].Send(ctx, gid, []byte("hello"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Update == nil {
		t.Fatal("no path update before the message: the update recorded a year ahead counted as recent")
	}
	// Now recorded by the right clock: the next message needs none.
	out, err = b.insts[alice].Send(ctx, gid, []byte("again"), nil)
	if err != nil || out.Update != nil {
		t.Fatalf("second message: update %v, %v; want none", out != nil && out.Update != nil, err)
	}
}
