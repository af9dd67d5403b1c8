package replay

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestProjectReportsHeldUntil: after each batch OnHeldUntil names a time
// before which the stream stored no event of the installation the read
// model lacks (checked against the stream itself: the first event after
// the checkpoint was stored at or after it), and once the read model has
// caught up, that time is when its last event was stored: a backlog
// applied in batches of 16, then events appended while it follows.
func TestProjectReportsHeldUntil(t *testing.T) {
	l, _, _ := observedLog(t)
	h := writeHistory(t, l, instA, 1, 80)
	db, err := projections.Open(filepath.Join(t.TempDir(), "a.db"), rawDBKey(t, 0x51), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	type heldCall struct {
		inst  events.InstallationID
		cp    uint64
		until time.Time
	}
	var mu sync.Mutex
	var calls []heldCall
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() {
		done <- Project(ctx, l, []Projection{{Installation: instA, DB: db}}, &ProjectOptions{BatchSize: 16,
			OnHeldUntil: func(inst events.InstallationID, cp uint64, until time.Time) {
				mu.Lock()
				defer mu.Unlock()
				calls = append(calls, heldCall{inst, cp, until})
			}})
	}()
	storedAt := func(seq uint64) time.Time {
		t.Helper()
		r, err := l.EventAt(ctx, instA, seq)
		if err != nil {
			t.Fatal(err)
		}
		return r.Stored
	}
	// check holds every call so far to the stream, and wants the last
	// one to report the read model at last, held until last's event.
	check := func(phase string, last uint64) {
		t.Helper()
		waitFor(t, phase+" applied", func() bool {
			mu.Lock()
			defer mu.Unlock()
			return len(calls) > 0 && calls[len(calls)-1].cp == last
		})
		mu.Lock()
		got := append([]heldCall(nil), calls...)
		calls = calls[:0]
		mu.Unlock()
		if len(got) < 2 && phase == "backlog" {
			t.Errorf("%s: %d calls, want one per batch of 16", phase, len(got))
		}
		for _, c := range got {
			if c.inst != instA || c.until.IsZero() || c.until.After(time.Now()) {
				t.Fatalf("%s: OnHeldUntil(%s, %d, %s)", phase, c.inst, c.cp, c.until.Format(time.RFC3339Nano))
			}
			p, err := l.Pending(ctx, instA, c.cp)
			if err != nil {
				t.Fatal(err)
			}
			if p.Events > 0 && p.Oldest.Before(c.until) {
				t.Fatalf("%s: OnHeldUntil(%d, %s), but the event after %d was stored at %s, before it",
					phase, c.cp, c.until.Format(time.RFC3339Nano), c.cp, p.Oldest.Format(time.RFC3339Nano))
			}
		}
		if until, want := got[len(got)-1].until, storedAt(last); !until.Equal(want) {
			t.Fatalf("%s: caught up at %d, held until %s; want %s, when %d was stored", phase, last,
				until.Format(time.RFC3339Nano), want.Format(time.RFC3339Nano), last)
		}
	}
	check("backlog", lastSeq(t, l, instA))

	h.messages(5, 1)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	check("new events", lastSeq(t, l, instA))

	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("project after cancel: %v", err)
	}
}
