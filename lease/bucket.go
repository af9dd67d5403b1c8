package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/telemetry"
)

// DefaultTTL is the lease lifetime of a new bucket: a lost holder's
// installations are free again at most this long after its last renewal.
// It outlasts the election of a new leader for the bucket's stream after a
// node is killed (4 to 9 s), so holders keep their leases across it.
const DefaultTTL = 15 * time.Second

// MinTTL is the shortest TTL a bucket may have.
const MinTTL = time.Second

// Config says which bucket holds the leases. The zero value (with a
// Group) means defaults.
type Config struct {
	// Group names the share group: its members, and the leases they and
	// anyone else acquire, live in the bucket BucketName(stream, Group).
	// Letters, digits, '-' and '_'. Required.
	Group string
	// TTL is the lease lifetime, the bucket's max age, fixed when the
	// bucket is created (default DefaultTTL, at least MinTTL). A bucket that
	// exists keeps its own; a non-zero TTL other than the bucket's is
	// refused with ErrBucketMismatch, since holders renewing at another
	// pace than the bucket expires would lose their leases.
	TTL time.Duration
	// Replicas of a new bucket (default: the event stream's, so the
	// leases survive what the stream survives).
	Replicas int
	// Holder describes this process in the leases it holds, for operators
	// and error messages ("pid 4242 replayer follow host app-1", the
	// default). It is written to the bucket: never put a secret in it.
	Holder string
	// RequestTimeout bounds opening the bucket and each request of
	// Acquire and Release (default 10 s). Renewals are bounded by the TTL
	// instead.
	RequestTimeout time.Duration
}

var groupRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// BucketName is the name of the bucket of share group group on stream:
// "<stream>_share_<group>" (its JetStream stream is "KV_" and that).
func BucketName(stream, group string) string { return stream + "_share_" + group }

// Key names in the bucket: a lease is "installations.<installation
// pseudonym>", a share-group member "members.<member id>".
const (
	installationsPrefix = "installations."
	membersPrefix       = "members."
)

// Headers of KV operations (nats.go's own are not exported).
const (
	kvOperationHeader = "KV-Operation"
	kvDelete          = "DEL"
	kvPurge           = "PURGE"
)

// Bucket is an open lease bucket. It is safe for concurrent use.
type Bucket struct {
	log     *eventlog.Log
	logger  *slog.Logger
	metrics *telemetry.Metrics
	js      jetstream.JetStream
	kv      jetstream.KeyValue // for watching
	stream  jetstream.Stream   // for reads, answered by the leader
	name    string
	group   string
	ttl     time.Duration
	created time.Time // the bucket stream's creation: tells a bucket created again
	markers bool      // the server marks expired keys (a watcher sees expiry at once)
	holder  string
	timeout time.Duration

	// idLast is the latest check of the bucket's identity begun for a
	// renewal or a release (sameSince), shared by all that wait for one.
	idMu   sync.Mutex
	idLast *idCheck

	// now reads the clock leases are measured on: leaseClock, or in
	// tests a clock that jumps as a suspend makes it. Set before any
	// lease is taken.
	now func() instant

	// fault, when set (tests), is called before each request on a key
	// (op "get", "put" or "del", or "info" for the bucket's identity,
	// key then being the bucket's name); an error fails the request as
	// an unanswered one would, without sending it.
	fault atomic.Pointer[func(op, key string) error]
}

// Open opens the lease bucket of cfg.Group on l's stream, creating it if
// it does not exist, over l's connection. The bucket's reads are made to
// go to its stream's leader (direct get off), so a lagging replica never
// shows a lease older than the latest; this needs permission to update
// the bucket's stream once, like creating it.
func Open(ctx context.Context, l *eventlog.Log, cfg Config) (*Bucket, error) {
	if l == nil {
		return nil, errors.New("lease: open: nil log")
	}
	if !groupRE.MatchString(cfg.Group) {
		return nil, fmt.Errorf("lease: open: share group %q: want 1 to 64 letters, digits, '-' or '_'", cfg.Group)
	}
	if cfg.TTL != 0 && cfg.TTL < MinTTL {
		return nil, fmt.Errorf("lease: open: TTL %v is shorter than %v", cfg.TTL, MinTTL)
	}
	if cfg.RequestTimeout <= 0 {
		cfg.RequestTimeout = eventlog.DefaultRequestTimeout
	}
	if cfg.Holder == "" {
		cfg.Holder = describeProcess()
	}
	b := &Bucket{log: l, logger: l.Logger(), metrics: l.Metrics(), name: BucketName(l.Stream(), cfg.Group),
		group: cfg.Group, holder: sanitize(cfg.Holder, 200), timeout: cfg.RequestTimeout, now: leaseClock}
	ctx, cancel := context.WithTimeout(ctx, cfg.RequestTimeout)
	defer cancel()
	var err error
	if b.js, err = jetstream.New(l.Conn(), jetstream.WithDefaultTimeout(cfg.RequestTimeout)); err != nil {
		return nil, fmt.Errorf("lease: open bucket %s: %w", b.name, err)
	}
	if err := b.openOrCreate(ctx, cfg); err != nil {
		return nil, fmt.Errorf("lease: open bucket %s: %w", b.name, err)
	}
	b.logger.Info("lease: bucket open", "bucket", b.name, "group", b.group, "ttl", b.ttl.String(), "expiry_markers", b.markers)
	return b, nil
}

// openOrCreate binds b to the bucket, creating it if missing, and checks
// and fixes its settings.
func (b *Bucket) openOrCreate(ctx context.Context, cfg Config) error {
	kv, err := b.js.KeyValue(ctx, b.name)
	if errors.Is(err, jetstream.ErrBucketNotFound) {
		kv, err = b.create(ctx, cfg)
	}
	if err != nil {
		return err
	}
	st, err := kv.Status(ctx)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}
	b.ttl = st.TTL()
	switch {
	case b.ttl == 0:
		return fmt.Errorf("%w: it has no TTL, so it holds no leases (another bucket of that name?)", ErrBucketMismatch)
	case b.ttl < MinTTL:
		return fmt.Errorf("%w: its TTL %v is shorter than %v", ErrBucketMismatch, b.ttl, MinTTL)
	case cfg.TTL != 0 && cfg.TTL != b.ttl:
		return fmt.Errorf("%w: its TTL is %v, not %v (leave the TTL unset to use the bucket's; to change it, delete the bucket while no holder runs)", ErrBucketMismatch, b.ttl, cfg.TTL)
	}
	b.markers = st.LimitMarkerTTL() > 0
	streamName := "KV_" + b.name
	s, err := b.js.Stream(ctx, streamName)
	if err != nil {
		return fmt.Errorf("stream %s: %w", streamName, err)
	}
	if c := s.CachedInfo().Config; c.AllowDirect {
		// As for the event stream: any replica answers a direct get, and
		// one that lags would show a lease already renewed, released or
		// taken as it was.
		c.AllowDirect = false
		if _, err := b.js.UpdateStream(ctx, c); err != nil {
			return fmt.Errorf("switching direct get off on %s: %w", streamName, err)
		}
		if s, err = b.js.Stream(ctx, streamName); err != nil {
			return fmt.Errorf("stream %s: %w", streamName, err)
		}
	}
	if kv, err = b.js.KeyValue(ctx, b.name); err != nil {
		return err
	}
	b.kv, b.stream, b.created = kv, s, s.CachedInfo().Created
	return nil
}

// errBucketGone marks an unchanged that found no bucket stream. A
// cluster's replica still recovering the stream answers so too, for a
// moment: a member concludes only when it sees it twice in a row.
var errBucketGone = errors.New("no such stream")

// unchanged checks that the bucket is still the one Open found, not
// deleted and created again meanwhile: a lease taken in a bucket created
// again with a shorter TTL would be counted valid after the server freed
// it, and the revisions of leases held before mean nothing there. The
// error wraps ErrBucketMismatch then; another is the server's answer.
func (b *Bucket) unchanged(ctx context.Context) error {
	// Bounded by a renewal period too: a member's pass waits for it.
	ctx, cancel := context.WithTimeout(ctx, min(b.timeout, b.RenewEvery()))
	defer cancel()
	if err := b.faultFor("info", b.name); err != nil {
		return fmt.Errorf("reading the settings of bucket %s: %w", b.name, err)
	}
	info, err := b.stream.Info(ctx)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return fmt.Errorf("%w: bucket %s was deleted: %w", ErrBucketMismatch, b.name, errBucketGone)
	}
	if err != nil {
		return fmt.Errorf("reading the settings of bucket %s: %w", b.name, err)
	}
	if info.Config.MaxAge != b.ttl || !info.Created.Equal(b.created) {
		return fmt.Errorf("%w: bucket %s was deleted and created again (TTL %v, was %v); open it again", ErrBucketMismatch, b.name, info.Config.MaxAge, b.ttl)
	}
	return nil
}

// idCheck is one check of the bucket's identity (unchanged).
type idCheck struct {
	start time.Time
	done  chan struct{} // closed once err is set
	err   error
}

// sameSince returns the answer of a check of the bucket's identity
// (unchanged) begun at t or later. Renewals and releases write at a
// lease's revision, and a bucket deleted and created again counts its
// revisions from 1 again, so such a write could match there and land
// over another holder's lease: they ask before writing and after. One
// check runs at a time, shared by every caller that waits for one begun
// after its t: a process pays at most one check per round trip however
// many leases it holds (about one per renewal while renewals are sparse).
func (b *Bucket) sameSince(ctx context.Context, t time.Time) error {
	for {
		b.idMu.Lock()
		c := b.idLast
		if c == nil || c.start.Before(t) && isClosed(c.done) {
			c = &idCheck{start: time.Now(), done: make(chan struct{})}
			b.idLast = c
			// Not bound to ctx: others may wait for it. unchanged bounds
			// it by a renewal period.
			go func() {
				c.err = b.unchanged(context.Background())
				close(c.done)
			}()
		}
		b.idMu.Unlock()
		select {
		case <-c.done:
		case <-ctx.Done():
			return ctx.Err()
		}
		if !c.start.Before(t) {
			return c.err
		}
		// Begun before t: wait for the next.
	}
}

func isClosed(c <-chan struct{}) bool {
	select {
	case <-c:
		return true
	default:
		return false
	}
}

// replaced reports an identity check's answer that the bucket was
// deleted and created again (or changed): not a bucket merely not found
// for now (errBucketGone), which a replica recovering the stream may
// answer too.
func replaced(err error) bool {
	return errors.Is(err, ErrBucketMismatch) && !errors.Is(err, errBucketGone)
}

// create creates the bucket: one value per key, the TTL as its max age,
// markers for expired keys when the server has them (2.11+), file
// storage, the stream's replicas unless cfg says.
func (b *Bucket) create(ctx context.Context, cfg Config) (jetstream.KeyValue, error) {
	ttl := cfg.TTL
	if ttl == 0 {
		ttl = DefaultTTL
	}
	replicas := cfg.Replicas
	if replicas == 0 {
		s, err := b.js.Stream(ctx, b.log.Stream())
		if err != nil {
			return nil, fmt.Errorf("reading the replicas of stream %s: %w", b.log.Stream(), err)
		}
		replicas = max(s.CachedInfo().Config.Replicas, 1)
	}
	kc := jetstream.KeyValueConfig{
		Bucket:         b.name,
		Description:    fmt.Sprintf("epochlog leases of share group %s on stream %s", b.group, b.log.Stream()),
		History:        1,
		TTL:            ttl,
		Storage:        jetstream.FileStorage,
		Replicas:       replicas,
		LimitMarkerTTL: ttl,
	}
	kv, err := b.js.CreateKeyValue(ctx, kc)
	if errors.Is(err, jetstream.ErrLimitMarkerTTLNotSupported) {
		b.logger.Info("lease: the server cannot mark expired keys (nats-server before 2.11); expiry is noticed by polling", "bucket", b.name)
		kc.LimitMarkerTTL = 0
		kv, err = b.js.CreateKeyValue(ctx, kc)
	}
	if errors.Is(err, jetstream.ErrBucketExists) {
		// Another holder created it meanwhile, perhaps with other
		// settings: take it as it is, and check it.
		return b.js.KeyValue(ctx, b.name)
	}
	if err != nil {
		return nil, fmt.Errorf("create: %w", err)
	}
	b.logger.Info("lease: bucket created", "bucket", b.name, "ttl", ttl.String(), "replicas", replicas)
	return kv, nil
}

// Name returns the bucket's name.
func (b *Bucket) Name() string { return b.name }

// Group returns the share group's name.
func (b *Bucket) Group() string { return b.group }

// TTL returns the bucket's lease lifetime.
func (b *Bucket) TTL() time.Duration { return b.ttl }

// RenewEvery is how often a holder renews a lease: TTL/3.
func (b *Bucket) RenewEvery() time.Duration { return b.ttl / 3 }

// Validity is how long a holder counts its lease valid after sending its
// last successful renewal: 3/4 of the TTL, so a holder stops at least
// TTL/4 before the server can give the lease to another.
func (b *Bucket) Validity() time.Duration { return b.ttl - b.ttl/4 }

// TakeoverBound is how long, at most, an installation whose holder died
// stays without a holder while another member of its share group knows
// it: the lease expires TTL after the last renewal, and the other members
// see it at once (expiry markers) or at their next pass (TTL/3 later).
// Serving it again then takes the time to open and catch up the read
// model. It assumes the surviving members agree on who is live; while
// they do not (a member joining or leaving meanwhile), an installation
// nobody takes for its owner is taken once free for a TTL, up to about
// 2×TTL + TTL/3. docs/operations.md ("Running several followers")
// states both.
func (b *Bucket) TakeoverBound() time.Duration { return b.ttl + b.ttl/3 }

// Holder describes this process in the leases it holds.
func (b *Bucket) Holder() string { return b.holder }

// record is a lease's (or member's) value.
type record struct {
	Holder string    `json:"holder"`
	Member string    `json:"member,omitempty"`
	Token  string    `json:"token"` // unique per acquisition
	Since  time.Time `json:"since"`
}

// decodeRecord reads a lease key's value: the record acquire wrote, or
// the zero record for a value that does not decode (held, by nobody this
// code can name); never a record decoded halfway, whose holder, member or
// token were read before the part that failed.
func decodeRecord(data []byte) record {
	var r record
	if err := json.Unmarshal(data, &r); err != nil {
		return record{}
	}
	return r
}

// op is what the latest message of a key says.
type op int

const (
	opAbsent  op = iota // no message: never written, or expired without a marker
	opPut               // held
	opDelete            // released
	opExpired           // expired (the server's marker) or purged
)

// state is a key's latest message.
type state struct {
	op  op
	rev uint64 // 0 when absent
	rec record // when opPut (zero if undecodable)
}

func (b *Bucket) subject(key string) string { return "$KV." + b.name + "." + key }

// latest reads a key's latest message from the bucket's stream leader.
func (b *Bucket) latest(ctx context.Context, key string) (state, error) {
	if err := b.faultFor("get", key); err != nil {
		return state{}, err
	}
	m, err := b.stream.GetLastMsgForSubject(ctx, b.subject(key))
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return state{op: opAbsent}, nil
	}
	if err != nil {
		return state{}, err
	}
	st := state{op: opPut, rev: m.Sequence}
	switch {
	case m.Header.Get(kvOperationHeader) == kvDelete:
		st.op = opDelete
	case m.Header.Get(kvOperationHeader) == kvPurge, m.Header.Get(jetstream.MarkerReasonHeader) != "":
		st.op = opExpired
	default:
		st.rec = decodeRecord(m.Data) // an undecodable value is still held
	}
	return st, nil
}

// unansweredRead reports a read of the bucket that got no answer (a
// timeout, a dropped connection, nobody to answer while the stream's
// leader is elected): asking again may succeed.
func unansweredRead(err error) bool {
	return eventlog.Unanswered(err) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse)
}

// errRevision: the key's latest revision is not the one expected.
var errRevision = errors.New("the key's revision moved")

// isWrongLastSeq reports a refused compare-and-set (10164 on replicated
// streams, 10071 otherwise).
func isWrongLastSeq(err error) bool {
	var apiErr *jetstream.APIError
	return errors.As(err, &apiErr) && (apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequence ||
		apiErr.ErrorCode == jetstream.JSErrCodeStreamWrongLastSequenceConstant)
}

// put writes value to key if the key's latest revision is expect (0: the
// key has no message) and returns the new revision.
func (b *Bucket) put(ctx context.Context, key string, value []byte, expect uint64) (uint64, error) {
	if err := b.faultFor("put", key); err != nil {
		return 0, err
	}
	m := &nats.Msg{Subject: b.subject(key), Header: nats.Header{}, Data: value}
	ack, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(expect))
	if isWrongLastSeq(err) {
		return 0, fmt.Errorf("%w: %w", errRevision, err)
	}
	if err != nil {
		return 0, err
	}
	return ack.Sequence, nil
}

// del marks key deleted if its latest revision is expect.
func (b *Bucket) del(ctx context.Context, key string, expect uint64) error {
	if err := b.faultFor("del", key); err != nil {
		return err
	}
	m := &nats.Msg{Subject: b.subject(key), Header: nats.Header{}}
	m.Header.Set(kvOperationHeader, kvDelete)
	_, err := b.js.PublishMsg(ctx, m, jetstream.WithExpectLastSequencePerSubject(expect))
	if isWrongLastSeq(err) {
		return fmt.Errorf("%w: %w", errRevision, err)
	}
	return err
}

// faultFor is the test hook (see Bucket.fault).
func (b *Bucket) faultFor(op, key string) error {
	if f := b.fault.Load(); f != nil {
		return (*f)(op, key)
	}
	return nil
}

// pseudonym returns inst's pseudonym on the stream (the second token of
// its subjects), which names its lease: the bucket never holds an id.
func (b *Bucket) pseudonym(inst events.InstallationID) (string, error) {
	f, err := b.log.InstallationFilter(inst)
	if err != nil {
		return "", err
	}
	parts := strings.Split(f, ".")
	if len(parts) < 3 {
		return "", fmt.Errorf("lease: unexpected subject filter %q", f)
	}
	return parts[len(parts)-2], nil
}

func (b *Bucket) installationKey(inst events.InstallationID) (string, error) {
	p, err := b.pseudonym(inst)
	if err != nil {
		return "", fmt.Errorf("lease: installation %s: %w", inst, err)
	}
	return installationsPrefix + p, nil
}

// Holding is who holds a lease, as Bucket.Holding reads it.
type Holding struct {
	Held           bool
	Holder, Member string
	Since          time.Time
	// Revision is the lease key's revision: it changes with every
	// acquisition and renewal.
	Revision uint64
}

// Holding reads who holds inst's lease now (from the bucket's stream
// leader). A lease whose holder died is held until it expires.
func (b *Bucket) Holding(ctx context.Context, inst events.InstallationID) (Holding, error) {
	key, err := b.installationKey(inst)
	if err != nil {
		return Holding{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	st, err := b.latest(ctx, key)
	if err != nil {
		return Holding{}, fmt.Errorf("lease: reading the lease of %s: %w", inst, err)
	}
	if st.op != opPut {
		return Holding{Revision: st.rev}, nil
	}
	return Holding{Held: true, Holder: st.rec.Holder, Member: st.rec.Member, Since: st.rec.Since, Revision: st.rev}, nil
}

// describeProcess describes this process: "pid N <program> host H", the
// program being the base name of os.Args[0] and its subcommand ("replayer
// follow"), never an argument that could hold a secret.
func describeProcess() string {
	prog := "unknown program"
	if len(os.Args) > 0 && os.Args[0] != "" {
		prog = filepath.Base(os.Args[0])
		if len(os.Args) > 1 && isWord(os.Args[1]) {
			prog += " " + os.Args[1]
		}
	}
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "?"
	}
	return fmt.Sprintf("pid %d %s host %s", os.Getpid(), prog, host)
}

// isWord reports whether s looks like a subcommand: a short word of
// letters, digits, '-' and '_' not starting with '-'.
func isWord(s string) bool {
	if s == "" || len(s) > 24 || s[0] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// sanitize makes s one line of printable ASCII of at most n bytes.
func sanitize(s string, n int) string {
	var b strings.Builder
	for _, r := range s {
		if r < 0x20 || r > 0x7e {
			r = '?'
		}
		if b.Len() >= n {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}
