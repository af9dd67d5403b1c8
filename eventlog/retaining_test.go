package eventlog

import (
	"context"
	"errors"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// TestRetentionMark: no mark reads as none; a mark reads back; one at an
// earlier checkpoint does not replace a later one (two retentions at
// once); one whose tag does not check out (written by someone without
// the keyring) is ErrTampered, and the next mark replaces it.
func TestRetentionMark(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	if _, ok, err := l.RetentionMarkOf(ctx, instA); err != nil || ok {
		t.Fatalf("before any retention: %v %v, want none", ok, err)
	}
	cut := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	if err := l.MarkRetention(ctx, instA, RetentionMark{Checkpoint: 10, Messages: cut}); err != nil {
		t.Fatal(err)
	}
	if err := l.MarkRetention(ctx, instA, RetentionMark{Checkpoint: 5, Messages: cut.Add(-24 * time.Hour), Delivery: cut}); err != nil {
		t.Fatal(err)
	}
	m, ok, err := l.RetentionMarkOf(ctx, instA)
	if err != nil || !ok || m.Checkpoint != 10 || !m.Messages.Equal(cut) || !m.Delivery.IsZero() {
		t.Fatalf("mark: %+v %v %v, want at 10, messages before %s", m, ok, err, cut)
	}
	if _, ok, err := l.RetentionMarkOf(ctx, instB); err != nil || ok {
		t.Fatalf("another installation's mark: %v %v, want none", ok, err)
	}
	marks, err := l.marks(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := marks.Put(ctx, l.retainingName(instA), []byte("99.0.0.forgedtag")); err != nil {
		t.Fatal(err)
	}
	if _, _, err := l.RetentionMarkOf(ctx, instA); !errors.Is(err, events.ErrTampered) {
		t.Fatalf("forged mark: %v, want ErrTampered", err)
	}
	// A retention replaces it, even at an earlier checkpoint than the
	// forgery claims.
	if err := l.MarkRetention(ctx, instA, RetentionMark{Checkpoint: 3}); err != nil {
		t.Fatalf("mark over a forged mark: %v", err)
	}
	if m, ok, err := l.RetentionMarkOf(ctx, instA); err != nil || !ok || m.Checkpoint != 3 {
		t.Fatalf("mark after replacing a forged one: %+v %v %v, want at 3", m, ok, err)
	}
}

// TestRetentionMarksAtOneCheckpointKeepTheLaterCutoffs: two retentions
// at one checkpoint (two copies of a read model retained with different
// policies or clocks) leave a mark with the later cutoff of each kind,
// whichever wrote last: a snapshot racing them undoes itself by the mark's
// cutoffs, and the rows before the later one are gone from the history
// (their keys shredded). Until 2026-12-07 the last writer's stayed, an
// earlier cutoff hiding what the other retention deleted.
func TestRetentionMarksAtOneCheckpointKeepTheLaterCutoffs(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	cut := time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	if err := l.MarkRetention(ctx, instA, RetentionMark{Checkpoint: 10, Messages: cut, Delivery: cut.Add(-48 * time.Hour)}); err != nil {
		t.Fatal(err)
	}
	if err := l.MarkRetention(ctx, instA, RetentionMark{Checkpoint: 10, Messages: cut.Add(-24 * time.Hour), Delivery: cut}); err != nil {
		t.Fatal(err)
	}
	m, ok, err := l.RetentionMarkOf(ctx, instA)
	if err != nil || !ok || m.Checkpoint != 10 || !m.Messages.Equal(cut) || !m.Delivery.Equal(cut) {
		t.Fatalf("mark: %+v %v %v, want at 10 with messages and deliveries before %s", m, ok, err, cut)
	}
	// A later checkpoint's mark is its own: its cutoffs are not merged.
	if err := l.MarkRetention(ctx, instA, RetentionMark{Checkpoint: 11}); err != nil {
		t.Fatal(err)
	}
	if m, ok, err := l.RetentionMarkOf(ctx, instA); err != nil || !ok || m.Checkpoint != 11 || !m.Messages.IsZero() || !m.Delivery.IsZero() {
		t.Fatalf("mark at a later checkpoint: %+v %v %v, want at 11 without cutoffs", m, ok, err)
	}
}

// TestRetentionMarkOfTwoRetentionsAtOnce marks one installation from two
// goroutines of one Log on a stream without a retention bucket (two
// engine installations of one Log retaining at once): both succeed and
// the later checkpoint stays. Before the bucket was bound anew after its
// creation, about one round in eight failed after 5 s, "get the
// retention mark: context deadline exceeded" (no responders), as
// engine's TestRetentionOfTwoProcessesAtOnce did.
func TestRetentionMarkOfTwoRetentionsAtOnce(t *testing.T) {
	ctx := context.Background()
	for round := range 10 {
		l, _ := newLog(t)
		var wg sync.WaitGroup
		errs := make([]error, 2)
		for i := range 2 {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = l.MarkRetention(ctx, instA, RetentionMark{Checkpoint: uint64(10 + i)})
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d: retention %d: %v", round, i, err)
			}
		}
		if m, ok, err := l.RetentionMarkOf(ctx, instA); err != nil || !ok || m.Checkpoint != 11 {
			t.Fatalf("round %d: mark %+v %v %v, want at 11", round, m, ok, err)
		}
	}
}

// TestRetentionMarkOfAnErasedInstallation: a retention that passed its
// check that the installation is not erased, then marks itself after an
// erase purged the installation's marks (replay.Retain racing erase),
// is refused with the installation's *ErasedError and leaves no mark.
// Until 2026-12-07 the mark was written and stayed: the pseudonym, a
// checkpoint and the cutoffs of an erased installation, in a bucket the
// erase had cleared ("nothing of the installation is left behind").
func TestRetentionMarkOfAnErasedInstallation(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t)
	writeMixed(t, l, instA)
	if _, err := l.Erase(ctx, instA, nil); err != nil {
		t.Fatal(err)
	}
	// Another process's Log, which has not seen the tombstone.
	other := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	var eerr *ErasedError
	if err := other.MarkRetention(ctx, instA, RetentionMark{Checkpoint: 7}); !errors.As(err, &eerr) {
		t.Fatalf("mark of an erased installation: %v, want its *ErasedError", err)
	}
	marks, err := l.marks(ctx, false)
	if err != nil {
		t.Fatal(err)
	}
	if marks != nil {
		if _, err := marks.Get(ctx, l.retainingName(instA)); !errors.Is(err, jetstream.ErrKeyNotFound) {
			t.Fatalf("the retention mark of the erased installation: %v, want none", err)
		}
	}
}
