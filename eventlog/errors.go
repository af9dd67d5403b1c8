package eventlog

import (
	"errors"
	"fmt"
)

// Sentinel errors. Test for them with errors.Is; the returned errors wrap them
// with the stream, subject, sequence or position involved.
var (
	// ErrConflict means an append lost a race: the aggregate's last event is
	// not at the position the caller expected (another writer appended first,
	// or the caller's view is stale). Nothing of the failed append was
	// written. Re-read the aggregate, re-decide, and append again.
	ErrConflict = errors.New("eventlog: append conflict: aggregate moved past the expected position")

	// ErrOutOfOrder means a reader found an aggregate's positions not
	// contiguous: a gap (a deleted or missing event) or a repeat (a replayed
	// or duplicated event). The wrapping *RecordError names the sequence.
	ErrOutOfOrder = errors.New("eventlog: events of an aggregate out of order (gap or repeat)")

	// ErrMissingEvent means an event links (events.Link) to an earlier
	// event of its installation that the stream does not give, or gives
	// with other content: an event of the history was lost (a corrupted
	// block the server dropped, a deleted message) or the stream was
	// truncated and written again. The wrapping *RecordError names the
	// linking event's sequence; the message names the missing one. An
	// append whose expected position is past the aggregate's last event
	// on the stream fails with it too (the writer holds events the stream
	// lost), naming both positions.
	ErrMissingEvent = errors.New("eventlog: an event of the installation's history is missing")

	// ErrStalled means a read made no progress for Config.ProgressTimeout
	// while the stream held events it had not delivered (a stored message
	// the server cannot load, a stream without a leader) or while the
	// server did not answer. The error says which, and after which stream
	// sequence.
	ErrStalled = errors.New("eventlog: read stalled")

	// ErrNoStore means a ReadOnly Open found no store to read: the data
	// directory, or the JetStream store under it, does not exist (a
	// mistyped --data). The error names the path.
	ErrNoStore = errors.New("eventlog: no event store at the data directory")

	// ErrNoStream means a ReadOnly Open found no stream of that name on
	// the server (a mistyped stream name, or the wrong server).
	ErrNoStream = errors.New("eventlog: no such stream")

	// ErrReadOnly means an append was asked of a Log opened ReadOnly.
	ErrReadOnly = errors.New("eventlog: log opened read-only")

	// ErrIncompatibleStream means the stream exists but its configuration
	// cannot hold this log (other subjects, other storage, other retention,
	// or a setting that would drop or hide acknowledged events), and
	// changing it would need an operator's decision.
	ErrIncompatibleStream = errors.New("eventlog: existing stream is incompatible with the configuration")

	// ErrAtomicUnsupported means a multi-event append was asked of a stream
	// or server without atomic batch publish (nats-server 2.12 or later with
	// the stream's AllowAtomicPublish). Append one event per transition
	// instead, or upgrade the server.
	ErrAtomicUnsupported = errors.New("eventlog: atomic batch publish not supported by the server or stream")

	// ErrPartialBatch means the server stored only the first events of
	// an atomic batch (one Append of several events) and not the rest:
	// nats-server 2.15 can do so when its own or the account's storage
	// limit is reached in the middle of a batch (it answers "insufficient
	// resources", or not at all), although a batch is meant to be stored
	// whole or not at all. The stream then holds part of a transition;
	// appending again cannot mend it. The error names the stored events'
	// positions and stream sequences.
	ErrPartialBatch = errors.New("eventlog: the server stored only part of an atomic batch")

	// ErrInvalidAppend means the events passed to Append cannot be appended
	// as given: no events, events of several aggregates, positions that do
	// not follow the expected one, or an invalid aggregate.
	ErrInvalidAppend = errors.New("eventlog: invalid append")

	// ErrKeyringMismatch means the stream was created under another
	// keyring: its subjects are pseudonyms of a different oldest root key,
	// so this keyring would find none of its events (and would write events
	// nobody else can find). Load the keyring the stream was created with.
	ErrKeyringMismatch = errors.New("eventlog: keyring does not match the stream")

	// ErrErased means the installation was erased (it has a tombstone):
	// its data keys are shredded and its events purged, or being purged.
	// The wrapping *ErasedError names when and by whom. Reads, rebuilds
	// and appends of it fail with it; other installations are unaffected.
	ErrErased = errors.New("eventlog: installation erased")

	// ErrNoKeyBucket means a format-3 event (sealed under a data key) was
	// to be opened, or an installation erased, but the stream's key bucket
	// ("<stream>_KEYS", named in the error) does not exist: a read-only
	// Log on a store whose bucket was never created or was lost.
	ErrNoKeyBucket = errors.New("eventlog: no data key bucket")

	// ErrNoDataKey means the data key an event was sealed under is not in
	// the key bucket: shredded (retention), or the bucket is not the
	// stream's. The error also wraps events.ErrUnknownKey.
	ErrNoDataKey = errors.New("eventlog: data key not in the key bucket")

	// ErrUnknownInstallation means the stream holds nothing of an
	// installation an operation needs to exist (Erase of an id with no
	// event and no data key: a typo, which a tombstone would make
	// permanent).
	ErrUnknownInstallation = errors.New("eventlog: the stream holds nothing of the installation")

	// ErrClosed means the Log was closed.
	ErrClosed = errors.New("eventlog: log closed")

	// ErrConnect means the NATS server could not be reached or refused the
	// client (address, TLS or credentials); the error wraps the client's
	// own (for example nats.ErrAuthorization) and names the URL, never a
	// secret.
	ErrConnect = errors.New("eventlog: cannot connect to NATS")

	// ErrStoreLocked means another embedded server, in this process or
	// another, runs on Config.DataDir: it holds the directory's lock file,
	// and two servers on one store would corrupt each other's files. The
	// wrapping *StoreLockedError names the directory and the holder (pid,
	// command, start, client URL if it listens). Connect to that server
	// instead (Config.NATSURL), or stop it.
	ErrStoreLocked = errors.New("eventlog: data directory locked by another embedded server")

	// ErrListenAddr means the embedded server could not listen on
	// Config.ListenHost and ListenPort: the port is in use, or the host
	// is not an address of this machine. The error names both and what
	// the server said. Nothing was written; the data directory's lock is
	// released.
	ErrListenAddr = errors.New("eventlog: embedded server cannot listen on its address")

	// ErrStreamFull means the server refused an append for want of room:
	// the stream's limit (max_bytes, max_msgs, discard new), the
	// account's, or the server's storage (max_file_store, a full disk).
	// Nothing of the refused append was stored (unless ErrPartialBatch
	// says otherwise). The error names the stream, the subject, the
	// position and the limit. Appending again succeeds once an operator
	// has made room; until then it fails at once, the same way.
	ErrStreamFull = errors.New("eventlog: stream full")

	// ErrEventTooLarge means the server refused an append because an
	// event, sealed, exceeds its max_payload (1 MiB by default, 8 MiB on the
	// embedded server: EmbeddedMaxPayload): nothing
	// was stored. The error names the event's kind, position and size
	// and the limit, and wraps nats.ErrMaxPayload. A group's whole
	// state (a join's, at about 10,000 members) can be that large: raise
	// max_payload on the server (the client takes it from the server).
	ErrEventTooLarge = errors.New("eventlog: event larger than the server's max_payload")
)

// RecordError describes a failure on one stored record: which stream,
// subject and stream sequence, what the engine was doing, and the cause. It unwraps to the
// cause, so errors.Is(err, events.ErrTampered) and errors.Is(err,
// ErrOutOfOrder) work through it.
type RecordError struct {
	Stream  string // the stream name
	Subject string // the record's subject
	Seq     uint64 // the record's stream sequence
	Op      string // what failed: "open", "order", "subject", "lookup", "metadata" or "handle"
	Err     error  // the cause
}

// Error names the stream, sequence and subject, so an operator can inspect
// the record (e.g. `nats stream get STREAM SEQ`).
func (e *RecordError) Error() string {
	return fmt.Sprintf("eventlog: stream %s seq %d subject %s: %s: %v", e.Stream, e.Seq, e.Subject, e.Op, e.Err)
}

// Unwrap returns the cause.
func (e *RecordError) Unwrap() error { return e.Err }
