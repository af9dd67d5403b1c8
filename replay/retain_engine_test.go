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

// TestRetainOpenInstallation applies retention to an installation the
// engine has open (real MLS): the old day's messages go, the engine keeps
// sending and receiving into the same read model, a send dated in the
// shredded day is refused, and the read model verifies against the
// snapshot plus the tail.
func TestRetainOpenInstallation(t *testing.T) {
	ctx := context.Background()
	l, _ := logtest.New(t)
	dir := t.TempDir()
	key := logtest.RawDBKey(t, 0x24)
	id := events.InstallationID("retain-engine")
	path := filepath.Join(dir, "a.db")
	clock := time.Now().Add(-72 * time.Hour)
	in, err := engine.CreateInstallation(ctx, l, id, path, key, &engine.InstallationOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	gid := []byte("retain-engine-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"old 1", "old 2", "old 3"} {
		if _, err := in.Send(ctx, gid, []byte(m), nil); err != nil {
			t.Fatal(err)
		}
	}
	old := clock
	clock = time.Now()
	if _, err := in.Send(ctx, gid, []byte("today"), nil); err != nil {
		t.Fatal(err)
	}
	res, err := replay.Retain(ctx, l, id, in.DB(), replay.RetentionPolicy{Messages: 24 * time.Hour}, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}})
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsDeleted != 3 || len(res.Periods) != 1 || res.KeysShredded != 1 {
		t.Fatalf("retain: %+v", res)
	}
	if _, err := in.Send(ctx, gid, []byte("after"), nil); err != nil {
		t.Fatalf("send after retention: %v", err)
	}
	page, err := in.DB().Messages(ctx, gid, projections.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 2 || string(page.Messages[0].Content) != "after" || string(page.Messages[1].Content) != "today" {
		t.Fatalf("messages after retention: %d", len(page.Messages))
	}
	clock = old
	if _, err := in.Send(ctx, gid, []byte("late"), nil); !errors.Is(err, eventlog.ErrRetainedOut) {
		t.Fatalf("send dated in the shredded day: %v, want ErrRetainedOut", err)
	}
	clock = time.Now()
	if _, err := replay.Compact(ctx, l, id, nil); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := replay.Verify(ctx, l, id, path, key, nil)
	if err != nil {
		t.Fatalf("verify after retention, compaction and more sends: %v", err)
	}
	p := filepath.Join(dir, "rebuilt.db")
	if _, err := replay.Rebuild(ctx, l, id, p, key, nil); err != nil {
		t.Fatal(err)
	}
	db, err := projections.OpenExisting(p, key, &projections.Options{SaltPath: projections.SaltPath(p)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := projections.Compare(d, v.Digest); diff != nil {
		t.Fatalf("rebuild differs from the live read model: %v", diff)
	}
}
