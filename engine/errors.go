package engine

import (
	"errors"

	"github.com/epochlog/epochlog/events"
)

// Sentinel errors of the engine. Test for them with errors.Is; the returned
// errors wrap them with the installation, group or queue involved. Errors
// of the log underneath (eventlog.ErrConflict, eventlog.ErrConnect, a
// *eventlog.RecordError naming a stream sequence) come through wrapped.
var (
	// ErrInstallationExists means CreateInstallation found the installation
	// already created on the log; open it with OpenInstallation instead.
	ErrInstallationExists = errors.New("engine: installation already exists")

	// ErrNoInstallation means OpenInstallation found no installation.created
	// event for the id: create it first.
	ErrNoInstallation = errors.New("engine: installation does not exist")

	// ErrClosed means an operation was called on an Installation after
	// its Close (or, for a Pool's installation, after its release let
	// the Pool close it): nothing was recorded.
	ErrClosed = errors.New("engine: installation closed")

	// ErrWrongReadModel means OpenInstallation or CreateInstallation was
	// given the read model of another installation (its file and key):
	// nothing was read into it or recorded.
	ErrWrongReadModel = errors.New("engine: read model of another installation")

	// ErrUnknownGroup means an operation named a group this installation is
	// not in (never created or joined).
	ErrUnknownGroup = errors.New("engine: unknown group")

	// ErrEpochRetired means an application message belongs to an epoch
	// whose secrets were retired (older than maximum_past_epochs): it can
	// no longer be decrypted, by design (forward secrecy). A commit of
	// such an epoch, other than the one applied, cannot be authenticated
	// either, and is refused with it too. So is a message of an epoch of
	// this installation's membership that a removal ended, delivered
	// after the removal, and a commit of an epoch before its membership.
	ErrEpochRetired = errors.New("engine: message from a retired epoch")

	// ErrDuplicateMessage means a message was already processed: an
	// application message with the same ciphertext, a commit this
	// installation already applied, or a Welcome to a group it already
	// joined. A redelivery (say, after a crash between Receive and
	// Acknowledge), refused so it is not recorded twice: acknowledge it.
	ErrDuplicateMessage = errors.New("engine: message already received")

	// ErrNoKeyPackage means a Welcome names none of this installation's key
	// packages whose private keys are still held.
	ErrNoKeyPackage = errors.New("engine: welcome uses no key package of this installation")

	// ErrUnsupportedMessage means Receive got a message kind the engine
	// does not process (a GroupInfo or KeyPackage, which are not delivered
	// to members; a proposal from an external sender).
	ErrUnsupportedMessage = errors.New("engine: unsupported message")

	// ErrAlreadyMember means JoinExternal named a group this installation
	// is a member of; Resync rejoins one whose state is lost or forked.
	ErrAlreadyMember = errors.New("engine: already a member of the group")

	// ErrSuccessorStranded means Reinitialize or Branch named a successor
	// group whose aggregate in this installation's history holds a group
	// created at epoch 0 and nothing after: the first half of a successor
	// start that an engine before group.created version 3 appended as an
	// atomic batch the server stored in part (or a group created under
	// that id). Its first commit and Welcome were never recorded, and the
	// successor cannot be started under that id by this installation
	// (docs/engine.md, "A successor's creation stored alone"). Nothing is
	// recorded.
	ErrSuccessorStranded = errors.New("engine: successor group holds only its creation")

	// ErrStateMismatch means the state the read model holds for a group
	// is another group's, or of another epoch than the group's: an event
	// recording it (a forged group.state_recorded, group.proposal_staged
	// or commit, appended by whoever holds the installation's event keys)
	// that the projection, which does not decode MLS states, applied. The
	// group is not loaded and nothing is recorded; replay.VerifyMLS names
	// the event's stream sequence.
	ErrStateMismatch = errors.New("engine: the read model holds a state of another group or epoch for the group")

	// ErrForked means this installation's state of a group is not the
	// group's: a peer's epoch authenticator differs from its own, or
	// another commit, authenticated in that epoch, took the group from an
	// epoch this installation left by a commit of its own. The error is a
	// *ForkError with the evidence; Resync rejoins the group.
	ErrForked = errors.New("engine: group state forked")

	// ErrMemberRefused means a transition would put into a group a
	// member this installation does not accept: an identity that is not a
	// valid installation id, one another leaf of the group already holds
	// (two leaves cannot both be one installation: one is an impostor),
	// or one InstallationOptions.CheckMember refused. Nothing is
	// recorded.
	ErrMemberRefused = errors.New("engine: member refused")

	// ErrStaleCommit means a commit belongs to an epoch this installation
	// left by another member's commit: the delivery order put this one
	// second, and the group (as this installation follows it) took the
	// other. Nothing is recorded; acknowledge it. Its committer, if it
	// applied its own commit, is the one forked.
	ErrStaleCommit = errors.New("engine: commit of an epoch the group left by another commit")

	// ErrStaleProposal means a proposal belongs to an epoch the group has
	// left: a commit came first, and it can no longer be committed.
	// Nothing is recorded; acknowledge it (its sender proposes again if it
	// still wants the change).
	ErrStaleProposal = errors.New("engine: proposal of an epoch the group has left")

	// ErrTooManyConflicts means an operation lost the race for its group
	// on every attempt (see InstallationOptions.MaxAttempts).
	ErrTooManyConflicts = errors.New("engine: operation lost every race for the group")

	// ErrOutcomeUnknown means an operation's append was sent but its
	// outcome could not be learned before the context ended, the
	// connection closed or the operation's outcome timeout passed: its
	// events may or may not be recorded. An operation (of an
	// Installation, a Host or Deliveries) retries an append whose answer
	// was lost (a timeout, a reconnect, a stream without a leader) with
	// the same events, which Append never stores twice, for as long as
	// its context allows and at most InstallationOptions.OutcomeTimeout
	// (Deliveries: Deliveries.OutcomeTimeout), both 60 s by default; each
	// try is bounded by the Log's RequestTimeout, so a bound longer than
	// a failover is enough.
	// After this error, CatchUp shows what the stream holds so far, and
	// the next operation on the group follows whatever it holds; an own
	// commit's or a Send's output comes in the error, an
	// *OutcomeUnknownError, and Installation.Decide settles it for good.
	ErrOutcomeUnknown = errors.New("engine: outcome of the append unknown")

	// ErrInvalidAck means an acknowledgement names a sequence beyond the last
	// one enqueued on the channel.
	ErrInvalidAck = errors.New("engine: acknowledgement beyond the last enqueued sequence")

	// ErrIdempotencyKeyReused means an enqueue or fan-out gave an
	// idempotency key the queue had seen with another payload: nothing is
	// enqueued (a fan-out enqueues on none of its queues). With keys such
	// as "commit-<group>-<epoch>", another member's commit of that epoch
	// was queued first: the delivery order has taken it.
	ErrIdempotencyKeyReused = errors.New("engine: idempotency key used before for another payload")

	// ErrPSKRegistered means RegisterExternalPSK named an id the
	// installation registered before (an id names one secret, retired
	// ones included): nothing is recorded. After an ErrOutcomeUnknown it
	// tells that the first try was recorded.
	ErrPSKRegistered = errors.New("engine: external PSK id registered already")
)

// errNotProjected marks an operation whose events are durable (it
// happened) but whose read model could not be brought up to date with
// them. It never leaves the package: the public operations move it into
// their output's ProjectionErr.
var errNotProjected = errors.New("engine: events recorded but not yet projected")

// lagged splits an operation's error: a projection failure after its
// events became durable (the output's ProjectionErr; the operation
// succeeded) or a failure of the operation.
func lagged(err error) (projectionErr, opErr error) {
	if errors.Is(err, errNotProjected) {
		return err, nil
	}
	return nil, err
}

// OutcomeUnknownError is the error of an own commit (AddMembers,
// RemoveMembers, Update, CommitProposals, ...) or a Send whose append went
// unanswered: it wraps ErrOutcomeUnknown and carries the operation's
// output as the operation would have returned it. Whether that output
// may be delivered is not known yet: Installation.Decide finds out.
// Delivered before, it could announce a commit the group never took;
// dropped after it was recorded, the members would never follow the
// group's later commits, and the added members never join.
type OutcomeUnknownError struct {
	// Err is the operation's error; it wraps ErrOutcomeUnknown.
	Err error
	// Commit is an own commit's output (Send: its path update, when
	// that is what went unanswered).
	Commit *CommitOutput
	// Send is Send's (or Host.Send's) output, the message, when its
	// append went unanswered; without its Update, which Send returns
	// beside the error when it was recorded first.
	Send *SendOutput

	expected uint64         // the position the events were to follow
	evs      []events.Event // as sent: Decide appends them again
}

// Error returns the operation's error text.
func (e *OutcomeUnknownError) Error() string { return e.Err.Error() }

// Unwrap returns the operation's error, which wraps ErrOutcomeUnknown.
func (e *OutcomeUnknownError) Unwrap() error { return e.Err }
