// Package eventlog is epochlog's event log: sealed MLS events appended to and
// read from a NATS JetStream stream, on an embedded nats-server by default.
//
// [Open] connects (or starts the embedded server under Config.DataDir) and
// creates or checks the stream. [Log.Append] seals the events of one
// aggregate transition and publishes them as one atomic batch, idempotent
// (deterministic Nats-Msg-Id) and ordered (expected last subject sequence:
// a lost race is [ErrConflict]). [Log.AppendBulk] pipelines many appends.
// [Log.Read] and [Log.Follow] deliver an installation's events in stream
// order, each opened, verified and checked for contiguous positions; a bad
// record stops them with a [*RecordError] naming the stream sequence.
//
// Every event Append seals links (events.Link) to the latest earlier event
// of its installation this Log knows, and readers check each link: an
// event that vanished from the stream (a block the server truncated, a
// deleted message) stops the first read that meets a link to it with
// [ErrMissingEvent]; a read of a whole history also checks the server's
// per-subject counts. A read that makes no progress for
// Config.ProgressTimeout ends with [ErrStalled]. Config.ReadOnly opens the
// log for tools that must create and change nothing.
// The subject layout and what the bus operator sees are documented in
// docs/architecture.md ("Event log").
//
// # Caveats
//
//   - Subjects and message ids are keyed by the keyring's pseudonym key (the
//     key with the lowest id): keep that key in every ring, or the log's
//     subjects change and old events are no longer found.
//   - Positions are checked per aggregate from the start of the stream. A
//     Read from a later sequence cannot check the first event it sees of
//     each aggregate against its predecessor; the caller that kept the
//     checkpoint should.
//   - Idempotency covers a retry with the same expected position and the
//     same events. A retry with different content for a position already
//     taken is a conflict, by design.
//   - Multi-event appends need nats-server 2.12 or later (atomic batch
//     publish); against an older server Append takes one event per call and
//     returns [ErrAtomicUnsupported] otherwise.
//   - The embedded server listens on loopback without authentication (or,
//     with Config.EmbeddedInProcess, not at all). Anyone who can reach it
//     can read subjects and sizes and delete messages, though not read or
//     forge events.
//   - Follow keeps reconnecting while the server is away, for up to
//     Config.ProgressTimeout ([ErrStalled] then); it returns otherwise only
//     when ctx is cancelled, the Log is closed ([ErrClosed]) or a record
//     fails verification.
//   - Links are checked from a read's first sequence on: a read from a
//     checkpoint cannot check links to events before it, and the newest
//     events are linked to by nothing yet; replay compares those with what
//     a read model holds.
//   - The embedded server fsyncs every write before acknowledging it unless
//     Config.NoSync; an external server's durability is its own
//     configuration (docs/operations.md, "Durability").
package eventlog
