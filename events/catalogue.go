package events

import (
	"bytes"
	"fmt"
	"reflect"
	"time"

	"github.com/vmihailenco/msgpack/v5"
)

// Event is one recorded fact about an aggregate.
type Event struct {
	Aggregate Aggregate
	// Position is the 1-based position of the event within its aggregate;
	// positions are contiguous and readers check them.
	Position uint64
	// Time is when the writer recorded the event, in UTC.
	Time time.Time
	// Body is the kind-specific payload, always at the kind's current schema
	// version after Open (older versions are upcast).
	Body Body
	// Prev links the event to the latest earlier event of its installation
	// that its writer knew (zero: none known, or an event sealed before
	// links existed). The log sets it when appending; readers check that
	// the linked event is there, so a lost event that a later one links to
	// is detected. It is sealed with the event but is not part of its
	// message id.
	Prev Link
}

// KindInfo describes one kind of the catalogue.
type KindInfo struct {
	Kind Kind
	// Version is the current schema version, the one Seal writes.
	Version uint16
	// Aggregate is the type of aggregate events of this kind belong to.
	Aggregate AggregateType
	// Doc is a one-line description.
	Doc string
}

// eventHeader is the part of an event an upcaster may need besides the old
// body (e.g. the event time, to turn a relative duration into an instant).
type eventHeader struct {
	Aggregate Aggregate
	Position  uint64
	Time      time.Time
	Prev      Link
}

// schema is one readable version of a kind.
type schema struct {
	typ    reflect.Type
	decode func(data []byte) (any, error)
	// upcast turns a value of this version into the next version; nil for
	// the current version.
	upcast func(old any, h eventHeader) (any, error)
}

type kindSpec struct {
	info     KindInfo
	typ      reflect.Type // the current body type
	versions map[uint16]schema
}

// current declares a kind whose current body type is T, with any older
// versions it can still read.
func current[T Body](agg AggregateType, doc string, older map[uint16]schema) kindSpec {
	var zero T
	v := zero.SchemaVersion()
	decode := decodeStrict[T]
	if p, ok := any(zero).(bodyParser); ok {
		decode = func(data []byte) (any, error) {
			if b, ok := p.parseMsgpack(data); ok {
				return b, nil
			}
			return decodeStrict[T](data)
		}
	}
	s := kindSpec{
		info:     KindInfo{Kind: zero.Kind(), Version: v, Aggregate: agg, Doc: doc},
		typ:      reflect.TypeFor[T](),
		versions: map[uint16]schema{v: {typ: reflect.TypeFor[T](), decode: decode}},
	}
	for ver, sc := range older {
		s.versions[ver] = sc
	}
	return s
}

// legacy declares an older version of a kind, read as T and upcast to the
// next version by up.
func legacy[T any, Next any](up func(T, eventHeader) (Next, error)) schema {
	return schema{
		typ:    reflect.TypeFor[T](),
		decode: decodeStrict[T],
		upcast: func(old any, h eventHeader) (any, error) { return up(old.(T), h) },
	}
}

// catalogue is every kind, in documentation order. Adding a kind or a
// version: see docs/events.md.
var catalogue = []kindSpec{
	current[InstallationCreated](AggInstallation, "the installation's identity: signature key pair, ciphersuite and credential", nil),
	current[ExternalPSKRegistered](AggInstallation, "an external pre-shared key the installation holds from now on, with its secret", nil),
	current[ExternalPSKRetired](AggInstallation, "an external pre-shared key was retired: its secret is deleted", nil),
	current[KeyPackageGenerated](AggKeyPackage, "a key package was generated, with the private init and leaf HPKE keys needed to join from it (and published, when it was at once)",
		map[uint16]schema{1: legacy(upcastKeyPackageGeneratedV1)}),
	current[KeyPackagePublished](AggKeyPackage, "a key package was published where others can fetch it", nil),
	current[KeyPackageConsumed](AggKeyPackage, "a Welcome consumed the key package; its private keys go unless it is last-resort (which may be rotated with it)",
		map[uint16]schema{1: legacy(upcastKeyPackageConsumedV1)}),
	current[KeyPackageRotated](AggKeyPackage, "a (last-resort) key package was replaced by a new one", nil),
	current[GroupCreated](AggGroup, "a group was created at epoch 0, with its serialized state and its creator (a successor group with its first commit)",
		map[uint16]schema{1: legacy(upcastGroupCreatedV1), 2: legacy(upcastGroupCreatedV2)}),
	current[ProposalStaged](AggGroup, "a proposal was cached for a commit by reference (received, or this installation's own), with the state that holds it",
		map[uint16]schema{1: legacy(upcastProposalStagedV1), 2: legacy(upcastProposalStagedV2)}),
	current[CommitApplied](AggGroup, "a commit moved the group to a new epoch (authenticator, transcript hash, state, membership changes, committer, epochs retired)",
		map[uint16]schema{1: legacy(upcastCommitAppliedV1), 2: legacy(upcastCommitAppliedV2), 3: legacy(upcastCommitAppliedV3), 4: legacy(upcastCommitAppliedV4)}),
	current[WelcomeProcessed](AggGroup, "the installation joined the group from a Welcome, with the group's members",
		map[uint16]schema{1: legacy(upcastWelcomeProcessedV1)}),
	current[ExternalJoined](AggGroup, "the installation joined the group by its own external commit, from a GroupInfo (a resync removes its old leaf), with the group's members",
		map[uint16]schema{1: legacy(upcastExternalJoinedV1), 2: legacy(upcastExternalJoinedV2)}),
	current[MemberAdded](AggGroup, "a member was added to the group", nil),
	current[MemberRemoved](AggGroup, "a member was removed from the group (or left it, by its own proposal)",
		map[uint16]schema{1: legacy(upcastMemberRemovedV1)}),
	current[EpochSecretsRetired](AggGroup, "the secrets of past epochs were deleted (forward secrecy)", nil),
	current[HandshakeFormatSet](AggGroup, "the wire format of this installation's proposals and commits in the group was set (PublicMessage or PrivateMessage)", nil),
	current[StateRecorded](AggGroup, "the group's state with its ratchets as they stand, recorded before retention deletes messages received or sent since the state before", nil),
	current[ApplicationMessageSent](AggGroup, "an application message was encrypted and sent",
		map[uint16]schema{1: legacy(upcastApplicationMessageSentV1)}),
	current[ApplicationMessageReceived](AggGroup, "an application message was received and decrypted",
		map[uint16]schema{1: legacy(upcastApplicationMessageReceivedV1)}),
	current[DeliveryEnqueued](AggDelivery, "a message was queued for a recipient installation on a channel, with expiry and idempotency key",
		map[uint16]schema{1: legacy(upcastDeliveryEnqueuedV1)}),
	current[DeliveryAcknowledged](AggDelivery, "the recipient acknowledged every message up to a sequence", nil),
	current[DeliveryExpired](AggDelivery, "a queued message expired before it was acknowledged", nil),
}

var byKind = func() map[Kind]*kindSpec {
	m := make(map[Kind]*kindSpec, len(catalogue))
	for i := range catalogue {
		k := catalogue[i].info.Kind
		if _, dup := m[k]; dup {
			panic("events: duplicate kind in catalogue: " + string(k))
		}
		m[k] = &catalogue[i]
	}
	return m
}()

// Kinds returns the whole catalogue: every kind with its current version,
// aggregate type and a one-line doc, in documentation order.
func Kinds() []KindInfo {
	out := make([]KindInfo, len(catalogue))
	for i, s := range catalogue {
		out[i] = s.info
	}
	return out
}

// deliveryEnqueuedV1 is delivery.enqueued schema version 1: expiry was
// relative to the event time.
type deliveryEnqueuedV1 struct {
	Recipient InstallationID `msgpack:"recipient"`
	Channel   string         `msgpack:"channel"`
	Sequence  uint64         `msgpack:"sequence"`
	Payload   []byte         `msgpack:"payload"`
	// ExpiresInSeconds counts from the event time; 0 meant never.
	ExpiresInSeconds uint32 `msgpack:"expires_in_seconds"`
	IdempotencyKey   string `msgpack:"idempotency_key"`
}

func upcastDeliveryEnqueuedV1(old deliveryEnqueuedV1, h eventHeader) (DeliveryEnqueued, error) {
	var exp time.Time
	if old.ExpiresInSeconds != 0 {
		exp = h.Time.Add(time.Duration(old.ExpiresInSeconds) * time.Second).UTC()
	}
	return DeliveryEnqueued{
		Recipient:      old.Recipient,
		Channel:        old.Channel,
		Sequence:       old.Sequence,
		Payload:        old.Payload,
		ExpiresAt:      exp,
		IdempotencyKey: old.IdempotencyKey,
	}, nil
}

// proposalStagedV1 is group.proposal_staged schema version 1: the
// proposal alone, without the message that carried it or the state.
type proposalStagedV1 struct {
	GroupID      []byte `msgpack:"group_id"`
	Epoch        uint64 `msgpack:"epoch"`
	ProposalRef  []byte `msgpack:"proposal_ref"`
	ProposalType uint16 `msgpack:"proposal_type"`
	SenderLeaf   uint32 `msgpack:"sender_leaf"`
	Proposal     []byte `msgpack:"proposal"`
}

func upcastProposalStagedV1(old proposalStagedV1, _ eventHeader) (proposalStagedV2, error) {
	return proposalStagedV2{GroupID: old.GroupID, Epoch: old.Epoch, ProposalRef: old.ProposalRef,
		ProposalType: old.ProposalType, SenderLeaf: old.SenderLeaf, Proposal: old.Proposal}, nil
}

// proposalStagedV2 is group.proposal_staged schema version 2: the state
// always whole (no StateDelta, StateSHA256).
type proposalStagedV2 struct {
	GroupID      []byte `msgpack:"group_id"`
	Epoch        uint64 `msgpack:"epoch"`
	ProposalRef  []byte `msgpack:"proposal_ref"`
	ProposalType uint16 `msgpack:"proposal_type"`
	SenderLeaf   uint32 `msgpack:"sender_leaf"`
	Sender       []byte `msgpack:"sender"`
	SenderType   uint8  `msgpack:"sender_type"`
	Own          bool   `msgpack:"own"`
	Proposal     []byte `msgpack:"proposal"`
	Message      []byte `msgpack:"message"`
	MessageID    []byte `msgpack:"message_id"`
	State        Secret `msgpack:"state"`
}

func upcastProposalStagedV2(old proposalStagedV2, _ eventHeader) (ProposalStaged, error) {
	return ProposalStaged{GroupID: old.GroupID, Epoch: old.Epoch, ProposalRef: old.ProposalRef,
		ProposalType: old.ProposalType, SenderLeaf: old.SenderLeaf, Sender: old.Sender, SenderType: old.SenderType,
		Own: old.Own, Proposal: old.Proposal, Message: old.Message, MessageID: old.MessageID, State: old.State}, nil
}

// commitAppliedV1 is group.commit_applied schema version 1: no committer
// (every commit was a PublicMessage, which names its sender).
type commitAppliedV1 struct {
	GroupID                 []byte   `msgpack:"group_id"`
	Epoch                   uint64   `msgpack:"epoch"`
	EpochAuthenticator      []byte   `msgpack:"epoch_authenticator"`
	ConfirmedTranscriptHash []byte   `msgpack:"confirmed_transcript_hash"`
	Commit                  []byte   `msgpack:"commit"`
	State                   Secret   `msgpack:"state"`
	Added                   []Member `msgpack:"added"`
	Removed                 []Member `msgpack:"removed"`
}

func upcastCommitAppliedV1(old commitAppliedV1, _ eventHeader) (commitAppliedV2, error) {
	return commitAppliedV2{GroupID: old.GroupID, Epoch: old.Epoch, EpochAuthenticator: old.EpochAuthenticator,
		ConfirmedTranscriptHash: old.ConfirmedTranscriptHash, Commit: old.Commit, State: old.State,
		Added: old.Added, Removed: old.Removed}, nil
}

// commitAppliedV2 is group.commit_applied schema version 2: no
// RetiredEpochs (a commit's retirements were a group.epoch_secrets_retired
// event of their own, in the same atomic batch).
type commitAppliedV2 struct {
	GroupID                 []byte     `msgpack:"group_id"`
	Epoch                   uint64     `msgpack:"epoch"`
	EpochAuthenticator      []byte     `msgpack:"epoch_authenticator"`
	ConfirmedTranscriptHash []byte     `msgpack:"confirmed_transcript_hash"`
	Commit                  []byte     `msgpack:"commit"`
	State                   Secret     `msgpack:"state"`
	Added                   []Member   `msgpack:"added"`
	Removed                 []Member   `msgpack:"removed"`
	Committer               *Committer `msgpack:"committer"`
}

func upcastCommitAppliedV2(old commitAppliedV2, _ eventHeader) (commitAppliedV3, error) {
	return commitAppliedV3{GroupID: old.GroupID, Epoch: old.Epoch, EpochAuthenticator: old.EpochAuthenticator,
		ConfirmedTranscriptHash: old.ConfirmedTranscriptHash, Commit: old.Commit, State: old.State,
		Added: old.Added, Removed: old.Removed, Committer: old.Committer}, nil
}

// commitAppliedV3 is group.commit_applied schema version 3: the state
// always whole (no StateDelta, StateSHA256).
type commitAppliedV3 struct {
	GroupID                 []byte     `msgpack:"group_id"`
	Epoch                   uint64     `msgpack:"epoch"`
	EpochAuthenticator      []byte     `msgpack:"epoch_authenticator"`
	ConfirmedTranscriptHash []byte     `msgpack:"confirmed_transcript_hash"`
	Commit                  []byte     `msgpack:"commit"`
	State                   Secret     `msgpack:"state"`
	Added                   []Member   `msgpack:"added"`
	Removed                 []Member   `msgpack:"removed"`
	Committer               *Committer `msgpack:"committer"`
	RetiredEpochs           []uint64   `msgpack:"retired_epochs"`
}

func upcastCommitAppliedV3(old commitAppliedV3, _ eventHeader) (commitAppliedV4, error) {
	return commitAppliedV4{GroupID: old.GroupID, Epoch: old.Epoch, EpochAuthenticator: old.EpochAuthenticator,
		ConfirmedTranscriptHash: old.ConfirmedTranscriptHash, Commit: old.Commit, State: old.State,
		Added: old.Added, Removed: old.Removed, Committer: old.Committer, RetiredEpochs: old.RetiredEpochs}, nil
}

// commitAppliedV4 is group.commit_applied schema version 4: no Welcome.
type commitAppliedV4 struct {
	GroupID                 []byte     `msgpack:"group_id"`
	Epoch                   uint64     `msgpack:"epoch"`
	EpochAuthenticator      []byte     `msgpack:"epoch_authenticator"`
	ConfirmedTranscriptHash []byte     `msgpack:"confirmed_transcript_hash"`
	Commit                  []byte     `msgpack:"commit"`
	State                   Secret     `msgpack:"state"`
	StateDelta              Secret     `msgpack:"state_delta"`
	StateSHA256             []byte     `msgpack:"state_sha256"`
	Added                   []Member   `msgpack:"added"`
	Removed                 []Member   `msgpack:"removed"`
	Committer               *Committer `msgpack:"committer"`
	RetiredEpochs           []uint64   `msgpack:"retired_epochs"`
}

func upcastCommitAppliedV4(old commitAppliedV4, _ eventHeader) (CommitApplied, error) {
	return CommitApplied{GroupID: old.GroupID, Epoch: old.Epoch, EpochAuthenticator: old.EpochAuthenticator,
		ConfirmedTranscriptHash: old.ConfirmedTranscriptHash, Commit: old.Commit, State: old.State,
		StateDelta: old.StateDelta, StateSHA256: old.StateSHA256,
		Added: old.Added, Removed: old.Removed, Committer: old.Committer, RetiredEpochs: old.RetiredEpochs}, nil
}

// memberRemovedV1 is group.member_removed schema version 1: no Left.
type memberRemovedV1 struct {
	GroupID  []byte `msgpack:"group_id"`
	Epoch    uint64 `msgpack:"epoch"`
	Leaf     uint32 `msgpack:"leaf"`
	Identity []byte `msgpack:"identity"`
}

func upcastMemberRemovedV1(old memberRemovedV1, _ eventHeader) (MemberRemoved, error) {
	return MemberRemoved{GroupID: old.GroupID, Epoch: old.Epoch, Leaf: old.Leaf, Identity: old.Identity}, nil
}

// decodeStrict decodes exactly one msgpack value of type T from data:
// unknown fields and trailing bytes are errors, times come back in UTC.
func decodeStrict[T any](data []byte) (any, error) {
	if err := checkMsgpack(data); err != nil {
		return nil, err
	}
	var v T
	r := bytes.NewReader(data)
	dec := msgpack.NewDecoder(r)
	dec.DisallowUnknownFields(true)
	if err := decodeNoPanic(dec, &v); err != nil {
		return nil, err
	}
	// bytes.Reader is a ByteScanner, so the decoder reads it unbuffered and
	// r.Len() is exactly what is left.
	if r.Len() != 0 {
		return nil, fmt.Errorf("%d trailing bytes", r.Len())
	}
	normalizeTimes(reflect.ValueOf(&v).Elem())
	return v, nil
}

// decodeNoPanic is dec.Decode(v) with the decoder's panics returned as
// errors: msgpack v5 panics on some well-formed input (a nil where a
// struct such as a time.Time or an aggregate is expected, found by
// FuzzUnmarshalEvent), and these bytes come from outside. The decoder is
// the caller's alone, so a panic leaves nothing half-changed behind.
func decodeNoPanic(dec *msgpack.Decoder, v any) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("msgpack decoder: %v", p)
		}
	}()
	return dec.Decode(v)
}

var timeType = reflect.TypeFor[time.Time]()

// normalizeTimes sets every time.Time reachable in v to UTC; msgpack decodes
// times in the local zone, and events are UTC throughout.
func normalizeTimes(v reflect.Value) {
	switch v.Kind() {
	case reflect.Struct:
		if v.Type() == timeType {
			if v.CanSet() {
				v.Set(reflect.ValueOf(v.Interface().(time.Time).UTC()))
			}
			return
		}
		for i := 0; i < v.NumField(); i++ {
			if v.Type().Field(i).IsExported() {
				normalizeTimes(v.Field(i))
			}
		}
	case reflect.Slice, reflect.Array:
		if v.Type().Elem().Kind() == reflect.Uint8 {
			return
		}
		for i := 0; i < v.Len(); i++ {
			normalizeTimes(v.Index(i))
		}
	}
}

// decodeBody decodes data as version of kind k and upcasts it to the current
// version.
func decodeBody(k Kind, version uint16, data []byte, h eventHeader) (Body, error) {
	spec, ok := byKind[k]
	if !ok {
		return nil, fmt.Errorf("kind %s: %w", quoteShort(string(k)), ErrUnknownVersion)
	}
	if version > spec.info.Version {
		return nil, fmt.Errorf("kind %s schema version %d is newer than this code reads (%d): %w",
			k, version, spec.info.Version, ErrUnknownVersion)
	}
	sc, ok := spec.versions[version]
	if !ok {
		return nil, fmt.Errorf("kind %s has no schema version %d: %w", k, version, ErrUnknownVersion)
	}
	v, err := sc.decode(data)
	if err != nil {
		return nil, fmt.Errorf("kind %s version %d body: %w: %v", k, version, ErrMalformed, err)
	}
	for ver := version; ver < spec.info.Version; ver++ {
		sc, ok := spec.versions[ver]
		if !ok || sc.upcast == nil {
			return nil, fmt.Errorf("kind %s: no upcaster from version %d: %w", k, ver, ErrUnknownVersion)
		}
		if v, err = sc.upcast(v, h); err != nil {
			return nil, fmt.Errorf("kind %s: upcast from version %d: %w: %v", k, ver, ErrMalformed, err)
		}
	}
	b, ok := v.(Body)
	if !ok || reflect.TypeOf(b) != spec.typ {
		// A catalogue wiring mistake, not bad input.
		return nil, fmt.Errorf("kind %s: upcast chain ends in %T, not the current body type", k, v)
	}
	return b, nil
}

// specFor returns the catalogue entry for b and b as a value of the
// registered type (a pointer to it is accepted and dereferenced).
func specFor(b Body) (*kindSpec, Body, error) {
	if b == nil {
		return nil, nil, fmt.Errorf("events: event has no body")
	}
	rv := reflect.ValueOf(b)
	if rv.Kind() == reflect.Pointer {
		if rv.IsNil() {
			return nil, nil, fmt.Errorf("events: event body is a nil %T", b)
		}
		vb, ok := rv.Elem().Interface().(Body)
		if !ok {
			return nil, nil, fmt.Errorf("events: body type %T is not in the catalogue", b)
		}
		b = vb
	}
	spec, ok := byKind[b.Kind()]
	if !ok || reflect.TypeOf(b) != spec.typ {
		return nil, nil, fmt.Errorf("events: body type %T (kind %s): %w", b, quoteShort(string(b.Kind())), ErrUnknownVersion)
	}
	return spec, b, nil
}

// LookupKind returns the catalogue entry of k, and whether k is known.
func LookupKind(k Kind) (KindInfo, bool) {
	s, ok := byKind[k]
	if !ok {
		return KindInfo{}, false
	}
	return s.info, true
}

// BodyAs returns e's body as a T, whether it holds a T or a non-nil *T
// (callers may build events either way); false when it is of another kind.
func BodyAs[T Body](e Event) (T, bool) {
	if b, ok := e.Body.(T); ok {
		return b, true
	}
	if p, ok := any(e.Body).(*T); ok && p != nil {
		return *p, true
	}
	var zero T
	return zero, false
}

// The joins of version 1 (group.created, group.welcome_processed,
// group.external_joined) recorded the group's members as
// group.member_added events in the same atomic batch: a Welcome to a group
// of 1,000 was 1,001 events, past nats-server's default limit on a batch,
// and any batch on a single-replica file stream costs a staged, synced
// file store. Version 2 carries them in Members; a v1 event is upcast
// with none (its member events follow it).

type groupCreatedV1 struct {
	GroupID     []byte `msgpack:"group_id"`
	Ciphersuite uint16 `msgpack:"ciphersuite"`
	Epoch       uint64 `msgpack:"epoch"`
	State       Secret `msgpack:"state"`
}

func upcastGroupCreatedV1(old groupCreatedV1, _ eventHeader) (groupCreatedV2, error) {
	return groupCreatedV2{GroupID: old.GroupID, Ciphersuite: old.Ciphersuite, Epoch: old.Epoch, State: old.State}, nil
}

// groupCreatedV2 is group.created schema version 2: a successor group's
// first commit was a group.commit_applied of its own, appended with it
// in one atomic batch. Version 3 may carry it (FirstCommit); a v2 event
// is upcast without.
type groupCreatedV2 struct {
	GroupID     []byte   `msgpack:"group_id"`
	Ciphersuite uint16   `msgpack:"ciphersuite"`
	Epoch       uint64   `msgpack:"epoch"`
	State       Secret   `msgpack:"state"`
	Members     []Member `msgpack:"members"`
}

func upcastGroupCreatedV2(old groupCreatedV2, _ eventHeader) (GroupCreated, error) {
	return GroupCreated{GroupID: old.GroupID, Ciphersuite: old.Ciphersuite, Epoch: old.Epoch, State: old.State, Members: old.Members}, nil
}

type welcomeProcessedV1 struct {
	GroupID            []byte `msgpack:"group_id"`
	Epoch              uint64 `msgpack:"epoch"`
	KeyPackageRef      []byte `msgpack:"key_package_ref"`
	Welcome            []byte `msgpack:"welcome"`
	EpochAuthenticator []byte `msgpack:"epoch_authenticator"`
	State              Secret `msgpack:"state"`
}

func upcastWelcomeProcessedV1(old welcomeProcessedV1, _ eventHeader) (WelcomeProcessed, error) {
	return WelcomeProcessed{GroupID: old.GroupID, Epoch: old.Epoch, KeyPackageRef: old.KeyPackageRef,
		Welcome: old.Welcome, EpochAuthenticator: old.EpochAuthenticator, State: old.State}, nil
}

type externalJoinedV1 struct {
	GroupID            []byte `msgpack:"group_id"`
	Epoch              uint64 `msgpack:"epoch"`
	GroupInfo          []byte `msgpack:"group_info"`
	RatchetTree        []byte `msgpack:"ratchet_tree"`
	Commit             []byte `msgpack:"commit"`
	Resync             bool   `msgpack:"resync"`
	RemovedLeaf        uint32 `msgpack:"removed_leaf"`
	Reason             string `msgpack:"reason"`
	EpochAuthenticator []byte `msgpack:"epoch_authenticator"`
	State              Secret `msgpack:"state"`
}

func upcastExternalJoinedV1(old externalJoinedV1, _ eventHeader) (externalJoinedV2, error) {
	return externalJoinedV2{GroupID: old.GroupID, Epoch: old.Epoch, GroupInfo: old.GroupInfo, RatchetTree: old.RatchetTree,
		Commit: old.Commit, Resync: old.Resync, RemovedLeaf: old.RemovedLeaf, Reason: old.Reason,
		EpochAuthenticator: old.EpochAuthenticator, State: old.State}, nil
}

// externalJoinedV2 is group.external_joined schema version 2: its output
// not recorded (no OwnOutput).
type externalJoinedV2 struct {
	GroupID            []byte   `msgpack:"group_id"`
	Epoch              uint64   `msgpack:"epoch"`
	GroupInfo          []byte   `msgpack:"group_info"`
	RatchetTree        []byte   `msgpack:"ratchet_tree"`
	Commit             []byte   `msgpack:"commit"`
	Resync             bool     `msgpack:"resync"`
	RemovedLeaf        uint32   `msgpack:"removed_leaf"`
	Reason             string   `msgpack:"reason"`
	EpochAuthenticator []byte   `msgpack:"epoch_authenticator"`
	State              Secret   `msgpack:"state"`
	Members            []Member `msgpack:"members"`
}

func upcastExternalJoinedV2(old externalJoinedV2, _ eventHeader) (ExternalJoined, error) {
	return ExternalJoined{GroupID: old.GroupID, Epoch: old.Epoch, GroupInfo: old.GroupInfo, RatchetTree: old.RatchetTree,
		Commit: old.Commit, Resync: old.Resync, RemovedLeaf: old.RemovedLeaf, Reason: old.Reason,
		EpochAuthenticator: old.EpochAuthenticator, State: old.State, Members: old.Members}, nil
}

// keyPackageGeneratedV1 is keypackage.generated schema version 1: its
// publication was a keypackage.published event of its own.
type keyPackageGeneratedV1 struct {
	Ref                  []byte `msgpack:"ref"`
	Ciphersuite          uint16 `msgpack:"ciphersuite"`
	KeyPackage           []byte `msgpack:"key_package"`
	InitPrivateKey       Secret `msgpack:"init_private_key"`
	EncryptionPrivateKey Secret `msgpack:"encryption_private_key"`
	LastResort           bool   `msgpack:"last_resort"`
}

func upcastKeyPackageGeneratedV1(old keyPackageGeneratedV1, _ eventHeader) (KeyPackageGenerated, error) {
	return KeyPackageGenerated{Ref: old.Ref, Ciphersuite: old.Ciphersuite, KeyPackage: old.KeyPackage,
		InitPrivateKey: old.InitPrivateKey, EncryptionPrivateKey: old.EncryptionPrivateKey, LastResort: old.LastResort}, nil
}

// keyPackageConsumedV1 is keypackage.consumed schema version 1: a
// rotation was a keypackage.rotated event of its own.
type keyPackageConsumedV1 struct {
	Ref        []byte `msgpack:"ref"`
	GroupID    []byte `msgpack:"group_id"`
	LastResort bool   `msgpack:"last_resort"`
}

func upcastKeyPackageConsumedV1(old keyPackageConsumedV1, _ eventHeader) (KeyPackageConsumed, error) {
	return KeyPackageConsumed{Ref: old.Ref, GroupID: old.GroupID, LastResort: old.LastResort}, nil
}

// applicationMessageSentV1 is application.message_sent schema version 1:
// no Message.
type applicationMessageSentV1 struct {
	GroupID           []byte         `msgpack:"group_id"`
	Epoch             uint64         `msgpack:"epoch"`
	SenderLeaf        uint32         `msgpack:"sender_leaf"`
	Sender            InstallationID `msgpack:"sender"`
	MessageID         []byte         `msgpack:"message_id"`
	Content           Secret         `msgpack:"content"`
	AuthenticatedData []byte         `msgpack:"authenticated_data"`
}

func upcastApplicationMessageSentV1(old applicationMessageSentV1, _ eventHeader) (ApplicationMessageSent, error) {
	return ApplicationMessageSent{GroupID: old.GroupID, Epoch: old.Epoch, SenderLeaf: old.SenderLeaf, Sender: old.Sender,
		MessageID: old.MessageID, Content: old.Content, AuthenticatedData: old.AuthenticatedData}, nil
}

// applicationMessageReceivedV1 is application.message_received schema
// version 1: no Generation.
type applicationMessageReceivedV1 struct {
	GroupID           []byte         `msgpack:"group_id"`
	Epoch             uint64         `msgpack:"epoch"`
	SenderLeaf        uint32         `msgpack:"sender_leaf"`
	Sender            InstallationID `msgpack:"sender"`
	MessageID         []byte         `msgpack:"message_id"`
	Content           Secret         `msgpack:"content"`
	AuthenticatedData []byte         `msgpack:"authenticated_data"`
}

func upcastApplicationMessageReceivedV1(old applicationMessageReceivedV1, _ eventHeader) (ApplicationMessageReceived, error) {
	return ApplicationMessageReceived{GroupID: old.GroupID, Epoch: old.Epoch, SenderLeaf: old.SenderLeaf, Sender: old.Sender,
		MessageID: old.MessageID, Content: old.Content, AuthenticatedData: old.AuthenticatedData}, nil
}
