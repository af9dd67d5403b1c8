package engine

// The outputs of the Installation operations: what to deliver, and whether
// the read model holds the operation yet.

import "github.com/epochlog/epochlog/events"

// CommitOutput is what a commit produces for delivery, returned once its
// events are durable.
type CommitOutput struct {
	GroupID []byte
	// Epoch is the group's new epoch.
	Epoch uint64
	// Commit is the MLSMessage to deliver to Recipients.
	Commit []byte
	// Recipients are the members of the previous epoch other than this
	// installation (removed members included, so they learn of it).
	Recipients []events.InstallationID
	// Welcome is the MLSMessage for the added members; nil if none.
	Welcome []byte
	// Added are the installations the Welcome is for.
	Added []events.InstallationID
	// ProjectionErr is nil when the read model holds the operation's
	// events. Otherwise the operation happened all the same (its events
	// are durable: deliver the output) and ProjectionErr says why the read
	// model lags; CatchUp, or the next operation, brings it up to date.
	ProjectionErr error
}

// SendOutput is an application message ready for delivery.
type SendOutput struct {
	GroupID []byte
	Epoch   uint64
	// MessageID identifies the message (a digest of Message).
	MessageID []byte
	// Message is the MLSMessage (a PrivateMessage) to deliver to Recipients.
	Message []byte
	// Recipients are the current members other than this installation.
	Recipients []events.InstallationID
	// Update is the path-update commit Send made first (the last update
	// was too old, or this member never updated since joining), or nil. It
	// must be delivered before Message.
	Update *CommitOutput
	// ProjectionErr is nil when the read model holds the operation's
	// events. Otherwise the operation happened all the same (its events
	// are durable: deliver the output) and ProjectionErr says why the read
	// model lags; CatchUp, or the next operation, brings it up to date.
	ProjectionErr error
}

// ProposalOutput is a proposal made by this installation, cached for a
// commit by reference, returned once its events are durable.
type ProposalOutput struct {
	GroupID []byte
	// Epoch is the epoch the proposal belongs to: a commit of this epoch
	// may carry it; after that it is stale.
	Epoch uint64
	// Proposal is the MLSMessage (PublicMessage or PrivateMessage, as the
	// group's handshake wire format says) to deliver to Recipients.
	Proposal []byte
	// Ref is its ProposalRef (RFC 9420 §5.2), by which commits name it.
	Ref []byte
	// MessageID identifies the message (a digest of Proposal).
	MessageID []byte
	// Recipients are the current members other than this installation.
	Recipients []events.InstallationID
	// ProjectionErr is nil when the read model holds the operation's
	// events. Otherwise the operation happened all the same (its events
	// are durable: deliver the output) and ProjectionErr says why the read
	// model lags; CatchUp, or the next operation, brings it up to date.
	ProjectionErr error
}

// Received is what Receive did with an incoming message.
type Received struct {
	GroupID []byte
	// Epoch is the group's epoch after the message: the new epoch for a
	// commit or Welcome, the message's epoch for an application message
	// or a proposal.
	Epoch uint64
	// Kind is "commit", "welcome", "proposal" or "application".
	Kind string
	// Sender is the sending installation (commits, proposals and
	// application messages; for an external commit, the joiner), and
	// SenderLeaf its leaf.
	Sender     events.InstallationID
	SenderLeaf uint32
	// NonMember is set for a proposal whose sender is not a member (RFC
	// 9420 §12.1.8): "external", an entry of the group's external_senders
	// extension (Sender is its credential identity, which need not be an
	// installation's; SenderLeaf its index in the extension), or
	// "new_member", a client proposing its own Add (Sender its identity).
	NonMember string
	// ProposalType and ProposalRef describe a proposal: its type ("add",
	// "update", "remove", "psk", "group_context_extensions") and the
	// ProposalRef commits name it by.
	ProposalType string
	ProposalRef  []byte
	// Content and AuthenticatedData are set for application messages.
	// Content is the plaintext, as events.Secret (the type of
	// projections.Message.Content too): it prints redacted; Content.Bytes()
	// is the text.
	Content           events.Secret
	AuthenticatedData []byte
	MessageID         []byte
	// Removed is set when a commit removed this installation; Left too
	// when it carried this installation's own Remove proposal (Leave).
	Removed, Left bool
	// ProjectionErr is nil when the read model holds what was received.
	// Otherwise it was received all the same (its events are durable:
	// acknowledge the delivery) and ProjectionErr says why the read model
	// lags; CatchUp, or the next operation, brings it up to date.
	ProjectionErr error
}

// GroupOutput is a group created.
type GroupOutput struct {
	GroupID []byte
	Epoch   uint64
	// ProjectionErr is nil when the read model holds the operation's
	// events. Otherwise the operation happened all the same (its events
	// are durable: deliver the output) and ProjectionErr says why the read
	// model lags; CatchUp, or the next operation, brings it up to date.
	ProjectionErr error
}

// KeyPackageOutput is a key package published.
type KeyPackageOutput struct {
	// KeyPackage is the TLS-encoded KeyPackage to hand to a member that
	// adds this installation (AddMembers).
	KeyPackage []byte
	// Ref is its KeyPackageRef (RFC 9420 §5.2), as Welcomes name it.
	Ref []byte
	// ProjectionErr is nil when the read model holds the key package.
	// Otherwise it is published all the same (its events are durable)
	// and ProjectionErr says why the read model lags; CatchUp, or the next
	// operation, brings it up to date.
	ProjectionErr error
}
