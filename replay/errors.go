package replay

import (
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// Sentinel errors of replay. Test for them with errors.Is; errors of the
// log underneath (*eventlog.RecordError naming a stream sequence,
// eventlog.ErrOutOfOrder, events.ErrTampered) come through wrapped.
var (
	// ErrDrift means a read model's content differs from what replaying its
	// installation's events gives: a row was edited, added or deleted outside
	// the projector, or the checkpoint does not match the stream. The
	// *DriftError wrapping it names the first difference.
	ErrDrift = errors.New("replay: read model drifted from its event history")

	// ErrMLSMismatch means replay re-derived an MLS transition and it does
	// not match what was recorded (epoch authenticator, epoch, state), or
	// a group's events are missing or out of order. The *RecordError
	// wrapping it names the stream sequence.
	ErrMLSMismatch = errors.New("replay: recorded MLS transition does not verify")

	// ErrBehind means the stream gives less of an installation's history
	// than a read model already holds (a lower checkpoint, or fewer events
	// of some aggregate): events were lost from the stream, or it is not
	// the stream the read model was built from. Rebuild refuses to swap
	// such a database in (RebuildOptions.Force overrides); the error names
	// what is missing. Do not rebuild: find the missing events first.
	ErrBehind = errors.New("replay: the stream holds less than the read model")

	// ErrWrongInstallation means a read model belongs to another
	// installation than the one named: a mistyped --installation or --db.
	ErrWrongInstallation = errors.New("replay: read model belongs to another installation")

	// ErrNoHistory means the stream holds no history of the installation
	// to rebuild from: no events at all (a wrong installation id, store or
	// server), or events without the installation.created they start with.
	ErrNoHistory = errors.New("replay: no history of the installation on the stream")
)

// DriftError names where a read model first differs from its replay:
// the table and row key (in primary-key order), and what differs. It
// unwraps to ErrDrift. It never holds row content.
type DriftError struct {
	Installation events.InstallationID
	Path         string // the live database
	Checkpoint   uint64 // the live database's checkpoint, where both were compared
	Table        string // the first differing table, or "checkpoint"
	RowKey       string // the first differing row's primary key, when known
	Detail       string
}

// Error names the database, table and row.
func (e *DriftError) Error() string {
	s := fmt.Sprintf("replay: read model %s of %s at stream sequence %d: table %s", e.Path, e.Installation, e.Checkpoint, e.Table)
	if e.RowKey != "" {
		s += " row " + e.RowKey
	}
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s + " (hint: rebuild it from the stream)"
}

// Unwrap returns ErrDrift.
func (e *DriftError) Unwrap() error { return ErrDrift }

// IsVerificationFailure reports whether err means the data did not check
// out, rather than that the operation could not run: a read model that
// drifted, a tampered, moved or undecryptable event, a history out of
// order or missing events, an MLS transition that does not re-derive, a
// stream holding less than the read model, a damaged database file, a
// keyring or database key that does not fit. The replayer exits 3 for these.
func IsVerificationFailure(err error) bool {
	for _, target := range []error{
		eventlog.ErrKeyringMismatch, ErrDrift, eventlog.ErrOutOfOrder, ErrMLSMismatch, ErrBehind, eventlog.ErrMissingEvent,
		events.ErrTampered, events.ErrWrongKey, events.ErrUnknownKey, events.ErrMoved, events.ErrMalformed,
		projections.ErrWrongKey, projections.ErrCorrupt,
	} {
		if errors.Is(err, target) {
			return true
		}
	}
	return false
}

// SwappedError reports a rebuild, rekey or migrate that failed after its
// swap: the rebuilt database is live at Path (under the new key, for a
// rekey), and only catching it up with the events appended while it was
// built failed or was interrupted (Err). It holds all it held at the
// swap; it lags the stream until a follow or another rebuild catches it
// up. The RebuildResult returned with it says what was done.
type SwappedError struct {
	Path string
	Err  error
}

func (e *SwappedError) Error() string {
	return fmt.Sprintf("the rebuilt database is live at %s; catching it up after the swap failed (it lags the stream until followed or rebuilt): %v", e.Path, e.Err)
}

// Unwrap returns the catch-up's error.
func (e *SwappedError) Unwrap() error { return e.Err }
