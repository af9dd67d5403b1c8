package mls

import (
	"errors"

	"github.com/epochlog/epochlog/mls/keyschedule"
)

// Sentinel errors of framing, groups and Welcome processing. Test with
// errors.Is; the errors that wrap them say which group, epoch, leaf or
// generation was involved, never which secret.
var (
	// ErrWrongGroup reports a message, Welcome or GroupInfo for another
	// group than the one processing it.
	ErrWrongGroup = errors.New("mls: message for another group")

	// ErrWrongEpoch reports a message for an epoch the group has not
	// reached, or a handshake message for an epoch other than the current
	// one.
	ErrWrongEpoch = errors.New("mls: message for the wrong epoch")

	// ErrEpochRetired reports an application message for a past epoch whose
	// keys are no longer kept (beyond the configured maximum past epochs).
	ErrEpochRetired = errors.New("mls: epoch retired")

	// ErrGenerationReused reports a message whose key generation was
	// already consumed: a replay, or a duplicate delivery. It is the
	// secret tree's sentinel, so errors.Is works with either name.
	ErrGenerationReused = keyschedule.ErrGenerationReused

	// ErrTooFarAhead reports a message whose generation is further ahead
	// of the sender's ratchet than the configured forward limit. It is the
	// secret tree's sentinel.
	ErrTooFarAhead = keyschedule.ErrTooFarAhead

	// ErrTampered reports a message whose ciphertext, sender data,
	// padding, membership tag or confirmation tag does not authenticate.
	// The error never says which check failed.
	ErrTampered = errors.New("mls: message tampered or not authentic")

	// ErrNotMember reports a message from a sender that is not a member of
	// the epoch, or an operation by a client that is no longer a member.
	ErrNotMember = errors.New("mls: not a member")

	// ErrInvalidProposal reports a proposal or proposal list that violates
	// RFC 9420 §12.2 (unknown reference, duplicate, removal of a blank
	// leaf, an Update from the committer, a missing required path), an
	// Update that keeps its encryption key or reuses a member's key, a
	// leaf whose credential type or capabilities do not fit the group
	// (§7.3), or a psk_nonce that is not KDF.Nh bytes long (§8.4), also in
	// a Welcome. This member also refuses to make a GroupContextExtensions
	// proposal or a ReInit carrying an extension type the IANA registry
	// assigns to other messages (§17.3: application_id, ratchet_tree,
	// external_pub, GREASE); received, they are applied.
	ErrInvalidProposal = errors.New("mls: invalid proposal")

	// ErrNoWelcomeSecrets reports a Welcome that holds no entry for the
	// key package offered to join it.
	ErrNoWelcomeSecrets = errors.New("mls: welcome is not addressed to this key package")

	// ErrReInitialized reports an operation on a group whose last commit
	// carried a ReInit (RFC 9420 §11.2): it sends and processes no more
	// handshake messages; its members move to the new group
	// (Group.Reinitialize, and Join with JoinOptions.Predecessors).
	ErrReInitialized = errors.New("mls: group reinitialized")

	// ErrUnknownPSK reports a PreSharedKey the client does not hold.
	ErrUnknownPSK = errors.New("mls: pre-shared key not available")

	// ErrStateVersion reports serialized state of an unknown version.
	ErrStateVersion = errors.New("mls: unsupported state encoding version")
)
