package engine_test

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// The failover test: the demo's workload (installations in overlapping
// groups; Send, FanOut, Fetch, Receive, Acknowledge, Expire, commits,
// members removed and new ones added through key packages and Welcomes)
// runs on a 3-node cluster with the stream replicated to every node while,
// each round, the stream's current leader (every second round the
// cluster's meta leader instead) is shut down and, after the workload has
// carried on without it, started again. No engine operation
// may fail, and in the end every read model equals a replay of its
// history, every message reached each of its recipients exactly once, no
// event is on the stream twice, and every delivery queue is acknowledged.
//
// EPOCHLOG_FAILOVER_ROUNDS sets the number of rounds (`make soak` runs 20).

// failoverRoundsEnv names the environment variable with the number of
// failover rounds; without it the test runs failoverDefaultRounds.
const (
	failoverRoundsEnv     = "EPOCHLOG_FAILOVER_ROUNDS"
	failoverDefaultRounds = 3
)

// Pacing, in engine operations: how many the workload does before each
// leader is shut down, and how many with it down. They are counts, not
// times, so a slow machine slows the test down but does not change it.
const (
	failoverOpsBefore = 30
	failoverOpsDown   = 30
	// failoverMinOps is the least the workload does in all.
	failoverMinOps = 120
)

// Bounds. Each operation gets a context that ends far later than a
// failover takes (the engine must not need it: eventlog's own waits are
// bounded by RequestTimeout and ProgressTimeout); waitProgress fails the
// test when the workload does nothing for failoverStall.
const (
	failoverOpTimeout = 3 * time.Minute
	failoverStall     = 5 * time.Minute
)

const failoverChannel = "mls"

func failoverRounds(t *testing.T) int {
	t.Helper()
	s := os.Getenv(failoverRoundsEnv)
	if s == "" {
		return failoverDefaultRounds
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 1 {
		t.Fatalf("%s=%q: want a positive number of rounds", failoverRoundsEnv, s)
	}
	return n
}

func TestFailoverStreamLeader(t *testing.T) {
	if testing.Short() {
		t.Skip("shuts down cluster nodes for a minute or more; not with -short")
	}
	t.Parallel() // mostly waits on its own servers; sets no package variable
	rounds := failoverRounds(t)
	c := natstest.StartCluster(t, 3)
	l := logtest.Open(t, logtest.ClusterConfig(c.URL()), logtest.Keyring(t, 1, 0x5a))
	w := newFailoverWorld(t, l)
	defer w.closeAll()
	if err := w.setup(rounds + 4); err != nil {
		t.Fatalf("setup (no failover yet): %v", err)
	}
	if n := w.failed.Load(); n != 0 {
		t.Fatalf("setup (no failover yet): %d failed operations: %v", n, w.errors())
	}
	admin := failoverAdmin(t, c)

	done := make(chan struct{})
	stop := make(chan struct{})
	go func() {
		defer close(done)
		w.run(stop)
	}()
	stopped := false
	halt := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-done
		}
	}
	defer halt()

	killed := map[string]int{}
	for r := range rounds {
		w.waitProgress(failoverOpsBefore, done)
		// Odd rounds lose the cluster's meta leader instead (the stream's
		// leader too when one node leads both), whose election the
		// requests sent meanwhile must outlast.
		role, leader := "stream leader", streamLeader(t, admin, l.Stream())
		if r%2 == 1 {
			role, leader = "meta leader", c.MetaLeader().Name()
		}
		node := c.Node(leader)
		t.Logf("round %d/%d: shutting down %s %s after %d operations", r+1, rounds, role, leader, w.ops.Load())
		node.Shutdown()
		killed[leader]++
		w.waitProgress(failoverOpsDown, done)
		node.Start()
		// The next round's loss must leave a quorum with the whole
		// history, as in a real rolling failure.
		c.WaitStreamCurrent(l.Stream())
	}
	for w.ops.Load() < failoverMinOps {
		w.waitProgress(1, done)
	}
	halt()
	t.Logf("leaders shut down: %v", killed)

	// Deliver what is still queued (a drain cut short by the stop).
	if err := w.drainAll(); err != nil {
		t.Errorf("final drain: %v", err)
	}
	ops, failed := w.ops.Load(), w.failed.Load()
	lost, dup := w.check()
	t.Logf("failover: %d rounds, %d operations (%d messages sent, %d members replaced), %d failed, %d lost, %d duplicated",
		rounds, ops, len(w.sent), w.replaced, failed, lost, dup)
	if failed != 0 {
		t.Errorf("%d of %d operations failed across %d leader failovers; first errors:\n%v", failed, ops, rounds, w.errors())
	}
}

// failoverAdmin is a JetStream client of its own for the stream's info.
func failoverAdmin(t *testing.T, c *natstest.Cluster) jetstream.JetStream {
	t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.ReconnectWait(20*time.Millisecond))
	if err != nil {
		t.Fatalf("admin connection: %v", err)
	}
	t.Cleanup(nc.Close)
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	return js
}

// streamLeader returns the name of the node leading the stream, from the
// stream info's cluster section, asking again while there is none (an
// election).
func streamLeader(t *testing.T, js jetstream.JetStream, stream string) string {
	t.Helper()
	deadline := time.Now().Add(time.Minute)
	var last error
	for time.Now().Before(deadline) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		s, err := js.Stream(ctx, stream)
		cancel()
		if err == nil {
			if ci := s.CachedInfo().Cluster; ci != nil && ci.Leader != "" {
				return ci.Leader
			}
			err = errors.New("no leader in the stream info")
		}
		last = err
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("stream %s: no leader for a minute: %v", stream, last)
	return ""
}

// failoverWorld is the demo's backend in a test: one log, the delivery
// queues, the installations with their read models, the groups, and what
// was sent, for the final checks.
type failoverWorld struct {
	t    *testing.T
	log  *eventlog.Log
	del  *engine.Deliveries
	dir  string
	rng  *rand.Rand
	ids  []events.InstallationID
	inst map[events.InstallationID]*engine.Installation
	keys map[events.InstallationID]projections.Key
	grps []*failoverGroup
	sent []failoverSent
	seen map[failoverDelivery]bool // deliveries handed to their recipient at least once
	// spares are installations in no group yet, for replaceMember.
	spares   []events.InstallationID
	replaced int
	next     int // the next installation number
	steps    int

	ops     atomic.Int64 // engine operations done
	failed  atomic.Int64 // of which failed (an error, or a ProjectionErr)
	mu      sync.Mutex
	errs    []string
	current atomic.Value // the operation under way (string)
}

type failoverGroup struct {
	id      []byte
	members []events.InstallationID // current members, creator first
}

// failoverSent is an application message Send returned.
type failoverSent struct {
	group      []byte
	id         []byte
	sender     events.InstallationID
	recipients []events.InstallationID
	ephemeral  bool
}

type failoverDelivery struct {
	recipient events.InstallationID
	seq       uint64
}

func newFailoverWorld(t *testing.T, l *eventlog.Log) *failoverWorld {
	return &failoverWorld{
		t: t, log: l, del: engine.NewDeliveries(l, nil), dir: t.TempDir(),
		rng:  rand.New(rand.NewPCG(7, 11)),
		inst: map[events.InstallationID]*engine.Installation{},
		keys: map[events.InstallationID]projections.Key{},
		seen: map[failoverDelivery]bool{},
	}
}

func (w *failoverWorld) closeAll() {
	for id, in := range w.inst {
		if err := in.Close(); err != nil {
			w.t.Errorf("close %s: %v", id, err)
		}
	}
}

func (w *failoverWorld) dbPath(id events.InstallationID) string {
	return filepath.Join(w.dir, string(id)+".db")
}

// op runs one engine operation with its own generous context and counts
// it; an error is a failure, recorded and returned.
//
// The context has no deadline, as the demo's (its signal context) has
// none: it is cancelled after failoverOpTimeout. Under a deadline,
// eventlog.Append waits for a publish's answer until the deadline instead
// of Config.RequestTimeout, so an Installation operation whose publish
// went down with the leader waits out all of its context
// (ErrOutcomeUnknown); Deliveries' appends are immune (appendOnce), the
// Installation's are not yet.
func (w *failoverWorld) op(name string, fn func(ctx context.Context) error) error {
	w.current.Store(name)
	ctx, cancel := context.WithCancel(context.Background())
	timer := time.AfterFunc(failoverOpTimeout, cancel)
	start := time.Now()
	err := fn(ctx)
	timer.Stop()
	cancel()
	w.ops.Add(1)
	if err != nil {
		w.fail(fmt.Errorf("%s (after %v): %w", name, time.Since(start).Round(time.Millisecond), err))
	}
	return err
}

func (w *failoverWorld) fail(err error) {
	w.failed.Add(1)
	w.mu.Lock()
	defer w.mu.Unlock()
	if len(w.errs) < 20 {
		w.errs = append(w.errs, err.Error())
	}
	w.t.Logf("operation failed: %v", err)
}

func (w *failoverWorld) errors() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	s := ""
	for _, e := range w.errs {
		s += "  " + e + "\n"
	}
	return s
}

// lagged counts an operation whose read model could not be brought up to
// date (a failed read after the append) as a failure too.
func (w *failoverWorld) lagged(name string, err error) {
	if err != nil {
		w.fail(fmt.Errorf("%s: succeeded, read model lags: %w", name, err))
	}
}

// waitProgress waits until the workload has done n more operations,
// failing the test if it does none for failoverStall.
func (w *failoverWorld) waitProgress(n int64, done <-chan struct{}) {
	w.t.Helper()
	target := w.ops.Load() + n
	last, lastAt := w.ops.Load(), time.Now()
	for {
		cur := w.ops.Load()
		if cur >= target {
			return
		}
		select {
		case <-done:
			w.t.Fatalf("the workload stopped after %d operations", cur)
		case <-time.After(20 * time.Millisecond):
		}
		if cur != last {
			last, lastAt = cur, time.Now()
		} else if time.Since(lastAt) > failoverStall {
			w.t.Fatalf("the workload made no progress for %v, in %v", failoverStall, w.current.Load())
		}
	}
}

// newInstallation creates the next installation (again, after a failure:
// its read model may exist by then, under the key drawn the first time).
func (w *failoverWorld) newInstallation() (events.InstallationID, error) {
	id := events.InstallationID(fmt.Sprintf("failover-%03d", w.next))
	k, ok := w.keys[id]
	if !ok {
		var err error
		if k, err = projections.GenerateRawKey(); err != nil {
			return "", err
		}
		w.keys[id] = k
	}
	var in *engine.Installation
	if err := w.op("create installation "+string(id), func(ctx context.Context) (err error) {
		in, err = engine.CreateInstallation(ctx, w.log, id, w.dbPath(id), k, nil)
		return err
	}); err != nil {
		return "", err
	}
	w.next++
	w.ids = append(w.ids, id)
	w.inst[id] = in
	return id, nil
}

// setup creates six installations and three groups of overlapping
// members, as the demo does, and spares installations that replaceMember
// adds to groups later. Like the demo, the workload creates no
// installation: CreateInstallation is not decided across a failover yet
// (a lost answer makes its retry ErrInstallationExists).
func (w *failoverWorld) setup(spares int) error {
	for range 6 {
		if _, err := w.newInstallation(); err != nil {
			return err
		}
	}
	const g = 3
	founders := slices.Clone(w.ids)
	for i := range g {
		var members []events.InstallationID
		for j := i; j < len(founders); j += g {
			members = append(members, founders[j])
		}
		for _, id := range w.pick(founders) {
			if len(members) >= 4 {
				break
			}
			if !slices.Contains(members, id) {
				members = append(members, id)
			}
		}
		var gid []byte
		if err := w.op("create group", func(ctx context.Context) error {
			out, err := w.inst[members[0]].CreateGroup(ctx, nil)
			if err == nil {
				gid = out.GroupID
				w.lagged("create group", out.ProjectionErr)
			}
			return err
		}); err != nil {
			return err
		}
		grp := &failoverGroup{id: gid, members: members[:1]}
		w.grps = append(w.grps, grp)
		if err := w.add(grp, members[0], members[1:]); err != nil {
			return err
		}
	}
	for range spares {
		id, err := w.newInstallation()
		if err != nil {
			return err
		}
		w.spares = append(w.spares, id)
	}
	return nil
}

// pick returns ids in a random order.
func (w *failoverWorld) pick(ids []events.InstallationID) []events.InstallationID {
	ids = slices.Clone(ids)
	w.rng.Shuffle(len(ids), func(i, j int) { ids[i], ids[j] = ids[j], ids[i] })
	return ids
}

// run is the workload: a step at a time until stop is closed.
func (w *failoverWorld) run(stop <-chan struct{}) {
	for {
		select {
		case <-stop:
			return
		default:
		}
		w.step()
	}
}

// step is one unit of the demo's conversation: mostly a message (one in
// ten ephemeral, expired undelivered), every eighth a path update, every
// twenty-fifth a member replaced by a spare installation.
func (w *failoverWorld) step() {
	w.steps++
	g := w.grps[w.rng.IntN(len(w.grps))]
	switch {
	case w.steps%25 == 0:
		w.replaceMember(g)
	case w.steps%8 == 0:
		w.update(g)
	default:
		from := g.members[w.rng.IntN(len(g.members))]
		w.send(g, from, w.steps%10 == 9)
	}
}

// update has a random member of the group commit a path update.
func (w *failoverWorld) update(g *failoverGroup) {
	by := g.members[w.rng.IntN(len(g.members))]
	var co *engine.CommitOutput
	if w.op("update", func(ctx context.Context) (err error) {
		co, err = w.inst[by].Update(ctx, g.id)
		return err
	}) == nil {
		w.lagged("update", co.ProjectionErr)
		w.deliverCommit(co)
	}
}

// send has from send a message to the group, fans it out and drains the
// recipients' queues.
func (w *failoverWorld) send(g *failoverGroup, from events.InstallationID, ephemeral bool) {
	var out *engine.SendOutput
	err := w.op("send", func(ctx context.Context) (err error) {
		out, err = w.inst[from].Send(ctx, g.id, fmt.Appendf(nil, "step %d from %s", w.steps, from), nil)
		return err
	})
	if out != nil && out.Update != nil { // recorded even when the message failed
		w.lagged("send's update", out.Update.ProjectionErr)
		w.deliverCommit(out.Update)
	}
	if err != nil {
		return
	}
	w.lagged("send", out.ProjectionErr)
	w.sent = append(w.sent, failoverSent{group: g.id, id: out.MessageID, sender: from, recipients: out.Recipients, ephemeral: ephemeral})
	var expires time.Time
	if ephemeral {
		expires = time.Now()
	}
	w.fanOut(out.Recipients, out.Message, expires, fmt.Sprintf("msg-%x", out.MessageID))
	if ephemeral {
		for _, id := range out.Recipients {
			_ = w.op("expire", func(ctx context.Context) error {
				_, err := w.del.Expire(ctx, id, failoverChannel)
				return err
			})
		}
	}
	for _, id := range out.Recipients {
		_ = w.drain(id)
	}
}

// fanOut enqueues payload for every recipient, again (it is idempotent by
// key) until it succeeds, a few times at most.
func (w *failoverWorld) fanOut(recipients []events.InstallationID, payload []byte, expires time.Time, key string) {
	for range 5 {
		if w.op("fan-out", func(ctx context.Context) error {
			_, err := w.del.FanOut(ctx, recipients, failoverChannel, payload, expires, key)
			return err
		}) == nil {
			return
		}
	}
}

func (w *failoverWorld) deliverCommit(co *engine.CommitOutput) {
	w.fanOut(co.Recipients, co.Commit, time.Time{}, fmt.Sprintf("commit-%x-%d", co.GroupID, co.Epoch))
	if co.Welcome != nil {
		w.fanOut(co.Added, co.Welcome, time.Time{}, fmt.Sprintf("welcome-%x-%d", co.GroupID, co.Epoch))
	}
	for _, id := range append(slices.Clone(co.Recipients), co.Added...) {
		_ = w.drain(id)
	}
}

// add has by add newcomers to the group from key packages they publish.
func (w *failoverWorld) add(g *failoverGroup, by events.InstallationID, newcomers []events.InstallationID) error {
	kps := make([][]byte, 0, len(newcomers))
	for _, id := range newcomers {
		if err := w.op("publish key package", func(ctx context.Context) error {
			out, err := w.inst[id].PublishKeyPackage(ctx, "directory", true)
			if err == nil {
				w.lagged("publish key package", out.ProjectionErr)
				kps = append(kps, out.KeyPackage)
			}
			return err
		}); err != nil {
			return err
		}
	}
	var co *engine.CommitOutput
	if err := w.op("add members", func(ctx context.Context) (err error) {
		co, err = w.inst[by].AddMembers(ctx, g.id, kps...)
		return err
	}); err != nil {
		return err
	}
	w.lagged("add members", co.ProjectionErr)
	g.members = append(g.members, newcomers...)
	w.deliverCommit(co)
	return nil
}

// replaceMember removes the group's newest member and adds a spare
// installation in its place (a removed member cannot rejoin). Without
// spares left it commits a path update instead.
func (w *failoverWorld) replaceMember(g *failoverGroup) {
	if len(g.members) < 3 || len(w.spares) == 0 {
		w.update(g)
		return
	}
	by, who := g.members[0], g.members[len(g.members)-1]
	var co *engine.CommitOutput
	if w.op("remove member", func(ctx context.Context) (err error) {
		co, err = w.inst[by].RemoveMembers(ctx, g.id, who)
		return err
	}) != nil {
		return
	}
	w.lagged("remove member", co.ProjectionErr)
	g.members = slices.DeleteFunc(g.members, func(id events.InstallationID) bool { return id == who })
	w.deliverCommit(co)
	id := w.spares[0]
	w.spares = w.spares[1:]
	w.replaced++
	_ = w.add(g, by, []events.InstallationID{id})
}

// drain hands id its queued messages in order and acknowledges the ones
// processed. A delivery handed out before (its acknowledgement, or its
// receipt's answer, was lost) is refused as a duplicate: that is the
// engine's answer to a redelivery, and it is acknowledged.
func (w *failoverWorld) drain(id events.InstallationID) error {
	var ds []engine.Delivery
	if err := w.op("fetch", func(ctx context.Context) (err error) {
		ds, err = w.del.Fetch(ctx, id, failoverChannel, 0)
		return err
	}); err != nil {
		return err
	}
	var last uint64
	var failed error
	for _, d := range ds {
		k := failoverDelivery{id, d.Seq}
		again := w.seen[k]
		w.seen[k] = true
		failed = w.op("receive", func(ctx context.Context) error {
			r, err := w.inst[id].Receive(ctx, d.Payload)
			if again && errors.Is(err, engine.ErrDuplicateMessage) {
				return nil
			}
			if err == nil {
				w.lagged("receive", r.ProjectionErr)
			}
			return err
		})
		if failed != nil {
			break // the rest waits: a queue is processed in order
		}
		last = d.Seq
	}
	if last > 0 {
		if err := w.op("acknowledge", func(ctx context.Context) error {
			return w.del.Acknowledge(ctx, id, failoverChannel, last)
		}); err != nil {
			return err
		}
	}
	return failed
}

// drainAll drains every queue until none has anything left.
func (w *failoverWorld) drainAll() error {
	for pass := 0; pass < 5; pass++ {
		left := 0
		for _, id := range w.ids {
			if err := w.drain(id); err != nil {
				left++
			}
		}
		ctx, cancel := context.WithTimeout(context.Background(), failoverOpTimeout)
		for _, id := range w.ids {
			ds, err := w.del.Fetch(ctx, id, failoverChannel, 0)
			if err != nil {
				cancel()
				return err
			}
			left += len(ds)
		}
		cancel()
		if left == 0 {
			return nil
		}
	}
	return errors.New("deliveries still pending after 5 passes")
}

// check verifies the end state and returns how many messages were lost
// and how many events or messages are there twice. It reports every
// discrepancy as a test error.
func (w *failoverWorld) check() (lost, duplicated int) {
	t := w.t
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
	defer cancel()

	// Every read model equals a replay of its history (the file checked,
	// a fresh replay compared row by row).
	for _, id := range w.ids {
		if err := w.inst[id].CatchUp(ctx); err != nil {
			t.Errorf("catch up %s: %v", id, err)
			continue
		}
		if _, err := replay.Verify(ctx, w.log, id, w.dbPath(id), w.keys[id], nil); err != nil {
			t.Errorf("read model of %s differs from its replay: %v", id, err)
		}
		if _, err := replay.VerifyMLS(ctx, w.log, id); err != nil {
			t.Errorf("MLS history of %s: %v", id, err)
		}
	}

	// No fork: the members of a group agree on every epoch they went
	// through (its epoch authenticator), and the current ones on the
	// current epoch.
	for _, g := range w.grps {
		auth := map[uint64]string{}
		var current uint64
		for _, id := range w.ids {
			eps, err := w.inst[id].DB().Epochs(ctx, g.id)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range eps {
				a := hex.EncodeToString(e.EpochAuthenticator)
				if prev, ok := auth[e.Epoch]; ok && prev != a {
					t.Errorf("group %x epoch %d: %s holds another epoch authenticator than an earlier member: a fork", g.id, e.Epoch, id)
				}
				auth[e.Epoch] = a
			}
			if slices.Contains(g.members, id) {
				ep, err := w.inst[id].Epoch(ctx, g.id)
				if err != nil {
					t.Errorf("epoch of group %x at %s: %v", g.id, id, err)
				} else if current == 0 {
					current = ep
				} else if ep != current {
					t.Errorf("group %x: %s is at epoch %d, another member at %d", g.id, id, ep, current)
				}
			}
		}
	}

	// What the read models hold: every message each installation sent or
	// received, by group.
	type msgKey struct {
		inst  events.InstallationID
		group string
		id    string
	}
	held := map[msgKey]int{}
	for _, id := range w.ids {
		db := w.inst[id].DB()
		gs, err := db.Groups(ctx)
		if err != nil {
			t.Fatal(err)
		}
		for _, g := range gs {
			p := projections.Page{Limit: 1000}
			for {
				page, err := db.Messages(ctx, g.ID, p)
				if err != nil {
					t.Fatal(err)
				}
				for _, m := range page.Messages {
					held[msgKey{id, hex.EncodeToString(g.ID), hex.EncodeToString(m.ID)}]++
				}
				if page.Next == 0 {
					break
				}
				p.Before = page.Next
			}
		}
	}
	want := map[msgKey]bool{}
	for _, s := range w.sent {
		gk, mk := hex.EncodeToString(s.group), hex.EncodeToString(s.id)
		want[msgKey{s.sender, gk, mk}] = true
		if s.ephemeral {
			continue
		}
		for _, r := range s.recipients {
			want[msgKey{r, gk, mk}] = true
		}
	}
	for k := range want {
		switch n := held[k]; {
		case n == 0:
			lost++
			t.Errorf("message %s of group %.16s… is missing from %s's read model", k.id, k.group, k.inst)
		case n > 1:
			duplicated += n - 1
			t.Errorf("message %s of group %.16s… is %d times in %s's read model", k.id, k.group, n, k.inst)
		}
	}
	for k, n := range held {
		if !want[k] {
			duplicated += n
			t.Errorf("%s's read model holds message %s of group %.16s…, which was not sent to it (%d times)", k.inst, k.id, k.group, n)
		}
	}

	// The stream: each message recorded once by its sender and once by each
	// recipient, each enqueue once per idempotency key.
	var sentEv, recvEv, enqEv int
	evs := map[string]int{}
	err := w.log.ReadInstallations(ctx, w.ids, 0, func(r eventlog.Record) error {
		var k string
		switch b := r.Event.Body.(type) {
		case events.ApplicationMessageSent:
			sentEv++
			k = fmt.Sprintf("sent %s %x %x", b.Sender, b.GroupID, b.MessageID)
		case *events.ApplicationMessageSent:
			sentEv++
			k = fmt.Sprintf("sent %s %x %x", b.Sender, b.GroupID, b.MessageID)
		case events.ApplicationMessageReceived:
			recvEv++
			k = fmt.Sprintf("received %s %x %x", r.Event.Aggregate.Installation, b.GroupID, b.MessageID)
		case *events.ApplicationMessageReceived:
			recvEv++
			k = fmt.Sprintf("received %s %x %x", r.Event.Aggregate.Installation, b.GroupID, b.MessageID)
		case events.DeliveryEnqueued:
			enqEv++
			k = fmt.Sprintf("enqueued %s/%s %s", b.Recipient, b.Channel, b.IdempotencyKey)
		case *events.DeliveryEnqueued:
			enqEv++
			k = fmt.Sprintf("enqueued %s/%s %s", b.Recipient, b.Channel, b.IdempotencyKey)
		default:
			return nil
		}
		evs[k]++
		return nil
	})
	if err != nil {
		t.Errorf("read the stream: %v", err)
	}
	for k, n := range evs {
		if n > 1 {
			duplicated += n - 1
			t.Errorf("%d events on the stream for %s", n, k)
		}
	}
	wantRecv := 0
	for _, s := range w.sent {
		if !s.ephemeral {
			wantRecv += len(s.recipients)
		}
	}
	if sentEv != len(w.sent) || recvEv != wantRecv {
		t.Errorf("stream: %d message_sent and %d message_received events, want %d and %d", sentEv, recvEv, len(w.sent), wantRecv)
	}
	t.Logf("stream: %d messages sent, %d received, %d enqueued", sentEv, recvEv, enqEv)

	// Every queue acknowledged, as a fresh delivery service loads it from
	// the log, and as each read model projects it.
	fresh := engine.NewDeliveries(w.log, nil)
	for _, id := range w.ids {
		ds, err := fresh.Fetch(ctx, id, failoverChannel, 0)
		if err != nil {
			t.Errorf("fetch %s from a fresh delivery service: %v", id, err)
		} else if len(ds) != 0 {
			t.Errorf("%s: %d deliveries not acknowledged (first seq %d)", id, len(ds), ds[0].Seq)
		}
		pending, err := w.inst[id].DB().PendingDeliveries(ctx, id, failoverChannel, 0, 100)
		if err != nil {
			t.Errorf("pending deliveries of %s: %v", id, err)
		} else if len(pending) != 0 {
			t.Errorf("%s's read model: %d deliveries pending", id, len(pending))
		}
	}
	return lost, duplicated
}
