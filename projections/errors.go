package projections

import (
	"errors"
	"fmt"
)

// Sentinel errors. Callers test them with errors.Is; the concrete errors
// returned carry the file or stream sequence they are about.
var (
	// ErrWrongKey means the file looks like a SQLCipher database but the
	// key does not open it (no page authenticates under the key).
	ErrWrongKey = errors.New("projections: wrong key for database")
	// ErrCorrupt means the key is right (some page authenticates) but the
	// file is damaged: a page fails authentication or SQLite reports
	// corruption.
	ErrCorrupt = errors.New("projections: database is corrupt")
	// ErrNotOurs means the file opens but is not an epochlog read model
	// (missing or foreign schema marker), or is not a SQLCipher 4 file at all.
	ErrNotOurs = errors.New("projections: not an epochlog read model")
	// ErrSchemaTooNew means the database's schema version (PRAGMA
	// user_version) is newer than this code knows: downgrades are refused.
	ErrSchemaTooNew = errors.New("projections: schema version newer than this code")
	// ErrCannotApply means an event cannot be applied to the read model
	// (unknown kind, impossible transition, inconsistent input). The
	// projector must stop: nothing is ever skipped.
	ErrCannotApply = errors.New("projections: cannot apply event")
	// ErrLocked means another writer holds the read model's lock (see
	// Lock): only one writer per read model. The error names the holder.
	ErrLocked = errors.New("projections: read model is locked by another writer")
	// ErrMigrationWait means a migration step waited Options.MigrationWait
	// for another connection's write to end (another process migrating
	// the same file, say) and gave up; nothing of the step was written.
	ErrMigrationWait = errors.New("projections: gave up waiting for another writer before migrating")
	// ErrOutputsNotKept means a file older than schema 9 applied own
	// commits whose events record their output (group.commit_applied v5,
	// group.external_joined v3), or one older than schema 10 own
	// application messages that record theirs (application.message_sent
	// v2), or one older than schema 11 received messages that record
	// their generation (application.message_received v2), without
	// keeping it: migrated in place it would lack those outputs, which a
	// fresh build has. Migrate it by replay instead;
	// MigrateInPlace, and Open without Options.MigrateWithoutOutputs,
	// refuse it and write nothing.
	ErrOutputsNotKept = errors.New("projections: own commit or message outputs were applied but not kept (schema older than 9, 10 or 11)")
	// ErrOrdinalBehind means a group's highest message ordinal handed out
	// (groups.last_ordinal, schema 12) is below the highest ordinal of its
	// stored messages: the value is damaged, and the group's next message
	// would take an ordinal already stored or hand out one out of order.
	// It comes in an *OrdinalError, for which errors.Is(err, ErrCorrupt)
	// holds too: a rebuild from the stream replaces the file.
	ErrOrdinalBehind = errors.New("projections: a group's last ordinal is below its highest stored message ordinal")
)

// OrdinalError names a group whose groups.last_ordinal is below the
// highest ordinal of its stored messages (ErrOrdinalBehind, ErrCorrupt).
// The file's checks (DB.CheckFile, DB.IntegrityCheck) report the first
// such group by id and count the others; the applier reports the group
// of the message it was about to store.
type OrdinalError struct {
	Group   []byte // the group's id
	Last    int64  // its groups.last_ordinal
	Highest int64  // the highest ordinal of its stored messages
	More    int    // other groups found with the same damage
}

// Error names the group (hex) and both ordinals.
func (e *OrdinalError) Error() string {
	s := fmt.Sprintf("%v: group %x: last_ordinal %d is below its highest stored message ordinal %d", ErrCorrupt, e.Group, e.Last, e.Highest)
	switch {
	case e.More == 1:
		s += " (and 1 more group)"
	case e.More > 1:
		s += fmt.Sprintf(" (and %d more groups)", e.More)
	}
	return s
}

// Unwrap returns ErrOrdinalBehind and ErrCorrupt.
func (e *OrdinalError) Unwrap() []error { return []error{ErrOrdinalBehind, ErrCorrupt} }

// FileError reports a failure about one database file. It never contains
// key material.
type FileError struct {
	Path string // the database file
	Op   string // what was being done: "open", "migrate", "swap", ...
	Err  error  // wraps one of the sentinels where one applies
	Hint string // what an operator can do about it, if anything
}

// Error describes the failure with the file, the operation and a hint.
func (e *FileError) Error() string {
	s := fmt.Sprintf("%s %s: %v", e.Op, e.Path, e.Err)
	if e.Hint != "" {
		s += " (hint: " + e.Hint + ")"
	}
	return s
}

// Unwrap returns the underlying error.
func (e *FileError) Unwrap() error { return e.Err }

// ApplyError reports an event that could not be applied. The projector
// stops at Seq; nothing of the failing transaction was committed.
type ApplyError struct {
	Seq  uint64 // stream sequence of the event that failed
	Kind string // the event kind, if known
	Op   string // what the applier was doing
	Err  error  // the cause; errors.Is(err, ErrCannotApply) holds for refused events
}

// Error names the stream sequence, the kind and the cause.
func (e *ApplyError) Error() string {
	k := e.Kind
	if k == "" {
		k = "?"
	}
	return fmt.Sprintf("projections: apply stream sequence %d (%s): %s: %v", e.Seq, k, e.Op, e.Err)
}

// Unwrap returns the cause.
func (e *ApplyError) Unwrap() error { return e.Err }

// cannot builds the cause for an event the model refuses.
func cannot(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrCannotApply}, args...)...)
}
