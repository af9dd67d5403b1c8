package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
)

const inst = events.InstallationID("alice-phone")

// Two contenders: the first holds the lease, the second is refused with
// an error naming the holder (the error contract: errors.Is, errors.As);
// once the first releases it, the second takes it at once, and the first
// may no longer write.
func TestTwoContenders(t *testing.T) {
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	b := newProc(t, cfg, "B", "g", 0)
	ctx := context.Background()
	if b.bucket.TTL() != testTTL {
		t.Fatalf("B sees TTL %v, want the bucket's %v", b.bucket.TTL(), testTTL)
	}

	la, err := a.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatalf("A acquires: %v", err)
	}
	if err := la.Check(); err != nil {
		t.Fatalf("A's fresh lease: %v", err)
	}
	_, err = b.bucket.Acquire(ctx, inst)
	var he *HeldError
	switch {
	case err == nil:
		t.Fatal("B acquired a lease A holds")
	case !errors.Is(err, ErrHeld) || !errors.Is(fmt.Errorf("wrapped: %w", err), ErrHeld):
		t.Fatalf("B's error %v is not ErrHeld", err)
	case !errors.As(err, &he) || he.Holder != "holder A" || he.Installation != inst:
		t.Fatalf("B's error %v (%+v) does not name holder A", err, he)
	}
	h, err := b.bucket.Holding(ctx, inst)
	if err != nil || !h.Held || h.Holder != "holder A" || h.Revision != la.Revision() {
		t.Fatalf("holding %+v, %v; want held by A at revision %d", h, err, la.Revision())
	}
	// Another installation is another lease.
	if lo, err := b.bucket.Acquire(ctx, "bob-laptop"); err != nil {
		t.Fatalf("B acquires another installation: %v", err)
	} else if err := lo.Release(ctx); err != nil {
		t.Fatal(err)
	}

	if err := la.Release(ctx); err != nil {
		t.Fatalf("A releases: %v", err)
	}
	if err := la.Check(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("A's released lease checks %v, want ErrLeaseLost", err)
	}
	select {
	case <-la.Done():
	default:
		t.Fatal("A's released lease is not done")
	}
	lb, err := b.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatalf("B acquires after A released: %v", err)
	}
	if lb.TakenOver() {
		t.Error("a released lease counts as taken over")
	}
	if lb.Revision() <= la.Revision() {
		t.Errorf("revision %d after %d: the fencing token must grow", lb.Revision(), la.Revision())
	}
	if v := telemetrytest.Value(t, b.metrics, "epochlog_lease_acquisitions_total", "how", telemetry.LeaseFree); v != 2 {
		t.Errorf("B acquisitions (free) %v, want 2", v)
	}
	if v := telemetrytest.Value(t, a.metrics, "epochlog_leases_held"); v != 0 {
		t.Errorf("A holds %v leases after releasing, want 0", v)
	}
	if v := telemetrytest.Value(t, b.metrics, "epochlog_leases_held"); v != 1 {
		t.Errorf("B holds %v leases, want 1", v)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A holder that renews keeps its lease for TTLs on end, while a contender
// keeps being refused; the revision grows with each renewal.
func TestRenewalKeepsLease(t *testing.T) {
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	b := newProc(t, cfg, "B", "g", 0)
	ctx := context.Background()
	la, err := a.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	first := la.Revision()
	end := time.Now().Add(2 * testTTL)
	for time.Now().Before(end) {
		if err := la.Check(); err != nil {
			t.Fatalf("A's renewed lease: %v", err)
		}
		if _, err := b.bucket.Acquire(ctx, inst); !errors.Is(err, ErrHeld) {
			t.Fatalf("B acquires while A renews: %v", err)
		}
		time.Sleep(testTTL / 4)
	}
	if la.Revision() <= first {
		t.Errorf("revision %d after 2 TTLs, first %d: no renewal landed", la.Revision(), first)
	}
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A holder that cannot renew (cut off from the bucket, paused) stops
// counting its lease valid before the server frees it: when a contender
// takes it over, the old holder's Check already fails, and its Done is
// closed. The contender's acquisition counts as a takeover, the old
// holder's loss as expired.
func TestExpiryAndTakeover(t *testing.T) {
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	b := newProc(t, cfg, "B", "g", 0)
	ctx := context.Background()
	la, err := a.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	cutOff(a.bucket)
	var lb *Lease
	eventually(t, "B to take the lease over", func() bool {
		lb, err = b.bucket.Acquire(ctx, inst)
		if err != nil && !errors.Is(err, ErrHeld) {
			t.Fatalf("B acquires: %v", err)
		}
		// The moment B holds it, A must already have stopped.
		if err == nil {
			if aerr := la.Check(); !errors.Is(aerr, ErrLeaseLost) {
				t.Fatalf("B took the lease while A's still checks %v", aerr)
			}
		}
		return err == nil
	})
	select {
	case <-la.Done():
	default:
		t.Fatal("A's expired lease is not done")
	}
	if !b.bucket.markers {
		t.Fatal("the server does not mark expired keys (nats-server 2.11 and later do)")
	}
	if !lb.TakenOver() {
		t.Error("B's acquisition of an expired lease is not a takeover")
	}
	if v := telemetrytest.Value(t, a.metrics, "epochlog_lease_losses_total", "reason", telemetry.LeaseExpired); v != 1 {
		t.Errorf("A losses (expired) %v, want 1", v)
	}
	if v := telemetrytest.Value(t, b.metrics, "epochlog_lease_acquisitions_total", "how", telemetry.LeaseTakeover); v != 1 {
		t.Errorf("B acquisitions (takeover) %v, want 1", v)
	}
	// A's release of a lost lease touches nothing.
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	if h, err := b.bucket.Holding(ctx, inst); err != nil || h.Holder != "holder B" {
		t.Fatalf("after A's release of its lost lease: %+v, %v; want B holding", h, err)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A lease deleted behind its holder's back (an operator's `nats kv del`)
// and taken by another is lost at the holder's next renewal, as taken.
func TestTakenLeaseIsLost(t *testing.T) {
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	b := newProc(t, cfg, "B", "g", 0)
	ctx := context.Background()
	la, err := a.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	key, _ := a.bucket.installationKey(inst)
	if err := b.bucket.kv.Delete(ctx, key); err != nil {
		t.Fatal(err)
	}
	lb, err := b.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatalf("B acquires the deleted lease: %v", err)
	}
	eventually(t, "A to notice", func() bool { return la.Err() != nil })
	if err := la.Check(); !errors.Is(err, ErrLeaseLost) {
		t.Fatalf("A checks %v, want ErrLeaseLost", err)
	}
	if v := telemetrytest.Value(t, a.metrics, "epochlog_lease_losses_total", "reason", telemetry.LeaseTaken); v != 1 {
		t.Errorf("A losses (taken) %v, want 1", v)
	}
	if err := lb.Check(); err != nil {
		t.Fatalf("B's lease after A lost it: %v", err)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// A bucket that exists keeps its TTL: another TTL asked for is refused,
// none asked for takes the bucket's; a group name is checked.
func TestBucketSettings(t *testing.T) {
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	_, err := Open(context.Background(), a.log, Config{Group: "g", TTL: 2 * testTTL})
	if !errors.Is(err, ErrBucketMismatch) {
		t.Fatalf("open with another TTL: %v, want ErrBucketMismatch", err)
	}
	for _, g := range []string{"", "a.b", "a b", "x>"} {
		if _, err := Open(context.Background(), a.log, Config{Group: g}); err == nil {
			t.Errorf("group %q accepted", g)
		}
	}
	if _, err := Open(context.Background(), a.log, Config{Group: "h", TTL: MinTTL / 2}); err == nil {
		t.Error("a TTL under MinTTL accepted")
	}
	js, err := jetstream.New(a.log.Conn())
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(context.Background(), "KV_"+BucketName(a.log.Stream(), "g"))
	if err != nil {
		t.Fatal(err)
	}
	if c := s.CachedInfo().Config; c.AllowDirect || c.MaxAge != testTTL || c.MaxMsgsPerSubject != 1 {
		t.Errorf("bucket stream: direct %v, max age %v, history %d; want direct off, %v, 1", c.AllowDirect, c.MaxAge, c.MaxMsgsPerSubject, testTTL)
	}
}

// Fencing: a holder whose renewals fail stops committing before its lease
// can be taken. A follows an installation into its read model with
// replay.Project fenced by its lease, B waits to take the lease over, and
// events keep coming: A's projection stops with ErrLeaseLost, A commits
// no batch once B holds the lease, and B, resuming from the read model's
// own checkpoint, brings it to the stream's end with every event applied
// once (its content equals a fresh rebuild).
func TestFenceStopsHolderBeforeTakeover(t *testing.T) {
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	b := newProc(t, cfg, "B", "g", 0)
	ctx := context.Background()
	dir := t.TempDir()
	key := logtest.RawDBKey(t, 0xA1)
	path := filepath.Join(dir, string(inst)+".db")
	in, err := engine.CreateInstallation(ctx, a.log, inst, filepath.Join(dir, "service.db"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
	if db, err := projections.Open(path, key, nil); err != nil {
		t.Fatal(err)
	} else {
		db.Close()
	}

	// The writer: one event every 20 ms until stopped.
	queue := engine.NewDeliveries(a.log, nil)
	stopWriting := make(chan struct{})
	var written sync.WaitGroup
	var appended atomic.Int64
	var writeErr atomic.Pointer[error]
	written.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stopWriting:
				return
			case <-time.After(20 * time.Millisecond):
			}
			if _, _, err := queue.Enqueue(ctx, engine.Enqueue{Recipient: inst, Channel: "mls",
				Payload: []byte(fmt.Sprintf("m-%d", i)), IdempotencyKey: fmt.Sprintf("k-%d", i)}); err != nil {
				writeErr.Store(&err)
				return
			}
			appended.Add(1)
		}
	})
	defer func() { close(stopWriting); written.Wait() }()

	la, err := a.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	var bHolds atomic.Bool
	var aBatches, aAfter atomic.Int64
	project := func(p *proc, ls *Lease, onApply func()) error {
		db, err := projections.OpenExisting(path, key, nil)
		if err != nil {
			return err
		}
		defer db.Close()
		return replay.Project(ctx, p.log, []replay.Projection{{Installation: inst, DB: db}}, &replay.ProjectOptions{
			Fence:   func(events.InstallationID) error { return ls.Check() },
			OnApply: func(events.InstallationID, int, uint64) { onApply() },
		})
	}
	aDone := make(chan error, 1)
	go func() {
		aDone <- project(a, la, func() {
			aBatches.Add(1)
			if bHolds.Load() {
				aAfter.Add(1)
			}
		})
	}()
	eventually(t, "A to apply events", func() bool { return aBatches.Load() >= 3 })

	cutOff(a.bucket)
	var lb *Lease
	eventually(t, "B to take the lease over", func() bool {
		lb, err = b.bucket.Acquire(ctx, inst)
		if err == nil {
			bHolds.Store(true)
		}
		return err == nil
	})
	var aErr error
	select {
	case aErr = <-aDone:
	case <-time.After(waitLimit):
		t.Fatal("A's projection still runs after losing its lease")
	}
	if !errors.Is(aErr, ErrLeaseLost) {
		t.Fatalf("A's projection ended with %v, want ErrLeaseLost", aErr)
	}
	if n := aAfter.Load(); n > 0 {
		t.Fatalf("A committed %d batches after B took the lease", n)
	}
	if strings.Contains(a.logs.String(), "level=ERROR") {
		t.Error("A logged an error for a projection its lease stopped")
	}
	if v := telemetrytest.Value(t, a.metrics, "epochlog_apply_errors_total", "kind", "unknown"); v != 0 {
		t.Errorf("A counted %v apply errors for a projection its lease stopped", v)
	}
	before := appended.Load()
	eventually(t, "more events after the takeover", func() bool {
		if err := writeErr.Load(); err != nil {
			t.Fatalf("enqueue: %v", *err)
		}
		return appended.Load() >= before+10
	})
	close(stopWriting)
	written.Wait()
	stopWriting = make(chan struct{})

	// B resumes from the read model's checkpoint up to the end.
	last := logtest.LastSeq(t, b.log, inst)
	bctx, cancel := context.WithCancel(ctx)
	bDone := make(chan error, 1)
	var cp atomic.Uint64
	go func() {
		db, err := projections.OpenExisting(path, key, nil)
		if err != nil {
			bDone <- err
			return
		}
		defer db.Close()
		bDone <- replay.Project(bctx, b.log, []replay.Projection{{Installation: inst, DB: db}}, &replay.ProjectOptions{
			Fence:   func(events.InstallationID) error { return lb.Check() },
			OnApply: func(_ events.InstallationID, _ int, c uint64) { cp.Store(c) },
		})
	}()
	eventually(t, "B to reach the stream's end", func() bool { return cp.Load() >= last })
	cancel()
	if err := <-bDone; !errors.Is(err, context.Canceled) {
		t.Fatalf("B's projection: %v", err)
	}
	if err := lb.Release(ctx); err != nil {
		t.Fatal(err)
	}

	fresh := filepath.Join(dir, "fresh.db")
	if _, err := replay.Rebuild(ctx, b.log, inst, fresh, key, &replay.RebuildOptions{Options: replay.Options{SkipMLSCheck: true}}); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	want, wantCP := digest(t, fresh, key)
	got, gotCP := digest(t, path, key)
	if diff := projections.Compare(want, got); diff != nil || gotCP != wantCP {
		t.Fatalf("read model at %d differs from a fresh rebuild at %d: %v", gotCP, wantCP, diff)
	}
}

func digest(t *testing.T, path string, key projections.Key) (projections.Digest, uint64) {
	t.Helper()
	db, err := projections.OpenExisting(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := db.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cp, err := db.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d, cp
}

// A renewal that lands but whose answer is lost is recognised at the next
// try (the key holds this holder's token at a newer revision): the lease
// is kept, and not counted lost.
func TestRenewalAnswerLost(t *testing.T) {
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	b := newProc(t, cfg, "B", "g", 0)
	ctx := context.Background()
	la, err := a.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatal(err)
	}
	landed := make(chan uint64, 1)
	lose := func(op, key string) error {
		if op != "put" {
			return nil
		}
		a.bucket.fault.Store(nil)
		rev, err := a.bucket.put(ctx, key, la.value, la.Revision())
		if err != nil {
			t.Errorf("the renewal itself: %v", err)
		}
		landed <- rev
		return context.DeadlineExceeded // its answer, lost
	}
	a.bucket.fault.Store(&lose)
	var rev uint64
	select {
	case rev = <-landed:
	case <-time.After(waitLimit):
		t.Fatal("no renewal")
	}
	eventually(t, "A to renew past the lost answer", func() bool { return la.Revision() > rev })
	if err := la.Check(); err != nil {
		t.Fatalf("A's lease after a lost answer: %v", err)
	}
	if _, err := b.bucket.Acquire(ctx, inst); !errors.Is(err, ErrHeld) {
		t.Fatalf("B acquires: %v", err)
	}
	for _, r := range telemetry.LeaseLossReasons {
		if v := telemetrytest.Value(t, a.metrics, "epochlog_lease_losses_total", "reason", r); v != 0 {
			t.Errorf("A counted a loss (%s) for a lost answer", r)
		}
	}
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
}

// An Acquire whose reads of the lease go unanswered a few times (a
// timeout, a stream leader being elected) reads again and acquires; one
// that is never answered fails within its bound, naming the read.
func TestAcquireReadsAgainWhenUnanswered(t *testing.T) {
	cfg := startServer(t)
	a := newProc(t, cfg, "A", "g", testTTL)
	ctx := context.Background()
	var gets atomic.Int32
	flaky := func(op, key string) error {
		if op == "get" && gets.Add(1) <= 3 {
			return context.DeadlineExceeded
		}
		return nil
	}
	a.bucket.fault.Store(&flaky)
	la, err := a.bucket.Acquire(ctx, inst)
	if err != nil {
		t.Fatalf("acquire after 3 unanswered reads: %v", err)
	}
	if n := gets.Load(); n != 4 {
		t.Fatalf("%d reads, want 4", n)
	}
	if err := la.Release(ctx); err != nil {
		t.Fatal(err)
	}
	cutOff(a.bucket)
	if _, err := a.bucket.Acquire(ctx, inst); err == nil || !strings.Contains(err.Error(), "reading its lease") || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("acquire never answered: %v, want the read's deadline", err)
	}
}

// A lease key whose value does not decode is held by nobody this code
// can name: Holding says held, with no holder, member or time, not the
// fields read before the part that failed (a newer writer's record, or
// bytes someone else put there).
func TestUndecodableLeaseValue(t *testing.T) {
	ctx := context.Background()
	p := newProc(t, startServer(t), "A", "g", 0)
	key, err := p.bucket.installationKey(inst)
	if err != nil {
		t.Fatal(err)
	}
	for _, v := range []string{
		`{"holder":"someone","member":"m1","token":"t1","since":"yesterday"}`,
		`{"holder":"someone","member":"m1","token":"t1","since":"2026-12-07T09:00:00Z"`,
		`not json`,
	} {
		if _, err := p.bucket.kv.Put(ctx, key, []byte(v)); err != nil {
			t.Fatal(err)
		}
		h, err := p.bucket.Holding(ctx, inst)
		if err != nil {
			t.Fatal(err)
		}
		if !h.Held || h.Holder != "" || h.Member != "" || !h.Since.IsZero() {
			t.Errorf("value %s: %+v, want held by nobody named", v, h)
		}
		if _, err := p.bucket.Acquire(ctx, inst); !errors.Is(err, ErrHeld) {
			t.Errorf("value %s: acquire: %v, want ErrHeld", v, err)
		}
	}
}

// FuzzDecodeRecord: a lease key's value, whatever its bytes, decodes to
// the zero record or to a whole one, which encodes and decodes to itself.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range []record{
		{Holder: "holder A", Token: "tok", Since: time.Date(2026, 12, 7, 9, 0, 0, 123e6, time.UTC)},
		{Holder: "pid 1 replayer host h", Member: "m-1", Token: "t", Since: time.Unix(0, 0).UTC()},
	} {
		b, err := json.Marshal(r)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"holder":"h","member":"m","token":"t","since":1}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		r := decodeRecord(data)
		var whole record
		if err := json.Unmarshal(data, &whole); err != nil {
			if r != (record{}) {
				t.Fatalf("undecodable value (%v) read as %+v", err, r)
			}
			return
		}
		b, err := json.Marshal(r)
		if err != nil {
			return // a time json cannot write (year past 9999): nothing re-encodes it
		}
		back := decodeRecord(b)
		if back.Holder != r.Holder || back.Member != r.Member || back.Token != r.Token || !back.Since.Equal(r.Since) {
			t.Fatalf("%s reads back as %+v, want %+v", b, back, r)
		}
	})
}
