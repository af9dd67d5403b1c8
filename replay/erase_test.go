package replay

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestEraseKeepsOthersAndNamesTheErase: after an installation is erased,
// every way of opening its captured events fails, its rebuild and verify
// fail with ErrErased naming the time, and the other installations still
// rebuild to the read-model digest they had before.
func TestEraseKeepsOthersAndNamesTheErase(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t)
	insts := []events.InstallationID{instA, instB, "inst-carol"}
	for _, inst := range insts {
		writeHistory(t, l, inst, 2, 30)
	}
	dir := t.TempDir()
	key := rawDBKey(t, 0x42)
	pathOf := func(inst events.InstallationID) string { return filepath.Join(dir, string(inst)+".db") }
	before := map[events.InstallationID]string{}
	for _, inst := range insts {
		if _, err := Rebuild(ctx, l, inst, pathOf(inst), key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
			t.Fatal(err)
		}
		d, _ := digestOf(t, pathOf(inst), key)
		before[inst] = d.String()
	}
	// Keep copies of the raw envelopes of the installation to erase.
	type raw struct {
		subject string
		data    []byte
	}
	var captured []raw
	if err := l.Read(ctx, instA, 0, func(r eventlog.Record) error {
		m, err := l.Conn().JetStream() // legacy API, for a raw get
		if err != nil {
			return err
		}
		sm, err := m.GetMsg(l.Stream(), r.Seq)
		if err != nil {
			return err
		}
		captured = append(captured, raw{sm.Subject, sm.Data})
		return nil
	}); err != nil {
		t.Fatal(err)
	}

	res, err := l.Erase(ctx, instA, &eventlog.EraseOptions{By: "replay test"})
	if err != nil {
		t.Fatal(err)
	}
	// The Log that erased, and a fresh one (nothing cached), open none.
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	for _, lg := range []*eventlog.Log{l, fresh} {
		for _, c := range captured {
			if _, err := lg.OpenEnvelope(ctx, instA, c.subject, c.data); !errors.Is(err, ErrErased) {
				t.Fatalf("open a captured event after the erase: %v, want ErrErased", err)
			}
		}
		_, err := Rebuild(ctx, lg, instA, filepath.Join(t.TempDir(), "a.db"), key, &RebuildOptions{Options: *testReplayOptions()})
		if !errors.Is(err, ErrErased) || !strings.Contains(err.Error(), res.Tombstone.ErasedAt.Format("2006-01-02T15:04:05")) {
			t.Fatalf("rebuild of the erased installation: %v, want ErrErased naming %v", err, res.Tombstone.ErasedAt)
		}
		if _, err := Verify(ctx, lg, instA, pathOf(instA), key, testReplayOptions()); !errors.Is(err, ErrErased) {
			t.Fatalf("verify of the erased installation: %v, want ErrErased", err)
		}
		if IsVerificationFailure(err) {
			t.Fatalf("an erased installation is not a verification failure: %v", err)
		}
		// What is left of it, its read model, cannot be snapshotted or
		// its history compacted, for the erase, not for a lost event
		// (snapshot said ErrMissingEvent, exit 3; compact said to make
		// a snapshot).
		_, err = Snapshot(ctx, lg, instA, pathOf(instA), key, snapshotOpts())
		if !errors.Is(err, ErrErased) || errors.Is(err, eventlog.ErrMissingEvent) || IsVerificationFailure(err) {
			t.Fatalf("snapshot of the erased installation's read model: %v, want ErrErased", err)
		}
		if _, err := Compact(ctx, lg, instA, nil); !errors.Is(err, ErrErased) {
			t.Fatalf("compact of the erased installation: %v, want ErrErased", err)
		}
		// Nor retained: there is nothing of it to shred, and the read
		// model is left as it is (until 2026-12-07 RetainFile deleted
		// its old messages, then failed on the snapshot).
		for _, p := range []RetentionPolicy{{Messages: KeepNone}, {Messages: KeepForever}} {
			_, err = RetainFile(ctx, lg, instA, pathOf(instA), key, p, &RetainOptions{Options: *testReplayOptions()})
			var ee *eventlog.ErasedError
			if !errors.As(err, &ee) || ee.Installation != instA || IsVerificationFailure(err) {
				t.Fatalf("retain (%+v) of the erased installation's read model: %v, want its *ErasedError", p, err)
			}
			if d, _ := digestOf(t, pathOf(instA), key); d.String() != before[instA] {
				t.Fatalf("a refused retain (%+v) changed the erased installation's read model", p)
			}
		}
		// Nor followed: nothing of it comes any more, and a follow of
		// it waited, healthy, for good.
		db, err := projections.Open(pathOf(instA), key, nil)
		if err != nil {
			t.Fatal(err)
		}
		pctx, cancel := context.WithTimeout(ctx, 30*time.Second)
		err = Project(pctx, lg, []Projection{{Installation: instA, DB: db}}, nil)
		cancel()
		db.Close()
		if !errors.Is(err, ErrErased) {
			t.Fatalf("follow of the erased installation's read model: %v, want ErrErased", err)
		}
	}
	for _, inst := range insts[1:] {
		live := filepath.Join(t.TempDir(), string(inst)+".db")
		if _, err := Rebuild(ctx, fresh, inst, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
			t.Fatalf("rebuild %s after the erase: %v", inst, err)
		}
		if d, _ := digestOf(t, live, key); d.String() != before[inst] {
			t.Fatalf("%s rebuilds to another digest after the erase", inst)
		}
		if _, err := Verify(ctx, fresh, inst, pathOf(inst), key, testReplayOptions()); err != nil {
			t.Fatalf("verify %s after the erase: %v", inst, err)
		}
	}
}
