package engine

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/fdlimit"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
)

// poolFixture is a Log on an in-process server with installations
// created and closed, their read models in dir, ready to register.
type poolFixture struct {
	t    *testing.T
	srv  *natstest.Server
	log  *eventlog.Log
	dir  string
	mu   sync.Mutex
	keys map[events.InstallationID]projections.Key
	// keyErr, when set, is what the key function returns for an id.
	keyErr map[events.InstallationID]error
	// wrongKey, when set for an id, makes the key function return
	// another key than the read model's.
	wrongKey map[events.InstallationID]bool
	ids      []events.InstallationID
}

func newPoolFixture(t *testing.T, n int) *poolFixture {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	f := &poolFixture{t: t, srv: srv, log: openLog(t, testConfig(srv), keyring(t, 1, 0x42)), dir: t.TempDir(),
		keys: map[events.InstallationID]projections.Key{}, keyErr: map[events.InstallationID]error{}, wrongKey: map[events.InstallationID]bool{}}
	for i := range n {
		id := events.InstallationID(fmt.Sprintf("p%d", i))
		in := f.create(id)
		if err := in.Close(); err != nil {
			t.Fatal(err)
		}
		f.ids = append(f.ids, id)
	}
	return f
}

func (f *poolFixture) path(id events.InstallationID) string {
	return filepath.Join(f.dir, string(id)+".db")
}

// create creates installation id (open) and keeps its key.
func (f *poolFixture) create(id events.InstallationID) *Installation {
	f.t.Helper()
	k, err := f.key(context.Background(), id) // the key it was looked up with, if it was
	if err != nil {
		f.t.Fatal(err)
	}
	in, err := CreateInstallation(context.Background(), f.log, id, f.path(id), k, nil)
	if err != nil {
		f.t.Fatalf("create %s: %v", id, err)
	}
	f.mu.Lock()
	f.keys[id] = k
	f.mu.Unlock()
	return in
}

func (f *poolFixture) key(_ context.Context, id events.InstallationID) (projections.Key, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if err := f.keyErr[id]; err != nil {
		return projections.Key{}, err
	}
	if f.wrongKey[id] {
		return projections.GenerateRawKey()
	}
	k, ok := f.keys[id]
	if !ok {
		// An installation not created yet: a key it will be created with.
		var err error
		if k, err = projections.GenerateRawKey(); err != nil {
			return k, err
		}
		f.keys[id] = k
	}
	return k, nil
}

// pool returns a Pool of every installation of f, closed when the test
// ends.
func (f *poolFixture) pool(maxOpen int, wait time.Duration) *Pool {
	f.t.Helper()
	p := NewPool(f.log, f.key, &PoolOptions{MaxOpen: maxOpen, Wait: wait})
	for _, id := range f.ids {
		if err := p.Register(id, f.path(id)); err != nil {
			f.t.Fatal(err)
		}
	}
	f.t.Cleanup(func() {
		if err := p.Close(); err != nil {
			f.t.Errorf("close pool: %v", err)
		}
	})
	return p
}

// openFiles counts, per file name under dir, the descriptors this
// process has open on it (Linux: /proc/self/fd).
func openFiles(t testing.TB, dir string) map[string]int {
	t.Helper()
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skipf("no /proc/self/fd: %v", err)
	}
	out := map[string]int{}
	for _, fd := range fds {
		target, err := os.Readlink(filepath.Join("/proc/self/fd", fd.Name()))
		if err != nil {
			continue // closed meanwhile
		}
		if rel, err := filepath.Rel(dir, target); err == nil && !strings.HasPrefix(rel, "..") {
			out[rel]++
		}
	}
	return out
}

// openReadModels lists the read models (".db" files) under dir that this
// process has open, and their writer locks.
func openReadModels(t testing.TB, dir string) (dbs, locks []string) {
	t.Helper()
	for name := range openFiles(t, dir) {
		switch {
		case strings.HasSuffix(name, ".db"):
			dbs = append(dbs, name)
		case strings.HasSuffix(name, ".db.lock"):
			locks = append(locks, name)
		}
	}
	return dbs, locks
}

// touch uses an acquired installation's read model and log: it fails
// if the installation was closed under its holder.
func touch(ctx context.Context, in *Installation) error {
	if err := in.CatchUp(ctx); err != nil {
		return err
	}
	ident, found, err := in.DB().Installation(ctx)
	if err != nil {
		return err
	}
	if !found || ident.ID != in.ID() {
		return fmt.Errorf("read model of %s holds installation %q", in.ID(), ident.ID)
	}
	return nil
}

func TestPoolCap(t *testing.T) {
	f := newPoolFixture(t, 8)
	const maxOpen = 3
	p := f.pool(maxOpen, time.Minute)
	ctx := context.Background()
	if dbs, _ := openReadModels(t, f.dir); len(dbs) != 0 {
		t.Fatalf("read models open before any acquire: %v", dbs)
	}
	for round := range 2 {
		for _, id := range f.ids {
			if err := p.With(ctx, id, func(in *Installation) error { return touch(ctx, in) }); err != nil {
				t.Fatalf("round %d: %s: %v", round, id, err)
			}
			dbs, locks := openReadModels(t, f.dir)
			if len(dbs) > maxOpen || len(locks) > maxOpen {
				t.Fatalf("after %s: %d read models and %d locks open, cap %d: %v %v", id, len(dbs), len(locks), maxOpen, dbs, locks)
			}
			if s := p.Stats(); s.Open > maxOpen {
				t.Fatalf("after %s: Stats.Open %d > cap %d", id, s.Open, maxOpen)
			}
		}
	}
	// Idle installations stay open up to the cap: the last three used.
	dbs, _ := openReadModels(t, f.dir)
	if len(dbs) != maxOpen {
		t.Fatalf("idle read models open: %v, want the %d most recent", dbs, maxOpen)
	}
	for _, id := range f.ids[len(f.ids)-maxOpen:] {
		if !containsString(dbs, string(id)+".db") {
			t.Errorf("%s (recently used) is not open: %v", id, dbs)
		}
	}
	s := p.Stats()
	if s.Registered != len(f.ids) || s.Opens != int64(2*len(f.ids)) || s.Evictions != int64(2*len(f.ids)-maxOpen) {
		t.Errorf("stats %+v: want %d registered, %d opens, %d evictions", s, len(f.ids), 2*len(f.ids), 2*len(f.ids)-maxOpen)
	}
	// A recently used installation is served without an open.
	if err := p.With(ctx, f.ids[len(f.ids)-1], func(in *Installation) error { return touch(ctx, in) }); err != nil {
		t.Fatal(err)
	}
	if got := p.Stats().Opens; got != s.Opens {
		t.Errorf("acquiring an open installation opened it again (%d opens, want %d)", got, s.Opens)
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	if dbs, locks := openReadModels(t, f.dir); len(dbs)+len(locks) != 0 {
		t.Fatalf("after Close: still open %v %v", dbs, locks)
	}
}

func containsString(ss []string, s string) bool {
	for _, x := range ss {
		if x == s {
			return true
		}
	}
	return false
}

// waitForWaits waits (generously) until an acquire of p waits for a slot
// after before waits: the state a test of what happens while one waits
// must reach before it checks anything.
func waitForWaits(t *testing.T, p *Pool, before int64) {
	t.Helper()
	for bound := time.Now().Add(3 * time.Minute); p.Stats().Waits <= before; {
		if time.Now().After(bound) {
			t.Fatalf("stats %+v: no acquire waited for a slot", p.Stats())
		}
		time.Sleep(time.Millisecond)
	}
}

func TestPoolFullWaitsAndNeverClosesInUse(t *testing.T) {
	f := newPoolFixture(t, 4)
	p := f.pool(2, 300*time.Millisecond)
	ctx := context.Background()
	a, relA, err := p.Acquire(ctx, f.ids[0])
	if err != nil {
		t.Fatal(err)
	}
	b, relB, err := p.Acquire(ctx, f.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	// Both slots in use: a third waits Wait, then fails; nothing held is
	// closed for it.
	_, _, err = p.Acquire(ctx, f.ids[2])
	mustErrIs(t, err, ErrPoolFull)
	if !strings.Contains(err.Error(), string(f.ids[2])) {
		t.Errorf("error does not name the installation: %v", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	_, _, err = p.Acquire(cctx, f.ids[2])
	mustErrIs(t, err, context.Canceled)
	for _, in := range []*Installation{a, b} {
		if err := touch(ctx, in); err != nil {
			t.Fatalf("%s, in use, no longer works: %v", in.ID(), err)
		}
	}
	// A waiting acquire gets the slot the next release frees.
	waits := p.Stats().Waits
	got := make(chan error, 1)
	go func() {
		// The pool's Wait is short: try again until the release below,
		// bounded.
		deadline := time.Now().Add(2 * time.Minute)
		for {
			in, rel, err := p.Acquire(ctx, f.ids[3])
			if errors.Is(err, ErrPoolFull) && time.Now().Before(deadline) {
				continue
			}
			if err == nil {
				err = touch(ctx, in)
				rel()
			}
			got <- err
			return
		}
	}()
	waitForWaits(t, p, waits)
	if err := touch(ctx, a); err != nil {
		t.Fatalf("%s, in use while another waits, no longer works: %v", a.ID(), err)
	}
	relA()
	relA() // a second release does nothing
	select {
	case err := <-got:
		if err != nil {
			t.Fatalf("acquire after a release: %v", err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("acquire did not get the slot a release freed")
	}
	if err := touch(ctx, b); err != nil {
		t.Fatalf("%s, still in use, no longer works: %v", b.ID(), err)
	}
	relB()
	if dbs, _ := openReadModels(t, f.dir); len(dbs) > 2 {
		t.Fatalf("read models open: %v, cap 2", dbs)
	}
}

func TestPoolEvictionUnderLoad(t *testing.T) {
	f := newPoolFixture(t, 6)
	const maxOpen = 2
	p := f.pool(maxOpen, 2*time.Minute)
	ctx := context.Background()
	var wg sync.WaitGroup
	var failures atomic.Int64
	var maxSeen atomic.Int64
	errs := make(chan error, 1)
	for g := range 5 {
		wg.Go(func() {
			r := rand.New(rand.NewPCG(uint64(g), 7))
			for range 12 {
				id := f.ids[r.IntN(len(f.ids))]
				err := p.With(ctx, id, func(in *Installation) error {
					if err := touch(ctx, in); err != nil {
						return err
					}
					time.Sleep(time.Millisecond) // hold it while others evict
					if n := int64(p.Stats().Open); n > maxSeen.Load() {
						maxSeen.Store(n)
					}
					return touch(ctx, in)
				})
				if err != nil {
					failures.Add(1)
					select {
					case errs <- fmt.Errorf("%s: %w", id, err):
					default:
					}
				}
			}
		})
	}
	wg.Wait()
	if failures.Load() > 0 {
		t.Fatalf("%d operations failed, the first: %v", failures.Load(), <-errs)
	}
	if maxSeen.Load() > maxOpen {
		t.Fatalf("%d installations open at once, cap %d", maxSeen.Load(), maxOpen)
	}
	if dbs, _ := openReadModels(t, f.dir); len(dbs) > maxOpen {
		t.Fatalf("read models open: %v, cap %d", dbs, maxOpen)
	}
}

func TestPoolConcurrentAcquireOpensOnce(t *testing.T) {
	f := newPoolFixture(t, 1)
	p := f.pool(4, time.Minute)
	ctx := context.Background()
	const n = 16
	start := make(chan struct{})
	got := make([]*Installation, n)
	errs := make([]error, n)
	rels := make([]func(), n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			<-start
			got[i], rels[i], errs[i] = p.Acquire(ctx, f.ids[0])
		})
	}
	close(start)
	wg.Wait()
	for i := range n {
		if errs[i] != nil {
			t.Fatalf("acquire %d: %v", i, errs[i])
		}
		if got[i] != got[0] {
			t.Fatalf("acquire %d got another Installation than acquire 0", i)
		}
	}
	if s := p.Stats(); s.Opens != 1 || s.InUse != 1 {
		t.Fatalf("stats %+v: want 1 open, 1 in use", s)
	}
	for _, rel := range rels {
		rel()
	}
	if s := p.Stats(); s.InUse != 0 || s.Open != 1 {
		t.Fatalf("stats after release %+v: want 1 open, idle", s)
	}
	if err := touch(ctx, got[0]); err != nil {
		t.Fatal(err)
	}
}

func TestPoolReopenAfterEviction(t *testing.T) {
	f := newPoolFixture(t, 0)
	ctx := context.Background()
	del := NewDeliveries(f.log, nil)
	alice, bob := f.create("alice"), f.create("bob")
	kp, err := bob.PublishKeyPackage(ctx, "directory", true)
	if err != nil {
		t.Fatal(err)
	}
	g, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	co, err := alice.AddMembers(ctx, g.GroupID, kp.KeyPackage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := del.FanOut(ctx, co.Added, mlsChannel, co.Welcome, time.Time{}, "welcome"); err != nil {
		t.Fatal(err)
	}
	for _, in := range []*Installation{alice, bob} {
		if err := in.Close(); err != nil {
			t.Fatal(err)
		}
	}
	f.ids = []events.InstallationID{"alice", "bob"}
	p := f.pool(1, time.Minute) // one open at a time: each acquire evicts the other
	receive := func() []string {
		t.Helper()
		var texts []string
		err := p.With(ctx, "bob", func(in *Installation) error {
			ds, err := del.Fetch(ctx, "bob", mlsChannel, 0)
			if err != nil {
				return err
			}
			for _, d := range ds {
				r, err := in.Receive(ctx, d.Payload)
				if err != nil {
					return fmt.Errorf("receive %d: %w", d.Seq, err)
				}
				if r.Kind == "application" {
					texts = append(texts, string(r.Content.Bytes()))
				}
				if err := del.Acknowledge(ctx, "bob", mlsChannel, d.Seq); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatalf("bob: %v", err)
		}
		return texts
	}
	send := func(text string) {
		t.Helper()
		err := p.With(ctx, "alice", func(in *Installation) error {
			out, err := in.Send(ctx, g.GroupID, []byte(text), nil)
			if err != nil {
				return err
			}
			_, err = del.FanOut(ctx, out.Recipients, mlsChannel, out.Message, time.Time{}, fmt.Sprintf("msg-%x", out.MessageID))
			return err
		})
		if err != nil {
			t.Fatalf("alice: %v", err)
		}
	}
	receive() // the Welcome
	send("one")
	if got := receive(); len(got) != 1 || got[0] != "one" {
		t.Fatalf("bob received %q, want [one]", got)
	}
	send("two")
	if got := receive(); len(got) != 1 || got[0] != "two" {
		t.Fatalf("bob received %q, want [two]", got)
	}
	err = p.With(ctx, "bob", func(in *Installation) error {
		page, err := in.DB().Messages(ctx, g.GroupID, projections.Page{})
		if err != nil {
			return err
		}
		var texts []string
		for _, m := range page.Messages {
			texts = append(texts, string(m.Content.Bytes()))
		}
		if strings.Join(texts, ",") != "two,one" {
			return fmt.Errorf("read model holds messages %q, want two, one", texts)
		}
		if ep, err := in.Epoch(ctx, g.GroupID); err != nil || ep != co.Epoch {
			return fmt.Errorf("epoch %d (%v), want %d", ep, err, co.Epoch)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if s := p.Stats(); s.Evictions != 4 || s.Open != 1 {
		t.Fatalf("stats %+v: want every acquire to evict the other, one open", s)
	}
}

func TestPoolOpenFailure(t *testing.T) {
	f := newPoolFixture(t, 3)
	p := f.pool(1, 200*time.Millisecond)
	ctx := context.Background()

	// A wrong key: a clear error naming the installation and its file;
	// the slot is free again, and the right key opens it.
	f.wrongKey["p0"] = true
	_, _, err := p.Acquire(ctx, "p0")
	mustErrIs(t, err, projections.ErrWrongKey)
	for _, want := range []string{"p0", f.path("p0")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	if err := p.With(ctx, "p1", func(in *Installation) error { return touch(ctx, in) }); err != nil {
		t.Fatalf("after a failed open, another installation: %v", err)
	}
	f.mu.Lock()
	delete(f.wrongKey, "p0")
	f.mu.Unlock()
	if err := p.With(ctx, "p0", func(in *Installation) error { return touch(ctx, in) }); err != nil {
		t.Fatalf("after the key is right: %v", err)
	}

	// The key function's error, wrapped.
	errVault := errors.New("vault unreachable")
	f.keyErr["p2"] = errVault
	_, _, err = p.Acquire(ctx, "p2")
	mustErrIs(t, err, errVault)
	if !strings.Contains(err.Error(), "p2") {
		t.Errorf("error %q does not name the installation", err)
	}
	f.mu.Lock()
	delete(f.keyErr, "p2")
	f.mu.Unlock()

	// No read model and no installation on the log.
	if err := p.Register("ghost", f.path("ghost")); err != nil {
		t.Fatal(err)
	}
	_, _, err = p.Acquire(ctx, "ghost")
	mustErrIs(t, err, ErrNoInstallation)
	for _, want := range []string{"ghost", f.path("ghost")} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not name %s", err, want)
		}
	}
	// Once created (with the key it will be opened with: the failed open
	// left an empty read model under it), it opens.
	ghost := f.create("ghost")
	if err := ghost.Close(); err != nil {
		t.Fatal(err)
	}
	if err := p.With(ctx, "ghost", func(in *Installation) error { return touch(ctx, in) }); err != nil {
		t.Fatalf("ghost, created: %v", err)
	}

	// A read model deleted: rebuilt from the log on acquire.
	for _, suffix := range []string{"", "-wal", "-shm"} {
		if err := os.Remove(f.path("p2") + suffix); err != nil && !errors.Is(err, os.ErrNotExist) {
			t.Fatal(err)
		}
	}
	err = p.With(ctx, "p2", func(in *Installation) error {
		cp, err := in.DB().Checkpoint(ctx)
		if err != nil {
			return err
		}
		if want := logtest.LastSeq(t, f.log, "p2"); cp != want || want == 0 {
			return fmt.Errorf("rebuilt read model at %d, log at %d", cp, want)
		}
		return touch(ctx, in)
	})
	if err != nil {
		t.Fatalf("p2, read model deleted: %v", err)
	}

	// Not registered; a path changed.
	_, _, err = p.Acquire(ctx, "nobody")
	mustErrIs(t, err, ErrNotRegistered)
	if err := p.Register("p0", f.path("p0")); err != nil {
		t.Errorf("registering again with the same path: %v", err)
	}
	if err := p.Register("p0", f.path("p1")); err == nil {
		t.Error("registering again with another path: no error")
	}
	if s := p.Stats(); s.OpenErrors != 3 || s.Open > 1 {
		t.Errorf("stats %+v: want 3 open errors, at most 1 open", s)
	}
}

func TestPoolAcquireManyWithHost(t *testing.T) {
	f := newPoolFixture(t, 4)
	p := f.pool(3, 2*time.Minute)
	ctx := context.Background()
	h := NewHost(f.log, NewDeliveries(f.log, nil), nil)
	groups := map[events.InstallationID][]byte{}
	for _, id := range f.ids {
		err := p.With(ctx, id, func(in *Installation) error {
			g, err := in.CreateGroup(ctx, nil)
			groups[id] = g.GroupID
			return err
		})
		if err != nil {
			t.Fatal(err)
		}
	}
	// More distinct installations than the cap, at once: refused at once.
	start := time.Now()
	_, _, err := p.AcquireMany(ctx, f.ids)
	mustErrIs(t, err, ErrPoolFull)
	if time.Since(start) > time.Minute {
		t.Errorf("refusing more than MaxOpen waited %v", time.Since(start))
	}
	// A batch (with a repeated id) for one Host call.
	batch := []events.InstallationID{f.ids[0], f.ids[1], f.ids[0], f.ids[2]}
	ins, release, err := p.AcquireMany(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if ins[0] != ins[2] || ins[0].ID() != f.ids[0] || ins[3].ID() != f.ids[2] {
		t.Fatalf("AcquireMany returned installations out of order")
	}
	var reqs []SendRequest
	for i, in := range ins {
		reqs = append(reqs, SendRequest{Installation: in, GroupID: groups[in.ID()], Content: fmt.Appendf(nil, "m%d", i)})
	}
	for i, r := range h.Send(ctx, reqs) {
		if r.Err != nil || r.Output.ProjectionErr != nil {
			t.Fatalf("send %d: %v %v", i, r.Err, r.Output)
		}
	}
	// All three slots held: a batch needing another waits, holding none of
	// its installations, until the release.
	waits := p.Stats().Waits
	got := make(chan error, 1)
	go func() {
		ins, rel, err := p.AcquireMany(ctx, []events.InstallationID{f.ids[3], f.ids[0]})
		if err == nil {
			err = errors.Join(touch(ctx, ins[0]), touch(ctx, ins[1]))
			rel()
		}
		got <- err
	}()
	waitForWaits(t, p, waits)
	for _, in := range ins {
		if err := touch(ctx, in); err != nil {
			t.Fatalf("%s, held, no longer works: %v", in.ID(), err)
		}
	}
	release()
	select {
	case err := <-got:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(3 * time.Minute):
		t.Fatal("AcquireMany did not proceed after the release")
	}
	// The messages are in each sender's read model, through evictions.
	for _, id := range f.ids[:3] {
		err := p.With(ctx, id, func(in *Installation) error {
			page, err := in.DB().Messages(ctx, groups[id], projections.Page{})
			if err != nil {
				return err
			}
			want := map[events.InstallationID]int{f.ids[0]: 2, f.ids[1]: 1, f.ids[2]: 1}[id]
			if len(page.Messages) != want {
				return fmt.Errorf("%d messages, want %d", len(page.Messages), want)
			}
			return nil
		})
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
}

func TestPoolClose(t *testing.T) {
	f := newPoolFixture(t, 3)
	p := f.pool(3, time.Minute)
	ctx := context.Background()
	held, release, err := p.Acquire(ctx, f.ids[0])
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range f.ids[1:] {
		if err := p.With(ctx, id, func(in *Installation) error { return touch(ctx, in) }); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	// The idle ones are closed; the held one works until released.
	dbs, _ := openReadModels(t, f.dir)
	if len(dbs) != 1 || dbs[0] != string(f.ids[0])+".db" {
		t.Fatalf("after Close, open: %v, want only the held %s", dbs, f.ids[0])
	}
	if err := touch(ctx, held); err != nil {
		t.Fatalf("held installation after Close: %v", err)
	}
	release()
	if dbs, locks := openReadModels(t, f.dir); len(dbs)+len(locks) != 0 {
		t.Fatalf("after the last release: still open %v %v", dbs, locks)
	}
	_, _, err = p.Acquire(ctx, f.ids[1])
	mustErrIs(t, err, ErrPoolClosed)
	mustErrIs(t, p.Register("late", f.path("late")), ErrPoolClosed)
	// Another process of these installations (here: a fresh Pool) can
	// take their writer locks.
	p2 := f.pool(3, time.Minute)
	if err := p2.With(ctx, f.ids[0], func(in *Installation) error { return touch(ctx, in) }); err != nil {
		t.Fatal(err)
	}
}

// TestPoolEvictionCloseFailure: an eviction whose close fails is logged
// at warn level with the error under err, the attribute every record of
// the library uses (docs/observability.md; until 2026-12-06 this one
// said error), and Pool.Close returns it, naming the installation.
func TestPoolEvictionCloseFailure(t *testing.T) {
	f := newPoolFixture(t, 2)
	logs := &telemetrytest.Logs{}
	cfg := testConfig(f.srv)
	cfg.Logger = logs.Logger()
	p := NewPool(openLog(t, cfg, keyring(t, 1, 0x42)), f.key, &PoolOptions{MaxOpen: 1, Wait: time.Minute})
	for _, id := range f.ids {
		if err := p.Register(id, f.path(id)); err != nil {
			t.Fatal(err)
		}
	}
	ctx := context.Background()
	if err := p.With(ctx, f.ids[0], func(in *Installation) error { return touch(ctx, in) }); err != nil {
		t.Fatal(err)
	}
	// The close of a read model ends by setting its files' modes; a
	// symbolic link that loops where its rollback journal would be
	// makes that fail (ELOOP), whoever runs the test.
	journal := f.path(f.ids[0]) + "-journal"
	if err := os.Symlink(filepath.Base(journal), journal); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(journal)
	if err := p.With(ctx, f.ids[1], func(in *Installation) error { return touch(ctx, in) }); err != nil {
		t.Fatalf("an acquire is not failed by another installation's eviction: %v", err)
	}
	var found bool
	for _, r := range logs.Records(t) {
		if r.Msg() != "engine: pool: closing an evicted installation failed" {
			continue
		}
		found = true
		if r.Level() != "WARN" || r.Str("installation") != string(f.ids[0]) || !strings.Contains(r.Str("err"), "-journal") {
			t.Errorf("eviction failure logged as %v; want WARN, installation %s, err naming the journal", r, f.ids[0])
		}
	}
	if !found {
		t.Fatalf("no record of the failed close; logs:\n%s", logs.String())
	}
	err := p.Close()
	if err == nil || !strings.Contains(err.Error(), "close installation "+string(f.ids[0])) {
		t.Fatalf("Pool.Close: %v; want the eviction's failure, naming %s", err, f.ids[0])
	}
}

// TestPoolKeepsAFewEvictionErrors: a Pool whose evictions keep failing (a
// disk gone bad under a service running for months) keeps the first
// maxCloseErrs errors for Close and counts the rest, rather than one
// error per eviction until Close.
func TestPoolKeepsAFewEvictionErrors(t *testing.T) {
	const n = maxCloseErrs + 4
	f := newPoolFixture(t, n)
	p := f.pool(1, time.Minute)
	ctx := context.Background()
	for _, id := range f.ids {
		if err := p.With(ctx, id, func(in *Installation) error { return touch(ctx, in) }); err != nil {
			t.Fatal(err)
		}
		// As in TestPoolEvictionCloseFailure: its close, by the next
		// acquire's eviction or by Close, fails.
		journal := f.path(id) + "-journal"
		if err := os.Symlink(filepath.Base(journal), journal); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { os.Remove(journal) })
	}
	if got := p.Stats().EvictionErrors; got != n-1 {
		t.Fatalf("EvictionErrors %d after %d failed evictions", got, n-1)
	}
	err := p.Close()
	if got := p.Stats().EvictionErrors; got != n {
		t.Fatalf("EvictionErrors %d after Close's failed close too; want %d", got, n)
	}
	if err == nil {
		t.Fatal("Pool.Close: nil; want the failed closes")
	}
	msg := err.Error()
	if got := strings.Count(msg, "engine: pool: close installation "); got != maxCloseErrs {
		t.Errorf("Pool.Close reports %d closes; want the first %d:\n%s", got, maxCloseErrs, msg)
	}
	if !strings.Contains(msg, fmt.Sprintf("%d more closes of evicted installations failed", n-maxCloseErrs)) {
		t.Errorf("Pool.Close does not count the closes it leaves out:\n%s", msg)
	}
}

// A long-running Pool drops the installations it no longer serves: each
// registered, used and unregistered leaves nothing behind (no entry, no
// open file), so a service whose installations come and go does not
// grow. One in use is refused and stays usable; once released it is
// closed and removed; registered again, it opens again. Until 2026-12-06
// a Pool had no way to forget an installation.
func TestPoolUnregister(t *testing.T) {
	f := newPoolFixture(t, 3)
	ctx := context.Background()
	p := f.pool(2, time.Minute)
	base := p.Stats().Registered
	const churn = 20
	for i := range churn {
		id := events.InstallationID(fmt.Sprintf("churn-%d", i))
		f.create(id).Close()
		if err := p.Register(id, f.path(id)); err != nil {
			t.Fatal(err)
		}
		if err := p.With(ctx, id, func(in *Installation) error { return touch(ctx, in) }); err != nil {
			t.Fatal(err)
		}
		if err := p.Unregister(id); err != nil {
			t.Fatalf("unregister %s, idle: %v", id, err)
		}
	}
	if got := p.Stats().Registered; got != base {
		t.Fatalf("after %d installations registered, used and unregistered, %d are registered, want %d", churn, got, base)
	}
	if dbs, locks := openReadModels(t, f.dir); len(dbs)+len(locks) != 0 {
		t.Fatalf("unregistered installations still open: %v %v", dbs, locks)
	}

	in, release, err := p.Acquire(ctx, "p0")
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Unregister("p0"); !errors.Is(err, ErrPoolInUse) {
		t.Fatalf("unregister of an installation in use: %v, want ErrPoolInUse", err)
	}
	if err := touch(ctx, in); err != nil {
		t.Fatalf("the installation in use was closed by a refused unregister: %v", err)
	}
	release()
	if err := p.Unregister("p0"); err != nil {
		t.Fatalf("unregister once released: %v", err)
	}
	if _, _, err := p.Acquire(ctx, "p0"); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("acquire after unregister: %v, want ErrNotRegistered", err)
	}
	if err := p.Unregister("p0"); !errors.Is(err, ErrNotRegistered) {
		t.Fatalf("unregister twice: %v, want ErrNotRegistered", err)
	}
	if err := p.Unregister("p1"); err != nil { // never opened
		t.Fatalf("unregister of a closed installation: %v", err)
	}
	if err := p.Register("p0", f.path("p0")); err != nil {
		t.Fatal(err)
	}
	if err := p.With(ctx, "p0", func(in *Installation) error { return touch(ctx, in) }); err != nil {
		t.Fatalf("registered again: %v", err)
	}
}

// An acquire whose context has already ended starts no open (nobody
// would wait for it; until 2026-12-07 it opened the read model, and
// migrated it if asked, for no one, taking a slot another installation
// then had to evict it from), but still hands out an installation that
// is open.
func TestPoolAcquireWithEndedContextOpensNothing(t *testing.T) {
	f := newPoolFixture(t, 2)
	p := f.pool(1, time.Minute)
	done, cancel := context.WithCancel(context.Background())
	cancel()
	if _, _, err := p.Acquire(done, f.ids[0]); !errors.Is(err, context.Canceled) {
		t.Fatalf("acquire of a closed installation with an ended context: %v, want context.Canceled", err)
	}
	in, release, err := p.Acquire(context.Background(), f.ids[1])
	if err != nil {
		t.Fatal(err)
	}
	release()
	if s := p.Stats(); s.Opens != 1 || s.Evictions != 0 {
		t.Fatalf("stats %+v: want one open (the second installation's) and nothing evicted for it", s)
	}
	again, release, err := p.Acquire(done, f.ids[1])
	if err != nil || again != in {
		t.Fatalf("acquire of an open installation with an ended context: %v (same installation: %v), want it", err, again == in)
	}
	release()
}

// A Pool keeps its cap under what the process's open-file limit lets it
// keep open (past it every open would fail), and says so: asked for 10
// with room for 2, it keeps 2 open at most, evicting for a third.
func TestPoolKeepsItsCapUnderTheOpenFileLimit(t *testing.T) {
	f := newPoolFixture(t, 3)
	prev := fdlimit.Limit
	fdlimit.Limit = func() (uint64, bool) { return fdlimit.Reserve + 2*fdlimit.PerReadModel, true }
	t.Cleanup(func() { fdlimit.Limit = prev })
	p := f.pool(10, time.Minute)
	if got := p.MaxOpen(); got != 2 {
		t.Fatalf("MaxOpen with room for 2 open read models: %d, want 2", got)
	}
	for _, id := range f.ids {
		if err := p.With(context.Background(), id, func(*Installation) error { return nil }); err != nil {
			t.Fatal(err)
		}
	}
	if s := p.Stats(); s.Opens != 3 || s.Evictions != 1 {
		t.Fatalf("stats %+v after using 3 installations with room for 2: want 3 opens and 1 eviction", s)
	}
}
