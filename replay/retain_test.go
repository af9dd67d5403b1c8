package replay

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/projections"
)

// retainHistory appends instA's history over three UTC days (Nov 23, 24
// and 25): setup and per day perDay messages (two thirds application
// messages, over two groups) and returns the generator.
func retainHistory(t testing.TB, l *eventlog.Log, perDay int) *historyGen {
	t.Helper()
	h := newHistoryGen(instA)
	h.setup(2)
	for d := range 3 {
		h.t = baseTime.Add(time.Duration(d) * 24 * time.Hour)
		h.messages(perDay, 2)
	}
	if _, err := h.flush(context.Background(), l); err != nil {
		t.Fatal(err)
	}
	return h
}

// retainNow and retainPolicy shred Nov 23: now is Nov 25 04:00 and
// messages and deliveries are kept a day, so the cutoff is the start of
// Nov 24.
var (
	retainNow    = baseTime.Add(49 * time.Hour)
	retainPolicy = RetentionPolicy{Messages: 24 * time.Hour, Delivery: 24 * time.Hour}
	retainCutoff = time.Date(2026, 11, 24, 0, 0, 0, 0, time.UTC)
	farFuture    = time.Date(2200, 1, 1, 0, 0, 0, 0, time.UTC)
)

// rawEnv is the stored envelope at seq.
var rawEnv = logtest.Envelope

// messageCounts returns the messages of db before the cutoff and in all.
func messageCounts(t testing.TB, db *projections.DB) (old, all int64) {
	t.Helper()
	ctx := context.Background()
	old, err := db.CountMessagesBefore(ctx, retainCutoff)
	if err != nil {
		t.Fatal(err)
	}
	if all, err = db.CountMessagesBefore(ctx, farFuture); err != nil {
		t.Fatal(err)
	}
	return old, all
}

// TestRetainAndCompact applies a message retention policy to a live read
// model: the old messages leave it, its older snapshot and the old days'
// keys; the old days' events open under nothing the Logs hold; rebuild
// from the new snapshot and verify agree with the live read model before
// and after compaction; a rebuild from the start names the retention,
// then the compaction.
func TestRetainAndCompact(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t)
	h := retainHistory(t, l, 30)
	writeHistory(t, l, instB, 1, 20)
	dir := t.TempDir()
	key := rawDBKey(t, 0x42)
	live := filepath.Join(dir, "a.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, live, key)
	defer db.Close()
	if _, err := SnapshotDB(ctx, l, instA, db, &SnapshotOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	// More of the last day after the snapshot, so that retention has an
	// older snapshot to delete.
	h.t = baseTime.Add(49 * time.Hour)
	h.messages(6, 2)
	// And a delivery dated Nov 23, never acknowledged: its events are
	// shredded with that day, its row stays, carried by the snapshot.
	h.queued++
	h.add(events.AggDelivery, "inbox", events.DeliveryEnqueued{Recipient: h.inst, Channel: "inbox", Sequence: h.queued,
		Payload: []byte("still pending"), ExpiresAt: baseTime.Add(1000 * time.Hour), IdempotencyKey: "pending-old"})
	h.ts[len(h.ts)-1].Events[0].Time = baseTime.Add(2 * time.Hour)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	old, all := messageCounts(t, db)
	if old != 20 || all != 64 {
		t.Fatalf("%d messages before the cutoff of %d, want 20 of 64", old, all)
	}
	// The raw events, split by what retention does to them.
	type raw struct {
		seq     uint64
		subject string
		data    []byte
		shred   bool
	}
	var captured []raw
	if err := l.Read(ctx, instA, 0, func(r eventlog.Record) error {
		env, err := rawEnv(l, r.Seq)
		if err != nil {
			return err
		}
		class, _ := events.PeriodOf(r.Event, r.Event.Time)
		byDay := class == events.ClassMessages || class == events.ClassDelivery
		captured = append(captured, raw{r.Seq, r.Subject, env, byDay && r.Event.Time.Before(retainCutoff)})
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	res, err := Retain(ctx, l, instA, db, retainPolicy, &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }})
	if err != nil {
		t.Fatal(err)
	}
	if !res.Cutoff.Equal(retainCutoff) || !res.DeliveryCutoff.Equal(retainCutoff) || len(res.Periods) != 3 || res.KeysShredded != 3 ||
		res.RowsDeleted != 20 || res.DeliveriesDeleted != 10 || res.Snapshot == nil || len(res.SnapshotsDeleted) != 1 {
		t.Fatalf("retain: %+v", res)
	}
	if n, err := db.CountDeliveriesBefore(ctx, farFuture); err != nil || n != 20 {
		t.Fatalf("after retention: %d acknowledged deliveries (%v), want 20 (of days kept)", n, err)
	}
	// (The other pending ones have expired by the wall clock.)
	if ds, err := db.PendingDeliveries(ctx, instA, "inbox", 0, 100); err != nil || len(ds) != 1 || string(ds[0].Payload) != "still pending" {
		t.Fatalf("pending deliveries after retention: %d %v, want the old one", len(ds), err)
	}
	if old, all := messageCounts(t, db); old != 0 || all != 44 {
		t.Fatalf("after retention: %d old messages of %d, want 0 of 44", old, all)
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil || len(refs) != 1 || refs[0].Checkpoint != res.Snapshot.Checkpoint {
		t.Fatalf("snapshots after retention: %+v %v; want only the new one", refs, err)
	}
	// The one snapshot left, opened: nothing of Nov 23 in it (the contents
	// "message 10" to "message 29" are that day's and prefix no other),
	// while a message of Nov 24 is.
	plain, err := l.OpenSnapshot(ctx, instA, refs[0].Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	for i := 10; i < 30; i++ {
		if bytes.Contains(plain, []byte(fmt.Sprintf("message %d", i))) {
			t.Fatalf("the snapshot holds %q of a shredded day", fmt.Sprintf("message %d", i))
		}
	}
	if !bytes.Contains(plain, []byte("message 40")) {
		t.Fatal("the snapshot lacks a retained message")
	}
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	checkOpens := func(stage string) {
		t.Helper()
		for _, lg := range []*eventlog.Log{l, fresh} {
			for _, c := range captured {
				_, err := lg.OpenEnvelope(ctx, instA, c.subject, c.data)
				switch {
				case c.shred && !errors.Is(err, eventlog.ErrRetainedOut):
					t.Fatalf("%s: shredded event at seq %d: %v, want ErrRetainedOut", stage, c.seq, err)
				case !c.shred && err != nil:
					t.Fatalf("%s: retained event at seq %d: %v", stage, c.seq, err)
				}
				if _, err := events.Open(keyring(t, 1, 0x11), instA, events.Binding{Stream: lg.Stream(), Subject: c.subject}, c.data); c.shred && err == nil {
					t.Fatalf("%s: the root key opened a shredded event", stage)
				}
			}
		}
	}
	checkOpens("unpurged")
	liveDigest, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rebuildEquals := func(stage string) {
		t.Helper()
		p := filepath.Join(t.TempDir(), "rebuilt.db")
		if _, err := Rebuild(ctx, fresh, instA, p, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
			t.Fatalf("%s: rebuild: %v", stage, err)
		}
		if d, _ := digestOf(t, p, key); projections.Compare(d, liveDigest) != nil {
			t.Fatalf("%s: rebuild from the snapshot differs from the live read model: %v", stage, projections.Compare(d, liveDigest))
		}
		if _, err := Verify(ctx, fresh, instA, live, key, testReplayOptions()); err != nil {
			t.Fatalf("%s: verify: %v", stage, err)
		}
	}
	rebuildEquals("unpurged")
	fromStart := func(want error) {
		t.Helper()
		o := *testReplayOptions()
		o.FromStart = true
		_, err := Rebuild(ctx, fresh, instA, filepath.Join(t.TempDir(), "full.db"), key, &RebuildOptions{Options: o})
		if !errors.Is(err, want) {
			t.Fatalf("rebuild from the start: %v, want %v", err, want)
		}
	}
	fromStart(eventlog.ErrRetainedOut)

	// Again: nothing left to do.
	again, err := Retain(ctx, l, instA, db, retainPolicy, &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }})
	if err != nil || len(again.Periods) != 0 || again.RowsDeleted+again.DeliveriesDeleted != 0 || again.Snapshot != nil {
		t.Fatalf("retain again: %+v %v", again, err)
	}

	comp, err := Compact(ctx, l, instA, nil)
	if err != nil {
		t.Fatal(err)
	}
	// 20 messages, 11 enqueued and 1 acknowledgement, but the last event,
	// the old pending delivery's at the snapshot's checkpoint, is kept as
	// the anchor.
	if comp.Deleted != 31 || comp.Through != res.Snapshot.Checkpoint {
		t.Fatalf("compact: %+v, want 31 deleted through %d", comp, res.Snapshot.Checkpoint)
	}
	for _, c := range captured {
		_, err := rawEnv(l, c.seq)
		if gone := c.shred && c.seq != comp.Through; gone != (err != nil) {
			t.Fatalf("after compaction, event at seq %d (shredded %v): %v", c.seq, c.shred, err)
		}
	}
	checkOpens("purged")
	rebuildEquals("purged")
	fromStart(eventlog.ErrCompacted)
	if _, err := Compact(ctx, l, instB, nil); !errors.Is(err, ErrNoSnapshotToCompact) {
		t.Fatalf("compact without a snapshot: %v", err)
	}
	// Forever keeps everything.
	if r, err := Retain(ctx, l, instA, db, RetentionPolicy{}, nil); err != nil || r.RowsDeleted != 0 || len(r.Periods) != 0 {
		t.Fatalf("retain forever: %+v %v", r, err)
	}
	if _, err := Retain(ctx, l, instB, db, retainPolicy, nil); !errors.Is(err, ErrWrongInstallation) {
		t.Fatalf("retain with another installation's read model: %v", err)
	}
}

// TestRetentionCutoff: the policy's cutoff is the start of a UTC day;
// KeepNone keeps only today, and the day before for RetentionGrace.
func TestRetentionCutoff(t *testing.T) {
	now := time.Date(2026, 3, 10, 13, 0, 0, 0, time.FixedZone("x", 5*3600))
	for _, c := range []struct {
		p    RetentionPolicy
		want string
		ok   bool
	}{
		{RetentionPolicy{}, "", false},
		{RetentionPolicy{Messages: KeepNone}, "2026-03-10", true},
		{RetentionPolicy{Messages: 24 * time.Hour}, "2026-03-09", true},
		{RetentionPolicy{Messages: 30 * 24 * time.Hour}, "2026-02-08", true},
	} {
		got, ok := c.p.MessagesCutoff(now)
		if ok != c.ok || (ok && (got.Format(time.DateOnly) != c.want || got.Location() != time.UTC || got.Hour() != 0)) {
			t.Errorf("%+v: cutoff %v %v, want %s %v", c.p, got, ok, c.want, c.ok)
		}
	}
	// Just past midnight the day that ended stays for RetentionGrace:
	// writers with a clock a little behind still seal into it.
	if got, _ := (RetentionPolicy{Messages: KeepNone}).MessagesCutoff(time.Date(2026, 3, 10, 0, 5, 0, 0, time.UTC)); got.Format(time.DateOnly) != "2026-03-09" {
		t.Errorf("KeepNone at 00:05: cutoff %v, want 2026-03-09 (the day that just ended kept for RetentionGrace)", got)
	}
	if !strings.Contains(ErrNoSnapshotToCompact.Error(), "snapshot") {
		t.Fatal("error text")
	}
}

// TestRetainHistory: full-history retention deletes from the stream every
// event of the installation that the snapshot covers and that the stream
// stored before the cutoff, whatever its kind, and nothing of another
// installation; the read model rebuilds from the snapshot as it was, more
// events after it replay on top, and a replay from the start names the
// compaction. An age longer than the events' deletes none.
func TestRetainHistory(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	h := writeHistory(t, l, instA, 2, 30)
	writeHistory(t, l, instB, 1, 10)
	key := rawDBKey(t, 0x43)
	live := filepath.Join(t.TempDir(), "a.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, live, key)
	defer db.Close()
	subjectsA := map[string]bool{}
	countOf := func(inst events.InstallationID) int {
		t.Helper()
		n := 0
		if err := l.Read(ctx, inst, 0, func(r eventlog.Record) error { n++; subjectsA[r.Subject] = inst == instA; return nil }); err != nil {
			t.Fatalf("read %s: %v", inst, err)
		}
		return n
	}
	totalA, totalB := countOf(instA), countOf(instB)
	subjects := 0
	for _, a := range subjectsA {
		if a {
			subjects++
		}
	}

	// An age the events are younger than: a snapshot, nothing deleted.
	res, err := Retain(ctx, l, instA, db, RetentionPolicy{History: 1000 * time.Hour}, &RetainOptions{Options: *testReplayOptions()})
	if err != nil || res.Snapshot == nil {
		t.Fatalf("retain --history 1000h: %+v %v", res, err)
	}
	comp, err := Compact(ctx, l, instA, &CompactOptions{History: 1000 * time.Hour})
	if err != nil || comp.Deleted != 0 {
		t.Fatalf("compact --history 1000h: %+v %v", comp, err)
	}
	if n := countOf(instA); n != totalA {
		t.Fatalf("%d events after keeping 1000h of history, want %d", n, totalA)
	}

	// None: every covered event goes but the last of each subject (where
	// the next append finds the aggregate's position; the snapshot's
	// anchor is one).
	// The read model has not moved: the snapshot just made is reused.
	res, err = Retain(ctx, l, instA, db, RetentionPolicy{History: KeepNone}, &RetainOptions{Options: *testReplayOptions()})
	if err != nil || res.Snapshot != nil {
		t.Fatalf("retain --history none: %+v %v, want the snapshot reused", res, err)
	}
	comp, err = Compact(ctx, l, instA, &CompactOptions{History: KeepNone})
	if err != nil {
		t.Fatal(err)
	}
	if comp.Deleted != totalA-subjects || comp.Kept != subjects {
		t.Fatalf("compact --history none: %+v, want %d deleted and the last of each of %d subjects kept", comp, totalA-subjects, subjects)
	}
	if n := countOf(instB); n != totalB {
		t.Fatalf("the other installation has %d events after the compaction, want %d", n, totalB)
	}
	liveDigest, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rebuilt := func(stage string) projections.Digest {
		t.Helper()
		p := filepath.Join(t.TempDir(), "rebuilt.db")
		if _, err := Rebuild(ctx, l, instA, p, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
			t.Fatalf("%s: rebuild: %v", stage, err)
		}
		d, _ := digestOf(t, p, key)
		return d
	}
	if d := rebuilt("compacted"); projections.Compare(d, liveDigest) != nil {
		t.Fatalf("rebuild from the snapshot differs from the live read model: %v", projections.Compare(d, liveDigest))
	}
	o := *testReplayOptions()
	o.FromStart = true
	if _, err := Rebuild(ctx, l, instA, filepath.Join(t.TempDir(), "full.db"), key, &RebuildOptions{Options: o}); !errors.Is(err, eventlog.ErrCompacted) {
		t.Fatalf("rebuild from the start after the history went: %v, want ErrCompacted", err)
	}
	// Later events replay on top of the snapshot.
	h.messages(6, 2)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	if liveDigest, err = db.Digest(ctx); err != nil {
		t.Fatal(err)
	}
	if d := rebuilt("tail"); projections.Compare(d, liveDigest) != nil {
		t.Fatalf("rebuild from the snapshot and the tail differs from the live read model: %v", projections.Compare(d, liveDigest))
	}
}
