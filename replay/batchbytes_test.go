package replay

import (
	"context"
	"path/filepath"
	"runtime"
	"testing"
	"time"

	"github.com/epochlog/epochlog/projections"
)

// A batch is cut at batchBytes of sealed events as well as at BatchSize
// events, in a rebuild and in Project, and what it builds is the same:
// with a bound below any event's size, every batch is one event.
func TestBatchesBoundedByBytes(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeHistory(t, l, instA, 2, 60)
	dir := t.TempDir()
	key := rawDBKey(t, 0xB7)

	// The default bound: one batch holds the whole history.
	whole := filepath.Join(dir, "whole.db")
	var calls []int
	o := testReplayOptions()
	o.BatchSize = 0 // DefaultBatch
	o.Progress = func(p Progress) { calls = append(calls, p.Applied) }
	res, err := Rebuild(ctx, l, instA, whole, key, &RebuildOptions{Options: *o})
	if err != nil {
		t.Fatal(err)
	}
	if len(calls) != 1 || calls[0] != res.Replayed {
		t.Fatalf("rebuild of %d events in batches of %d: progress %v, want one batch", res.Replayed, DefaultBatch, calls)
	}

	was := batchBytes
	t.Cleanup(func() { batchBytes = was })
	batchBytes = 1
	oneByOne := filepath.Join(dir, "one.db")
	calls = nil
	if _, err := Rebuild(ctx, l, instA, oneByOne, key, &RebuildOptions{Options: *o}); err != nil {
		t.Fatal(err)
	}
	if len(calls) != res.Replayed {
		t.Fatalf("rebuild of %d events with a 1-byte bound: %d batches, want one per event", res.Replayed, len(calls))
	}
	for i, n := range calls {
		if n != i+1 {
			t.Fatalf("batch %d ended at %d events applied, want %d", i+1, n, i+1)
		}
	}
	d1, cp1 := digestOf(t, whole, key)
	d2, cp2 := digestOf(t, oneByOne, key)
	if diff := projections.Compare(d1, d2); diff != nil || cp1 != cp2 {
		t.Fatalf("built in one batch and event by event: %v (checkpoints %d, %d)", diff, cp1, cp2)
	}

	// Project, from an empty read model, with the events all queued.
	followed := filepath.Join(dir, "followed.db")
	db, err := projections.Open(followed, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	sizes := projectUntil(t, l, instA, db, cp1)
	for i, n := range sizes {
		if n != 1 {
			t.Fatalf("project's batch %d applied %d events, want 1 with a 1-byte bound (%v)", i+1, n, sizes)
		}
	}
	if len(sizes) != res.Replayed {
		t.Fatalf("project applied %d batches, want %d", len(sizes), res.Replayed)
	}
	d3, _ := digestOf(t, followed, key)
	if diff := projections.Compare(d1, d3); diff != nil {
		t.Fatalf("followed and rebuilt differ: %v", diff)
	}
}

// Project's reader gets ahead of its applier by at most followQueueBytes
// of events (with the batch being applied), not only followQueue
// records: with the applier paused in its first batch, a backlog of 200
// events of 600 KiB (117 MB) is not read into memory meanwhile.
func TestProjectReadsAheadBoundedByBytes(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	h := newHistoryGen(instA)
	h.pad = 600 << 10
	h.setup(1)
	h.messages(200, 1)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	last, err := l.LastSeq(ctx, instA)
	if err != nil {
		t.Fatal(err)
	}
	db, err := projections.Open(filepath.Join(t.TempDir(), "followed.db"), rawDBKey(t, 0xB8), nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var held uint64
	paused := false
	base := heapInUse()
	projectUntilWith(t, l, instA, db, last, func() {
		if !paused {
			paused = true
			time.Sleep(time.Second) // the reader runs on meanwhile, as far as it may
			held = heapInUse() - min(base, heapInUse())
		}
	})
	t.Logf("held %d MiB while the applier paused", held>>20)
	// followQueueBytes, the read's own requests (eventlog: two of at
	// least 8 MiB) and the paused batch's decoded events.
	if bound := uint64(4 * followQueueBytes); held > bound {
		t.Fatalf("Project held %d MiB of the backlog while its applier paused, more than %d MiB", held>>20, bound>>20)
	}
}

// heapInUse is the live heap after a collection.
func heapInUse() uint64 {
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}
