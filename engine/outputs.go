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

// Received is what Receive did with an incoming message.
type Received struct {
	GroupID []byte
	Epoch   uint64
	// Kind is "commit", "welcome" or "application".
	Kind string
	// Sender is the sending installation (commits and application
	// messages), and SenderLeaf its leaf.
	Sender     events.InstallationID
	SenderLeaf uint32
	// Content and AuthenticatedData are set for application messages.
	// Content is the plaintext, as events.Secret (the type of
	// projections.Message.Content too): it prints redacted; convert it
	// to []byte or string to use the text.
	Content           events.Secret
	AuthenticatedData []byte
	MessageID         []byte
	// Removed is set when a commit removed this installation.
	Removed bool
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
