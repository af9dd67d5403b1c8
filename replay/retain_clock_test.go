package replay_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// TestRetainRefusesClockAhead: retention by age on a machine whose clock
// is a year ahead of the server's (a wrong clock, a VM restored with a
// bad RTC) would shred every day the installation ever wrote, and delete
// the events compaction's History covers. Retain and Compact refuse
// with eventlog.ErrClockAhead and change nothing; with the clock right
// they go on.
func TestRetainRefusesClockAhead(t *testing.T) {
	ctx := context.Background()
	l, _ := logtest.New(t)
	key := logtest.RawDBKey(t, 0x31)
	id := events.InstallationID("retain-clock")
	in, err := engine.CreateInstallation(ctx, l, id, filepath.Join(t.TempDir(), "a.db"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	gid := []byte("retain-clock-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "two", "three"} {
		if _, err := in.Send(ctx, gid, []byte(m), nil); err != nil {
			t.Fatal(err)
		}
	}
	ahead := func() time.Time { return time.Now().AddDate(1, 0, 0) }
	policy := replay.RetentionPolicy{Messages: 30 * 24 * time.Hour, Delivery: 30 * 24 * time.Hour}
	res, err := replay.Retain(ctx, l, id, in.DB(), policy, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}, Now: ahead})
	if !errors.Is(err, eventlog.ErrClockAhead) {
		t.Fatalf("retain with the clock a year ahead: %+v, %v; want ErrClockAhead", res, err)
	}
	page, err := in.DB().Messages(ctx, gid, projections.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 3 {
		t.Fatalf("messages after the refused retain: %d, want 3", len(page.Messages))
	}
	if _, err := in.Send(ctx, gid, []byte("four"), nil); err != nil {
		t.Fatalf("send after the refused retain (today's key must be there): %v", err)
	}
	if _, err := replay.SnapshotDB(ctx, l, id, in.DB(), &replay.SnapshotOptions{Options: replay.Options{SkipMLSCheck: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Compact(ctx, l, id, &replay.CompactOptions{History: 30 * 24 * time.Hour, Now: ahead}); !errors.Is(err, eventlog.ErrClockAhead) {
		t.Fatalf("compact --history with the clock a year ahead: %v; want ErrClockAhead", err)
	}
	if through, err := l.CompactedThrough(ctx, id); err != nil || through != 0 {
		t.Fatalf("compacted through %d (%v) after the refused compaction, want 0", through, err)
	}
	// The right clock: nothing is old enough, nothing goes, no error.
	res, err = replay.Retain(ctx, l, id, in.DB(), policy, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}})
	if err != nil || res.RowsDeleted != 0 || res.KeysShredded != 0 {
		t.Fatalf("retain with the right clock: %+v, %v", res, err)
	}
}
