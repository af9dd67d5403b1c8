package engine

import (
	"context"
	"fmt"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// WireFormat is how an installation sends its own handshake messages
// (proposals and commits): as PublicMessage or PrivateMessage (RFC 9420
// §6). Application messages are always PrivateMessage, and every
// installation receives handshakes in either form. The values are RFC
// 9420's WireFormat numbers; 0 means the default.
type WireFormat uint16

// Wire formats of handshake messages.
const (
	// WireFormatDefault is, for InstallationOptions.HandshakeWireFormat,
	// DefaultHandshakeWireFormat; for a group
	// (Installation.SetHandshakeWireFormat), the installation's option.
	WireFormatDefault WireFormat = 0
	// WireFormatPublic sends handshakes signed and membership-tagged but
	// in the clear: a delivery service can read them, so it can track the
	// group's membership and epoch and check the signatures, and so can
	// anyone who sees the queues (credentials, added key packages, who
	// removed whom, the group context extensions).
	WireFormatPublic WireFormat = WireFormat(mls.WireFormatPublicMessage)
	// WireFormatPrivate encrypts handshakes under the epoch's keys: the
	// delivery service sees the group id, the epoch, the content type and
	// sizes, not who proposes or commits what, and cannot validate them.
	WireFormatPrivate WireFormat = WireFormat(mls.WireFormatPrivateMessage)
)

// DefaultHandshakeWireFormat is WireFormatPrivate. RFC 9420 §6 says
// handshakes SHOULD be PrivateMessage, and MAY be PublicMessage where the
// delivery service must examine them; epochlog's delivery service
// (Deliveries) never looks inside a message (the sender's outputs name the
// recipients), so nothing needs them in the clear. Choose
// WireFormatPublic for a delivery service that tracks membership or
// validates commits, and while members still run an engine that refused
// encrypted handshakes (older than schema 3 of the read model).
const DefaultHandshakeWireFormat = WireFormatPrivate

// String names the wire format.
func (w WireFormat) String() string {
	switch w {
	case WireFormatDefault:
		return "default"
	case WireFormatPublic:
		return "public_message"
	case WireFormatPrivate:
		return "private_message"
	}
	return fmt.Sprintf("wire_format(%d)", uint16(w))
}

func (w WireFormat) valid() bool {
	return w == WireFormatDefault || w == WireFormatPublic || w == WireFormatPrivate
}

// SetHandshakeWireFormat sets the wire format of this installation's own
// proposals and commits in the group, overriding its
// InstallationOptions.HandshakeWireFormat; WireFormatDefault returns to
// the option. It is recorded (group.handshake_format_set), so every
// process of the installation and every rebuild follows it.
func (in *Installation) SetHandshakeWireFormat(ctx context.Context, groupID []byte, wf WireFormat) error {
	if !wf.valid() {
		return fmt.Errorf("engine: installation %s: group %x: handshake wire format %d is none of default, public_message, private_message", in.id, groupID, uint16(wf))
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	_, err := in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, events.Body, error) {
		return gs.g, events.HandshakeFormatSet{GroupID: groupID, WireFormat: uint16(wf)}, nil
	})
	if _, err := lagged(err); err != nil {
		return err
	}
	in.wireFormat[string(groupID)] = wf
	return nil
}

// HandshakeWireFormat returns the wire format this installation sends the
// group's proposals and commits in: the group's own setting, or the
// installation's option.
func (in *Installation) HandshakeWireFormat(ctx context.Context, groupID []byte) (WireFormat, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	if err := in.errIfClosed(); err != nil {
		return 0, err
	}
	return in.handshakeWireFormat(ctx, groupID)
}

func (in *Installation) handshakeWireFormat(ctx context.Context, groupID []byte) (WireFormat, error) {
	wf, ok := in.wireFormat[string(groupID)]
	if !ok {
		var err error
		if wf, err = in.groupWireFormat(ctx, groupID); err != nil {
			return 0, err
		}
		in.wireFormat[string(groupID)] = wf
	}
	if wf != WireFormatDefault {
		return wf, nil
	}
	return in.opts.HandshakeWireFormat, nil
}

// groupWireFormat reads the group's own setting from the read model
// (WireFormatDefault: none). loadGroup refreshes the cache with it
// whenever it loads the group, so a setting recorded by another process
// is followed from the group's next load (after a lost race at the
// latest).
func (in *Installation) groupWireFormat(ctx context.Context, groupID []byte) (WireFormat, error) {
	g, found, err := in.db.Group(ctx, groupID)
	if err != nil {
		return 0, fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, err)
	}
	if !found {
		return 0, fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, ErrUnknownGroup)
	}
	return WireFormat(g.HandshakeWireFormat), nil
}

// handshaking returns g set to send its handshakes in the group's wire
// format.
func (in *Installation) handshaking(ctx context.Context, g *mls.Group) (*mls.Group, error) {
	wf, err := in.handshakeWireFormat(ctx, g.GroupID())
	if err != nil {
		return nil, err
	}
	return g.WithHandshakeEncryption(wf == WireFormatPrivate), nil
}
