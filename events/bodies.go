package events

import (
	"bytes"
	"fmt"
	"time"
)

// Kind names an event kind, "<area>.<what_happened>".
type Kind string

// The event kinds of the catalogue. See [Kinds] and docs/events.md.
const (
	KindInstallationCreated        Kind = "installation.created"
	KindExternalPSKRegistered      Kind = "installation.psk_registered"
	KindExternalPSKRetired         Kind = "installation.psk_retired"
	KindKeyPackageGenerated        Kind = "keypackage.generated"
	KindKeyPackagePublished        Kind = "keypackage.published"
	KindKeyPackageConsumed         Kind = "keypackage.consumed"
	KindKeyPackageRotated          Kind = "keypackage.rotated"
	KindGroupCreated               Kind = "group.created"
	KindProposalStaged             Kind = "group.proposal_staged"
	KindCommitApplied              Kind = "group.commit_applied"
	KindWelcomeProcessed           Kind = "group.welcome_processed"
	KindMemberAdded                Kind = "group.member_added"
	KindMemberRemoved              Kind = "group.member_removed"
	KindEpochSecretsRetired        Kind = "group.epoch_secrets_retired"
	KindHandshakeFormatSet         Kind = "group.handshake_format_set"
	KindStateRecorded              Kind = "group.state_recorded"
	KindExternalJoined             Kind = "group.external_joined"
	KindApplicationMessageSent     Kind = "application.message_sent"
	KindApplicationMessageReceived Kind = "application.message_received"
	KindDeliveryEnqueued           Kind = "delivery.enqueued"
	KindDeliveryAcknowledged       Kind = "delivery.acknowledged"
	KindDeliveryExpired            Kind = "delivery.expired"
)

// Body is the kind-specific payload of an [Event]. Each kind of the catalogue
// is one struct type implementing Body with value receivers.
type Body interface {
	// Kind returns the kind constant of the body's type.
	Kind() Kind
	// SchemaVersion returns the schema version this code writes for the kind
	// (its current version).
	SchemaVersion() uint16
}

// InstallationCreated records an installation's identity: its signature key
// pair, ciphersuite and MLS credential.
type InstallationCreated struct {
	Installation        InstallationID `msgpack:"installation"`
	Ciphersuite         uint16         `msgpack:"ciphersuite"`
	SignaturePublicKey  []byte         `msgpack:"signature_public_key"`
	SignaturePrivateKey Secret         `msgpack:"signature_private_key"`
	// Credential is the TLS-encoded MLS Credential.
	Credential []byte `msgpack:"credential"`
}

// Kind implements Body.
func (InstallationCreated) Kind() Kind { return KindInstallationCreated }

// SchemaVersion implements Body.
func (InstallationCreated) SchemaVersion() uint16 { return 1 }

// ExternalPSKRegistered records an external pre-shared key (RFC 9420
// §8.4) the installation holds from now on, to inject into groups' key
// schedules (commits and Welcomes naming PSKID).
type ExternalPSKRegistered struct {
	PSKID []byte `msgpack:"psk_id"`
	// Secret is the PSK.
	Secret Secret `msgpack:"secret"`
}

// Kind implements Body.
func (ExternalPSKRegistered) Kind() Kind { return KindExternalPSKRegistered }

// SchemaVersion implements Body.
func (ExternalPSKRegistered) SchemaVersion() uint16 { return 1 }

// ExternalPSKRetired records that the installation no longer holds an
// external PSK: the read model deletes its secret (as epochs' secrets are
// retired), and commits or Welcomes naming it fail from then on.
type ExternalPSKRetired struct {
	PSKID []byte `msgpack:"psk_id"`
}

// Kind implements Body.
func (ExternalPSKRetired) Kind() Kind { return KindExternalPSKRetired }

// SchemaVersion implements Body.
func (ExternalPSKRetired) SchemaVersion() uint16 { return 1 }

// KeyPackageGenerated records a new key package and the private keys the
// installation needs to join a group from a Welcome that uses it.
//
// Version 2 added Published and Destination: a key package generated to
// be published at once is one event, where it was this and a
// keypackage.published in one atomic batch (which costs a staged, synced
// file store on a single-replica file stream).
type KeyPackageGenerated struct {
	// Ref is the KeyPackageRef (RFC 9420, 5.2).
	Ref         []byte `msgpack:"ref"`
	Ciphersuite uint16 `msgpack:"ciphersuite"`
	// KeyPackage is the TLS-encoded KeyPackage message.
	KeyPackage []byte `msgpack:"key_package"`
	// InitPrivateKey is the HPKE private key for the KeyPackage's init_key.
	InitPrivateKey Secret `msgpack:"init_private_key"`
	// EncryptionPrivateKey is the HPKE private key for the leaf node's
	// encryption_key.
	EncryptionPrivateKey Secret `msgpack:"encryption_private_key"`
	LastResort           bool   `msgpack:"last_resort"`
	// Published says the key package was published as it was generated,
	// to Destination (as keypackage.published records it); false in an
	// upcast v1 event, whose publication is an event of its own.
	Published   bool   `msgpack:"published"`
	Destination string `msgpack:"destination"`
}

// Kind implements Body.
func (KeyPackageGenerated) Kind() Kind { return KindKeyPackageGenerated }

// SchemaVersion implements Body.
func (KeyPackageGenerated) SchemaVersion() uint16 { return 2 }

// KeyPackagePublished records that a key package was uploaded where others
// can fetch it.
type KeyPackagePublished struct {
	Ref []byte `msgpack:"ref"`
	// Destination names where it was published (a directory service, a
	// channel); informational.
	Destination string `msgpack:"destination"`
}

// Kind implements Body.
func (KeyPackagePublished) Kind() Kind { return KindKeyPackagePublished }

// SchemaVersion implements Body.
func (KeyPackagePublished) SchemaVersion() uint16 { return 1 }

// KeyPackageConsumed records that a Welcome used the key package. Its
// private keys are deleted from the read model unless it is last-resort.
//
// Version 2 added ReplacedBy: a last-resort package rotated as it is
// consumed is one event, where it was this and a keypackage.rotated in
// one atomic batch.
type KeyPackageConsumed struct {
	Ref []byte `msgpack:"ref"`
	// GroupID is the group the consuming Welcome joined.
	GroupID    []byte `msgpack:"group_id"`
	LastResort bool   `msgpack:"last_resort"`
	// ReplacedBy, when set, is the key package that replaces this
	// (last-resort) one as it is consumed: the rotation
	// keypackage.rotated records. Nil in an upcast v1 event, whose
	// rotation is an event of its own.
	ReplacedBy []byte `msgpack:"replaced_by"`
}

// Kind implements Body.
func (KeyPackageConsumed) Kind() Kind { return KindKeyPackageConsumed }

// SchemaVersion implements Body.
func (KeyPackageConsumed) SchemaVersion() uint16 { return 2 }

// KeyPackageRotated records, on the old key package's aggregate, that a
// (last-resort) key package was replaced by a new one.
type KeyPackageRotated struct {
	Ref        []byte `msgpack:"ref"`
	ReplacedBy []byte `msgpack:"replaced_by"`
}

// Kind implements Body.
func (KeyPackageRotated) Kind() Kind { return KindKeyPackageRotated }

// SchemaVersion implements Body.
func (KeyPackageRotated) SchemaVersion() uint16 { return 1 }

// GroupCreated records a new group at epoch 0 with its serialized state.
//
// Version 2 added Members (the creator), which a group.member_added event
// carried before (events/catalogue.go, groupCreatedV1, says why).
// Version 3 added FirstCommit: a successor group (a ReInit's or a
// branch) is created and moved to its first epoch by its first commit in
// this one event, where it was this and a group.commit_applied in one
// atomic batch (which nats-server 2.15 could store in part, leaving a
// group created whose first commit and Welcome never existed); a v2
// event is upcast with FirstCommit nil.
type GroupCreated struct {
	GroupID     []byte `msgpack:"group_id"`
	Ciphersuite uint16 `msgpack:"ciphersuite"`
	Epoch       uint64 `msgpack:"epoch"`
	// State is the serialized MLS group state at Epoch (contains the epoch
	// secrets).
	State Secret `msgpack:"state"`
	// Members are the group's members at Epoch, by leaf; empty in an
	// upcast v1 event (group.member_added events follow it).
	Members []Member `msgpack:"members"`
	// FirstCommit, when set, is the group's first commit (this
	// installation's own, from Epoch to FirstCommit.Epoch), recorded
	// with its creation: the event stands for group.created followed by
	// that group.commit_applied ([FirstCommitOf]), and the group is at
	// FirstCommit.Epoch after it. Its state delta, if any, starts from
	// State. Nil for a group created alone, and in events before
	// version 3.
	FirstCommit *CommitApplied `msgpack:"first_commit"`
}

// Kind implements Body.
func (GroupCreated) Kind() Kind { return KindGroupCreated }

// SchemaVersion implements Body.
func (GroupCreated) SchemaVersion() uint16 { return 3 }

// FirstCommitOf returns, for a group.created event that carries its
// group's first commit (GroupCreated.FirstCommit), that commit as the
// group.commit_applied event it stands for: the same aggregate,
// position, time and link, so that readers apply it as they apply any
// commit, after the creation. ok is false for any other event. A first
// commit of another group than the one created is an error wrapping
// ErrMalformed.
func FirstCommitOf(e Event) (commit Event, ok bool, err error) {
	gc, ok := BodyAs[GroupCreated](e)
	if !ok || gc.FirstCommit == nil {
		return Event{}, false, nil
	}
	if !bytes.Equal(gc.FirstCommit.GroupID, gc.GroupID) {
		return Event{}, false, fmt.Errorf("events: %w: group.created of group %x carries a first commit of group %x", ErrMalformed, gc.GroupID, gc.FirstCommit.GroupID)
	}
	e.Body = *gc.FirstCommit
	return e, true, nil
}

// ProposalStaged records a proposal of Epoch cached for a commit by
// reference (RFC 9420 §12.2): received from another member (Own unset:
// re-derived on replay from Message) or proposed by this installation.
// State is the group's state once the proposal is cached (what a reload
// starts from: the cache, and the handshake ratchets the proposal moved).
//
// Version 2 added Sender, Own, Message, MessageID and State; a v1 event
// is upcast with them empty. Version 3 added StateDelta and StateSHA256,
// as group.commit_applied v4 did (see CommitApplied.StateDelta): the
// state may be recorded as a delta from the state the epoch started
// with; a v2 event is upcast with both empty.
type ProposalStaged struct {
	GroupID     []byte `msgpack:"group_id"`
	Epoch       uint64 `msgpack:"epoch"`
	ProposalRef []byte `msgpack:"proposal_ref"`
	// ProposalType is the RFC 9420 proposal type (1 add, 2 update, 3
	// remove, 4 psk, 7 group_context_extensions).
	ProposalType uint16 `msgpack:"proposal_type"`
	// SenderLeaf is the proposer's leaf, or for an external sender its
	// index in the group's external_senders extension.
	SenderLeaf uint32 `msgpack:"sender_leaf"`
	// Sender is the credential identity of the proposer.
	Sender []byte `msgpack:"sender"`
	// SenderType is the RFC 9420 sender type of a proposer that is not a
	// member: 2 an external sender, 3 a new member proposing its own
	// Add. Zero (absent, as in every event before it was added) is a
	// member.
	SenderType uint8 `msgpack:"sender_type"`
	// Own is set for a proposal this installation made.
	Own bool `msgpack:"own"`
	// Proposal is the TLS-encoded Proposal.
	Proposal []byte `msgpack:"proposal"`
	// Message is the MLSMessage that carried it (PublicMessage or
	// PrivateMessage), as sent or received, and MessageID its digest (the
	// engine's message id: a redelivery is recognised by it).
	Message   []byte `msgpack:"message"`
	MessageID []byte `msgpack:"message_id"`
	// State is the serialized MLS group state with the proposal cached,
	// whole; empty when StateDelta records it.
	State Secret `msgpack:"state"`
	// StateDelta, when set, records that state as a delta from the state
	// the epoch started with (as CommitApplied.StateDelta); StateOf
	// rebuilds it and checks it against StateSHA256, its SHA-256.
	StateDelta  Secret `msgpack:"state_delta"`
	StateSHA256 []byte `msgpack:"state_sha256"`
}

// Kind implements Body.
func (ProposalStaged) Kind() Kind { return KindProposalStaged }

// SchemaVersion implements Body.
func (ProposalStaged) SchemaVersion() uint16 { return 3 }

// StateRecorded records the group's state at Epoch as the member holds
// it, its ratchets moved on by the application messages it sent and
// received since the state recorded before (mls.Group.MarshalBinary):
// what a reload starts from from then on. The engine records it before
// retention deletes messages recorded since the group's state, of an
// epoch the group still holds: a reload no longer needs them (a replay
// of a deleted message is refused, its generation consumed in the
// state), and takes no ratchet step for them.
type StateRecorded struct {
	GroupID []byte `msgpack:"group_id"`
	Epoch   uint64 `msgpack:"epoch"`
	// State is the serialized MLS group state, whole; empty when
	// StateDelta records it.
	State Secret `msgpack:"state"`
	// StateDelta, when set, records that state as a delta from the state
	// the epoch started with (as ProposalStaged.StateDelta); StateOf
	// rebuilds it and checks it against StateSHA256, its SHA-256.
	StateDelta  Secret `msgpack:"state_delta"`
	StateSHA256 []byte `msgpack:"state_sha256"`
}

// Kind implements Body.
func (StateRecorded) Kind() Kind { return KindStateRecorded }

// SchemaVersion implements Body.
func (StateRecorded) SchemaVersion() uint16 { return 1 }

// Member identifies a member of a group by leaf index and credential
// identity.
type Member struct {
	Leaf     uint32 `msgpack:"leaf"`
	Identity []byte `msgpack:"identity"`
}

// Committer names the member that made a commit, in the epoch the commit
// left.
type Committer struct {
	// Leaf is the committer's leaf (for an external commit, the leaf the
	// new member took).
	Leaf     uint32 `msgpack:"leaf"`
	Identity []byte `msgpack:"identity"`
	// Own is set for this installation's own commits (which replay
	// cannot re-derive: their path secrets are not recorded).
	Own bool `msgpack:"own"`
	// External is set for an external commit (a new member joining, or a
	// member rejoining, from a GroupInfo; RFC 9420 §12.4.3.2).
	External bool `msgpack:"external"`
}

// OwnOutput is what an own commit's output (the engine's CommitOutput)
// needs besides the commit message and the membership changes its
// group.commit_applied holds.
type OwnOutput struct {
	// Welcome is the Welcome (an MLSMessage) for the members the commit
	// added (CommitApplied.Added); nil when it added none.
	Welcome []byte `msgpack:"welcome"`
}

// CommitApplied records an epoch change: the group moved to Epoch by
// merging Commit. EpochAuthenticator and ConfirmedTranscriptHash are what
// replay re-derives and checks.
//
// Version 2 added Committer (an encrypted commit does not show its sender
// to whoever lacks the epoch's keys); a v1 event is upcast with Committer
// nil, and its commit, always a PublicMessage then, names its sender.
// Version 3 added RetiredEpochs, which a separate
// group.epoch_secrets_retired event carried before: a commit is then one
// event, appended without an atomic batch (on a single-replica file
// stream, nats-server stages every atomic batch in a file store of its
// own and syncs it, about 3.5 ms per batch: docs/benchmarks.md).
// Version 4 added StateDelta and StateSHA256: the new state may be
// recorded as a delta from the group's state before the commit (see
// StateDelta) instead of whole; a v3 event is upcast with both empty.
// Version 5 added OwnOutput: an own commit's output can be rebuilt from
// its event after a crash that lost it; a v4 event is upcast with
// OwnOutput nil (its output is not recorded).
type CommitApplied struct {
	GroupID                 []byte `msgpack:"group_id"`
	Epoch                   uint64 `msgpack:"epoch"`
	EpochAuthenticator      []byte `msgpack:"epoch_authenticator"`
	ConfirmedTranscriptHash []byte `msgpack:"confirmed_transcript_hash"`
	// Commit is the MLSMessage carrying the commit (PublicMessage or
	// PrivateMessage).
	Commit []byte `msgpack:"commit"`
	// State is the serialized MLS group state at Epoch, whole; empty when
	// StateDelta records it.
	State Secret `msgpack:"state"`
	// StateDelta, when set, records the state at Epoch as a delta
	// (internal/bytedelta) from the state the epoch before it started
	// with: the state the group's previous commit recorded, or the event
	// that created or joined the group (group.created, welcome_processed,
	// external_joined). A proposal cached since does not move it: every
	// read model schema keeps each epoch's starting state, not every one
	// a proposal's. At 1,000 members a state is about 176 KiB and a
	// commit's delta about 2 KiB. StateOf rebuilds the state and checks
	// it against StateSHA256.
	StateDelta Secret `msgpack:"state_delta"`
	// StateSHA256 is the SHA-256 of the state at Epoch when StateDelta
	// records it (so that a delta applied to another base is refused,
	// not projected); empty otherwise.
	StateSHA256 []byte   `msgpack:"state_sha256"`
	Added       []Member `msgpack:"added"`
	Removed     []Member `msgpack:"removed"`
	// Committer is who made the commit; nil in an upcast v1 event.
	Committer *Committer `msgpack:"committer"`
	// RetiredEpochs are the past epochs whose secrets are deleted once the
	// group is at Epoch (forward secrecy), as group.epoch_secrets_retired
	// lists them: exactly these, chosen by the writer's window
	// (maximum_past_epochs). Empty in an upcast v1 or v2 event, whose
	// retirements are events of their own.
	RetiredEpochs []uint64 `msgpack:"retired_epochs"`
	// OwnOutput is set on this installation's own commits from version 5
	// on: what the commit's output needs besides what the event holds
	// anyway, so that a process restarted after a crash that lost the
	// output can hand it out again (engine's Installation.OwnCommits).
	// Nil on other members' commits and in events before version 5.
	OwnOutput *OwnOutput `msgpack:"own_output"`

	// known returns, when this value was made by WithStateFrom (in the
	// writer's memory; never encoded), the whole state and the digest of
	// the base its delta was made from. A function, not the bytes: fmt
	// prints an unexported field's value without its String method, and a
	// function only as its address.
	known func() knownState
}

// knownState is what WithStateFrom keeps of a commit's state in memory.
type knownState struct {
	state   Secret
	base    Secret   // the base StateDelta was made from
	delta   Secret   // StateDelta as made
	sum     [32]byte // StateSHA256 as made
	baseSum [32]byte // SHA-256 of the base of StateDelta
}

// Kind implements Body.
func (CommitApplied) Kind() Kind { return KindCommitApplied }

// SchemaVersion implements Body.
func (CommitApplied) SchemaVersion() uint16 { return 5 }

// WelcomeProcessed records that the installation joined a group from a
// Welcome.
type WelcomeProcessed struct {
	GroupID       []byte `msgpack:"group_id"`
	Epoch         uint64 `msgpack:"epoch"`
	KeyPackageRef []byte `msgpack:"key_package_ref"`
	// Welcome is the MLSMessage carrying the Welcome.
	Welcome            []byte `msgpack:"welcome"`
	EpochAuthenticator []byte `msgpack:"epoch_authenticator"`
	// State is the serialized MLS group state at Epoch.
	State Secret `msgpack:"state"`
	// Members are the group's members at Epoch, by leaf (version 2); empty
	// in an upcast v1 event, which group.member_added events follow.
	Members []Member `msgpack:"members"`
}

// Kind implements Body.
func (WelcomeProcessed) Kind() Kind { return KindWelcomeProcessed }

// SchemaVersion implements Body.
func (WelcomeProcessed) SchemaVersion() uint16 { return 2 }

// ExternalJoined records that the installation joined the group by its
// own external commit (RFC 9420 §12.4.3.2), from a GroupInfo: a first
// join, a return after its departure, or a resync that removed its old
// leaf (Resync, RemovedLeaf).
type ExternalJoined struct {
	GroupID []byte `msgpack:"group_id"`
	// Epoch is the epoch the commit started.
	Epoch uint64 `msgpack:"epoch"`
	// GroupInfo is the MLSMessage carrying the GroupInfo joined from, and
	// RatchetTree the tree given beside it (nil when the GroupInfo
	// carries it).
	GroupInfo   []byte `msgpack:"group_info"`
	RatchetTree []byte `msgpack:"ratchet_tree"`
	// Commit is the external commit (a PublicMessage) sent to the members.
	Commit []byte `msgpack:"commit"`
	// Resync is set when the commit removed this installation's old leaf
	// (RemovedLeaf): its previous membership, whose state was lost or
	// forked (Reason: "lost" or "forked"), is abandoned.
	Resync             bool   `msgpack:"resync"`
	RemovedLeaf        uint32 `msgpack:"removed_leaf"`
	Reason             string `msgpack:"reason"`
	EpochAuthenticator []byte `msgpack:"epoch_authenticator"`
	// State is the serialized MLS group state at Epoch.
	State Secret `msgpack:"state"`
	// Members are the group's members at Epoch, by leaf (version 2); empty
	// in an upcast v1 event, which group.member_added events follow.
	Members []Member `msgpack:"members"`
	// OwnOutput is set from version 3 on: the join's output (its commit
	// for the other members) is recorded, to be handed out again after a
	// crash that lost it (engine's Installation.OwnCommits). An external
	// commit adds no one by Welcome: Welcome is nil. Nil in an upcast v1
	// or v2 event.
	OwnOutput *OwnOutput `msgpack:"own_output"`
}

// Kind implements Body.
func (ExternalJoined) Kind() Kind { return KindExternalJoined }

// SchemaVersion implements Body.
func (ExternalJoined) SchemaVersion() uint16 { return 3 }

// MemberAdded records a member joining the group in Epoch.
type MemberAdded struct {
	GroupID       []byte `msgpack:"group_id"`
	Epoch         uint64 `msgpack:"epoch"`
	Leaf          uint32 `msgpack:"leaf"`
	Identity      []byte `msgpack:"identity"`
	KeyPackageRef []byte `msgpack:"key_package_ref"`
}

// Kind implements Body.
func (MemberAdded) Kind() Kind { return KindMemberAdded }

// SchemaVersion implements Body.
func (MemberAdded) SchemaVersion() uint16 { return 1 }

// MemberRemoved records a member leaving the group in Epoch (the engine
// records it for its own installation: the commit that removed it).
//
// Version 2 added Left; a v1 event is upcast with Left unset.
type MemberRemoved struct {
	GroupID  []byte `msgpack:"group_id"`
	Epoch    uint64 `msgpack:"epoch"`
	Leaf     uint32 `msgpack:"leaf"`
	Identity []byte `msgpack:"identity"`
	// Left is set when the member left: the commit carried its own
	// Remove proposal (RFC 9420 §12.1.3), rather than another member's.
	Left bool `msgpack:"left"`
}

// Kind implements Body.
func (MemberRemoved) Kind() Kind { return KindMemberRemoved }

// SchemaVersion implements Body.
func (MemberRemoved) SchemaVersion() uint16 { return 2 }

// EpochSecretsRetired records that the secrets of Epochs were deleted
// (forward secrecy); messages of those epochs can no longer be decrypted.
type EpochSecretsRetired struct {
	GroupID []byte   `msgpack:"group_id"`
	Epochs  []uint64 `msgpack:"epochs"`
}

// Kind implements Body.
func (EpochSecretsRetired) Kind() Kind { return KindEpochSecretsRetired }

// SchemaVersion implements Body.
func (EpochSecretsRetired) SchemaVersion() uint16 { return 1 }

// HandshakeFormatSet records the wire format this installation sends the
// group's proposals and commits in, overriding its installation-wide
// option: 1 PublicMessage, 2 PrivateMessage (RFC 9420 WireFormat values),
// 0 back to the installation's option.
type HandshakeFormatSet struct {
	GroupID    []byte `msgpack:"group_id"`
	WireFormat uint16 `msgpack:"wire_format"`
}

// Kind implements Body.
func (HandshakeFormatSet) Kind() Kind { return KindHandshakeFormatSet }

// SchemaVersion implements Body.
func (HandshakeFormatSet) SchemaVersion() uint16 { return 1 }

// ApplicationMessageSent records an application message this installation
// encrypted and sent.
//
// Version 2 added Message: the message's output can be handed out again
// after a crash that lost it; a v1 event is upcast with Message nil (its
// output is not recorded).
type ApplicationMessageSent struct {
	GroupID    []byte         `msgpack:"group_id"`
	Epoch      uint64         `msgpack:"epoch"`
	SenderLeaf uint32         `msgpack:"sender_leaf"`
	Sender     InstallationID `msgpack:"sender"`
	MessageID  []byte         `msgpack:"message_id"`
	// Content is the message plaintext.
	Content           Secret `msgpack:"content"`
	AuthenticatedData []byte `msgpack:"authenticated_data"`
	// Message is the MLSMessage (a PrivateMessage) as encrypted for the
	// members (the engine's SendOutput.Message; MessageID is its digest),
	// from version 2 on, so that a process restarted after a crash that
	// lost the output can hand it out again (engine's
	// Installation.OwnMessages): a new encryption would be another
	// message. Its recipients are not recorded: they are the members of
	// Epoch other than SenderLeaf, which the group's events hold. Nil in
	// events before version 2.
	Message []byte `msgpack:"message"`
}

// Kind implements Body.
func (ApplicationMessageSent) Kind() Kind { return KindApplicationMessageSent }

// SchemaVersion implements Body.
func (ApplicationMessageSent) SchemaVersion() uint16 { return 2 }

// ApplicationMessageReceived records an application message this
// installation received and decrypted.
//
// Version 2 added Generation: a member reloading the group from a state
// saved before it received the message moves its ratchet on as receiving
// it did; a v1 event is upcast with GenerationKnown false.
type ApplicationMessageReceived struct {
	GroupID    []byte         `msgpack:"group_id"`
	Epoch      uint64         `msgpack:"epoch"`
	SenderLeaf uint32         `msgpack:"sender_leaf"`
	Sender     InstallationID `msgpack:"sender"`
	MessageID  []byte         `msgpack:"message_id"`
	// Content is the message plaintext.
	Content           Secret `msgpack:"content"`
	AuthenticatedData []byte `msgpack:"authenticated_data"`
	// Generation is the generation of the sender's application ratchet
	// the message used (mls.Received.Generation), from version 2 on. The
	// group's saved state does not move with received messages; a member
	// that reloads it marks the messages received since
	// (mls.Group.MarkReceived), so that no generation is accepted twice
	// and the sender's next message is within the ratchet's reach.
	// GenerationKnown is false in events before version 2.
	Generation      uint32 `msgpack:"generation"`
	GenerationKnown bool   `msgpack:"generation_known"`
}

// Kind implements Body.
func (ApplicationMessageReceived) Kind() Kind { return KindApplicationMessageReceived }

// SchemaVersion implements Body.
func (ApplicationMessageReceived) SchemaVersion() uint16 { return 2 }

// DeliveryEnqueued records a message queued for Recipient on Channel at
// Sequence (per (recipient, channel), 1-based, contiguous).
//
// Version 2 replaced v1's relative expires_in_seconds with the absolute
// ExpiresAt; v1 events are upcast (see docs/events.md).
type DeliveryEnqueued struct {
	Recipient InstallationID `msgpack:"recipient"`
	Channel   string         `msgpack:"channel"`
	Sequence  uint64         `msgpack:"sequence"`
	// Payload is the message as delivered (an MLS ciphertext); not secret.
	Payload []byte `msgpack:"payload"`
	// ExpiresAt is when the message expires; zero means never.
	ExpiresAt time.Time `msgpack:"expires_at"`
	// IdempotencyKey makes a retried enqueue a no-op.
	IdempotencyKey string `msgpack:"idempotency_key"`
}

// Kind implements Body.
func (DeliveryEnqueued) Kind() Kind { return KindDeliveryEnqueued }

// SchemaVersion implements Body.
func (DeliveryEnqueued) SchemaVersion() uint16 { return 2 }

// DeliveryAcknowledged records that Recipient acknowledged every message of
// Channel up to and including sequence UpTo.
type DeliveryAcknowledged struct {
	Recipient InstallationID `msgpack:"recipient"`
	Channel   string         `msgpack:"channel"`
	UpTo      uint64         `msgpack:"up_to"`
}

// Kind implements Body.
func (DeliveryAcknowledged) Kind() Kind { return KindDeliveryAcknowledged }

// SchemaVersion implements Body.
func (DeliveryAcknowledged) SchemaVersion() uint16 { return 1 }

// DeliveryExpired records that the message at Sequence expired (at
// ExpiresAt) before it was acknowledged and was dropped.
type DeliveryExpired struct {
	Recipient InstallationID `msgpack:"recipient"`
	Channel   string         `msgpack:"channel"`
	Sequence  uint64         `msgpack:"sequence"`
	ExpiresAt time.Time      `msgpack:"expires_at"`
}

// Kind implements Body.
func (DeliveryExpired) Kind() Kind { return KindDeliveryExpired }

// SchemaVersion implements Body.
func (DeliveryExpired) SchemaVersion() uint16 { return 1 }
