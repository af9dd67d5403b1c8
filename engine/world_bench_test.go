package engine

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// envWorld sets how many installations BenchmarkWorld's world holds
// (default 1,000; the figure is 10,000, whose world takes minutes
// to build).
const envWorld = "EPOCHLOG_BENCH_WORLD"

// benchWorld is a process's worth of installations on one Log: each
// created, with a group of its own to send to, and closed: idle, its
// read model on disk.
type benchWorld struct {
	log    *eventlog.Log
	del    *Deliveries
	dir    string
	ids    []events.InstallationID
	groups map[events.InstallationID][]byte
	built  time.Duration
}

// worldKey derives an installation's read model key from its id, so the
// world keeps no key per installation (a KeyFunc as a KMS-backed service
// would have one).
func worldKey(_ context.Context, id events.InstallationID) (projections.Key, error) {
	h := sha256.Sum256([]byte("epochlog world bench key\x00" + string(id)))
	return projections.RawKey(h[:])
}

func worldID(i int) events.InstallationID { return events.InstallationID(fmt.Sprintf("w%05d", i)) }

func (w *benchWorld) path(id events.InstallationID) string {
	return filepath.Join(w.dir, "rm", string(id)+".db")
}

// worldSize reads $EPOCHLOG_BENCH_WORLD.
func worldSize(b *testing.B) int {
	if s := os.Getenv(envWorld); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			b.Fatalf("$%s=%q: want a positive number", envWorld, s)
		}
		return n
	}
	return 1000
}

// newBenchWorld builds a world of n installations: it creates them
// (installation.created, a read model each) and a group for each, a few
// at a time, and closes them. It is built once, by BenchmarkWorld, for
// every sub-benchmark and every -count run (the parent of sub-benchmarks
// runs once); its build is never timed.
func newBenchWorld(b *testing.B, n int) *benchWorld {
	b.Helper()
	start := time.Now()
	srv := natstest.Start(b, natstest.Options{})
	l, err := eventlog.Open(context.Background(), testConfig(srv), keyring(b, 1, 0x42))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = l.Close() })
	w := &benchWorld{log: l, del: NewDeliveries(l, nil), dir: b.TempDir(), groups: map[events.InstallationID][]byte{}}
	for i := range n {
		w.ids = append(w.ids, worldID(i))
	}
	ctx := context.Background()
	var mu sync.Mutex
	var next atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, 4)
	for range 4 {
		wg.Go(func() {
			for {
				i := int(next.Add(1) - 1)
				if i >= n {
					return
				}
				id := w.ids[i]
				key, _ := worldKey(ctx, id)
				in, err := CreateInstallation(ctx, l, id, w.path(id), key, nil)
				if err != nil {
					errs <- err
					return
				}
				g, err := in.CreateGroup(ctx, nil)
				if err == nil {
					err = in.Close()
				}
				if err != nil {
					errs <- fmt.Errorf("%s: %w", id, err)
					return
				}
				mu.Lock()
				w.groups[id] = g.GroupID
				mu.Unlock()
				if i > 0 && i%1000 == 0 {
					b.Logf("world: %d of %d installations created (%v)", i, n, time.Since(start).Round(time.Second))
				}
			}
		})
	}
	wg.Wait()
	select {
	case err := <-errs:
		b.Fatalf("build world: %v", err)
	default:
	}
	w.built = time.Since(start)
	b.Logf("world of %d installations built in %v", n, w.built.Round(time.Millisecond))
	return w
}

// pool returns a Pool of the world's installations, registered, and the
// function that closes it (before another Pool of the world opens its
// installations: their writer locks).
func (w *benchWorld) pool(b *testing.B, maxOpen int) (*Pool, func()) {
	b.Helper()
	p := NewPool(w.log, worldKey, &PoolOptions{MaxOpen: maxOpen, Wait: 5 * time.Minute})
	for _, id := range w.ids {
		if err := p.Register(id, w.path(id)); err != nil {
			b.Fatal(err)
		}
	}
	return p, func() {
		if err := p.Close(); err != nil {
			b.Error(err)
		}
	}
}

// warm opens ids in p.
func (w *benchWorld) warm(b *testing.B, p *Pool, ids []events.InstallationID) {
	b.Helper()
	for _, id := range ids {
		if err := p.With(context.Background(), id, func(*Installation) error { return nil }); err != nil {
			b.Fatal(err)
		}
	}
}

// send is one operation of the world: installation id sends a message
// to its group (an MLS seal, one append, one projection), through p.
func (w *benchWorld) send(ctx context.Context, p *Pool, id events.InstallationID, content []byte) error {
	return p.With(ctx, id, func(in *Installation) error {
		out, err := in.Send(ctx, w.groups[id], content, nil)
		if err == nil && out.ProjectionErr != nil {
			err = out.ProjectionErr
		}
		return err
	})
}

// openFDs counts this process's open file descriptors.
func openFDs(b *testing.B) int {
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		b.Skipf("no /proc/self/fd: %v", err)
	}
	return len(fds)
}

// rssBytes is this process's resident set (Linux: /proc/self/statm).
func rssBytes(b *testing.B) int64 {
	raw, err := os.ReadFile("/proc/self/statm")
	if err != nil {
		b.Skipf("no /proc/self/statm: %v", err)
	}
	f := strings.Fields(string(raw))
	pages, _ := strconv.ParseInt(f[1], 10, 64)
	return pages * int64(os.Getpagesize())
}

// heapAlloc is the live heap after a collection.
func heapAlloc() uint64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return ms.HeapAlloc
}

// BenchmarkWorld measures a process holding a world of many
// installations ($EPOCHLOG_BENCH_WORLD, default 1,000), most of them
// idle, through a Pool:
//
//   - idle: the heap each registered, idle installation costs (B/idle-inst,
//     its id and path strings included);
//   - evicted: the heap each installation leaves behind once it was
//     opened and evicted (B/evicted-inst, up to 1,000 of them, after a
//     first round; about 0: nothing stays behind);
//   - open: what an open, idle installation holds: file descriptors
//     (fds/open-inst), Go heap and resident memory (SQLCipher's page
//     cache lives outside the Go heap), and the process's descriptors
//     with DefaultMaxOpen open (fds);
//   - cold-op: the first operation of a cold installation: acquire (open
//     the read model, catch up, evict the least recently used at the cap)
//     and send one message; ms/cold-op, of which ms/cold-acquire;
//   - warm-op: the same operation on an open installation;
//   - throughput: sends spread across installations from 8 goroutines per
//     P at GOMAXPROCS 1, 2 and runtime.NumCPU() (the in-process server
//     shares them), over a working set that fits in the cap ("warm", 128
//     installations) and over the whole world ("spread", mostly cold at
//     the default cap), as ops/s; "host" does the same in batches of 16
//     installations (AcquireMany, one Host.Send).
func BenchmarkWorld(b *testing.B) {
	n := worldSize(b)
	w := newBenchWorld(b, n)
	ctx := context.Background()

	b.Run("idle", func(b *testing.B) {
		var perInst float64
		for i := 0; i < b.N; i++ {
			b.StopTimer()
			before := heapAlloc()
			b.StartTimer()
			p := NewPool(w.log, worldKey, nil)
			for j := range n {
				id := worldID(j) // a fresh string, as a service reading its registry would have
				if err := p.Register(id, filepath.Join(w.dir, "rm", string(id)+".db")); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			after := heapAlloc()
			perInst = float64(after-before) / float64(n)
			runtime.KeepAlive(p)
			b.StartTimer()
		}
		b.ReportMetric(perInst, "B/idle-inst")
		b.ReportMetric(0, "ns/op")
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/register")
	})

	b.Run("evicted", func(b *testing.B) {
		// Up to 1,000 installations opened once and evicted (cap 64): the
		// heap after, against the same Pool before (after a first round,
		// which warms the server's and the driver's buffers and caches).
		p, done := w.pool(b, 64)
		defer done()
		m := min(n, 1000)
		w.warm(b, p, w.ids[:m])
		before := heapAlloc()
		for b.Loop() {
			w.warm(b, p, w.ids[:m])
		}
		after := heapAlloc()
		b.ReportMetric((float64(after)-float64(before))/float64(m), "B/evicted-inst")
	})

	b.Run("open", func(b *testing.B) {
		m := min(DefaultMaxOpen, n)
		for b.Loop() {
			b.StopTimer()
			p := NewPool(w.log, worldKey, nil)
			for _, id := range w.ids {
				if err := p.Register(id, w.path(id)); err != nil {
					b.Fatal(err)
				}
			}
			fds, heap, rss := openFDs(b), heapAlloc(), rssBytes(b)
			b.StartTimer()
			for _, id := range w.ids[:m] {
				if err := p.With(ctx, id, func(*Installation) error { return nil }); err != nil {
					b.Fatal(err)
				}
			}
			b.StopTimer()
			fds2, heap2, rss2 := openFDs(b), heapAlloc(), rssBytes(b)
			b.ReportMetric(float64(fds2-fds)/float64(m), "fds/open-inst")
			b.ReportMetric(float64(fds2), "fds")
			b.ReportMetric((float64(heap2)-float64(heap))/float64(m)/1024, "heap-KiB/open-inst")
			b.ReportMetric((float64(rss2)-float64(rss))/float64(m)/1024, "RSS-KiB/open-inst")
			if err := p.Close(); err != nil {
				b.Fatal(err)
			}
			b.StartTimer()
		}
	})

	b.Run("cold-op", func(b *testing.B) {
		// Visiting the world in order with a cap below half of it finds
		// each installation cold: it was evicted since its last visit.
		maxOpen := min(DefaultMaxOpen, n/3)
		if maxOpen < 1 {
			b.Skip("world too small")
		}
		p, done := w.pool(b, maxOpen)
		defer done()
		// Fill the cap first, so every timed acquire also evicts.
		w.warm(b, p, w.ids[n-maxOpen:])
		var acquire time.Duration
		i := 0
		for b.Loop() {
			id := w.ids[i%(n-maxOpen)]
			i++
			t0 := time.Now()
			in, release, err := p.Acquire(ctx, id)
			if err != nil {
				b.Fatal(err)
			}
			acquire += time.Since(t0)
			out, err := in.Send(ctx, w.groups[id], []byte("cold"), nil)
			release()
			if err != nil || out.ProjectionErr != nil {
				b.Fatal(err, out.ProjectionErr)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(i), "ms/cold-op")
		b.ReportMetric(float64(acquire.Microseconds())/1000/float64(i), "ms/cold-acquire")
		if s := p.Stats(); s.Opens < int64(i) {
			b.Fatalf("%d opens for %d cold operations", s.Opens, i)
		}
	})

	b.Run("warm-op", func(b *testing.B) {
		p, done := w.pool(b, 64)
		defer done()
		ids := w.ids[:min(16, n)]
		w.warm(b, p, ids)
		i := 0
		for b.Loop() {
			if err := w.send(ctx, p, ids[i%len(ids)], []byte("warm")); err != nil {
				b.Fatal(err)
			}
			i++
		}
		b.ReportMetric(float64(b.Elapsed().Microseconds())/1000/float64(i), "ms/warm-op")
	})

	procs := []int{1, 2}
	if c := runtime.NumCPU(); c > 2 {
		procs = append(procs, c)
	}
	for _, set := range []string{"warm", "spread"} {
		for _, np := range procs {
			b.Run(fmt.Sprintf("throughput/%s/procs=%d", set, np), func(b *testing.B) {
				ids := w.ids
				if set == "warm" {
					ids = w.ids[:min(128, n)]
				}
				p, done := w.pool(b, DefaultMaxOpen)
				defer done()
				w.warm(b, p, w.ids[:min(DefaultMaxOpen, len(ids))])
				w.throughput(b, np, func(r *rand.Rand) error {
					return w.send(ctx, p, ids[r.IntN(len(ids))], []byte("spread"))
				})
				s := p.Stats()
				b.ReportMetric(float64(s.Opens), "opens")
			})
		}
	}
	for _, np := range procs {
		b.Run(fmt.Sprintf("throughput/host/procs=%d", np), func(b *testing.B) {
			// Batches of 16 distinct installations of the warm set: one
			// AcquireMany and one Host.Send each; an op is one message.
			const batch = 16
			ids := w.ids[:min(128, n)]
			p, done := w.pool(b, DefaultMaxOpen)
			defer done()
			w.warm(b, p, ids)
			h := NewHost(w.log, w.del, nil)
			var msgs atomic.Int64
			w.throughput(b, np, func(r *rand.Rand) error {
				pick := make([]events.InstallationID, 0, batch)
				for _, k := range r.Perm(len(ids))[:min(batch, len(ids))] {
					pick = append(pick, ids[k])
				}
				ins, release, err := p.AcquireMany(ctx, pick)
				if err != nil {
					return err
				}
				defer release()
				reqs := make([]SendRequest, len(ins))
				for i, in := range ins {
					reqs[i] = SendRequest{Installation: in, GroupID: w.groups[in.ID()], Content: []byte("host")}
				}
				for _, res := range h.Send(ctx, reqs) {
					if res.Err != nil {
						return res.Err
					}
				}
				msgs.Add(int64(len(reqs)))
				return nil
			})
			b.ReportMetric(float64(msgs.Load())/b.Elapsed().Seconds(), "msgs/s")
		})
	}
}

// throughput runs op from 8 goroutines per P at GOMAXPROCS procs and
// reports ops/s.
func (w *benchWorld) throughput(b *testing.B, procs int, op func(r *rand.Rand) error) {
	prev := runtime.GOMAXPROCS(procs)
	defer runtime.GOMAXPROCS(prev)
	b.SetParallelism(8)
	var seed atomic.Uint64
	b.ResetTimer()
	b.RunParallel(func(pb *testing.PB) {
		r := rand.New(rand.NewPCG(seed.Add(1), 42))
		for pb.Next() {
			if err := op(r); err != nil {
				b.Error(err)
				return
			}
		}
	})
	b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "ops/s")
}
