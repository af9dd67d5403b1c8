package replay

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
)

// A fence (a share group's lease check, package lease) that refuses a
// batch stops Project before the batch is applied: the error wraps the
// fence's, the read model holds exactly the batches the fence let
// through, and nothing counts as an apply error. A second Project resumes
// from that checkpoint to the end.
func TestProjectFenceStopsBeforeTheBatch(t *testing.T) {
	m := telemetry.NewMetrics()
	cfg := testConfig(natstest.Start(t, natstest.Options{}))
	cfg.Metrics = m
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	writeHistory(t, l, instA, 2, 200)
	ctx := context.Background()
	key := rawDBKey(t, 0x5e)
	path := filepath.Join(t.TempDir(), "a.db")
	db, err := projections.Open(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()

	errRevoked := errors.New("lease revoked")
	var asked, committed int
	var lastCP uint64
	fence := func(inst events.InstallationID) error {
		if inst != instA {
			t.Errorf("fence asked about %s", inst)
		}
		asked++
		if asked > 3 {
			return errRevoked
		}
		return nil
	}
	err = Project(ctx, l, []Projection{{Installation: instA, DB: db}}, &ProjectOptions{BatchSize: 16, Fence: fence,
		OnApply: func(_ events.InstallationID, _ int, cp uint64) { committed++; lastCP = cp }})
	if !errors.Is(err, errRevoked) || !strings.Contains(err.Error(), "not applying events from seq") {
		t.Fatalf("Project ended with %v, want the fence's error", err)
	}
	if committed != 3 || asked != 4 {
		t.Fatalf("%d batches committed, fence asked %d times; want 3 and 4", committed, asked)
	}
	if cp, err := db.Checkpoint(ctx); err != nil || cp != lastCP {
		t.Fatalf("checkpoint %d (%v), want the last committed batch's %d", cp, err, lastCP)
	}
	if v := telemetrytest.Value(t, m, "epochlog_apply_errors_total", "kind", "unknown"); v != 0 {
		t.Errorf("%v apply errors for a fenced stop", v)
	}

	// Resume: no fence, up to the end.
	last := lastSeq(t, l, instA)
	projectUntil(t, l, instA, db, last)
	fresh := filepath.Join(t.TempDir(), "fresh.db")
	if _, err := Rebuild(ctx, l, instA, fresh, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	want, _ := digestOf(t, fresh, key)
	got, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if diff := projections.Compare(want, got); diff != nil {
		t.Fatalf("fenced then resumed read model differs from a rebuild: %v", diff)
	}
}

// The fence is asked right before each batch commits, once the batch's
// writes are done, not before they start: a lease that ends while a
// large batch is being written (2048 events, seconds on a loaded host,
// against a margin of TTL/4) stops the commit. Until 2026-12-06 it was
// asked before the batch's transaction began. Another connection probes
// the read model at each ask: the batch's write transaction must be open.
func TestProjectFenceAskedRightBeforeTheCommit(t *testing.T) {
	cfg := testConfig(natstest.Start(t, natstest.Options{}))
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	writeHistory(t, l, instA, 2, 60)
	ctx := context.Background()
	key := rawDBKey(t, 0x5e)
	path := filepath.Join(t.TempDir(), "a.db")
	db, err := projections.Open(path, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	probe, err := sql.Open("sqlite3", "file:"+path+"?_pragma_key=x'"+strings.Repeat("5e", projections.KeySize)+"'&_pragma_cipher_page_size=4096&_busy_timeout=0")
	if err != nil {
		t.Fatal(err)
	}
	defer probe.Close()
	probe.SetMaxOpenConns(1)

	errStop := errors.New("enough")
	var asked, midBatch int
	fence := func(events.InstallationID) error {
		asked++
		if _, err := probe.Exec(`BEGIN IMMEDIATE`); err != nil {
			midBatch++ // the applier holds the write lock: its batch is written
		} else if _, err := probe.Exec(`ROLLBACK`); err != nil {
			t.Errorf("rollback: %v", err)
		}
		if asked == 3 {
			return errStop
		}
		return nil
	}
	err = Project(ctx, l, []Projection{{Installation: instA, DB: db}}, &ProjectOptions{BatchSize: 8, Fence: fence})
	if !errors.Is(err, errStop) {
		t.Fatalf("Project ended with %v, want the fence's error", err)
	}
	if midBatch != asked {
		t.Fatalf("the fence was asked %d times, %d of them with the batch written and not committed; want all", asked, midBatch)
	}
}

// RebuildOptions.Fence is asked right before the swap and before each
// commit of the catch-up after it, as a lease holder's check (package
// lease) is. Refused at the swap, no read model appears at live and the
// rebuilt file is removed; let through at the swap and refused after it
// (events appended meanwhile), the catch-up stops before committing them
// and the error says the file was swapped in.
func TestRebuildFenceStopsTheSwap(t *testing.T) {
	cfg := testConfig(natstest.Start(t, natstest.Options{}))
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	h := writeHistory(t, l, instA, 2, 40)
	ctx := context.Background()
	key := rawDBKey(t, 0x5e)
	live := filepath.Join(t.TempDir(), "a.db")
	errRevoked := errors.New("lease revoked")

	refuse := func(events.InstallationID) error { return errRevoked }
	_, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions(), Fence: refuse})
	if !errors.Is(err, errRevoked) || !strings.Contains(err.Error(), "not swapping the rebuilt database") {
		t.Fatalf("Rebuild refused by its fence: %v, want the fence's error, not swapped", err)
	}
	if _, err := os.Stat(live); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a read model at %s after a refused swap (%v)", live, err)
	}
	if left, _ := filepath.Glob(live + ".rebuild-*"); len(left) != 0 {
		t.Fatalf("the rebuilt file left behind: %v", left)
	}

	swapCP := lastSeq(t, l, instA)
	asked := 0
	fence := func(events.InstallationID) error {
		asked++
		if asked > 1 {
			return errRevoked
		}
		// Right before the swap: these are for the catch-up after it.
		h.messages(10, 2)
		if _, err := h.flush(ctx, l); err != nil {
			t.Errorf("append: %v", err)
		}
		return nil
	}
	_, err = Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions(), Fence: fence})
	var swapped *SwappedError
	if !errors.As(err, &swapped) || !errors.Is(err, errRevoked) {
		t.Fatalf("Rebuild refused after its swap: %v, want a *SwappedError wrapping the fence's error", err)
	}
	if _, cp := digestOf(t, live, key); cp != swapCP || lastSeq(t, l, instA) <= swapCP || asked != 2 {
		t.Fatalf("checkpoint %d after the swap at %d (stream at %d), fence asked %d times; want the swap's, and 2", cp, swapCP, lastSeq(t, l, instA), asked)
	}
}
