package replay

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// snapshotOpts are testReplayOptions for Snapshot.
func snapshotOpts() *SnapshotOptions {
	return &SnapshotOptions{Options: *testReplayOptions()}
}

// fromStart are testReplayOptions that replay the whole history.
func fromStart() *Options {
	o := testReplayOptions()
	o.FromStart = true
	return o
}

// snapshotFixture: instA's history (groups, commits, members, messages
// sent and received, deliveries queued and acknowledged) in a live read
// model, and a first snapshot of it.
func snapshotFixture(t *testing.T, l *eventlog.Log) (h *historyGen, live string, key projections.Key, first *SnapshotResult) {
	t.Helper()
	ctx := context.Background()
	h = writeHistory(t, l, instA, 3, 240)
	live = filepath.Join(t.TempDir(), "a.db")
	key = rawDBKey(t, 0x5A)
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *fromStart()}); err != nil {
		t.Fatal(err)
	}
	first, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
	if err != nil {
		t.Fatal(err)
	}
	if first.Checkpoint != lastSeq(t, l, instA) || first.Base != 0 || first.Checked != h.events || first.Size == 0 || first.Rows == 0 {
		t.Fatalf("first snapshot %+v (events %d)", first, h.events)
	}
	noLeftovers(t, live)
	return h, live, key, first
}

// more appends n more messages to h's history.
func more(t *testing.T, l *eventlog.Log, h *historyGen, n int) {
	t.Helper()
	h.messages(n, 3)
	if _, err := h.flush(context.Background(), l); err != nil {
		t.Fatal(err)
	}
}

// fullDigest rebuilds inst from the start into a new file and digests it.
func fullDigest(t *testing.T, l *eventlog.Log, inst events.InstallationID) projections.Digest {
	t.Helper()
	path := filepath.Join(t.TempDir(), "full.db")
	key := rawDBKey(t, 0x61)
	res, err := Rebuild(context.Background(), l, inst, path, key, &RebuildOptions{Options: *fromStart()})
	if err != nil {
		t.Fatal(err)
	}
	if res.FromSnapshot != 0 {
		t.Fatalf("--from-start rebuild started from a snapshot at %d", res.FromSnapshot)
	}
	d, _ := digestOf(t, path, key)
	return d
}

func TestSnapshotThenRebuildEqualsFullReplay(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	h, live, key, first := snapshotFixture(t, l)
	more(t, l, h, 90)
	tail := int(lastSeq(t, l, instA) - first.Checkpoint)

	// A rebuild from the snapshot reads only the tail.
	path := filepath.Join(t.TempDir(), "b.db")
	res, err := Rebuild(ctx, l, instA, path, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatal(err)
	}
	if res.FromSnapshot != first.Checkpoint || res.Replayed != tail {
		t.Fatalf("rebuild from snapshot: from %d, replayed %d; want from %d, %d (the tail)", res.FromSnapshot, res.Replayed, first.Checkpoint, tail)
	}
	full := fullDigest(t, l, instA)
	if d, _ := digestOf(t, path, key); !d.Equal(full) {
		t.Fatalf("snapshot + tail differs from full replay: %v", projections.Compare(full, d))
	}

	// The live read model catches up; its next snapshot is checked from
	// the first one plus the tail.
	db := openDB(t, live, key)
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	second, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
	if err != nil {
		t.Fatal(err)
	}
	if second.Base != first.Checkpoint || second.Checked != tail || !second.Digest.Equal(full) {
		t.Fatalf("second snapshot %+v, want base %d, %d checked", second, first.Checkpoint, tail)
	}
	// A third one: only the newest two are kept.
	more(t, l, h, 30)
	db = openDB(t, live, key)
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	third, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
	if err != nil {
		t.Fatal(err)
	}
	if len(third.Pruned) != 1 || third.Pruned[0] != first.Checkpoint {
		t.Fatalf("third snapshot pruned %v, want [%d]", third.Pruned, first.Checkpoint)
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil || len(refs) != 2 || refs[0].Checkpoint != third.Checkpoint || refs[1].Checkpoint != second.Checkpoint {
		t.Fatalf("stored snapshots %+v %v", refs, err)
	}
	// Nothing appended since: a rebuild from the newest replays nothing.
	res, err = Rebuild(ctx, l, instA, filepath.Join(t.TempDir(), "c.db"), key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil || res.FromSnapshot != third.Checkpoint || res.Replayed != 0 {
		t.Fatalf("rebuild at the snapshot's checkpoint: %+v %v", res, err)
	}
	// Migrate at the same schema starts from it too; at another it replays
	// from the start (covered by projections' ErrSnapshotSchema).
	if _, err := Migrate(ctx, l, instA, live, key, projections.Key{}, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
}

func TestSnapshotFlippedFallsBack(t *testing.T) {
	l, _, logs := observedLog(t)
	ctx := context.Background()
	h, live, key, first := snapshotFixture(t, l)
	more(t, l, h, 60)
	db := openDB(t, live, key)
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	second, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
	if err != nil {
		t.Fatal(err)
	}
	// One byte of the newest snapshot's sealed content flipped in the
	// bucket.
	sealed, err := l.SealedSnapshot(ctx, instA, second.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	sealed[len(sealed)/2] ^= 0x08
	if _, err := l.PutSealedSnapshot(ctx, instA, second.Checkpoint, sealed); err != nil {
		t.Fatal(err)
	}
	if _, err := l.OpenSnapshot(ctx, instA, second.Checkpoint); !errors.Is(err, events.ErrTampered) {
		t.Fatalf("open flipped snapshot: %v, want ErrTampered", err)
	}
	path := filepath.Join(t.TempDir(), "b.db")
	res, err := Rebuild(ctx, l, instA, path, key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil {
		t.Fatal(err)
	}
	if res.FromSnapshot != first.Checkpoint || res.Replayed != int(lastSeq(t, l, instA)-first.Checkpoint) {
		t.Fatalf("rebuild past a flipped snapshot: from %d, replayed %d; want the older one at %d", res.FromSnapshot, res.Replayed, first.Checkpoint)
	}
	warns := logs.Find(t, "WARN", "snapshot cannot be used")
	if len(warns) != 1 || !strings.Contains(warns[0].Str("err"), "authentication failed") {
		t.Fatalf("want one Warn naming the failed authentication:\n%s", logs.String())
	}
	if d, _ := digestOf(t, path, key); !d.Equal(second.Digest) {
		t.Fatal("the rebuild past a flipped snapshot differs")
	}
	// Both flipped: a full replay.
	sealed, _ = l.SealedSnapshot(ctx, instA, first.Checkpoint)
	sealed[len(sealed)-1] ^= 0x01
	if _, err := l.PutSealedSnapshot(ctx, instA, first.Checkpoint, sealed); err != nil {
		t.Fatal(err)
	}
	vres, err := Verify(ctx, l, instA, live, key, testReplayOptions())
	if err != nil || vres.FromSnapshot != 0 || vres.Replayed != int(vres.Checkpoint) {
		t.Fatalf("verify with every snapshot flipped: %+v %v", vres, err)
	}
}

func TestSnapshotThatDoesNotCheckOutIsNotStored(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	h, live, key, first := snapshotFixture(t, l)
	more(t, l, h, 30)
	db := openDB(t, live, key)
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	// The live read model drifts: one message edited outside the projector.
	sqlExec(t, live, strings.Repeat("5a", projections.KeySize), `UPDATE messages SET content = X'00' WHERE ordinal = 3 AND group_id = X'`+hex.EncodeToString(genGroupID(1))+`'`)
	_, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
	if !errors.Is(err, ErrSnapshotMismatch) || !errors.Is(err, ErrDrift) || !IsVerificationFailure(err) {
		t.Fatalf("snapshot of a drifted read model: %v, want ErrSnapshotMismatch", err)
	}
	// The error names both digests and the table.
	if n := strings.Count(err.Error(), "digest"); n < 1 || !strings.Contains(err.Error(), "messages") {
		t.Fatalf("error %q does not name the digests and the table", err)
	}
	refs, _ := l.Snapshots(ctx, instA)
	if len(refs) != 1 || refs[0].Checkpoint != first.Checkpoint {
		t.Fatalf("stored snapshots %+v, want only the first", refs)
	}
	noLeftovers(t, live)
}

func TestVerifyFromSnapshot(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	h, live, key, first := snapshotFixture(t, l)
	more(t, l, h, 60)
	db := openDB(t, live, key)
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	res, err := Verify(ctx, l, instA, live, key, testReplayOptions())
	if err != nil {
		t.Fatal(err)
	}
	if res.FromSnapshot != first.Checkpoint || res.Replayed != int(res.Checkpoint-first.Checkpoint) {
		t.Fatalf("verify: %+v, want from %d", res, first.Checkpoint)
	}

	t.Run("drifted read model", func(t *testing.T) {
		// A row older than the snapshot, edited: the snapshot holds the
		// row as the history gives it.
		copyPath := filepath.Join(t.TempDir(), "drift.db")
		b, err := os.ReadFile(live)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(copyPath, b, 0o600); err != nil {
			t.Fatal(err)
		}
		sqlExec(t, copyPath, strings.Repeat("5a", projections.KeySize), `UPDATE messages SET content = X'00' WHERE ordinal = 1 AND group_id = X'`+hex.EncodeToString(genGroupID(0))+`'`)
		_, err = Verify(ctx, l, instA, copyPath, key, testReplayOptions())
		var de *DriftError
		if !errors.As(err, &de) || de.Table != "messages" {
			t.Fatalf("verify of a drifted read model from a snapshot: %v, want a *DriftError in messages", err)
		}
	})
	t.Run("tampered tail", func(t *testing.T) {
		// An event of the tail deleted from the stream: its successor's
		// link names it.
		deleteMsg(t, l, first.Checkpoint+5)
		_, err := Verify(ctx, l, instA, live, key, testReplayOptions())
		if !IsVerificationFailure(err) {
			t.Fatalf("verify over a tail missing an event: %v, want a verification failure", err)
		}
	})
}

func TestRekeyFromSnapshot(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	h, live, key, first := snapshotFixture(t, l)
	more(t, l, h, 45)
	db := openDB(t, live, key)
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	db.Close()
	before, cp := digestOf(t, live, key)
	newKey := rawDBKey(t, 0x77)
	res, err := Rekey(ctx, l, instA, live, key, newKey, testReplayOptions())
	if err != nil {
		t.Fatal(err)
	}
	if res.FromSnapshot != first.Checkpoint || res.Replayed != int(cp-first.Checkpoint) || !res.Digest.Equal(before) {
		t.Fatalf("rekey from snapshot: %+v", res)
	}
	after, _ := digestOf(t, live, newKey)
	if !after.Equal(before) {
		t.Fatal("rekeyed read model differs")
	}
	if _, err := projections.OpenExisting(live, key, nil); !errors.Is(err, projections.ErrWrongKey) {
		t.Fatalf("old key after rekey: %v", err)
	}
}

func TestChainAnchor(t *testing.T) {
	head := events.Link{Seq: 10, Digest: [events.LinkDigestSize]byte{1, 2, 3}}
	a := &chainAnchor{head: head, cp: 10}
	rec := func(p events.Link) eventlog.Record {
		return eventlog.Record{Seq: 11, Event: events.Event{Prev: p}}
	}
	for _, ok := range []events.Link{{}, head, {Seq: 7}, {Seq: 11}} {
		if err := a.check(rec(ok)); err != nil {
			t.Fatalf("link %v: %v", ok, err)
		}
	}
	other := head
	other.Digest[0] ^= 1
	if err := a.check(rec(other)); !errors.Is(err, eventlog.ErrMissingEvent) {
		t.Fatalf("link to another event at the head: %v", err)
	}
}

func TestProjectSnapshotPolicy(t *testing.T) {
	l, _ := newLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	h := writeHistory(t, l, instA, 2, 60)
	path := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 0x5A)
	db, err := projections.Open(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var made atomic.Int32
	done := make(chan struct{}, 16)
	policy := &SnapshotPolicy{EveryEvents: 50, Options: *snapshotOpts(), OnSnapshot: func(_ events.InstallationID, res *SnapshotResult, err error) {
		if err != nil {
			t.Errorf("policy snapshot: %v", err)
		} else {
			made.Add(1)
		}
		done <- struct{}{}
	}}
	pctx, pcancel := context.WithCancel(ctx)
	errc := make(chan error, 1)
	go func() {
		errc <- Project(pctx, l, []Projection{{Installation: instA, DB: db}}, &ProjectOptions{Snapshots: policy})
	}()
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("no snapshot made by the policy")
	}
	more(t, l, h, 90)
	select {
	case <-done:
	case <-ctx.Done():
		t.Fatal("no second snapshot made by the policy")
	}
	pcancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("project: %v", err)
	}
	refs, err := l.Snapshots(context.Background(), instA)
	if err != nil || len(refs) == 0 || int(made.Load()) < 2 {
		t.Fatalf("snapshots %+v (%d made), %v", refs, made.Load(), err)
	}
}

// A lost read model recovered from a stream that lost its tail: the
// snapshot taken at the lost tail shows it, and the rebuild says so
// (ErrBehind) instead of recovering less and exiting 0. --force takes the
// stream's word.
func TestRecoveryRefusesAStreamBehindItsSnapshot(t *testing.T) {
	l, _ := newLog(t)
	_, _, _, first := snapshotFixture(t, l)
	deleteMsg(t, l, first.Checkpoint)
	lost := filepath.Join(t.TempDir(), "recovered.db")
	key := rawDBKey(t, 0x62)
	_, err := Rebuild(context.Background(), l, instA, lost, key, rebuildOpts(false))
	if !errors.Is(err, ErrBehind) || !strings.Contains(err.Error(), fmt.Sprintf("snapshot of %s (replayer snapshot) was taken at stream sequence %d", instA, first.Checkpoint)) {
		t.Fatalf("recovery from a stream behind its snapshot: %v, want ErrBehind naming the snapshot", err)
	}
	if _, err := os.Stat(lost); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused recovery left a database: %v", err)
	}
	res, err := Rebuild(context.Background(), l, instA, lost, key, rebuildOpts(true))
	if err != nil || res.Checkpoint >= first.Checkpoint {
		t.Fatalf("forced recovery: %+v, %v; want it short of the lost event at %d", res, err, first.Checkpoint)
	}
}

// A snapshot of a read model whose checkpoint's event the stream lost
// says so (eventlog.ErrMissingEvent, a verification failure), not as the
// server's "message not found".
func TestSnapshotOfACheckpointTheStreamLost(t *testing.T) {
	l, _ := newLog(t)
	_, live, key, first := snapshotFixture(t, l)
	deleteMsg(t, l, first.Checkpoint)
	_, err := Snapshot(context.Background(), l, instA, live, key, snapshotOpts())
	if !errors.Is(err, eventlog.ErrMissingEvent) || !IsVerificationFailure(err) || !strings.Contains(err.Error(), fmt.Sprintf("no event at sequence %d", first.Checkpoint)) {
		t.Fatalf("snapshot with its checkpoint's event lost: %v, want eventlog.ErrMissingEvent naming the sequence", err)
	}
}

// A snapshot past the stream that does not open (bytes changed, a chunk
// lost) proves nothing either way, and nothing else is left to say what
// the stream held: the recovery is refused too, naming it; --force
// rebuilds from the stream anyway. Until 2026-12-06 it was a warning, and
// the recovery exited 0 with less.
func TestRecoveryRefusesWhenASnapshotPastTheStreamDoesNotOpen(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	_, _, _, first := snapshotFixture(t, l)
	deleteMsg(t, l, first.Checkpoint)
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	obs, err := js.ObjectStore(ctx, l.SnapshotBucket())
	if err != nil {
		t.Fatal(err)
	}
	infos, err := obs.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	damaged := ""
	for _, info := range infos {
		if strings.HasSuffix(info.Name, fmt.Sprint(first.Checkpoint)) {
			damaged = info.Name
		}
	}
	if damaged == "" {
		t.Fatalf("no snapshot object for sequence %d among %d", first.Checkpoint, len(infos))
	}
	if _, err := obs.PutBytes(ctx, damaged, []byte("not a sealed snapshot")); err != nil {
		t.Fatal(err)
	}
	lost := filepath.Join(t.TempDir(), "recovered.db")
	key := rawDBKey(t, 0x62)
	_, err = Rebuild(ctx, l, instA, lost, key, rebuildOpts(false))
	if !errors.Is(err, ErrBehind) || !strings.Contains(err.Error(), fmt.Sprintf("named for stream sequence %d", first.Checkpoint)) {
		t.Fatalf("recovery with a snapshot past the stream that does not open: %v, want ErrBehind naming it", err)
	}
	if _, err := os.Stat(lost); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused recovery left a database: %v", err)
	}
	if _, err := Rebuild(ctx, l, instA, lost, key, rebuildOpts(true)); err != nil {
		t.Fatalf("forced recovery: %v", err)
	}
}

// A snapshot of a read model behind the snapshots kept (a restored copy,
// a stale follower's file) is refused, naming the checkpoints: stored, it
// would have been deleted by the same call's pruning while the command
// reported it stored.
func TestSnapshotBehindTheKeptOnesRefused(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	h, live, key, first := snapshotFixture(t, l)
	old := filepath.Join(t.TempDir(), "old.db")
	for _, suffix := range []string{"", "-wal"} {
		b, err := os.ReadFile(live + suffix)
		if errors.Is(err, fs.ErrNotExist) && suffix != "" {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(old+suffix, b, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	var kept []uint64
	for range 2 {
		more(t, l, h, 20)
		db := openDB(t, live, key)
		if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
			t.Fatal(err)
		}
		db.Close()
		res, err := Snapshot(ctx, l, instA, live, key, snapshotOpts())
		if err != nil {
			t.Fatal(err)
		}
		kept = append([]uint64{res.Checkpoint}, kept...)
	}

	res, err := Snapshot(ctx, l, instA, old, key, snapshotOpts())
	if !errors.Is(err, ErrSnapshotSuperseded) {
		t.Fatalf("snapshot of a read model at %d behind the kept %v: %+v, %v; want ErrSnapshotSuperseded", first.Checkpoint, kept, res, err)
	}
	for _, want := range []string{fmt.Sprint(first.Checkpoint), fmt.Sprint(kept), old} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("the refusal does not name %s: %v", want, err)
		}
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil || len(refs) != 2 || refs[0].Checkpoint != kept[0] || refs[1].Checkpoint != kept[1] {
		t.Fatalf("stored snapshots after the refusal: %+v %v; want %v", refs, err, kept)
	}
	// Keeping more, it is stored and kept.
	o := snapshotOpts()
	o.Keep = 3
	if res, err = Snapshot(ctx, l, instA, old, key, o); err != nil || len(res.Pruned) != 0 {
		t.Fatalf("snapshot of the older read model keeping 3: %+v, %v", res, err)
	}
}
