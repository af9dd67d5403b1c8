package engine

import (
	"context"
	"crypto/rand"
	"fmt"
	"os"
	"path/filepath"
	"runtime/pprof"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// envE2E1000 enables the 1,000-member group of BenchmarkE2E: its setup
// alone (1,000 installations, a commit adding 999 members, 999 Welcomes
// processed) takes minutes.
const envE2E1000 = "EPOCHLOG_BENCH_E2E_1000"

// BenchmarkE2E measures application messages through the whole path for
// groups of 2, 100 and (with $EPOCHLOG_BENCH_E2E_1000 set) 1,000
// installations: one member sends, the message is fanned out to every
// other member's delivery queue, each of them fetches it, receives it
// (decrypt, record, project into its own SQLCipher read model) and
// acknowledges it, and every read model is projected. It runs as a
// service with an engine.Host would, with a backlog of up to e2eWindow
// messages (runHost). One op is one message delivered to all the others.
// Besides msgs/s, deliveries/s and the process's CPU time per message it
// reports of-parts: the raw building blocks of the same messages,
// measured in the same run on the same server (e2e_parts_bench_test.go),
// divided by the time the path took.
//
// It runs with SQLCipher's cipher_memory_security OFF (SQLCipher's own
// default, the replayer's) and ON (this build's default); see
// projections.SetMemorySecurity.
func BenchmarkE2E(b *testing.B) {
	sizes := []int{2, 100}
	if os.Getenv(envE2E1000) != "" {
		sizes = append(sizes, 1000)
	}
	for _, on := range []bool{false, true} {
		b.Run(fmt.Sprintf("memsec=%v", on), func(b *testing.B) {
			withMemorySecurity(b, on)
			for _, n := range sizes {
				b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) { benchGroup(b, n) })
			}
		})
	}
}

// BenchmarkE2EOneByOne is BenchmarkE2E's path one call at a time, as
// examples/backend drives it: Send, FanOut, then for each recipient in
// turn Fetch, Receive and Acknowledge. It is the baseline the batched
// path is compared with, in the same run (members 2 and 100, memory
// security OFF).
func BenchmarkE2EOneByOne(b *testing.B) {
	withMemorySecurity(b, false)
	for _, n := range []int{2, 100} {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			e := newE2EEnv(b, n)
			e.run(b, e.runOneByOne)
		})
	}
}

// BenchmarkE2EGroup100 is BenchmarkE2E for the group of 100 alone, with
// memory security ON and OFF.
func BenchmarkE2EGroup100(b *testing.B) {
	for _, on := range []bool{true, false} {
		b.Run(fmt.Sprintf("memsec=%v", on), func(b *testing.B) {
			withMemorySecurity(b, on)
			benchGroup(b, 100)
		})
	}
}

// withMemorySecurity sets SQLCipher's cipher_memory_security for b and
// what it runs, and restores it after b's cleanups (the installations'
// databases are closed by then).
func withMemorySecurity(b *testing.B, on bool) {
	b.Helper()
	prev, err := projections.MemorySecurity()
	if err != nil {
		b.Fatal(err)
	}
	if err := projections.SetMemorySecurity(on); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = projections.SetMemorySecurity(prev) })
}

// benchGroup runs the end-to-end path for a group of size members
// through a Host (runHost) and reports msgs/s, deliveries/s and of-parts.
func benchGroup(b *testing.B, size int) {
	e := newE2EEnv(b, size)
	e.runHost(b)
}

// envE2EWindow overrides e2eWindow.
const envE2EWindow = "EPOCHLOG_BENCH_E2E_WINDOW"

// e2eWindow is how many messages runHost lets the sender run ahead of the
// slowest recipient (default 128; $EPOCHLOG_BENCH_E2E_WINDOW): the
// backlog a busy service works through in batches.
func e2eWindow(b *testing.B) int {
	if s := os.Getenv(envE2EWindow); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("$%s=%q: want a positive number", envE2EWindow, s)
		}
		return n
	}
	return 128
}

// runHost runs the loop as a service with a Host would: one goroutine
// sends bursts of window/2 messages or more (Host.Send), another fans
// each burst out in turn (Deliveries.FanOutMany) while the next is sent,
// a third delivers whatever is queued to every recipient (Host.Deliver:
// fetch, receive, acknowledge). Iteration i of b.Loop admits message
// i+window and waits until message i reached every recipient: at most
// window messages are in flight, a burst goes as soon as the window has
// room for all of it, and the time per iteration is the time per message
// in steady state. Every recipient must receive every message once, in
// order, and every read model must hold it (no ProjectionErr).
func (e *e2eEnv) runHost(b *testing.B) {
	ctx := context.Background()
	window := e2eWindow(b)
	burst := max(1, window/2)
	h := NewHost(e.be.log, e.be.del, nil)
	sender, recips := e.be.insts[e.ids[0]], e.recipients()
	base := e.sent
	next := make([]int, len(recips)) // per recipient: the next message it must receive
	var (
		mu                        sync.Mutex
		cond                      = sync.NewCond(&mu)
		admitted, sent, delivered int
		stopping, producerDone    bool
		failure                   error
	)
	fail := func(err error) {
		mu.Lock()
		if failure == nil {
			failure = err
		}
		cond.Broadcast()
		mu.Unlock()
	}
	var wg sync.WaitGroup
	wg.Add(3)
	bursts := make(chan []FanOutItem, window)
	go func() { // the sending side
		defer wg.Done()
		defer close(bursts)
		next := 0 // the next message to send
		for {
			mu.Lock()
			for !stopping && failure == nil && admitted-next < burst {
				cond.Wait()
			}
			if stopping || failure != nil {
				mu.Unlock()
				return
			}
			from, k := next, min(admitted-next, window)
			mu.Unlock()
			reqs := make([]SendRequest, k)
			for j := range reqs {
				reqs[j] = SendRequest{Installation: sender, GroupID: e.gid, Content: []byte(fmt.Sprintf("message %d", base+from+j))}
			}
			items := make([]FanOutItem, k)
			for j, r := range h.Send(ctx, reqs) {
				if r.Err != nil || r.Output.Update != nil || r.Output.ProjectionErr != nil {
					fail(fmt.Errorf("send %d: %+v", base+from+j, r))
					return
				}
				items[j] = FanOutItem{Recipients: r.Output.Recipients, Channel: mlsChannel, Payload: r.Output.Message, IdempotencyKey: fmt.Sprintf("msg-%x", r.Output.MessageID)}
			}
			next += k
			bursts <- items
		}
	}()
	go func() { // fan-out, in send order, while the next burst is sent
		defer wg.Done()
		defer func() { mu.Lock(); producerDone = true; cond.Broadcast(); mu.Unlock() }()
		for items := range bursts {
			if _, err := e.be.del.FanOutMany(ctx, items); err != nil {
				fail(fmt.Errorf("fan out: %w", err))
				return
			}
			mu.Lock()
			sent += len(items)
			cond.Broadcast()
			mu.Unlock()
		}
	}()
	go func() { // the delivering side
		defer wg.Done()
		for {
			mu.Lock()
			for failure == nil && delivered == sent && !producerDone {
				cond.Wait()
			}
			if failure != nil || (producerDone && delivered == sent) {
				mu.Unlock()
				return
			}
			mu.Unlock()
			low := -1
			for i, r := range h.Deliver(ctx, mlsChannel, recips, 0) {
				if r.Err != nil {
					fail(fmt.Errorf("deliver to %s: %w", r.Installation, r.Err))
					return
				}
				for _, d := range r.Delivered {
					want := fmt.Sprintf("message %d", base+next[i])
					if d.Err != nil || d.Received.ProjectionErr != nil || string(d.Received.Content.Bytes()) != want {
						fail(fmt.Errorf("%s: delivery %d: got %+v, want %q", r.Installation, d.Delivery.Seq, d, want))
						return
					}
					next[i]++
				}
				if low < 0 || next[i] < low {
					low = next[i]
				}
			}
			mu.Lock()
			delivered = low
			cond.Broadcast()
			mu.Unlock()
		}
	}()
	defer func() {
		mu.Lock()
		stopping = true
		cond.Broadcast()
		mu.Unlock()
		wg.Wait()
		e.sent = base + sent
	}()
	check := func() {
		if failure != nil {
			err := failure
			mu.Unlock()
			b.Fatal(err)
		}
	}
	b.ReportAllocs()
	first := e.sent
	m := e.mark(b)
	stopProfile := e2eProfile(b)
	cpu0 := processCPU()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		mu.Lock()
		admitted = max(admitted, n+1+window)
		cond.Broadcast()
		for delivered <= n && failure == nil {
			cond.Wait()
		}
		check()
		mu.Unlock()
		n++
	}
	perMsg := b.Elapsed() / time.Duration(n)
	cpu := processCPU() - cpu0
	stopProfile()
	// Drain what is in flight (untimed): its messages count in the parts.
	mu.Lock()
	stopping = true
	cond.Broadcast()
	mu.Unlock()
	wg.Wait()
	mu.Lock()
	check()
	mu.Unlock()
	e.sent = base + sent
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(n*(len(e.ids)-1))/b.Elapsed().Seconds(), "deliveries/s")
	b.ReportMetric(float64(cpu.Microseconds())/float64(n), "cpu-µs/msg")
	reportParts(b, e.measureParts(b, m, e.sent-first), e.sent-first, perMsg)
}

// e2eEnv is a group of installations on one backend, set up for the
// end-to-end benchmarks.
type e2eEnv struct {
	be          *backend
	cfg         eventlog.Config         // the Log's configuration
	ids         []events.InstallationID // ids[0] sends
	gid         []byte
	rawKeys     map[events.InstallationID][]byte
	byPseudonym map[string]events.InstallationID
	nc          *nats.Conn
	js          jetstream.JetStream
	sent        int // messages sent so far
	rawStreams  int
}

// newE2EEnv creates size installations with a group holding all of them,
// every Welcome and commit delivered.
func newE2EEnv(b *testing.B, size int) *e2eEnv {
	b.Helper()
	ctx := context.Background()
	e := &e2eEnv{rawKeys: map[events.InstallationID][]byte{}, byPseudonym: map[string]events.InstallationID{}}
	e.be, e.cfg = e2eBackend(b, size)
	be := e.be
	var err error
	if e.nc, err = nats.Connect(e.cfg.NATSURL); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(e.nc.Close)
	if e.js, err = jetstream.New(e.nc); err != nil {
		b.Fatal(err)
	}
	for i := range size {
		id := events.InstallationID(fmt.Sprintf("member-%04d", i))
		raw := make([]byte, projections.KeySize)
		if _, err := rand.Read(raw); err != nil {
			b.Fatal(err)
		}
		k, err := projections.RawKey(raw)
		if err != nil {
			b.Fatal(err)
		}
		in, err := CreateInstallation(ctx, be.log, id, be.dbPath(id), k, be.opts())
		if err != nil {
			b.Fatalf("create %s: %v", id, err)
		}
		be.insts[id], be.keys[id], e.rawKeys[id] = in, k, raw
		f, err := be.log.InstallationFilter(id)
		if err != nil {
			b.Fatal(err)
		}
		e.byPseudonym[strings.Split(f, ".")[1]] = id
		e.ids = append(e.ids, id)
	}
	created, err := be.insts[e.ids[0]].CreateGroup(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	e.gid = created.GroupID
	var kps [][]byte
	for _, id := range e.ids[1:] {
		kps = append(kps, be.keyPackage(id))
	}
	co, err := be.insts[e.ids[0]].AddMembers(ctx, e.gid, kps...)
	if err != nil {
		b.Fatal(err)
	}
	be.deliverCommit(co)
	// Welcomes processed in parallel (Host.Deliver hands each to
	// Installation.Receive, several installations at once).
	for _, r := range NewHost(be.log, be.del, nil).Deliver(ctx, mlsChannel, e.recipients(), 0) {
		if r.Err != nil || len(r.Delivered) != 1 || r.Delivered[0].Err != nil {
			b.Fatalf("%s: welcome: %+v", r.Installation, r)
		}
	}
	return e
}

// envE2EProfile names a file to write a CPU profile of BenchmarkE2E's
// timed loop to (setup and parts left out, which -cpuprofile takes in).
const envE2EProfile = "EPOCHLOG_BENCH_E2E_PROFILE"

// e2eProfile starts the profile of $EPOCHLOG_BENCH_E2E_PROFILE, if set,
// and returns what stops it.
func e2eProfile(b *testing.B) (stop func()) {
	path := os.Getenv(envE2EProfile)
	if path == "" {
		return func() {}
	}
	f, err := os.Create(path)
	if err != nil {
		b.Fatal(err)
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		b.Fatal(err)
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}
}

// processCPU is the CPU time this process (the engine and the in-process
// server) has used, user and system.
func processCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// e2eBackend is the backend of a group of size installations: the
// tests' (an in-process server, natstest) for groups under 1,000, and for
// the group of 1,000 a server started here with a larger store. Its
// limits are nats-server's defaults: a Welcome is one event whatever the
// group's size (it lists the members; before, a Welcome to n members was
// n+1 events in one atomic batch, past the default limit of 1,000).
func e2eBackend(b *testing.B, size int) (*backend, eventlog.Config) {
	b.Helper()
	if size < eventlog.DefaultMaxBatch {
		be := newBackend(b)
		return be, testConfig(be.srv)
	}
	opts := &server.Options{
		ServerName: "e2e", Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: filepath.Join(b.TempDir(), "jetstream"), NoLog: true, NoSigs: true,
		JetStreamMaxMemory: 256 << 20, JetStreamMaxStore: 16 << 30,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		b.Fatal(err)
	}
	go srv.Start()
	if !srv.ReadyForConnections(30 * time.Second) {
		b.Fatal("nats-server not ready")
	}
	b.Cleanup(func() { srv.Shutdown(); srv.WaitForShutdown() })
	cfg := eventlog.Config{NATSURL: srv.ClientURL(), RequestTimeout: 5 * time.Second, ReconnectWait: 20 * time.Millisecond}
	ring := keyring(b, 1, 0x42)
	l, err := eventlog.Open(context.Background(), cfg, ring)
	if err != nil {
		b.Fatal(err)
	}
	be := &backend{t: b, ring: ring, dir: b.TempDir(), log: l,
		insts: map[events.InstallationID]*Installation{}, keys: map[events.InstallationID]projections.Key{},
		now: time.Date(2026, 11, 23, 4, 0, 0, 0, time.UTC)}
	be.del = NewDeliveries(l, be.clock)
	b.Cleanup(be.close)
	return be, cfg
}

// recipients are the installations other than the sender.
func (e *e2eEnv) recipients() []*Installation {
	out := make([]*Installation, 0, len(e.ids)-1)
	for _, id := range e.ids[1:] {
		out = append(out, e.be.insts[id])
	}
	return out
}

// runOneByOne is one iteration of BenchmarkE2EOneByOne's loop: one
// message sent, fanned out, then fetched, received and acknowledged by
// each recipient in turn.
func (e *e2eEnv) runOneByOne(b *testing.B) {
	out := e.be.send(e.ids[0], e.gid, fmt.Sprintf("message %d", e.sent))
	e.sent++
	if len(out.Recipients) != len(e.ids)-1 {
		b.Fatalf("%d recipients", len(out.Recipients))
	}
	for _, r := range out.Recipients {
		if got := e.be.drain(r); len(got) != 1 {
			b.Fatalf("%s received %d", r, len(got))
		}
	}
}

// run times iteration (one message each) under b.Loop, then measures the
// raw building blocks of the same messages and reports them.
func (e *e2eEnv) run(b *testing.B, iteration func(b *testing.B)) {
	m := e.mark(b)
	first := e.sent
	b.ReportAllocs()
	b.ResetTimer()
	n := 0
	for b.Loop() {
		iteration(b)
		n++
	}
	perMsg := b.Elapsed() / time.Duration(n)
	b.ReportMetric(float64(n)/b.Elapsed().Seconds(), "msgs/s")
	b.ReportMetric(float64(n*(len(e.ids)-1))/b.Elapsed().Seconds(), "deliveries/s")
	reportParts(b, e.measureParts(b, m, e.sent-first), e.sent-first, perMsg)
}

// rebuildMessages is the size of the installation BenchmarkE2ERebuild
// replays.
const rebuildMessages = 100_000

// BenchmarkE2ERebuild measures rebuilding an installation's read model
// from scratch: its group with rebuildMessages real MLS application
// messages (sealed by the group, recorded as application.message_sent),
// replayed from the log into a fresh SQLCipher database. The events are
// loaded with AppendBulk, since the append path is not what is measured.
func BenchmarkE2ERebuild(b *testing.B) {
	ctx := context.Background()
	be := newBackend(b)
	in := be.create(alice)
	other := be.create(bob)
	created, err := in.CreateGroup(ctx, nil)
	if err != nil {
		b.Fatal(err)
	}
	gid := created.GroupID
	co, err := in.AddMembers(ctx, gid, be.keyPackage(bob))
	if err != nil {
		b.Fatal(err)
	}
	if _, err := other.Receive(ctx, co.Welcome); err != nil {
		b.Fatal(err)
	}
	in.mu.Lock()
	gs, err := in.loadGroup(ctx, gid)
	in.mu.Unlock()
	if err != nil {
		b.Fatal(err)
	}
	g, pos := gs.g, gs.pos
	agg := in.groupAgg(gid)
	var ts []eventlog.Transition
	var batch []events.Event
	t0 := be.now
	for i := 0; i < rebuildMessages; i++ {
		content := []byte(fmt.Sprintf("message %d with some ordinary length text", i))
		ng, msg, err := g.SealApplication(content, nil)
		if err != nil {
			b.Fatal(err)
		}
		wire, _ := msg.Marshal()
		g = ng
		pos++
		batch = append(batch, events.Event{Aggregate: agg, Position: pos, Time: t0.Add(time.Duration(i) * time.Millisecond), Body: events.ApplicationMessageSent{
			GroupID: gid, Epoch: g.Epoch(), SenderLeaf: uint32(g.LeafIndex()), Sender: alice, MessageID: messageID(wire), Content: events.NewSecret(content)}})
		if len(batch) == 1000 {
			ts = append(ts, eventlog.Transition{Expected: pos - uint64(len(batch)), Events: batch})
			batch = nil
		}
	}
	if len(batch) > 0 {
		ts = append(ts, eventlog.Transition{Expected: pos - uint64(len(batch)), Events: batch})
	}
	if _, err := be.log.AppendBulk(ctx, ts); err != nil {
		b.Fatal(err)
	}
	if err := in.CatchUp(ctx); err != nil {
		b.Fatal(err)
	}
	live, err := in.DB().Digest(ctx)
	if err != nil {
		b.Fatal(err)
	}
	dir := b.TempDir()
	b.ResetTimer()
	var n int
	for i := 0; b.Loop(); i++ {
		k, _ := projections.GenerateRawKey()
		fresh, err := projections.Open(filepath.Join(dir, fmt.Sprintf("rebuild-%d.db", i)), k, nil)
		if err != nil {
			b.Fatal(err)
		}
		if n, _, err = replay.CatchUp(ctx, be.log, alice, fresh, nil); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		got, err := fresh.Digest(ctx)
		if err != nil || !got.Equal(live) {
			b.Fatalf("rebuilt read model differs from the live one (%v)", err)
		}
		fresh.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(n), "events")
	b.ReportMetric(float64(n)*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}
