package engine

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/projections"
)

// BenchmarkMLSThroughEngine measures a commit with a path update through
// the engine against the bare mls package, in groups of 100 and 1,000
// members, in the same benchmark and on the same group states.
//
// The group has two engine installations, the committer (leaf 0, which
// created the group) and a receiver (leaf 1); the other members are bare
// mls clients (foreign peers) added by key package in one commit, so
// every parent node but the committer's path is blank, as in
// mls.BenchmarkCommitWithPath. Each iteration times, in alternating
// order:
//
//   - bare create: the committer's current mls.Group commits with a path
//     (in the engine's handshake wire format, PrivateMessage) and the
//     commit is encoded;
//   - bare process: the receiver's current mls.Group decodes and
//     processes that commit;
//   - engine create: Installation.Update, which also records the commit
//     (one atomic append to JetStream, durable before it returns) and
//     projects it into the committer's SQLCipher read model;
//   - engine process: the receiver's Installation.Receive of the
//     engine's commit, recorded and projected the same way.
//
// The bare operations work on the states the engine holds at that moment
// and their results are dropped; the engine's move the group on. Besides
// each operation's time (bare-create-ms, ...) it reports the ratios
// create-x-bare and process-x-bare (engine time / bare time, summed over
// the iterations), and process-pages: the pages a processed commit wrote
// into the receiver's read model, on average (its transaction's frames in
// the WAL, lastTxPages). The set-up (installations, key packages, the
// commit adding everyone, the receiver's Welcome and commit) is built once
// per process and group size, outside the timed region. With
// $EPOCHLOG_BENCH_MLS_10000 set it runs a group of 10,000 members too
// (a set-up of about 7 s; its commit adding everyone is 4.9 MB, which the
// benchmark's server takes as the embedded server does, max_payload 8 MiB).
func BenchmarkMLSThroughEngine(b *testing.B) {
	sizes := []int{100, 1000}
	if os.Getenv("EPOCHLOG_BENCH_MLS_10000") != "" {
		sizes = append(sizes, 10000)
	}
	for _, n := range sizes {
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			env := mlsBenchGroup(b, n, false)
			env.run(b)
		})
	}
}

// BenchmarkMLSThroughEngineR3 is BenchmarkMLSThroughEngine on a
// three-node cluster (natstest, in this process) whose stream keeps three
// replicas: each append's round trip includes the replication, as in a
// deployment, so the time the engine spends waiting for it grows, and with
// it what overlapping that wait with the read model's writing saves.
func BenchmarkMLSThroughEngineR3(b *testing.B) {
	c := natstest.StartCluster(b, 3)
	for _, n := range []int{100, 1000} {
		env := &mlsBenchEnv{size: n, url: c.URL()}
		b.Cleanup(env.close) // before the cluster's: cleanups run last first
		built := false
		b.Run(fmt.Sprintf("members=%d", n), func(b *testing.B) {
			if !built {
				start := time.Now()
				env.err, built = env.build(), true
				b.Logf("set-up of the group of %d: %v", n, time.Since(start).Round(time.Millisecond))
			}
			if env.err != nil {
				b.Fatalf("set-up of the group of %d: %v", n, env.err)
			}
			env.run(b)
		})
	}
}

// mlsBenchEnv is one group of BenchmarkMLSThroughEngine: a log on its own
// server, the committing and the receiving installation, and the group.
type mlsBenchEnv struct {
	size int
	// full: the group was grown member by member, each new member
	// committing the next one's Add with a path (BenchmarkMLSThroughEngineFullTree).
	full bool
	// url is the cluster the group's log is on (replicated three times),
	// "" for a server of its own (srv).
	url       string
	dir       string
	srv       *server.Server
	log       *eventlog.Log
	committer *Installation
	receiver  *Installation
	gid       []byte
	// err is why the set-up failed (nil: it did not).
	err error
}

// mlsBenchKey names a group of mlsBenchGroup.
type mlsBenchKey struct {
	size int
	full bool
}

var (
	mlsBenchMu   sync.Mutex
	mlsBenchEnvs = map[mlsBenchKey]*mlsBenchEnv{}
)

// mlsBenchGroup returns the process's group of size members, building it
// on first use. It outlives b: the sub-benchmark runs several times (once
// per b.N tried, and per -count), and building the group of 1,000 takes
// seconds. closeMLSBench (TestMain) removes it.
func mlsBenchGroup(b *testing.B, size int, full bool) *mlsBenchEnv {
	b.Helper()
	mlsBenchMu.Lock()
	defer mlsBenchMu.Unlock()
	key := mlsBenchKey{size, full}
	env, ok := mlsBenchEnvs[key]
	if !ok {
		env = &mlsBenchEnv{size: size, full: full}
		mlsBenchEnvs[key] = env
		start := time.Now()
		env.err = env.build()
		b.Logf("set-up of the group of %d: %v", size, time.Since(start).Round(time.Millisecond))
	}
	if env.err != nil {
		b.Fatalf("set-up of the group of %d: %v", size, env.err)
	}
	return env
}

// closeMLSBench closes and removes every group mlsBenchGroup built.
func closeMLSBench() {
	mlsBenchMu.Lock()
	defer mlsBenchMu.Unlock()
	for k, env := range mlsBenchEnvs {
		env.close()
		delete(mlsBenchEnvs, k)
	}
}

func (env *mlsBenchEnv) close() {
	for _, in := range []*Installation{env.committer, env.receiver} {
		if in != nil {
			_ = in.Close()
		}
	}
	if env.log != nil {
		_ = env.log.Close()
	}
	if env.srv != nil {
		env.srv.Shutdown()
		env.srv.WaitForShutdown()
	}
	if env.dir != "" {
		_ = os.RemoveAll(env.dir)
	}
}

// build starts a server (as natstest does: file storage, no fsync per
// write) and creates the group: the committer creates it, adds the
// receiver (whose Welcome is small), then the size-2 foreign members in
// one commit, which the receiver processes.
func (env *mlsBenchEnv) build() error {
	ctx := context.Background()
	var err error
	if env.dir, err = os.MkdirTemp("", "epochlog-mlsbench-"); err != nil {
		return err
	}
	cfg := eventlog.Config{NATSURL: env.url, RequestTimeout: 30 * time.Second, ReconnectWait: 20 * time.Millisecond}
	if env.url != "" {
		cfg.Replicas = 3
		return env.buildOn(ctx, cfg)
	}
	env.srv, err = server.NewServer(&server.Options{
		ServerName: "mlsbench", Host: "127.0.0.1", Port: server.RANDOM_PORT, JetStream: true,
		StoreDir: filepath.Join(env.dir, "jetstream"), NoLog: true, NoSigs: true,
		JetStreamMaxMemory: 256 << 20, JetStreamMaxStore: 4 << 30, MaxPayload: eventlog.EmbeddedMaxPayload,
	})
	if err != nil {
		return err
	}
	go env.srv.Start()
	if !env.srv.ReadyForConnections(30 * time.Second) {
		return fmt.Errorf("nats-server not ready")
	}
	cfg.NATSURL = env.srv.ClientURL()
	return env.buildOn(ctx, cfg)
}

// buildOn creates the group on the log of cfg.
func (env *mlsBenchEnv) buildOn(ctx context.Context, cfg eventlog.Config) error {
	ring, err := mlsBenchKeyring()
	if err != nil {
		return err
	}
	if env.log, err = eventlog.Open(ctx, cfg, ring); err != nil {
		return err
	}
	create := func(id events.InstallationID) (*Installation, error) {
		k, err := projections.GenerateRawKey()
		if err != nil {
			return nil, err
		}
		return CreateInstallation(ctx, env.log, id, filepath.Join(env.dir, string(id)+".db"), k, nil)
	}
	// One cluster's stream holds the groups of every size: the
	// installations of each are named apart.
	suffix := ""
	if env.url != "" {
		suffix = fmt.Sprintf("-%d", env.size)
	}
	if env.committer, err = create(events.InstallationID("committer" + suffix)); err != nil {
		return err
	}
	if env.receiver, err = create(events.InstallationID("receiver" + suffix)); err != nil {
		return err
	}
	created, err := env.committer.CreateGroup(ctx, nil)
	if err != nil {
		return err
	}
	env.gid = created.GroupID
	kp, err := env.receiver.PublishKeyPackage(ctx, "directory", true)
	if err != nil {
		return err
	}
	co, err := env.committer.AddMembers(ctx, env.gid, kp.KeyPackage)
	if err != nil {
		return err
	}
	if _, err := env.receiver.Receive(ctx, co.Welcome); err != nil {
		return fmt.Errorf("receiver joins: %w", err)
	}
	if env.full {
		if err := env.growOneByOne(ctx); err != nil {
			return err
		}
		return env.check()
	}
	kps, err := foreignKeyPackages(env.size - 2)
	if err != nil {
		return err
	}
	if co, err = env.committer.AddMembers(ctx, env.gid, kps...); err != nil {
		return fmt.Errorf("add %d members: %w", len(kps), err)
	}
	if _, err := env.receiver.Receive(ctx, co.Commit); err != nil {
		return fmt.Errorf("receiver processes the commit adding %d members: %w", len(kps), err)
	}
	return env.check()
}

// check makes sure both installations are at the same epoch with the
// same authenticator, their read models up to date.
func (env *mlsBenchEnv) check() error {
	ctx := context.Background()
	e1, a1, err := env.committer.EpochAuthenticator(ctx, env.gid)
	if err != nil {
		return err
	}
	e2, a2, err := env.receiver.EpochAuthenticator(ctx, env.gid)
	if err != nil {
		return err
	}
	if e1 != e2 || string(a1) != string(a2) {
		return fmt.Errorf("committer at epoch %d, receiver at epoch %d: authenticators differ", e1, e2)
	}
	return nil
}

// states returns the mls.Group each installation holds for the group
// now (the engine's cached state).
func (env *mlsBenchEnv) states(b *testing.B) (committer, receiver *mls.Group) {
	ctx := context.Background()
	for i, in := range []*Installation{env.committer, env.receiver} {
		in.mu.Lock()
		gs, err := in.loadGroup(ctx, env.gid)
		var g *mls.Group
		if err == nil {
			g, err = in.handshaking(ctx, gs.g)
		}
		in.mu.Unlock()
		if err != nil {
			b.Fatal(err)
		}
		if i == 0 {
			committer = g
		} else {
			receiver = g
		}
	}
	return committer, receiver
}

// run is one measurement: see BenchmarkMLSThroughEngine.
func (env *mlsBenchEnv) run(b *testing.B) {
	ctx := context.Background()
	var bareCreate, bareProcess, engCreate, engProcess time.Duration
	var walFrames, walCommits int64
	bare := func() {
		gc, gr := env.states(b)
		t0 := time.Now()
		_, res, err := gc.Commit(mls.CommitOptions{ForcePath: true})
		if err != nil {
			b.Fatal(err)
		}
		wire, err := res.Commit.Marshal()
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		var m mls.MLSMessage
		if err := m.Unmarshal(wire); err != nil {
			b.Fatal(err)
		}
		if _, _, err := gr.ProcessCommit(&m); err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		bareCreate += t1.Sub(t0)
		bareProcess += t2.Sub(t1)
	}
	engine := func() {
		t0 := time.Now()
		co, err := env.committer.Update(ctx, env.gid)
		if err != nil {
			b.Fatal(err)
		}
		t1 := time.Now()
		rec, err := env.receiver.Receive(ctx, co.Commit)
		if err != nil {
			b.Fatal(err)
		}
		t2 := time.Now()
		pages, err := lastTxPages(env.receiver)
		if err != nil {
			b.Fatal(err)
		}
		walFrames += int64(pages)
		walCommits++
		if co.ProjectionErr != nil || rec.ProjectionErr != nil {
			b.Fatalf("read model lags: %v, %v", co.ProjectionErr, rec.ProjectionErr)
		}
		engCreate += t1.Sub(t0)
		engProcess += t2.Sub(t1)
	}
	bytes0 := env.streamBytes(b)
	i := 0
	for b.Loop() {
		if i%2 == 0 {
			bare()
			engine()
		} else {
			engine()
			bare()
		}
		i++
	}
	// Each engine step appended two commit events: the committer's own
	// and the receiver's processed one.
	eventBytes := env.streamBytes(b) - bytes0
	if err := env.check(); err != nil {
		b.Fatal(err)
	}
	ms := func(d time.Duration) float64 { return float64(d) / float64(time.Millisecond) / float64(i) }
	b.ReportMetric(ms(bareCreate), "bare-create-ms")
	b.ReportMetric(ms(bareProcess), "bare-process-ms")
	b.ReportMetric(ms(engCreate), "engine-create-ms")
	b.ReportMetric(ms(engProcess), "engine-process-ms")
	b.ReportMetric(float64(engCreate)/float64(bareCreate), "create-x-bare")
	b.ReportMetric(float64(engProcess)/float64(bareProcess), "process-x-bare")
	gc, _ := env.states(b)
	st, err := gc.MarshalBinary()
	if err != nil {
		b.Fatal(err)
	}
	b.ReportMetric(float64(len(st))/1024, "state-KiB")
	b.ReportMetric(float64(eventBytes)/float64(2*i)/1024, "event-KiB")
	b.ReportMetric(float64(env.lastStateDelta(b))/1024, "state-delta-KiB")
	if walCommits > 0 {
		b.ReportMetric(float64(walFrames)/float64(walCommits), "process-pages")
	}
}

// streamBytes is what the log's stream stores, in bytes.
func (env *mlsBenchEnv) streamBytes(b *testing.B) uint64 {
	url := env.url
	if url == "" {
		url = env.srv.ClientURL()
	}
	nc, err := nats.Connect(url)
	if err != nil {
		b.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	st, err := js.Stream(ctx, env.log.Stream())
	if err != nil {
		b.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		b.Fatal(err)
	}
	return info.State.Bytes
}

// lastStateDelta is the size of the state delta the receiver's latest
// processed commit recorded (0: recorded whole).
func (env *mlsBenchEnv) lastStateDelta(b *testing.B) int {
	n := 0
	err := env.log.Read(context.Background(), events.InstallationID(env.receiver.id), 0, func(r eventlog.Record) error {
		if c, ok := r.Event.Body.(events.CommitApplied); ok {
			n = c.StateDelta.Len()
		}
		return nil
	})
	if err != nil {
		b.Fatal(err)
	}
	return n
}

// lastTxPages is the number of pages the last transaction committed to
// in's read model's write-ahead log: its frames after the commit frame
// before it. It reads the WAL's headers, which SQLCipher leaves clear: a
// frame is a 24-byte header (page number, the database's size in pages
// on a commit frame, 0 otherwise, and the WAL's two salts) and one page;
// a WAL started over keeps its file, so only the frames from its start
// that carry the header's salts are the current log.
func lastTxPages(in *Installation) (int, error) {
	f, err := os.Open(in.DB().Path() + "-wal")
	if err != nil {
		return 0, err
	}
	defer f.Close()
	const walHeader, frameHeader = 32, 24
	var h [walHeader]byte
	if _, err := f.ReadAt(h[:], 0); err != nil {
		return 0, fmt.Errorf("WAL header: %w", err)
	}
	pageSize := int64(binary.BigEndian.Uint32(h[8:12]))
	salts := h[16:24]
	var fh [frameHeader]byte
	lastCommit, prevCommit := -1, -1
	for i := 0; ; i++ {
		if _, err := f.ReadAt(fh[:], walHeader+int64(i)*(frameHeader+pageSize)); err != nil {
			break // the end of the file
		}
		if !bytes.Equal(fh[8:16], salts) {
			break // a frame of the log before it started over
		}
		if binary.BigEndian.Uint32(fh[4:8]) != 0 {
			prevCommit, lastCommit = lastCommit, i
		}
	}
	if lastCommit < 0 {
		return 0, errors.New("no committed frame in the WAL")
	}
	return lastCommit - prevCommit, nil
}

// TestMain runs the package's tests and benchmarks, then removes what
// the benchmarks kept for the whole process (closeMLSBench) and the
// nats-server binary the process tests built.
func TestMain(m *testing.M) {
	code := m.Run()
	closeMLSBench()
	natstest.RemoveBuiltServer()
	os.Exit(code)
}

// mlsBenchKeyring is the keyring of the benchmark's logs (root key id 1,
// every byte 0x42).
func mlsBenchKeyring() (*events.Keyring, error) {
	k, err := events.NewRootKey(bytes.Repeat([]byte{0x42}, 32))
	if err != nil {
		return nil, err
	}
	return events.NewKeyring(1, k)
}

// foreignKeyPackages returns n key packages (encoded) of bare mls clients
// named peer-00000, peer-00001, ... in the default suite: members that
// are not installations, whose private keys are thrown away.
func foreignKeyPackages(n int) ([][]byte, error) {
	cs, err := ciphersuite.Lookup(ciphersuite.Suite(DefaultCiphersuite))
	if err != nil {
		return nil, err
	}
	kps := make([][]byte, 0, n)
	for i := range n {
		sig, err := cs.GenerateSignatureKey()
		if err != nil {
			return nil, err
		}
		kp, _, err := mls.NewKeyPackage(cs.ID(), mls.NewBasicCredential(fmt.Appendf(nil, "peer-%05d", i)), sig, nil)
		if err != nil {
			return nil, err
		}
		raw, err := kp.Marshal()
		if err != nil {
			return nil, err
		}
		kps = append(kps, raw)
	}
	return kps, nil
}
