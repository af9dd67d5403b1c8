package engine

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
)

// migratingByReplay is what an open logs as it starts a migration by
// replay (migrateByReplay).
const migratingByReplay = "engine: the read model did not keep own outputs a migration in place would lose; migrating it by replay"

// migratingPool is a Pool of alice, whose read model must be migrated by
// replay as it opens (made at schema 8 with an own commit and an own
// message), and bob (latest schema), on a Log whose first migration by
// replay runs hook as it starts: an open slow in a real place, for as
// long as the test needs.
type migratingPool struct {
	b    *backend
	p    *Pool
	logs *telemetrytest.Logs
	gid  []byte
}

func newMigratingPool(t *testing.T, maxOpen int, hook func()) *migratingPool {
	t.Helper()
	b := newBackend(t)
	gid := aliceAtSchema8(t, b)
	if err := b.insts["bob"].Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "bob")
	notKeptAt(t, b.dbPath("alice"), b.keys["alice"], nil, 8)

	logs := &telemetrytest.Logs{}
	cfg := testConfig(b.srv)
	cfg.Logger = slog.New(logtest.OnMessage{Handler: logs.Logger().Handler(), Msg: migratingByReplay, Once: &sync.Once{}, Hook: hook})
	keys := func(_ context.Context, id events.InstallationID) (projections.Key, error) { return b.keys[id], nil }
	p := NewPool(openLog(t, cfg, b.ring), keys, &PoolOptions{MaxOpen: maxOpen, Wait: time.Minute, Installation: b.opts()})
	for _, id := range []events.InstallationID{"alice", "bob"} {
		if err := p.Register(id, b.dbPath(id)); err != nil {
			t.Fatal(err)
		}
	}
	t.Cleanup(func() {
		if err := p.Close(); err != nil {
			t.Errorf("close pool: %v", err)
		}
	})
	return &migratingPool{b: b, p: p, logs: logs, gid: gid}
}

// migrations counts the migrations by replay started so far.
func (m *migratingPool) migrations(t *testing.T) int {
	return len(m.logs.Find(t, "WARN", migratingByReplay))
}

// migrated fails unless in is alice migrated to the latest schema with
// her own outputs.
func (m *migratingPool) migrated(t *testing.T, in *Installation) {
	t.Helper()
	if v := in.DB().SchemaVersion(); v != projections.LatestSchema {
		t.Fatalf("alice opened at schema %d, want %d", v, projections.LatestSchema)
	}
	if cos, msgs := ownCommits(t, in, m.gid, 0), ownMessages(t, in, m.gid, 0, 0); len(cos) != 1 || len(msgs) != 1 {
		t.Fatalf("alice migrated: %d own commits and %d own messages, want 1 and 1", len(cos), len(msgs))
	}
}

// shortAcquire acquires id with a short deadline, noted in cur for the
// hook to wait for.
func shortAcquire(p *Pool, cur *atomic.Pointer[context.Context], id events.InstallationID) (*Installation, func(), error) {
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	cur.Store(&ctx)
	return p.Acquire(ctx, id)
}

// TestPoolOpenOutlivesShortDeadlines: an installation whose open takes
// longer than any acquire's deadline (its read model migrated by replay)
// still opens: the acquires fail with their deadline while the open goes
// on, and a later one gets the installation from that same open, the
// replay made once. Checked to fail before the open ran on the Pool's
// lifetime: each acquire's deadline stopped the replay, and the next
// acquire started it over (a second migration by replay), for good.
func TestPoolOpenOutlivesShortDeadlines(t *testing.T) {
	var cur atomic.Pointer[context.Context]
	// The replay starts once the acquire in flight has given up.
	m := newMigratingPool(t, 2, func() { <-(*cur.Load()).Done() })
	var in *Installation
	var release func()
	failed := 0
	for bound := time.Now().Add(3 * time.Minute); in == nil; {
		if time.Now().After(bound) {
			t.Fatalf("alice never acquired: %d acquires failed, %d migrations by replay started", failed, m.migrations(t))
		}
		var err error
		if in, release, err = shortAcquire(m.p, &cur, "alice"); err != nil {
			if !errors.Is(err, context.DeadlineExceeded) {
				t.Fatalf("acquire %d: %v, want context.DeadlineExceeded", failed+1, err)
			}
			failed++
		}
		if n := m.migrations(t); n > 1 {
			t.Fatalf("after %d acquires failed with their deadline, %d migrations by replay started, want 1: each acquire starts the open over", failed, n)
		}
	}
	defer release()
	if failed == 0 {
		t.Fatal("no acquire failed: the open was not longer than the deadline")
	}
	m.migrated(t, in)
	if n := m.migrations(t); n != 1 {
		t.Fatalf("%d migrations by replay, want 1", n)
	}
	if s := m.p.Stats(); s.Opens != 1 || s.OpenErrors != 0 || s.InUse != 1 {
		t.Fatalf("stats %+v: want one open, no failed open, alice in use", s)
	}
}

// TestPoolOpenNobodyWaitsForBecomesIdle: an open whose acquire gave up
// completes, and leaves the installation idle (open, unpinned), as a
// release does: within the cap (MaxOpen 1 here: evicted for the next
// installation), and opened again without a second replay.
func TestPoolOpenNobodyWaitsForBecomesIdle(t *testing.T) {
	var cur atomic.Pointer[context.Context]
	m := newMigratingPool(t, 1, func() { <-(*cur.Load()).Done() })
	_, _, err := shortAcquire(m.p, &cur, "alice")
	mustErrIs(t, err, context.DeadlineExceeded)
	waitIdleOpens(t, m.p, 1)
	ctx := context.Background()
	if err := m.p.With(ctx, "bob", func(in *Installation) error { return touch(ctx, in) }); err != nil {
		t.Fatalf("bob: %v", err)
	}
	if s := m.p.Stats(); s.Evictions != 1 || s.Open != 1 {
		t.Fatalf("stats %+v: want alice evicted for bob, one open", s)
	}
	err = m.p.With(ctx, "alice", func(in *Installation) error {
		m.migrated(t, in)
		return touch(ctx, in)
	})
	if err != nil {
		t.Fatalf("alice, reopened: %v", err)
	}
	if n := m.migrations(t); n != 1 {
		t.Fatalf("%d migrations by replay, want 1", n)
	}
}

// TestPoolCloseStopsAnOpenNobodyWaitsFor: Close stops an open that goes
// on after its acquire gave up, and waits for it: when Close returns no
// read model is open, the file is as it was (the replay was stopped
// before its swap), and another Pool opens it.
func TestPoolCloseStopsAnOpenNobodyWaitsFor(t *testing.T) {
	var cur atomic.Pointer[context.Context]
	closing := make(chan struct{})
	m := newMigratingPool(t, 2, func() {
		<-(*cur.Load()).Done()
		select { // the replay starts once the Pool is closing
		case <-closing:
		case <-time.After(2 * time.Minute):
		}
	})
	path := m.b.dbPath("alice")
	sum := fileSum(t, path)
	_, _, err := shortAcquire(m.p, &cur, "alice")
	mustErrIs(t, err, context.DeadlineExceeded)
	closed := closeMarked(t, m.p)
	close(closing)
	select {
	case err := <-closed:
		if err != nil {
			t.Fatalf("close: %v", err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("Close did not return")
	}
	if dbs, locks := openReadModels(t, m.b.dir); len(dbs)+len(locks) != 0 {
		t.Fatalf("after Close: still open %v %v", dbs, locks)
	}
	if fileSum(t, path) != sum {
		t.Fatal("the stopped migration changed the file")
	}
	if s := m.p.Stats(); s.Opens != 0 || s.OpenErrors != 1 {
		t.Fatalf("stats %+v: want the open stopped", s)
	}
	_, _, err = m.p.Acquire(context.Background(), "alice")
	mustErrIs(t, err, ErrPoolClosed)

	p := NewPool(m.b.log, func(context.Context, events.InstallationID) (projections.Key, error) { return m.b.keys["alice"], nil }, &PoolOptions{Installation: m.b.opts()})
	defer p.Close()
	if err := p.Register("alice", path); err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if err := p.With(ctx, "alice", func(in *Installation) error { m.migrated(t, in); return touch(ctx, in) }); err != nil {
		t.Fatalf("alice in another pool: %v", err)
	}
}

// TestPoolOpenNobodyWaitsForFailsLogged: an open that fails after every
// acquire waiting for it gave up has nobody to return its error to: it
// is logged at Warn, naming the installation, its read model and the
// error, and counted; the next acquire opens again and gets its own.
func TestPoolOpenNobodyWaitsForFailsLogged(t *testing.T) {
	var cur atomic.Pointer[context.Context]
	var m *migratingPool
	m = newMigratingPool(t, 2, func() {
		<-(*cur.Load()).Done()
		// Under the open: alice's file replaced by another's, which the
		// replay cannot read under alice's key.
		b, err := os.ReadFile(m.b.dbPath("bob"))
		if err == nil {
			err = os.WriteFile(m.b.dbPath("alice"), b, 0o600)
		}
		if err != nil {
			t.Error(err)
		}
	})
	_, _, err := shortAcquire(m.p, &cur, "alice")
	mustErrIs(t, err, context.DeadlineExceeded)
	for bound := time.Now().Add(3 * time.Minute); m.p.Stats().OpenErrors == 0; {
		if time.Now().After(bound) {
			t.Fatalf("stats %+v: the open never failed", m.p.Stats())
		}
		time.Sleep(10 * time.Millisecond)
	}
	const msg = "engine: pool: an open whose acquires gave up failed"
	recs := m.logs.Find(t, "WARN", msg)
	if len(recs) != 1 || recs[0].Str("installation") != "alice" || recs[0].Str("path") != m.b.dbPath("alice") || recs[0].Str("err") == "" {
		t.Fatalf("records of %q: %v, want one naming alice, her read model and the error", msg, recs)
	}
	if _, _, err := m.p.Acquire(context.Background(), "alice"); err == nil || !strings.Contains(err.Error(), "alice") {
		t.Fatalf("acquire after the failed open: %v, want its own error naming alice", err)
	}
}

// TestPoolAcquireManyOpensOutliveItsDeadline: an AcquireMany whose
// context ends while one of its opens runs returns the context's error
// holding none of the set (all or none), and its opens go on: both
// installations end idle, and the next AcquireMany of the set gets them
// without a second replay.
func TestPoolAcquireManyOpensOutliveItsDeadline(t *testing.T) {
	var cur atomic.Pointer[context.Context]
	m := newMigratingPool(t, 2, func() { <-(*cur.Load()).Done() })
	set := []events.InstallationID{"bob", "alice"}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	cur.Store(&ctx)
	_, _, err := m.p.AcquireMany(ctx, set)
	mustErrIs(t, err, context.DeadlineExceeded)
	waitIdleOpens(t, m.p, 2)
	ins, release, err := m.p.AcquireMany(context.Background(), set)
	if err != nil {
		t.Fatal(err)
	}
	defer release()
	if ins[0].ID() != "bob" || ins[1].ID() != "alice" {
		t.Fatalf("AcquireMany returned %s, %s", ins[0].ID(), ins[1].ID())
	}
	m.migrated(t, ins[1])
	if s := m.p.Stats(); s.Opens != 2 || s.InUse != 2 {
		t.Fatalf("stats %+v: want the two opens, both in use", s)
	}
	if n := m.migrations(t); n != 1 {
		t.Fatalf("%d migrations by replay, want 1", n)
	}
}

// TestPoolCloseStopsAnOpenAnAcquireWaitsFor: Close stops an open an
// acquire still waits for, rather than wait for it to finish, and that
// acquire fails with ErrPoolClosed, as any acquire after Close.
func TestPoolCloseStopsAnOpenAnAcquireWaitsFor(t *testing.T) {
	closing := make(chan struct{})
	m := newMigratingPool(t, 2, func() {
		select { // the replay starts once the Pool is closing
		case <-closing:
		case <-time.After(2 * time.Minute):
		}
	})
	acquired := make(chan error, 1)
	go func() {
		_, release, err := m.p.Acquire(context.Background(), "alice")
		if err == nil {
			release()
		}
		acquired <- err
	}()
	for bound := time.Now().Add(time.Minute); m.migrations(t) == 0; {
		if time.Now().After(bound) {
			t.Fatal("the open never started its migration by replay")
		}
		time.Sleep(time.Millisecond)
	}
	closed := closeMarked(t, m.p)
	close(closing)
	for name, ch := range map[string]<-chan error{"close": closed, "acquire": acquired} {
		select {
		case err := <-ch:
			if name == "close" && err != nil {
				t.Fatalf("close: %v", err)
			}
			if name == "acquire" {
				mustErrIs(t, err, ErrPoolClosed)
			}
		case <-time.After(3 * time.Minute):
			t.Fatalf("%s did not return", name)
		}
	}
	if dbs, locks := openReadModels(t, m.b.dir); len(dbs)+len(locks) != 0 {
		t.Fatalf("after Close: still open %v %v", dbs, locks)
	}
}

// waitIdleOpens waits (generously) until p has completed n opens that no
// acquire waits for any more, and checks none failed and all n are open
// and idle.
func waitIdleOpens(t *testing.T, p *Pool, n int) {
	t.Helper()
	for bound := time.Now().Add(3 * time.Minute); ; {
		s := p.Stats()
		if s.OpenErrors != 0 {
			t.Fatalf("stats %+v: an open failed with its acquire's deadline", s)
		}
		if s.Opens == int64(n) {
			if s.Open != n || s.InUse != 0 {
				t.Fatalf("stats %+v: want %d open and idle", s, n)
			}
			return
		}
		if time.Now().After(bound) {
			t.Fatalf("stats %+v: the opens nobody waits for never completed", s)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// closeMarked closes p in another goroutine and returns once Close has
// marked it closed (its opens are then told to stop); Close's error
// comes on the channel.
func closeMarked(t *testing.T, p *Pool) <-chan error {
	t.Helper()
	closed := make(chan error, 1)
	go func() { closed <- p.Close() }()
	for bound := time.Now().Add(time.Minute); ; {
		p.mu.Lock()
		c := p.closed
		p.mu.Unlock()
		if c {
			return closed
		}
		if time.Now().After(bound) {
			t.Fatal("Close never marked the pool closed")
		}
		time.Sleep(time.Millisecond)
	}
}
