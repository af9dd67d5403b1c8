package engine

import (
	"context"
	"errors"
	"io"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// lossyProxy forwards TCP between clients and a nats-server; while mute
// is set it drops what the server sends, so the server stores what it is
// sent and its answers (PubAcks) are lost.
type lossyProxy struct {
	*natstest.Proxy
	mute atomic.Bool
}

func newLossyProxy(t *testing.T, serverURL string) *lossyProxy {
	t.Helper()
	p := &lossyProxy{}
	p.Proxy = natstest.NewProxy(t, serverURL, func(client io.Writer, server io.Reader) {
		buf := make([]byte, 32<<10)
		for {
			n, err := server.Read(buf)
			if n > 0 && !p.mute.Load() {
				if _, err := client.Write(buf[:n]); err != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	})
	return p
}

// lossyBackend is a backend whose Log reaches the server through a
// lossyProxy; direct is a second Log connected straight to the server.
func lossyBackend(t *testing.T) (b *backend, proxy *lossyProxy, direct *eventlog.Log) {
	srv := natstest.Start(t, natstest.Options{})
	proxy = newLossyProxy(t, srv.URL())
	b = &backend{t: t, srv: srv, ring: keyring(t, 1, 0x42), dir: t.TempDir(),
		insts: map[events.InstallationID]*Installation{}, keys: map[events.InstallationID]projections.Key{},
		now: time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)}
	cfg := testConfig(srv)
	cfg.NATSURL = proxy.URL()
	cfg.RequestTimeout = time.Second
	cfg.ReconnectWait = 50 * time.Millisecond
	l, err := eventlog.Open(context.Background(), cfg, b.ring)
	if err != nil {
		t.Fatal(err)
	}
	b.log = l
	b.del = NewDeliveries(l, b.clock)
	t.Cleanup(b.close)
	return b, proxy, openLog(t, testConfig(srv), b.ring)
}

// commitsTo returns the stream sequences of alice's commits of gid to epoch.
func commitsTo(t *testing.T, l *eventlog.Log, gid []byte, epoch uint64) []uint64 {
	t.Helper()
	var seqs []uint64
	if err := l.Read(context.Background(), alice, 0, func(r eventlog.Record) error {
		if c, ok := r.Event.Body.(events.CommitApplied); ok && string(c.GroupID) == string(gid) && c.Epoch == epoch {
			seqs = append(seqs, r.Seq)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return seqs
}

// A commit the server stored but whose answer was lost is not dropped:
// the operation appends the same events again until the server answers,
// finds them stored, and returns the commit and its Welcome, which every
// member can then process.
func TestOperationDecidesAnAppendWhoseAnswerWasLost(t *testing.T) {
	ctx := context.Background()
	b, proxy, direct := lossyBackend(t)
	b.create(alice)
	b.create(bob)
	b.create(carol)
	gid := b.pair(alice, carol)
	kpBob := b.keyPackage(bob)

	proxy.mute.Store(true)
	go func() {
		time.Sleep(2500 * time.Millisecond) // more than two request timeouts
		proxy.mute.Store(false)
		proxy.Drop()
	}()
	co, err := b.insts[alice].AddMembers(ctx, gid, kpBob)
	if err != nil {
		t.Fatalf("AddMembers with its answers lost for a while: %v", err)
	}
	if seqs := commitsTo(t, direct, gid, 2); len(seqs) != 1 {
		t.Fatalf("commits to epoch 2 on the stream: %v, want exactly one", seqs)
	}
	if co == nil || co.Epoch != 2 || co.Welcome == nil {
		t.Fatalf("AddMembers output %+v, want the commit to epoch 2 and its Welcome", co)
	}
	if _, err := b.insts[carol].Receive(ctx, co.Commit); err != nil {
		t.Fatalf("carol processes the commit: %v", err)
	}
	if _, err := b.insts[bob].Receive(ctx, co.Welcome); err != nil {
		t.Fatalf("bob joins with the Welcome: %v", err)
	}
	for _, id := range []events.InstallationID{alice, bob, carol} {
		if e, err := b.insts[id].Epoch(ctx, gid); err != nil || e != 2 {
			t.Errorf("%s at epoch %d (%v), want 2", id, e, err)
		}
	}
}

// When the context ends before the server answers, the operation says the
// outcome is unknown (not a plain failure the caller might simply retry),
// and the installation recovers: after CatchUp its next commit follows
// whatever was recorded.
func TestOperationOutcomeUnknownWhenContextEnds(t *testing.T) {
	ctx := context.Background()
	b, proxy, direct := lossyBackend(t)
	b.create(alice)
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	proxy.mute.Store(true)
	short, cancel := context.WithTimeout(ctx, 1500*time.Millisecond)
	co, err := b.insts[alice].Update(short, gid)
	cancel()
	if !errors.Is(err, ErrOutcomeUnknown) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("Update whose answer never came: %v, want ErrOutcomeUnknown and the context's error", err)
	}
	if co != nil {
		t.Errorf("Update returned output %+v with an unknown outcome", co)
	}
	reconnects := b.log.Conn().Stats().Reconnects
	proxy.mute.Store(false)
	proxy.Drop()
	for deadline := time.Now().Add(time.Minute); b.log.Conn().Stats().Reconnects == reconnects || !b.log.Conn().IsConnected(); time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the log did not reconnect in a minute")
		}
	}
	if seqs := commitsTo(t, direct, gid, 1); len(seqs) != 1 {
		t.Fatalf("commits to epoch 1 on the stream: %v, want the one stored while its answer was lost", seqs)
	}
	if err := b.insts[alice].CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	next, err := b.insts[alice].Update(ctx, gid)
	if err != nil {
		t.Fatalf("next Update: %v", err)
	}
	if next.Epoch != 2 {
		t.Errorf("next Update moved the group to epoch %d, want 2 (after the recorded one)", next.Epoch)
	}
}

// An append refused before it is sent (a message larger than the server's
// max_payload) is an answer, not a lost one: the operation fails with
// that error, naming the event, its size and the limit, not after
// retrying until its context ends (with a context without deadline,
// never, holding the installation's lock).
func TestOperationRefusedAppendIsNotRetried(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	// Retried, the Send would end with this context: ErrOutcomeUnknown.
	// Its deadline bounds the test, not the refusal's speed.
	short, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	_, err = b.insts[alice].Send(short, gid, make([]byte, 2<<20), nil)
	if err == nil {
		t.Fatal("a 2 MiB message was accepted: the test server's max_payload is larger, send a larger one")
	}
	t.Logf("Send: %v", err)
	if errors.Is(err, ErrOutcomeUnknown) || errors.Is(err, context.DeadlineExceeded) || !errors.Is(err, eventlog.ErrEventTooLarge) ||
		!errors.Is(err, nats.ErrMaxPayload) || !strings.Contains(err.Error(), "event application.message_sent sealed to") {
		t.Errorf("Send of an oversized message: %v; want eventlog.ErrEventTooLarge naming the event, not ErrOutcomeUnknown", err)
	}
}

// With the server gone, an operation under a context without deadline
// returns once its OutcomeTimeout has passed, instead of waiting for the
// server forever holding the installation's lock; nothing was recorded,
// and once the server is back the group goes on from where it was.
func TestOperationReturnsWithTheServerGone(t *testing.T) {
	t.Parallel() // mostly waits on its own servers; sets no package variable
	ctx := context.Background()
	b := newBackend(t)
	opts := b.opts()
	opts.OutcomeTimeout = 2 * time.Second
	b.createWith(alice, opts)
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	b.srv.Shutdown()
	undecided := map[string]*OutcomeUnknownError{}
	for _, op := range []string{"Send", "Update"} {
		done := make(chan error, 1)
		go func() {
			var err error
			if op == "Send" {
				_, err = b.insts[alice].Send(ctx, gid, []byte("to nobody"), nil)
			} else {
				_, err = b.insts[alice].Update(ctx, gid)
			}
			done <- err
		}()
		select {
		case err := <-done:
			t.Logf("%s with the server gone: %v", op, err)
			if err == nil {
				t.Fatalf("%s succeeded with the server gone", op)
			}
			if u := new(OutcomeUnknownError); errors.As(err, &u) {
				undecided[op] = u
			}
		case <-time.After(2 * time.Minute): // OutcomeTimeout plus a request timeout, generously
			b.srv.Start()
			t.Fatalf("%s still waiting two minutes after the server went, its OutcomeTimeout 2s", op)
		}
	}
	b.srv.Start()
	if err := b.insts[alice].CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if e, err := b.insts[alice].Epoch(ctx, gid); err != nil || e != 0 {
		t.Fatalf("after the server came back the group is at epoch %d (%v), want 0", e, err)
	}
	if n := messageCount(t, b.insts[alice], gid); n != 0 {
		t.Fatalf("%d messages recorded while the server was gone", n)
	}
	// Decide settles each for good: the Update, decided first, is
	// recorded now (it never reached the server, and the group has not
	// moved); the Send, sealed for epoch 0 at the position the Update
	// took, never will be.
	for _, c := range []struct {
		op       string
		recorded bool
	}{{"Update", true}, {"Send", false}} {
		u := undecided[c.op]
		if u == nil || (c.op == "Update") != (u.Commit != nil) || (c.op == "Send") != (u.Send != nil) {
			t.Fatalf("%s: the error carries no output to decide: %+v", c.op, u)
		}
		got, err := b.insts[alice].Decide(ctx, u)
		if err != nil || got != c.recorded {
			t.Fatalf("decide the %s: recorded %v (%v), want %v", c.op, got, err, c.recorded)
		}
	}
	if e, err := b.insts[alice].Epoch(ctx, gid); err != nil || e != undecided["Update"].Commit.Epoch {
		t.Fatalf("after the decided update the group is at epoch %d (%v), want %d", e, err, undecided["Update"].Commit.Epoch)
	}
	if n := messageCount(t, b.insts[alice], gid); n != 0 {
		t.Fatalf("%d messages recorded, want the undecided one refused", n)
	}
	if co, err := b.insts[alice].Update(ctx, gid); err != nil || co.Epoch != 2 {
		t.Fatalf("Update after the server came back: %+v, %v; want epoch 2", co, err)
	}
}

// A Log closed under a run of operations: every operation that returned
// success is recorded, and one that failed without ErrOutcomeUnknown
// recorded nothing. A commit recorded behind a plain error would have
// moved the group on without its Commit ever reaching the other members.
func TestLogClosedUnderOperationsLosesNothing(t *testing.T) {
	ctx := context.Background()
	for round := range 6 {
		b := newBackend(t)
		b.create(alice)
		created, err := b.insts[alice].CreateGroup(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		gid := created.GroupID
		var sent [][]byte
		updates := 0
		var last error
		done := make(chan struct{})
		go func() {
			defer close(done)
			for i := 0; ; i++ {
				if i%3 == 2 {
					if _, last = b.insts[alice].Update(ctx, gid); last != nil {
						return
					}
					updates++
					continue
				}
				var out *SendOutput
				if out, last = b.insts[alice].Send(ctx, gid, []byte("m"), nil); last != nil {
					return
				}
				sent = append(sent, out.MessageID)
			}
		}()
		time.Sleep(time.Duration(100+round*41) * time.Millisecond)
		b.log.Close()
		<-done
		unknown := errors.Is(last, ErrOutcomeUnknown)
		b.insts[alice].Close()
		delete(b.insts, alice)
		b.log = nil
		b.open()
		in, err := OpenInstallation(ctx, b.log, alice, b.dbPath(alice), b.keys[alice], b.opts())
		if err != nil {
			t.Fatal(err)
		}
		b.insts[alice] = in
		epoch, err := in.Epoch(ctx, gid)
		if err != nil {
			t.Fatal(err)
		}
		n := messageCount(t, in, gid)
		t.Logf("round %d: %d sends and %d updates returned, then %v; recorded %d messages, epoch %d", round, len(sent), updates, last, n, epoch)
		known, err := in.DB().KnownMessages(ctx, gid, sent)
		if err != nil {
			t.Fatal(err)
		}
		for _, id := range sent {
			if !known[string(id)] {
				t.Fatalf("round %d: message %x returned as sent is not recorded", round, id)
			}
		}
		extra := n - len(sent) + int(epoch) - updates
		if extra != 0 && !(unknown && extra == 1) {
			t.Fatalf("round %d: %d transitions recorded beyond those returned (%d messages for %d sends, epoch %d after %d updates), the last error %v", round, extra, n, len(sent), epoch, updates, last)
		}
		b.close()
	}
}
