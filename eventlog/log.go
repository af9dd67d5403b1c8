package eventlog

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/hidden"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// cacheMax bounds the per-aggregate caches (subjects and last positions);
// when full they are cleared, which only costs lookups.
const cacheMax = 1 << 16

// Log is the event log: sealed events of many installations on one
// JetStream stream. It is safe for concurrent use.
type Log struct {
	cfg Config // NATSURL with its credentials redacted; rawURL holds it whole
	// rawURL is Config.NATSURL as given: a plain string that may carry
	// user:pw@, kept where fmt reaching into a Log's fields (struct{ l *Log }
	// under %s) finds only an address. Password and Token stay in cfg:
	// they are Secrets, which hide themselves.
	rawURL hidden.Value[string]
	logger *slog.Logger // cfg.Logger, never nil
	keys   *events.Keyring
	srv    *server.Server // embedded server, nil for an external one
	nc     *nats.Conn
	js     jetstream.JetStream
	acks   *ackMux // AppendBulk's publishes and their PubAcks
	stream jetstream.Stream
	atomic bool // the stream accepts atomic batches
	closed atomic.Bool

	msgIDs *events.MessageIDs // seals events and derives their Nats-Msg-Id

	kv       jetstream.KeyValue // the key bucket (datakeys.go); nil: none (read-only)
	kvStream jetstream.Stream   // the stream behind kv, for purges
	dkCache  *dataKeyCache      // unwrapped data keys, bounded, wiped on eviction
	dkIDs    dataKeyIDs         // the key id of each period sealed to, bounded
	// compacted holds the installations known to have a compaction mark
	// (carried; append.go), under mu, bounded by cacheMax.
	compacted map[events.InstallationID]bool
	// resealOfPointer is the source of a re-seal target an older replayer made
	// (no metaResealOf in its metadata), found by the active-stream
	// pointer at Open (ResealedFrom); "" otherwise.
	resealOfPointer string
	// sealRoot seals new events under the root keys (format 2) as before
	// data keys: only for the benchmark that compares both.
	sealRoot bool

	leaderMu sync.Mutex
	leader   string // the stream's leader as last seen (observe.go), "" before
	// edited is why the stream, edited since Open, would now drop or hide
	// events (observe.go, watchConfig); nil while it is fit. Appends are
	// refused while it is set.
	edited atomic.Pointer[error]
	// snapshotsChecked: the snapshots bucket's settings passed
	// keepsEntries once (snapshotStore checks them only until then).
	snapshotsChecked atomic.Bool
	// now is the Log's clock (time.Now; tests set another), which dates
	// events appended without a time; clock is its last check against
	// the server's (clock.go).
	now   func() time.Time
	clock atomic.Pointer[clockCheck]

	mu       sync.Mutex
	subjects map[events.Aggregate]aggSubject
	tails    map[string]tail                       // by subject: the last event we know of
	heads    map[events.InstallationID]head        // the latest event we know of each installation (chain.go)
	floors   map[events.InstallationID]readerFloor // the sequence a reader has applied each installation's events through (ExpectThrough)
	erased   map[events.InstallationID]tombEntry   // tombstones seen (erase.go)
	// notTombs holds, of an installation whose tombstone subject ends in
	// a message that is not its tombstone, the last sequence the subject
	// was found to hold no tombstone through (erase.go, tombstoneBehind).
	notTombs map[events.InstallationID]uint64
}

// aggSubject is an aggregate's subject and pseudonym.
type aggSubject struct {
	subject string
	pseudo  string
}

// tail is the last event of an aggregate: its stream sequence and position.
type tail struct {
	seq uint64
	pos uint64
}

// Open connects to NATS (starting the embedded server unless cfg.NATSURL is
// set), creates or checks the stream, and returns the Log. keys seals new
// events and opens old ones; the Log uses it (not a copy), so a rotation on
// keys takes effect for the next append.
func Open(ctx context.Context, cfg Config, keys *events.Keyring) (*Log, error) {
	if keys == nil {
		return nil, errors.New("eventlog: open: nil keyring")
	}
	cfg, err := cfg.withDefaults()
	if err != nil {
		return nil, err
	}
	l := &Log{
		cfg:       cfg.withRedactedURL(),
		rawURL:    hidden.New(cfg.NATSURL),
		logger:    telemetry.Logger(cfg.Logger),
		keys:      keys,
		subjects:  map[events.Aggregate]aggSubject{},
		tails:     map[string]tail{},
		heads:     map[events.InstallationID]head{},
		floors:    map[events.InstallationID]readerFloor{},
		compacted: map[events.InstallationID]bool{},
		erased:    map[events.InstallationID]tombEntry{},
		notTombs:  map[events.InstallationID]uint64{},
		dkCache:   newDataKeyCache(dataKeyCacheMax),
		now:       time.Now,
	}
	if l.msgIDs, err = events.NewMessageIDs(keys); err != nil {
		return nil, fmt.Errorf("eventlog: open: %w", err)
	}
	// AppendBulk bounds what it has in flight itself; this bounds the sum
	// of concurrent calls.
	l.acks = newAckMux(2*cfg.MaxInFlight + cfg.MaxBatch)
	if cfg.NATSURL == "" {
		if l.srv, err = startEmbedded(cfg); err != nil {
			return nil, err
		}
	}
	if l.nc, err = connect(cfg, l.srv, l.connHandlers()...); err != nil {
		l.shutdown()
		return nil, err
	}
	cfg.Metrics.Connected(true)
	if err := checkInbox(l.nc, cfg); err != nil {
		l.shutdown()
		return nil, err
	}
	l.js, err = jetstream.New(l.nc,
		jetstream.WithDefaultTimeout(cfg.RequestTimeout),
	)
	if err != nil {
		l.shutdown()
		return nil, fmt.Errorf("eventlog: jetstream: %w", err)
	}
	ctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	if cfg.ResolveActive {
		if err := l.resolveActive(ctx); err != nil {
			l.shutdown()
			return nil, err
		}
		cfg = l.cfg
	}
	if l.stream, l.atomic, err = ensureStream(ctx, l, l.js, cfg, keys.Pseudonym("keyring-check")); err != nil {
		l.shutdown()
		return nil, err
	}
	if err := l.ensureKeyBucket(ctx); err != nil {
		l.shutdown()
		return nil, err
	}
	if ts := l.stream.CachedInfo().TimeStamp; !cfg.ReadOnly && !ts.IsZero() {
		// The first clock check, from the answer just read: a Log whose
		// clock is behind opens, and refuses appends (ErrClockBehind).
		_ = l.noteClock(ts, l.now())
	}
	if l.stream.CachedInfo().Config.Metadata[metaResealOf] == "" {
		l.resealOfPointer = l.resealOfByPointer(ctx)
	}
	l.followLeader()
	l.watchConfig()
	server := stripUserinfo(l.nc.ConnectedUrl())
	if cfg.EmbeddedInProcess {
		server = "in-process"
	}
	l.logger.Info("eventlog: log open", "stream", cfg.Stream, "key_bucket", l.kv != nil, "server", server, "embedded", l.srv != nil, "replicas", l.stream.CachedInfo().Config.Replicas, "atomic_batches", l.atomic, "read_only", cfg.ReadOnly, "max_payload", l.nc.MaxPayload())
	return l, nil
}

// Close closes the connection and stops the embedded server, if any. It is
// safe to call more than once.
func (l *Log) Close() error {
	if !l.closed.CompareAndSwap(false, true) {
		return nil
	}
	l.shutdown()
	l.cfg.Metrics.Connected(false)
	l.logger.Info("eventlog: NATS connection closed", "stream", l.cfg.Stream)
	return nil
}

func (l *Log) shutdown() {
	// As Close: the connection's ClosedHandler runs on nats.go's
	// goroutine, perhaps after Open failed and returned, while its caller
	// writes to the logger's output; a Log that closes says so itself.
	l.closed.Store(true)
	l.dkCache.wipe()
	if l.nc != nil {
		l.nc.Close()
		l.acks.failAll(nats.ErrConnectionClosed)
	}
	if l.srv != nil {
		l.srv.Shutdown()
		l.srv.WaitForShutdown()
	}
}

// Stream returns the stream name.
func (l *Log) Stream() string { return l.cfg.Stream }

// Logger is Config.Logger, or a logger that discards everything when that
// was nil: engine and replay log through it.
func (l *Log) Logger() *slog.Logger { return l.logger }

// Connected reports whether the client connection to NATS is up now (a
// health check's question; the Log reconnects on its own).
func (l *Log) Connected() bool { return l.nc != nil && l.nc.IsConnected() }

// Responsive reports whether the server answers now: a round trip (PING
// and PONG) within timeout. Connected alone holds for a connection to a
// server that stopped answering (a hung process, a path that drops
// packets) until its pings time out.
func (l *Log) Responsive(timeout time.Duration) error {
	if l.nc == nil || !l.nc.IsConnected() {
		return fmt.Errorf("eventlog: not connected to NATS")
	}
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	if err := l.nc.FlushWithContext(ctx); err != nil {
		return fmt.Errorf("eventlog: the NATS server did not answer a ping within %v: %w", timeout, err)
	}
	return nil
}

// Metrics is Config.Metrics (nil when not set; a nil *telemetry.Metrics
// records nothing): engine and replay record through it.
func (l *Log) Metrics() *telemetry.Metrics { return l.cfg.Metrics }

// AtomicBatches reports whether the stream accepts atomic batch publish, i.e.
// whether Append takes more than one event per call.
func (l *Log) AtomicBatches() bool { return l.atomic }

// MaxBatch is Config.MaxBatch: the most events one Append takes.
func (l *Log) MaxBatch() int { return l.cfg.MaxBatch }

// Conn returns the NATS connection (for inspection tools; do not close it).
func (l *Log) Conn() *nats.Conn { return l.nc }

// ClientURL returns the URL other processes can use to reach the embedded
// server ("" for an external server or an in-process embedded one).
func (l *Log) ClientURL() string {
	if l.srv == nil || l.cfg.EmbeddedInProcess {
		return ""
	}
	return "nats://" + listenAddr(l.srv)
}

// Subject returns the subject an aggregate's events are stored on:
// <prefix>.<installation pseudonym>.<aggregate type>.<aggregate pseudonym>.
func (l *Log) Subject(a events.Aggregate) (string, error) {
	s, err := l.aggSubject(a)
	return s.subject, err
}

// InstallationFilter returns the subject filter matching all of one
// installation's events: <prefix>.<installation pseudonym>.>.
func (l *Log) InstallationFilter(inst events.InstallationID) (string, error) {
	if err := inst.Validate(); err != nil {
		return "", fmt.Errorf("eventlog: %w", err)
	}
	return l.cfg.SubjectPrefix + "." + l.keys.Pseudonym("installation", string(inst)) + ".>", nil
}

func (l *Log) aggSubject(a events.Aggregate) (aggSubject, error) {
	l.mu.Lock()
	s, ok := l.subjects[a]
	l.mu.Unlock()
	if ok {
		return s, nil
	}
	if err := a.Validate(); err != nil {
		return aggSubject{}, fmt.Errorf("%w: %w", ErrInvalidAppend, err)
	}
	inst := l.keys.Pseudonym("installation", string(a.Installation))
	s.pseudo = l.keys.Pseudonym("aggregate", string(a.Installation), string(a.Type), a.ID)
	s.subject = l.cfg.SubjectPrefix + "." + inst + "." + string(a.Type) + "." + s.pseudo
	l.mu.Lock()
	if len(l.subjects) >= cacheMax {
		clear(l.subjects)
	}
	l.subjects[a] = s
	l.mu.Unlock()
	return s, nil
}

func (l *Log) cachedTail(subject string) (tail, bool) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t, ok := l.tails[subject]
	return t, ok
}

// setTail records a tail, never moving it backwards (a slow, older append
// result must not undo a newer one).
func (l *Log) setTail(subject string, t tail) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if old, ok := l.tails[subject]; ok && old.seq >= t.seq {
		return
	}
	if len(l.tails) >= cacheMax {
		clear(l.tails)
	}
	l.tails[subject] = t
}

func (l *Log) dropTail(subject string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.tails, subject)
}

func (l *Log) binding(subject string) events.Binding {
	return events.Binding{Stream: l.cfg.Stream, Subject: subject}
}

func (l *Log) recordError(subject string, seq uint64, op string, err error) error {
	return &RecordError{Stream: l.cfg.Stream, Subject: subject, Seq: seq, Op: op, Err: err}
}
