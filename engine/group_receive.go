package engine

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// Receive processes an incoming MLSMessage as delivered: a Welcome joins
// the group (see ProcessWelcome), a commit moves the group to its next
// epoch, an application message is decrypted. The transition is recorded
// and projected before Receive returns. An application message of a
// retired epoch is ErrEpochRetired; one already received is
// ErrDuplicateMessage.
func (in *Installation) Receive(ctx context.Context, wire []byte) (*Received, error) {
	var m mls.MLSMessage
	if err := m.Unmarshal(wire); err != nil {
		return nil, fmt.Errorf("engine: installation %s: receive: %w", in.id, err)
	}
	switch {
	case m.Welcome != nil:
		return in.ProcessWelcome(ctx, wire)
	case m.PublicMessage != nil:
		c := m.PublicMessage.Content
		if c.ContentType != mls.ContentTypeCommit {
			return nil, fmt.Errorf("engine: installation %s: group %x: public message of content type %d: %w", in.id, c.GroupID, c.ContentType, ErrUnsupportedMessage)
		}
		return in.processCommit(ctx, c.GroupID, &m, wire)
	case m.PrivateMessage != nil:
		pm := m.PrivateMessage
		if pm.ContentType != mls.ContentTypeApplication {
			return nil, fmt.Errorf("engine: installation %s: group %x: encrypted handshake: %w", in.id, pm.GroupID, ErrUnsupportedMessage)
		}
		return in.processApplication(ctx, pm.GroupID, pm.Epoch, &m, wire)
	default:
		return nil, fmt.Errorf("engine: installation %s: wire format %d: %w", in.id, m.WireFormat, ErrUnsupportedMessage)
	}
}

func (in *Installation) processCommit(ctx context.Context, groupID []byte, m *mls.MLSMessage, wire []byte) (*Received, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var out *Received
	_, err := in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, []events.Body, error) {
		ng, rec, err := gs.g.ProcessCommit(m)
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: process commit for group %x epoch %d: %w", in.id, groupID, gs.g.Epoch(), err)
		}
		out = &Received{GroupID: bytes.Clone(groupID), Epoch: ng.Epoch(), Kind: "commit", SenderLeaf: uint32(rec.Sender), Removed: rec.Removed}
		if leaf := gs.g.Tree().Leaf(rec.Sender); leaf != nil {
			out.Sender = events.InstallationID(leaf.Credential.Identity)
		}
		if rec.Removed {
			// A removed member cannot derive the next epoch: it records its
			// own removal and keeps no further state for the group.
			out.Epoch = gs.g.Epoch() + 1
			return ng, []events.Body{events.MemberRemoved{GroupID: groupID, Epoch: gs.g.Epoch(), Leaf: uint32(gs.g.LeafIndex()), Identity: []byte(in.id)}}, nil
		}
		bodies, err := in.commitEvents(ctx, gs.g, ng, wire)
		if err != nil {
			return nil, nil, err
		}
		return ng, bodies, nil
	})
	if err != nil && !errors.Is(err, ErrNotProjected) {
		return nil, err
	}
	if out.Removed {
		delete(in.group, string(groupID))
	}
	return out, err
}

func (in *Installation) processApplication(ctx context.Context, groupID []byte, epoch uint64, m *mls.MLSMessage, wire []byte) (*Received, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	id := messageID(wire)
	var dup int
	if err := in.db.SQL().QueryRowContext(ctx, `SELECT count(*) FROM messages WHERE group_id = ? AND message_id = ?`, groupID, id).Scan(&dup); err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, err)
	}
	if dup != 0 {
		return nil, fmt.Errorf("engine: installation %s: group %x message %x: %w", in.id, groupID, id, ErrDuplicateMessage)
	}
	var out *Received
	_, err := in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, []events.Body, error) {
		cur := gs.g.Epoch()
		if epoch+uint64(in.opts.MaxPastEpochs) < cur {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: message of epoch %d, group at epoch %d keeps %d past epochs: %w",
				in.id, groupID, epoch, cur, in.opts.MaxPastEpochs, ErrEpochRetired)
		}
		if retired, err := in.epochRetired(ctx, groupID, epoch); err != nil {
			return nil, nil, err
		} else if retired {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: message of epoch %d: %w", in.id, groupID, epoch, ErrEpochRetired)
		}
		ng, rec, err := gs.g.Process(m)
		if errors.Is(err, mls.ErrEpochRetired) {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: message of epoch %d: %w (%w)", in.id, groupID, epoch, ErrEpochRetired, err)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: open message of epoch %d: %w", in.id, groupID, epoch, err)
		}
		if rec.ContentType != mls.ContentTypeApplication {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, ErrUnsupportedMessage)
		}
		sender, err := in.memberAt(ctx, groupID, uint32(rec.Sender), ng)
		if err != nil {
			return nil, nil, err
		}
		out = &Received{GroupID: bytes.Clone(groupID), Epoch: rec.Epoch, Kind: "application", Sender: sender, SenderLeaf: uint32(rec.Sender),
			Content: rec.ApplicationData, AuthenticatedData: rec.AuthenticatedData, MessageID: id}
		return ng, []events.Body{events.ApplicationMessageReceived{
			GroupID: groupID, Epoch: rec.Epoch, SenderLeaf: uint32(rec.Sender), Sender: sender, MessageID: id,
			Content: events.Secret(rec.ApplicationData), AuthenticatedData: rec.AuthenticatedData,
		}}, nil
	})
	if err != nil && !errors.Is(err, ErrNotProjected) {
		return nil, err
	}
	return out, err
}

// memberAt names the installation at leaf; the current tree knows it unless
// the sender left since, then the read model's membership history does.
func (in *Installation) memberAt(ctx context.Context, groupID []byte, leaf uint32, g *mls.Group) (events.InstallationID, error) {
	if ln := g.Tree().Leaf(mls.LeafIndex(leaf)); ln != nil {
		return events.InstallationID(ln.Credential.Identity), nil
	}
	var id []byte
	err := in.db.SQL().QueryRowContext(ctx, `SELECT identity FROM members WHERE group_id = ? AND leaf = ?`, groupID, int64(leaf)).Scan(&id)
	if errors.Is(err, sql.ErrNoRows) {
		return "", fmt.Errorf("engine: installation %s: group %x: sender leaf %d: %w", in.id, groupID, leaf, mls.ErrNotMember)
	}
	if err != nil {
		return "", err
	}
	return events.InstallationID(id), nil
}

func (in *Installation) epochRetired(ctx context.Context, groupID []byte, epoch uint64) (bool, error) {
	var retired bool
	err := in.db.SQL().QueryRowContext(ctx, `SELECT retired FROM epochs WHERE group_id = ? AND epoch = ?`, groupID, epoch).Scan(&retired)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	return retired, err
}

// ProcessWelcome joins a group from a Welcome (an MLSMessage) with one of
// this installation's key packages. The join is recorded first
// (group.welcome_processed with the members); only then is the key package
// marked consumed, and a last-resort package rotated, so its private keys
// outlive every Welcome that needs them until it is processed.
func (in *Installation) ProcessWelcome(ctx context.Context, wire []byte) (*Received, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	var m mls.MLSMessage
	if err := m.Unmarshal(wire); err != nil {
		return nil, fmt.Errorf("engine: installation %s: welcome: %w", in.id, err)
	}
	if m.Welcome == nil {
		return nil, fmt.Errorf("engine: installation %s: not a welcome (wire format %d): %w", in.id, m.WireFormat, ErrUnsupportedMessage)
	}
	refs := make([][]byte, len(m.Welcome.Secrets))
	for i, s := range m.Welcome.Secrets {
		refs[i] = s.NewMember
	}
	kp, err := in.findKeyPackage(ctx, refs)
	if err != nil {
		return nil, err
	}
	opts := mls.JoinOptions{Options: in.mlsOptions()}
	g, err := mls.Join(&m, kp.kp, kp.secrets, &opts)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: join from welcome with key package %x: %w", in.id, kp.ref, err)
	}
	st, err := g.MarshalBinary()
	if err != nil {
		return nil, err
	}
	gid := g.GroupID()
	bodies := []events.Body{events.WelcomeProcessed{
		GroupID: gid, Epoch: g.Epoch(), KeyPackageRef: kp.ref, Welcome: wire,
		EpochAuthenticator: g.EpochAuthenticator(), State: events.Secret(st),
	}}
	ms := groupMembers(g)
	for l := mls.LeafIndex(0); len(ms) > 0; l++ {
		if id, ok := ms[l]; ok {
			bodies = append(bodies, events.MemberAdded{GroupID: gid, Epoch: g.Epoch(), Leaf: uint32(l), Identity: id})
			delete(ms, l)
		}
	}
	pos, err := in.position(ctx, events.AggGroup, groupKey(gid))
	if err != nil {
		return nil, err
	}
	joinErr := in.appendAndProject(ctx, in.groupAgg(gid), pos, bodies)
	if joinErr != nil && !errors.Is(joinErr, ErrNotProjected) {
		return nil, fmt.Errorf("engine: installation %s: record welcome to group %x: %w", in.id, gid, joinErr)
	}
	in.group[string(gid)] = &groupState{id: gid, pos: pos + uint64(len(bodies)), g: g}
	rec := &Received{GroupID: gid, Epoch: g.Epoch(), Kind: "welcome"}
	if err := in.consumeKeyPackage(ctx, kp, gid); err != nil {
		// The join is recorded; only the key package's bookkeeping failed
		// (its keys stay held longer, never shorter).
		if !errors.Is(err, ErrNotProjected) {
			err = fmt.Errorf("%w: %w", ErrNotProjected, err)
		}
		return rec, err
	}
	return rec, joinErr
}
