package engine

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// callWorld is what the every-call tests set up before they take the
// server away: alice and bob in group g, alice's first message fanned
// out to bob (seqs), carol and dave created and closed, dave registered
// with pool. Installations use opts (OutcomeTimeout 3 s), as does del.
type callWorld struct {
	dir        string
	keys       map[events.InstallationID]projections.Key
	opts       *InstallationOptions
	del        *Deliveries
	alice, bob *Installation
	g          *GroupOutput
	first      *SendOutput
	seqs       map[events.InstallationID]uint64
	pool       *Pool
}

func newCallWorld(t *testing.T, l *eventlog.Log) *callWorld {
	t.Helper()
	ctx := context.Background()
	w := &callWorld{dir: t.TempDir(), keys: map[events.InstallationID]projections.Key{},
		opts: &InstallationOptions{OutcomeTimeout: 3 * time.Second, UpdateInterval: time.Hour}}
	create := func(id events.InstallationID) *Installation {
		k, _ := projections.GenerateRawKey()
		w.keys[id] = k
		in, err := CreateInstallation(ctx, l, id, filepath.Join(w.dir, string(id)+".db"), k, w.opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		return in
	}
	w.del = NewDeliveries(l, nil)
	w.del.OutcomeTimeout = 3 * time.Second
	w.alice, w.bob = create("alice"), create("bob")
	for _, id := range []events.InstallationID{"carol", "dave"} {
		if err := create(id).Close(); err != nil {
			t.Fatal(err)
		}
	}
	kp, err := w.bob.PublishKeyPackage(ctx, "d", true)
	if err != nil {
		t.Fatal(err)
	}
	if w.g, err = w.alice.CreateGroup(ctx, nil); err != nil {
		t.Fatal(err)
	}
	co, err := w.alice.AddMembers(ctx, w.g.GroupID, kp.KeyPackage)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.bob.Receive(ctx, co.Welcome); err != nil {
		t.Fatal(err)
	}
	if w.first, err = w.alice.Send(ctx, w.g.GroupID, []byte("before"), nil); err != nil {
		t.Fatal(err)
	}
	if w.seqs, err = w.del.FanOut(ctx, w.first.Recipients, mlsChannel, w.first.Message, time.Time{}, "m1"); err != nil {
		t.Fatal(err)
	}
	w.pool = NewPool(l, func(_ context.Context, id events.InstallationID) (projections.Key, error) { return w.keys[id], nil }, &PoolOptions{Installation: w.opts})
	t.Cleanup(func() { w.pool.Close() })
	if err := w.pool.Register("dave", filepath.Join(w.dir, "dave.db")); err != nil {
		t.Fatal(err)
	}
	return w
}

// runCalls makes each call at once, in a goroutine of its own, and
// returns their errors by name once every one has returned. Any still
// waiting after 4 minutes fails the test, named, after giving up runs
// (when set: the server thawed, say). situation says, in the log, what
// the calls were made under.
func runCalls(t *testing.T, calls map[string]func() error, situation string, givingUp func()) map[string]error {
	t.Helper()
	var mu sync.Mutex
	results := map[string]error{}
	var wg sync.WaitGroup
	for name, call := range calls {
		wg.Go(func() {
			start := time.Now()
			err := call()
			mu.Lock()
			results[name] = err
			mu.Unlock()
			t.Logf("%s %s, after %v: %v", name, situation, time.Since(start).Round(time.Millisecond), err)
		})
	}
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
		return results
	case <-time.After(4 * time.Minute):
	}
	mu.Lock()
	var missing []string
	for name := range calls {
		if _, ok := results[name]; !ok {
			missing = append(missing, name)
		}
	}
	mu.Unlock()
	if givingUp != nil {
		givingUp()
	}
	t.Fatalf("calls still waiting %s after 4 minutes: %v", situation, missing)
	return nil
}

// TestFrozenServerEveryCallReturns freezes the server (SIGSTOP: its TCP
// connections stay up, nothing answers) under every kind of call a
// service makes, each with a context without deadline: each must return
// an error, and once the server thaws nothing returned as done is lost.
func TestFrozenServerEveryCallReturns(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	t.Parallel() // mostly waits on its own servers; sets no package variable
	ctx := context.Background()
	srv := natstest.StartProcess(t)
	cfg := eventlog.Config{NATSURL: srv.URL(), RequestTimeout: 2 * time.Second, ReconnectWait: 20 * time.Millisecond, ProgressTimeout: 8 * time.Second}
	l := openLog(t, cfg, keyring(t, 1, 0x42))
	w := newCallWorld(t, l)
	dir, keys, opts, del, alice, bob, g, first, seqs, pool := w.dir, w.keys, w.opts, w.del, w.alice, w.bob, w.g, w.first, w.seqs, w.pool
	del2 := NewDeliveries(l, nil) // holds no queue yet
	del2.OutcomeTimeout = 3 * time.Second
	host := NewHost(l, NewDeliveries(l, nil), nil)

	srv.Freeze()
	var sent *SendOutput
	calls := map[string]func() error{
		"Installation.Send":    func() (err error) { sent, err = alice.Send(ctx, g.GroupID, []byte("frozen"), nil); return err },
		"Installation.Receive": func() error { _, err := bob.Receive(ctx, first.Message); return err },
		"Installation.CatchUp": func() error { return alice.CatchUp(ctx) },
		"OpenInstallation": func() error {
			in, err := OpenInstallation(ctx, l, "carol", filepath.Join(dir, "carol.db"), keys["carol"], opts)
			if err == nil {
				in.Close()
			}
			return err
		},
		"Pool.Acquire": func() error {
			_, release, err := pool.Acquire(ctx, "dave")
			if err == nil {
				release()
			}
			return err
		},
		"Deliveries.Fetch":       func() error { _, err := del2.Fetch(ctx, "bob", mlsChannel, 0); return err },
		"Deliveries.Acknowledge": func() error { return del2.Acknowledge(ctx, "alice", mlsChannel, 1) },
		"Deliveries.FanOut": func() error {
			_, err := del.FanOut(ctx, []events.InstallationID{"carol"}, mlsChannel, []byte("x"), time.Time{}, "k-frozen")
			return err
		},
		"Host.Deliver": func() error { return host.Deliver(ctx, mlsChannel, []*Installation{bob}, 0)[0].Err },
	}
	results := runCalls(t, calls, "with the server frozen", srv.Thaw)
	srv.Thaw()
	for name, err := range results {
		if err == nil && name != "Host.Deliver" {
			t.Errorf("%s succeeded with the server frozen", name)
		}
	}
	// Thawed: whatever returned nil is there; the rest can be done now.
	if err := bob.CatchUp(ctx); err != nil {
		t.Fatalf("bob catch up after thaw: %v", err)
	}
	if results["Installation.Send"] == nil && sent == nil {
		t.Fatal("send returned nil without output")
	}
	ds, err := NewDeliveries(l, nil).Fetch(ctx, "bob", mlsChannel, 0)
	if err != nil {
		t.Fatalf("fetch after thaw: %v", err)
	}
	if len(ds) != 1 || ds[0].Seq != seqs["bob"] {
		t.Fatalf("bob's queue after thaw: %+v, want the one message", ds)
	}
	if _, err := alice.Send(ctx, g.GroupID, []byte("after"), nil); err != nil {
		t.Fatalf("send after thaw: %v", err)
	}
}

// TestOutcomeUnknownCommitStaysDeliverable: a commit whose append was
// sent to a server that froze (its answer never came: ErrOutcomeUnknown)
// may be stored once the server thaws. Its output comes in the error
// (*OutcomeUnknownError), and Installation.Decide says whether it is in
// the history: delivered then, bob follows alice's later commits; not
// recorded, it is not delivered and bob follows all the same. Until
// 2026-12-06 the output was lost with the error, and a stored commit
// left bob unable to follow alice ever again; and CatchUp, a read, could
// miss the commit landing just after it.
func TestOutcomeUnknownCommitStaysDeliverable(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	t.Parallel() // mostly waits on its own servers; sets no package variable
	ctx := context.Background()
	srv, alice, bob, g := frozenPair(t)
	before, _ := alice.Epoch(ctx, g)

	srv.Freeze()
	frozen, err := alice.Update(ctx, g)
	srv.Thaw()
	recorded := err == nil // answered before the freeze took hold
	if err != nil {
		var u *OutcomeUnknownError
		if !errors.As(err, &u) || !errors.Is(err, ErrOutcomeUnknown) || u.Commit == nil {
			t.Fatalf("update with the server frozen: %v, want an *OutcomeUnknownError carrying the commit", err)
		}
		if recorded, err = alice.Decide(ctx, u); err != nil {
			t.Fatalf("decide after the thaw: %v", err)
		}
		frozen = u.Commit
	}
	after, err := alice.Epoch(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("update with the server frozen: recorded %v; epoch %d -> %d", recorded, before, after)
	if recorded != (after == frozen.Epoch) || !recorded && after != before {
		t.Fatalf("decided recorded=%v, but alice's epoch went %d -> %d (the commit's is %d)", recorded, before, after, frozen.Epoch)
	}
	if recorded {
		if _, err := bob.Receive(ctx, frozen.Commit); err != nil {
			t.Fatalf("bob receives the decided commit: %v", err)
		}
	}
	next, err := alice.Update(ctx, g)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Receive(ctx, next.Commit); err != nil {
		t.Fatalf("bob cannot follow alice after a commit whose outcome was unknown: %v", err)
	}
}

// frozenWorld starts a nats-server process and returns it with a maker
// of installations on a Log with short bounds (requests 2 s, outcomes
// 3 s). Setting freezeNext freezes the server the next time an
// installation's CheckMember runs: right before a commit's or a join's
// append, so that its answer never comes.
func frozenWorld(t *testing.T) (srv *natstest.Process, create func(events.InstallationID) *Installation, freezeNext *atomic.Bool) {
	t.Helper()
	ctx := context.Background()
	srv = natstest.StartProcess(t)
	cfg := eventlog.Config{NATSURL: srv.URL(), RequestTimeout: 2 * time.Second, ReconnectWait: 20 * time.Millisecond, ProgressTimeout: 8 * time.Second}
	l := openLog(t, cfg, keyring(t, 1, 0x42))
	dir := t.TempDir()
	freezeNext = new(atomic.Bool)
	opts := &InstallationOptions{OutcomeTimeout: 3 * time.Second, UpdateInterval: time.Hour,
		CheckMember: func(context.Context, events.InstallationID, []byte) error {
			if freezeNext.CompareAndSwap(true, false) {
				srv.Freeze()
			}
			return nil
		}}
	create = func(id events.InstallationID) *Installation {
		k, _ := projections.GenerateRawKey()
		in, err := CreateInstallation(ctx, l, id, filepath.Join(dir, string(id)+".db"), k, opts)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		return in
	}
	return srv, create, freezeNext
}

// frozenPair starts a nats-server process and a group of alice and bob
// (frozenWorld), warmed so that a commit's head and data keys are cached:
// an operation after a Freeze sends its publish at once. It returns the
// server, alice, bob and the group id.
func frozenPair(t *testing.T) (*natstest.Process, *Installation, *Installation, []byte) {
	t.Helper()
	ctx := context.Background()
	srv, create, _ := frozenWorld(t)
	alice, bob := create("alice"), create("bob")
	kp, err := bob.PublishKeyPackage(ctx, "d", true)
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
	if _, err := bob.Receive(ctx, co.Welcome); err != nil {
		t.Fatal(err)
	}
	warm, err := alice.Update(ctx, g.GroupID)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := bob.Receive(ctx, warm.Commit); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, g.GroupID, []byte("warm"), nil); err != nil {
		t.Fatal(err)
	}
	return srv, alice, bob, g.GroupID
}

// A batch of Host.Send whose append went unanswered (the server frozen)
// returns each message in an *OutcomeUnknownError, as Installation.Send
// does, and Decide says whether it is in alice's history: the read model
// holds it exactly when recorded. Until 2026-12-06 the batch returned a
// plain ErrOutcomeUnknown, and a message that landed was never delivered.
func TestHostSendOutcomeUnknownCarriesTheMessage(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server")
	}
	t.Parallel() // mostly waits on its own servers; sets no package variable
	ctx := context.Background()
	srv, alice, _, g := frozenPair(t)
	h := NewHost(alice.log, nil, nil)
	srv.Freeze()
	res := h.Send(ctx, []SendRequest{{Installation: alice, GroupID: g, Content: []byte("frozen")}})
	srv.Thaw()
	err := res[0].Err
	recorded := err == nil // answered before the freeze took hold
	if err != nil {
		var u *OutcomeUnknownError
		if !errors.As(err, &u) || u.Send == nil || string(u.Send.GroupID) != string(g) || u.Send.Message == nil {
			t.Fatalf("Host.Send with the server frozen: %v, want an *OutcomeUnknownError carrying the message", err)
		}
		if recorded, err = alice.Decide(ctx, u); err != nil {
			t.Fatalf("decide after the thaw: %v", err)
		}
	}
	page, err := alice.DB().Messages(ctx, g, projections.Page{Limit: 10})
	if err != nil {
		t.Fatal(err)
	}
	held := false
	for _, m := range page.Messages {
		held = held || string(m.Content.Bytes()) == "frozen"
	}
	t.Logf("Host.Send with the server frozen: %v; recorded %v", res[0].Err, recorded)
	if held != recorded {
		t.Fatalf("decided recorded=%v, but the read model holds the message: %v", recorded, held)
	}
}
