package engine

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// A read model at schema 11 whose retention through the engine was
// killed after deleting a group's received messages and before its
// snapshot (behind the state a proposal left, which schema 11 lets them
// go behind, or behind a state retention recorded), then opened by a
// build of schema 12 (migrated in place), cannot finish retention in
// place: the step to 12 cannot know the ordinals and recorded states the
// deletion hid (groups.last_ordinal, state_ordinal, epochs.recorded_ordinal),
// and schema 12 keeps received messages behind a proposal's state, so
// the snapshot check's replay differs from the file every time it runs
// (replay.ErrSnapshotMismatch), not once. It fails naming what to do: a
// rebuild from the stream, which brings the deleted rows back (their
// keys are not shredded yet); after it retention finishes, the group
// holds no message, a rebuild equals the live read model, and a deleted
// message delivered again after a restart is refused.
func TestRetentionInterruptedAt11ThenMigrated(t *testing.T) {
	for _, proposal := range []bool{true, false} {
		name := "behind a recorded state"
		if proposal {
			name = "behind a proposal's state"
		}
		t.Run(name, func(t *testing.T) {
			ctx := context.Background()
			b, g1 := bobAtSchema11InAGroup(t)
			sent := sendInOneEpoch(t, b, g1, 3, "at 11")
			if proposal {
				if _, err := b.insts[bob].ProposeUpdate(ctx, g1); err != nil {
					t.Fatal(err)
				}
			}
			b.now = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)
			cut, _ := replay.RetentionPolicy{Messages: replay.KeepNone}.MessagesCutoff(b.now)
			b.retentionKilledBeforeSnapshot(bob, cut, 3) // restarted by a build of 12
			in := b.insts[bob]
			if v := in.DB().SchemaVersion(); v != projections.LatestSchema {
				t.Fatalf("opened at schema %d, want %d", v, projections.LatestSchema)
			}
			for i := range 2 {
				res, err := in.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil)
				if !errors.Is(err, replay.ErrSnapshotMismatch) || !strings.Contains(err.Error(), "replayer rebuild") {
					t.Fatalf("retain %d after the migration: %v; want replay.ErrSnapshotMismatch naming a rebuild", i+1, err)
				}
				if res != nil && res.KeysShredded != 0 {
					t.Fatalf("retain %d shredded %d keys after its check failed", i+1, res.KeysShredded)
				}
			}

			in = b.rebuildAndRestart(bob)
			if n := countMessages(t, in, g1, func(projections.Message) bool { return true }); n != 3 {
				t.Fatalf("rebuilt: bob holds %d messages, want the 3 the interrupted retention deleted back", n)
			}
			res, err := in.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, nil)
			if err != nil || res.Snapshot == nil || res.RowsDeleted != 3 {
				t.Fatalf("retain after the rebuild: %+v, %v", res, err)
			}
			if n := countMessages(t, in, g1, func(projections.Message) bool { return true }); n != 0 {
				t.Fatalf("bob holds %d messages after retention, want 0", n)
			}
			b.rebuiltAsLive(bob)
			b.restart(bob)
			for _, m := range sent {
				_, err = b.insts[bob].Receive(ctx, m.Message)
				mustErrIs(t, err, mls.ErrGenerationReused)
			}
		})
	}
}
