package main

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// The helpers of the byte-flip fault test (flip_test.go): a history with
// every aggregate kind written by real installations on a nats-server
// process, a pristine copy of its store, one-byte flips in the store's
// message blocks, and the CLI run against each flipped store with a hard
// deadline.

// flipCmdLimit is the hard deadline of one command. eventlog stops a read
// that makes no progress after its ProgressTimeout (60 s by default; the
// CLI has no flag to change it), so a command that outlives this deadline
// hangs.
const flipCmdLimit = 120 * time.Second

// Record layout of a nats-server file store message block
// (server/filestore.go, writeMsgRecordLocked): total_len(4) seq(8) ts(8)
// subj_len(2) subj [hdr_len(4) hdr] msg hash(8), little-endian; the high
// bit of total_len says the record has headers.
const (
	blkHdrSize  = 22
	blkHashSize = 8
	blkHdrBit   = 1 << 31
)

// flipInst is one installation of the history and its live read model as
// the pristine stream left it.
type flipInst struct {
	id      events.InstallationID
	db, key string // the live database and its raw key file
	dbKey   projections.Key
	mode    fs.FileMode
	live    []byte // the live database's bytes
	head    projections.Head
	digest  projections.Digest
	seqs    []uint64 // the stream sequences of its events
}

// streamMsg is one message of the stream as the server returns it.
type streamMsg struct {
	subject string
	data    []byte
}

// flipFixture is the pristine history: the server process, a copy of its
// store, the stream's messages, and the installations' live databases.
type flipFixture struct {
	srv      *natstest.Process
	stream   string
	pristine string // a copy of the store taken with the server down
	dbDir    string
	insts    []*flipInst
	msgs     map[uint64]streamMsg
	lastSeq  uint64
	kinds    map[uint64]events.AggregateType // the aggregate kind of each event
	blks     []string                        // the message blocks, relative to the store
	setup    time.Duration                   // writing and rebuilding the history
}

// newFlipFixture writes the history through package engine (the demo's
// world: installations, key packages, groups with commits, messages,
// removals and path updates, delivery queues with acks and expiries),
// rebuilds each installation's live database with the CLI, records the
// stream and the databases, and leaves the server stopped with a pristine
// copy of its store.
//
// With smallBlocks the stream is created with a byte limit low enough for
// the server to choose its smallest message blocks (32 kB; the limit is
// lifted before anything is written, and the running server keeps the
// block size it chose at creation), so the history spans many blocks as a
// long one would with the default 8 MB blocks; otherwise it fits in one.
func newFlipFixture(t *testing.T, ctx context.Context, smallBlocks bool, installations, groups, messages int) *flipFixture {
	t.Helper()
	began := time.Now()
	srv := natstest.StartProcess(t)
	ring, err := parseKeyring(testRingText)
	if err != nil {
		t.Fatal(err)
	}
	if smallBlocks {
		// dynBlkSize in nats-server's filestore.go: a quarter of the
		// limit, at least 32 kB.
		l, err := eventlog.Open(ctx, eventlog.Config{NATSURL: srv.URL(), MaxBytes: 100_000}, ring)
		if err != nil {
			t.Fatal(err)
		}
		l.Close()
	}
	l, err := eventlog.Open(ctx, eventlog.Config{NATSURL: srv.URL(), MaxBytes: eventlog.Unbounded}, ring)
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	f := &flipFixture{srv: srv, stream: l.Stream(), dbDir: t.TempDir(), msgs: map[uint64]streamMsg{},
		kinds: map[uint64]events.AggregateType{}}
	w := &world{
		log: l, queue: engine.NewDeliveries(l, nil), dbDir: f.dbDir,
		inst: map[events.InstallationID]*engine.Installation{},
		keys: map[events.InstallationID]projections.Key{},
		rng:  rand.New(rand.NewPCG(7, 11)),
	}
	quiet := &cliEnv{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	err = w.createInstallations(ctx, "flip", installations, nil)
	if err == nil {
		var gs []*demoGroup
		if gs, err = w.createGroups(ctx, groups); err == nil {
			err = w.converse(ctx, quiet, gs, messages)
		}
	}
	w.close()
	if err != nil {
		t.Fatal(err)
	}

	for _, id := range w.ids {
		in := &flipInst{id: id, db: w.dbPath(id), key: w.keyPath(id), dbKey: w.keys[id]}
		// The CLI brings each database up to the whole stream, delivery
		// events the queues appended for the installation included.
		if r := f.rebuild(ctx, in); r.code != 0 || r.hung {
			t.Fatalf("initial rebuild of %s: exit %d, hung %v: %s", id, r.code, r.hung, r.stderr)
		}
		if in.live, err = os.ReadFile(in.db); err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(in.db)
		if err != nil {
			t.Fatal(err)
		}
		in.mode = fi.Mode().Perm()
		if in.head, in.digest, err = headOf(ctx, in.db, in.dbKey); err != nil {
			t.Fatal(err)
		}
		err = l.Read(ctx, id, 0, func(r eventlog.Record) error {
			in.seqs = append(in.seqs, r.Seq)
			f.kinds[r.Seq] = r.Event.Aggregate.Type
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if in.head.Installation != id || in.head.Checkpoint != in.seqs[len(in.seqs)-1] {
			t.Fatalf("live database of %s: head %s at %d, want %s at %d", id, in.head.Installation, in.head.Checkpoint, id, in.seqs[len(in.seqs)-1])
		}
		f.insts = append(f.insts, in)
	}
	var unreadable int
	if f.msgs, f.lastSeq, unreadable, err = readStream(ctx, srv.URL(), f.stream); err != nil || unreadable > 0 {
		t.Fatalf("reading the stream: %v (%d unreadable messages)", err, unreadable)
	}
	if len(f.kinds) != len(f.msgs) {
		t.Fatalf("the installations' histories hold %d events, the stream %d messages", len(f.kinds), len(f.msgs))
	}

	srv.Kill()
	f.pristine = t.TempDir()
	if err := copyTree(srv.Store(), f.pristine); err != nil {
		t.Fatal(err)
	}
	err = filepath.WalkDir(filepath.Join(f.pristine, "jetstream"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && !d.IsDir() && strings.HasSuffix(p, ".blk") {
			rel, _ := filepath.Rel(f.pristine, p)
			f.blks = append(f.blks, rel)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(f.blks) == 0 {
		t.Fatalf("no message block (*.blk) under %s", filepath.Join(f.pristine, "jetstream"))
	}
	f.setup = time.Since(began)
	return f
}

// headOf opens the read model at path just long enough to read its Head
// and digest.
func headOf(ctx context.Context, path string, key projections.Key) (projections.Head, projections.Digest, error) {
	db, err := projections.OpenExisting(path, key, nil)
	if err != nil {
		return projections.Head{}, projections.Digest{}, err
	}
	defer db.Close()
	h, err := db.Head(ctx)
	if err != nil {
		return projections.Head{}, projections.Digest{}, err
	}
	d, err := db.Digest(ctx)
	return h, d, err
}

// readStream fetches every message of the stream by sequence, as a reader
// of the server sees them, and the stream's last sequence. A message the
// server or the client cannot return (headers that do not decode, say) is
// left out and counted in unreadable; err is about the stream as a whole.
func readStream(ctx context.Context, url, stream string) (msgs map[uint64]streamMsg, last uint64, unreadable int, err error) {
	// Silent: a message whose headers do not decode is counted below, not
	// printed by nats.go's default handler.
	nc, err := nats.Connect(url, nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}))
	if err != nil {
		return nil, 0, 0, err
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		return nil, 0, 0, err
	}
	cctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	st, err := js.Stream(cctx, stream)
	if err != nil {
		return nil, 0, 0, fmt.Errorf("stream %s: %w", stream, err)
	}
	state := st.CachedInfo().State
	msgs = map[uint64]streamMsg{}
	for seq := state.FirstSeq; seq <= state.LastSeq && seq > 0; seq++ {
		m, err := st.GetMsg(cctx, seq)
		switch {
		case errors.Is(err, jetstream.ErrMsgNotFound):
		case err != nil:
			if cctx.Err() != nil {
				return msgs, state.LastSeq, unreadable, fmt.Errorf("stream %s seq %d: %w", stream, seq, err)
			}
			unreadable++
		default:
			msgs[seq] = streamMsg{subject: m.Subject, data: m.Data}
		}
	}
	return msgs, state.LastSeq, unreadable, nil
}

// copyTree copies the files under src into dst (created if missing).
func copyTree(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, 0o700)
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		return os.WriteFile(target, b, fi.Mode().Perm())
	})
}

// restoreStore replaces the server's store with the pristine copy; the
// server must be down.
func (f *flipFixture) restoreStore() error {
	store := f.srv.Store()
	entries, err := os.ReadDir(store)
	if err != nil {
		return err
	}
	for _, e := range entries {
		if err := os.RemoveAll(filepath.Join(store, e.Name())); err != nil {
			return err
		}
	}
	return copyTree(f.pristine, store)
}

// flip is one single-byte change in a message block of the store.
type flip struct {
	name string // what it aims at
	file string // relative to the store
	off  int64
	xor  byte // not 0
}

func (fl flip) String() string {
	return fmt.Sprintf("%s (%s byte %d ^ %#02x)", fl.name, fl.file, fl.off, fl.xor)
}

// apply flips the byte in the store of the stopped server.
func (fl flip) apply(store string) error {
	fh, err := os.OpenFile(filepath.Join(store, fl.file), os.O_RDWR, 0)
	if err != nil {
		return err
	}
	b := make([]byte, 1)
	if _, err := fh.ReadAt(b, fl.off); err != nil {
		fh.Close()
		return err
	}
	b[0] ^= fl.xor
	if _, err := fh.WriteAt(b, fl.off); err != nil {
		fh.Close()
		return err
	}
	return fh.Close()
}

// randomFlips picks n flips of one byte at a uniformly random offset of a
// random message block, with a random non-zero xor mask.
func (f *flipFixture) randomFlips(rng *rand.Rand, n int) ([]flip, error) {
	sizes := make([]int64, len(f.blks))
	for i, b := range f.blks {
		fi, err := os.Stat(filepath.Join(f.pristine, b))
		if err != nil {
			return nil, err
		}
		sizes[i] = fi.Size()
	}
	out := make([]flip, 0, n)
	for len(out) < n {
		i := rng.IntN(len(f.blks))
		if sizes[i] == 0 {
			continue
		}
		out = append(out, flip{name: fmt.Sprintf("random %d", len(out)+1), file: f.blks[i],
			off: rng.Int64N(sizes[i]), xor: byte(1 + rng.IntN(255))})
	}
	return out, nil
}

// blkRecord is where one message's record lies in a message block.
type blkRecord struct {
	file                string
	start, payload, end int64 // record start, envelope start, record end (exclusive)
	hdrLen              int64 // the headers' length field, -1 without headers
}

// locate finds the record of the stream message seq in the pristine
// message blocks: the envelope bytes as the server returned them, preceded
// by the subject and a record header carrying seq, and followed by the
// 8-byte hash that closes the record.
func (f *flipFixture) locate(seq uint64) (blkRecord, error) {
	m, ok := f.msgs[seq]
	if !ok {
		return blkRecord{}, fmt.Errorf("no message at seq %d", seq)
	}
	for _, name := range f.blks {
		b, err := os.ReadFile(filepath.Join(f.pristine, name))
		if err != nil {
			return blkRecord{}, err
		}
		for from := 0; ; {
			i := bytes.Index(b[from:], m.data)
			if i < 0 {
				break
			}
			i += from
			from = i + 1
			s := bytes.LastIndex(b[:i], []byte(m.subject))
			start := s - blkHdrSize
			if s < 0 || start < 0 {
				continue
			}
			total := binary.LittleEndian.Uint32(b[start:])
			rl := int(total &^ blkHdrBit)
			if binary.LittleEndian.Uint64(b[start+4:]) != seq ||
				int(binary.LittleEndian.Uint16(b[start+20:])) != len(m.subject) ||
				start+rl != i+len(m.data)+blkHashSize {
				continue
			}
			r := blkRecord{file: name, start: int64(start), payload: int64(i), end: int64(start + rl), hdrLen: -1}
			if total&blkHdrBit != 0 {
				r.hdrLen = int64(s + len(m.subject))
			}
			return r, nil
		}
	}
	return blkRecord{}, fmt.Errorf("the envelope of seq %d is in no message block (compressed or encrypted store?)", seq)
}

// targetedFlips aims at the first and the last event of every aggregate
// kind in the stream: a byte in the middle of the envelope, the low byte
// of the record's sequence number, the last byte of its hash, and the low
// byte of its headers' length (the record hash covers headers and payload
// as one run of bytes, so the server does not notice the boundary between
// them moving: it serves the message with a payload one byte longer or
// shorter).
func (f *flipFixture) targetedFlips() ([]flip, error) {
	first, last := map[events.AggregateType]uint64{}, map[events.AggregateType]uint64{}
	for seq, k := range f.kinds {
		if first[k] == 0 || seq < first[k] {
			first[k] = seq
		}
		if seq > last[k] {
			last[k] = seq
		}
	}
	var out []flip
	for _, k := range []events.AggregateType{events.AggInstallation, events.AggKeyPackage, events.AggGroup, events.AggDelivery} {
		if first[k] == 0 {
			return nil, fmt.Errorf("the history holds no %s event", k)
		}
		for _, which := range []struct {
			name string
			seq  uint64
		}{{"first", first[k]}, {"last", last[k]}} {
			r, err := f.locate(which.seq)
			if err != nil {
				return nil, err
			}
			what := fmt.Sprintf("%s %s event (seq %d)", which.name, k, which.seq)
			out = append(out,
				flip{name: what + ": envelope", file: r.file, off: (r.payload + r.end - blkHashSize) / 2, xor: 0x01},
				flip{name: what + ": record seq", file: r.file, off: r.start + 4, xor: 0x01},
				flip{name: what + ": record hash", file: r.file, off: r.end - 1, xor: 0x80})
			if r.hdrLen >= 0 {
				out = append(out, flip{name: what + ": headers length", file: r.file, off: r.hdrLen, xor: 0x01})
			}
		}
	}
	return out, nil
}

// cliRun is the outcome of one command.
type cliRun struct {
	code           int
	stdout, stderr string
	elapsed        time.Duration
	hung           bool
	fail           failure // the --json failure, when code != 0
}

// runLimited runs the CLI in process under flipCmdLimit. A command still
// running at the deadline has hung; one that does not return even after
// its context ends is abandoned (and reported hung) 30 s later.
func runLimited(ctx context.Context, args ...string) cliRun {
	cctx, cancel := context.WithTimeout(ctx, flipCmdLimit)
	defer cancel()
	var out, errb bytes.Buffer
	done := make(chan int, 1)
	start := time.Now()
	go func() { done <- run(cctx, ringEnv(&out, &errb, nil), args) }()
	select {
	case code := <-done:
		r := cliRun{code: code, stdout: out.String(), stderr: errb.String(), elapsed: time.Since(start), hung: cctx.Err() != nil}
		if code != 0 {
			var v struct{ Error failure }
			if json.Unmarshal(out.Bytes(), &v) == nil {
				r.fail = v.Error
			}
		}
		return r
	case <-time.After(flipCmdLimit + 30*time.Second):
		return cliRun{code: -1, elapsed: time.Since(start), hung: true}
	}
}

func (f *flipFixture) rebuild(ctx context.Context, in *flipInst) cliRun {
	return runLimited(ctx, "rebuild", "--json", "--nats", f.srv.URL(), "--installation", string(in.id), "--db", in.db, "--db-key-file", in.key)
}

func (f *flipFixture) verify(ctx context.Context, in *flipInst) cliRun {
	return runLimited(ctx, "verify", "--json", "--nats", f.srv.URL(), "--installation", string(in.id), "--db", in.db, "--db-key-file", in.key)
}

// restoreLive puts the live database back as the pristine stream left it
// (a successful rebuild renamed a new file over it).
func (in *flipInst) restoreLive() error {
	return os.WriteFile(in.db, in.live, in.mode)
}

// refusalReasons are the errors a refusal is sorted by, most specific
// first.
var refusalReasons = []error{
	replay.ErrBehind, replay.ErrWrongInstallation, replay.ErrNoHistory, replay.ErrDrift, replay.ErrMLSMismatch,
	eventlog.ErrMissingEvent, eventlog.ErrStalled, eventlog.ErrOutOfOrder, eventlog.ErrNoStream, eventlog.ErrConnect,
	events.ErrTampered, events.ErrMoved, events.ErrMalformed, events.ErrUnknownVersion, events.ErrWrongKey,
}

// reason names a failed command's cause by the first known error its
// message carries.
func (r cliRun) reason() string {
	if r.hung {
		return "hang"
	}
	for _, e := range refusalReasons {
		if strings.Contains(r.fail.Message, e.Error()) {
			return e.Error()
		}
	}
	msg := r.fail.Message
	if msg == "" {
		msg = strings.TrimSpace(r.stderr)
	}
	if len(msg) > 120 {
		msg = msg[:120] + "..."
	}
	return "other: " + msg
}

// dirNames lists the names in dir, sorted.
func dirNames(dir string) ([]string, error) {
	entries, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	names := make([]string, len(entries))
	for i, e := range entries {
		names[i] = e.Name()
	}
	slices.Sort(names)
	return names, nil
}
