package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// Send encrypts an application message for the group's current epoch and
// records it (application.message_sent). Before the first message after
// joining by Welcome, and when this member's last path update is older
// than UpdateInterval, it first commits a path update (returned in
// SendOutput.Update, to be delivered first). If the message then fails,
// the error comes with a SendOutput holding only that Update, which
// happened and must be delivered all the same. The event holds the
// content and the message encrypting it, so content above about half the
// server's max_payload (1 MiB by default, the embedded server's 8 MiB) is
// refused, recording nothing: eventlog.ErrEventTooLarge, naming the size
// and the limit.
func (in *Installation) Send(ctx context.Context, groupID, content, authenticatedData []byte) (*SendOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, _, err := in.loadGroupCaughtUp(ctx, groupID)
	if err != nil {
		return nil, err
	}
	var update *CommitOutput
	if gs.updateDue(in.opts.Now(), in.opts.UpdateInterval) {
		if update, err = committed(in.commit(ctx, groupID, func(*mls.Group) (mls.CommitOptions, error) { return mls.CommitOptions{}, nil })); err != nil {
			return nil, err
		}
	}
	var out *SendOutput
	_, err = in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, events.Body, error) {
		ng, msg, err := gs.g.SealApplication(content, authenticatedData)
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: seal for group %x: %w", in.id, groupID, err)
		}
		wire, err := msg.Marshal()
		if err != nil {
			return nil, nil, err
		}
		id := messageID(wire)
		out = &SendOutput{GroupID: bytes.Clone(groupID), Epoch: ng.Epoch(), MessageID: id, Message: wire, Recipients: otherMembers(ng), Update: update}
		return ng, events.ApplicationMessageSent{
			GroupID: groupID, Epoch: ng.Epoch(), SenderLeaf: uint32(ng.LeafIndex()), Sender: in.id,
			MessageID: id, Content: events.NewSecret(content), AuthenticatedData: authenticatedData, Message: wire,
		}, nil
	})
	if err != nil && !errors.Is(err, errNotProjected) {
		err = outcomeUnknown(err, func(u *OutcomeUnknownError) {
			// The message alone: its path update, recorded, is in the
			// output returned beside the error, to deliver once.
			msg := *out
			msg.Update = nil
			u.Send = &msg
		})
		if update != nil {
			// The update is recorded: it must still reach the members.
			return &SendOutput{GroupID: bytes.Clone(groupID), Update: update}, err
		}
		return nil, err
	}
	out.ProjectionErr, err = lagged(err)
	return out, err
}
