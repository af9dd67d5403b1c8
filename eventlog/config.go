package eventlog

import (
	"encoding/json"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/epochlog/epochlog/internal/hidden"
	"github.com/epochlog/epochlog/telemetry"
)

// Storage selects where the stream keeps its messages.
type Storage int

const (
	// FileStorage keeps messages on disk (the default, and the only choice
	// for a log that is the source of truth).
	FileStorage Storage = iota
	// MemoryStorage keeps messages in memory; they are lost when the server
	// stops. Useful for tests and benchmarks.
	MemoryStorage
)

// String returns "file" or "memory".
func (s Storage) String() string {
	switch s {
	case FileStorage:
		return "file"
	case MemoryStorage:
		return "memory"
	default:
		return fmt.Sprintf("Storage(%d)", int(s))
	}
}

// Secret is a credential (a password, a token) that never prints: String,
// GoString, every fmt verb, JSON and text marshalling and slog all give
// "REDACTED", wherever the Secret is held. It is opaque rather than a
// string because fmt prints a string in an unexported field (a caller's
// struct{ cfg eventlog.Config }) by reflection, without calling its
// methods: the credential sits in an internal/hidden.Value, two pointers
// away, where that reflection reaches only an address. Make one with
// [NewSecret]; the zero Secret is no credential.
type Secret struct {
	v hidden.Value[string]
}

const redacted = "REDACTED"

// NewSecret returns a Secret holding s; NewSecret("") is the zero Secret.
func NewSecret(s string) Secret {
	if s == "" {
		return Secret{}
	}
	return Secret{v: hidden.New(s)}
}

// Reveal returns the credential held ("" for the zero Secret), for the
// one place that must send it (the NATS connection).
func (s Secret) Reveal() string { return s.v.Get() }

// IsZero reports whether s holds no credential.
func (s Secret) IsZero() bool { return s.v.Get() == "" }

// String redacts the secret.
func (Secret) String() string { return redacted }

// GoString redacts the secret.
func (Secret) GoString() string { return "eventlog.Secret(" + redacted + ")" }

// Format redacts the secret for every verb, including %x and %q.
func (Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redacted)) }

// MarshalText redacts the secret (and so does JSON): what it writes does
// not read back as the credential.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// UnmarshalText sets the secret to text, so that a JSON or text document
// (a nats CLI context's password) can fill a Secret field.
func (s *Secret) UnmarshalText(text []byte) error {
	*s = NewSecret(string(text))
	return nil
}

// LogValue redacts the secret for every slog handler, including one that
// would encode the value by reflection.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// configFields is Config without its methods: what Config's printing
// methods print.
type configFields Config

// printable returns c's fields with the credentials of NATSURL redacted
// (nats://user:pw@host, nats://token@host); Password and Token redact
// themselves.
func (c Config) printable() configFields {
	return configFields(c.withRedactedURL())
}

// Format prints the Config as fmt would, but for the credentials of
// NATSURL, which are redacted under every verb.
func (c Config) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, fmt.FormatString(f, verb), c.printable())
}

// MarshalJSON encodes the Config as encoding/json would, but for the
// credentials of NATSURL, which are redacted.
func (c Config) MarshalJSON() ([]byte, error) { return json.Marshal(c.printable()) }

// LogValue redacts the credentials of NATSURL for every slog handler.
func (c Config) LogValue() slog.Value { return slog.AnyValue(c.printable()) }

// Unbounded, as Config.MaxAge or Config.MaxBytes, removes that limit from
// an existing stream (zero would leave it as it is).
const Unbounded = -1

// Defaults used by DefaultConfig and by Open for zero fields.
const (
	DefaultStream          = "EPOCHLOG"
	DefaultSubjectPrefix   = "epochlog"
	DefaultDuplicateWindow = 2 * time.Minute
	DefaultRequestTimeout  = 10 * time.Second
	DefaultProgressTimeout = 60 * time.Second
	DefaultMaxInFlight     = 256
	// DefaultMaxBatch is nats-server's default limit on the messages of one
	// atomic batch (JetStream limits max_batch_size).
	DefaultMaxBatch   = 1000
	DefaultListenHost = "127.0.0.1"
)

// Config says how to reach NATS and which stream holds the log. The library
// reads no flags, files (other than the credential files named here) or
// environment: cmd/ fills a Config. Zero fields take the defaults of
// DefaultConfig, so Config{DataDir: dir} is a complete embedded setup.
type Config struct {
	// NATSURL selects an external NATS server or cluster (comma-separated
	// URLs). Empty means: start an embedded nats-server with JetStream and
	// file storage under DataDir.
	NATSURL string
	// TLSCAFile is a PEM file of CAs to verify the server with (external only).
	TLSCAFile string
	// TLSCertFile and TLSKeyFile are the client certificate and key (mutual TLS).
	TLSCertFile string
	TLSKeyFile  string
	// CredsFile is a NATS .creds file (user JWT + nkey seed).
	CredsFile string
	// NKeySeedFile is a file holding a user nkey seed.
	NKeySeedFile string
	// User and Password authenticate with a user name and password.
	User     string
	Password Secret
	// Token authenticates with the server's authorization token.
	Token Secret
	// InboxPrefix is the subject prefix of the connection's reply inboxes
	// (nats.go's default is "_INBOX"), for accounts whose permissions let
	// a client subscribe only below a prefix of its own. Every reply the
	// Log waits for arrives there: PubAcks, reads' deliveries, key-bucket
	// answers. It works with the embedded server too.
	InboxPrefix string
	// TLSHandshakeFirst makes the client start TLS before the server's
	// greeting, for servers (or TLS-terminating proxies in front of them)
	// configured with handshake_first. External servers only.
	TLSHandshakeFirst bool
	// ConnectionName names the client connection in the server's monitoring.
	ConnectionName string
	// ReconnectWait is the pause between reconnect attempts (default 250ms).
	// The client reconnects forever: a Follow survives server restarts.
	ReconnectWait time.Duration

	// DataDir is the embedded server's data directory; JetStream stores
	// under DataDir/jetstream. Required when NATSURL is empty.
	//
	// One server per store: while the embedded server runs (from Open to
	// Log.Close) it holds an exclusive lock (flock(2)) on
	// DataDir/epochlog.lock, a 0600 file naming the holder: its pid,
	// command, start time, host and client URL ("in-process, not reachable
	// from outside" with EmbeddedInProcess). ReadOnly takes it too: the
	// server writes to its store whatever the Log does. An Open of the same DataDir by
	// another Log, in this process or another, fails at once with a
	// *StoreLockedError (errors.Is ErrStoreLocked) that names the holder
	// and, when it listens, the URL to connect to instead (NATSURL).
	// Nothing is shared or handed over: two servers on one store would
	// corrupt each other's files. A crashed holder's lock goes with its
	// process; the file's content means nothing unless the lock is held.
	// (The lock needs flock: Linux, macOS and the BSDs; elsewhere there is
	// none.)
	DataDir string
	// ListenHost and ListenPort are where the embedded server listens for
	// clients (default 127.0.0.1 and a random free port). The embedded
	// server has no authentication: keep it on loopback.
	ListenHost string
	ListenPort int
	// EmbeddedInProcess makes the embedded server open no TCP port at all;
	// the Log talks to it over an in-process pipe. Nothing else can connect.
	EmbeddedInProcess bool
	// NoSync is for benchmarks and tests only: acknowledged appends may
	// be lost on power failure. By default the embedded server's file
	// store fsyncs every write before the server acknowledges it
	// (nats-server's SyncAlways; an atomic batch, i.e. one Append of
	// several events, is synced once), so an append that returned, and
	// the Commit or Welcome sent after it, survive a power failure or a
	// kernel crash. NoSync leaves nats-server's own default: a sync every
	// two minutes, so the appends of up to the last two minutes can
	// vanish with the machine, after their Commit and Welcome went out (a
	// process crash alone loses nothing: the kernel still has the
	// writes). It applies to the embedded server only: an external
	// server's durability is its own configuration (docs/operations.md,
	// "Durability").
	NoSync bool

	// ReadOnly opens the log for reading only, as the replay tools do:
	// Open creates nothing (no data directory, no store, no stream) and
	// changes nothing (no stream setting, no metadata); a missing data
	// directory or store is ErrNoStore naming the path, a missing stream
	// ErrNoStream. Append and AppendBulk are refused with ErrReadOnly.
	ReadOnly bool

	// NoCreate makes Open refuse what ReadOnly refuses to create (a
	// missing data directory or store: ErrNoStore; a missing stream:
	// ErrNoStream) while the Log may still write: for a tool that works
	// on an existing log (snapshots, retention, erase, re-seal), where a
	// missing stream means a mistyped name or a store the server could not
	// load, and creating an empty one would hide it.
	NoCreate bool

	// ResolveActive makes Open look Stream up in the metadata bucket
	// (MetaBucket, meta.go) and open the stream and subject prefix it
	// names as active for that base name instead, once, at Open; with no
	// entry for it, Stream itself. Off by default: nothing changes unless
	// asked. A Log does not follow a later switch: reopen it.
	ResolveActive bool

	// Stream is the JetStream stream name (default "EPOCHLOG").
	Stream string
	// SubjectPrefix is the first subject token (default "epochlog"); the
	// stream holds "<SubjectPrefix>.>".
	SubjectPrefix string
	// The four stream settings below are applied when Open creates the
	// stream. On an existing stream, a zero field leaves the stream's
	// setting as it is and a set field changes it in place: a process
	// opened with defaults (a replay tool, a second service) never lowers
	// the replicas or lifts the limits an operator configured.

	// Replicas is the stream's replica count (1 to 5; a new stream gets 1
	// unless set; 3 on a cluster).
	Replicas int
	// DuplicateWindow is how long the server remembers message ids for
	// deduplication (at least 2m, the default for a new stream). Retries
	// after the window are still idempotent: Append then finds the events by
	// reading the stream.
	DuplicateWindow time.Duration
	// MaxAge and MaxBytes bound the stream. A new stream is unbounded, the
	// right setting for a source of truth; [Unbounded] lifts a limit of an
	// existing stream. When MaxBytes is reached new appends are refused
	// rather than old events dropped; MaxAge does drop events older than the
	// limit.
	MaxAge   time.Duration
	MaxBytes int64
	// Storage is file (default) or memory. It cannot change on an existing
	// stream: Open refuses a stream with the other storage.
	Storage Storage

	// RequestTimeout bounds each request to the server (default 10s).
	RequestTimeout time.Duration
	// ProgressTimeout bounds how long a read (Read, Follow and what is
	// built on them) goes without progress while the stream holds events
	// it has not delivered, or while the server does not answer: then it
	// fails with ErrStalled instead of retrying forever (default 60s). It
	// outlasts a stream-leader failover and a quick server restart. A
	// stall is noticed within an eighth of it; telling a server that does
	// not answer at all from a stream that does not deliver takes a round
	// trip of up to 5 s more, and stopping the read's consumer then up to
	// nats.go's own request timeout (its consumer is not deleted: the
	// server reaps it).
	ProgressTimeout time.Duration
	// MaxInFlight bounds unacknowledged publishes of AppendBulk (default 256).
	MaxInFlight int
	// MaxBatch is the largest number of events Append accepts in one call,
	// i.e. in one atomic batch (default 1000, the server's default limit).
	MaxBatch int

	// Logger receives the log's structured records (connection lost and
	// regained, stream leader changes, retried appends, conflicts, stalled
	// reads); nil means silent. engine and replay log to the Logger of the
	// Log they are given. Nothing logged carries a secret. Every record is
	// listed in docs/observability.md.
	Logger *slog.Logger
	// Metrics, if set, is where the Log (and engine and replay working on
	// it) record what they do: events appended and applied, append latency,
	// conflicts and retries, reconnects, leader changes, projector lag.
	// Register it with a Prometheus registry (package telemetry; the
	// series are listed in docs/observability.md). Nil records nothing.
	Metrics *telemetry.Metrics

	// resealOf is the source stream OpenBeside records in the target's
	// metadata, set as Open creates or updates the stream: before the
	// Log's own goroutines (watchConfig, checkLeader) read its handle.
	resealOf string
}

// DefaultConfig returns an embedded-server configuration storing under dataDir
// with every default spelled out. The stream settings (Replicas,
// DuplicateWindow, MaxAge, MaxBytes) stay zero: a new stream gets 1 replica,
// a 2m window and no limits, an existing stream keeps its own.
func DefaultConfig(dataDir string) Config {
	return Config{
		DataDir:         dataDir,
		ListenHost:      DefaultListenHost,
		ReconnectWait:   250 * time.Millisecond,
		Stream:          DefaultStream,
		SubjectPrefix:   DefaultSubjectPrefix,
		Storage:         FileStorage,
		RequestTimeout:  DefaultRequestTimeout,
		ProgressTimeout: DefaultProgressTimeout,
		MaxInFlight:     DefaultMaxInFlight,
		MaxBatch:        DefaultMaxBatch,
	}
}

// withDefaults fills zero fields and validates the result.
func (c Config) withDefaults() (Config, error) {
	d := DefaultConfig(c.DataDir)
	if c.ListenHost == "" {
		c.ListenHost = d.ListenHost
	}
	if c.ReconnectWait <= 0 {
		c.ReconnectWait = d.ReconnectWait
	}
	if c.Stream == "" {
		c.Stream = d.Stream
	}
	if c.SubjectPrefix == "" {
		c.SubjectPrefix = d.SubjectPrefix
	}
	if c.RequestTimeout <= 0 {
		c.RequestTimeout = d.RequestTimeout
	}
	if c.ProgressTimeout <= 0 {
		c.ProgressTimeout = d.ProgressTimeout
	}
	if c.MaxInFlight <= 0 {
		c.MaxInFlight = d.MaxInFlight
	}
	if c.MaxBatch <= 0 {
		c.MaxBatch = d.MaxBatch
	}
	return c, c.validate()
}

func (c Config) validate() error {
	if c.NATSURL == "" && c.DataDir == "" {
		return fmt.Errorf("eventlog: config: DataDir is required for the embedded server (or set NATSURL)")
	}
	if c.NATSURL != "" && c.EmbeddedInProcess {
		return fmt.Errorf("eventlog: config: EmbeddedInProcess needs the embedded server, but NATSURL is set")
	}
	if c.NATSURL != "" && c.NoSync {
		return fmt.Errorf("eventlog: config: NoSync is for the embedded server, but NATSURL is set (an external server's sync is its own configuration)")
	}
	if err := (StreamRef{Stream: c.Stream, SubjectPrefix: c.SubjectPrefix}).validate(); err != nil {
		return fmt.Errorf("eventlog: config: %w", err)
	}
	if c.Replicas < 0 || c.Replicas > 5 {
		return fmt.Errorf("eventlog: config: replicas %d: must be 1 to 5 (or 0: the stream's own)", c.Replicas)
	}
	if c.DuplicateWindow != 0 && c.DuplicateWindow < DefaultDuplicateWindow {
		return fmt.Errorf("eventlog: config: duplicate window %v: must be at least %v", c.DuplicateWindow, DefaultDuplicateWindow)
	}
	if window := max(c.DuplicateWindow, DefaultDuplicateWindow); c.MaxAge > 0 && c.MaxAge < window {
		return fmt.Errorf("eventlog: config: max age %v: must be at least the duplicate window %v (or 0: the stream's own, or Unbounded)", c.MaxAge, window)
	}
	if c.MaxAge < 0 && c.MaxAge != Unbounded {
		return fmt.Errorf("eventlog: config: max age %v: must be positive, 0 (the stream's own) or Unbounded", c.MaxAge)
	}
	if c.MaxBytes < 0 && c.MaxBytes != Unbounded {
		return fmt.Errorf("eventlog: config: max bytes %d: must be positive, 0 (the stream's own) or Unbounded", c.MaxBytes)
	}
	if c.Storage != FileStorage && c.Storage != MemoryStorage {
		return fmt.Errorf("eventlog: config: unknown storage %v", c.Storage)
	}
	if (c.TLSCertFile == "") != (c.TLSKeyFile == "") {
		return fmt.Errorf("eventlog: config: TLSCertFile and TLSKeyFile must be set together")
	}
	if c.CredsFile != "" && c.NKeySeedFile != "" {
		return fmt.Errorf("eventlog: config: set CredsFile or NKeySeedFile, not both")
	}
	if !c.Password.IsZero() && c.User == "" {
		return fmt.Errorf("eventlog: config: Password is set without User")
	}
	if !c.Token.IsZero() && (c.User != "" || c.CredsFile != "" || c.NKeySeedFile != "") {
		return fmt.Errorf("eventlog: config: set Token or one of User, CredsFile and NKeySeedFile, not both")
	}
	if c.InboxPrefix != "" {
		for _, tok := range strings.Split(c.InboxPrefix, ".") {
			if !validToken(tok) {
				return fmt.Errorf("eventlog: config: inbox prefix %q: tokens must be non-empty without '*', '>' or spaces", c.InboxPrefix)
			}
		}
	}
	if c.NATSURL == "" {
		// The embedded server has no TLS and no users: settings for an
		// external server would be dropped without a word.
		for _, f := range []struct {
			name string
			set  bool
		}{
			{"TLSCAFile", c.TLSCAFile != ""}, {"TLSCertFile", c.TLSCertFile != ""}, {"CredsFile", c.CredsFile != ""},
			{"NKeySeedFile", c.NKeySeedFile != ""}, {"User", c.User != ""}, {"Token", !c.Token.IsZero()},
			{"TLSHandshakeFirst", c.TLSHandshakeFirst},
		} {
			if f.set {
				return fmt.Errorf("eventlog: config: %s is for an external server, but NATSURL is empty (the embedded server has no TLS or authentication)", f.name)
			}
		}
	}
	return nil
}

// validToken reports whether s can be one NATS subject token or a stream name
// (path separators are refused too: the server uses stream names as
// directory names).
func validToken(s string) bool {
	if s == "" {
		return false
	}
	for _, r := range s {
		if r <= ' ' || r == 0x7f || r == '.' || r == '*' || r == '>' || r == '/' || r == '\\' {
			return false
		}
	}
	return true
}
