package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/membership"
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
		if ep := m.PublicMessage.Content.Epoch; ep < gs.g.Epoch() {
			if applied, err := in.commitApplied(ctx, groupID, ep, wire); err != nil {
				return nil, nil, err
			} else if applied {
				return nil, nil, fmt.Errorf("engine: installation %s: group %x: commit of epoch %d, applied already (group at epoch %d): %w", in.id, groupID, ep, gs.g.Epoch(), ErrDuplicateMessage)
			}
		}
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
	if errors.Is(err, mls.ErrNotMember) {
		// No group state to load: removed. The commit that removed this
		// installation, delivered again, is a duplicate.
		ep := m.PublicMessage.Content.Epoch
		if removed, rerr := in.removedAt(ctx, groupID, ep); rerr != nil {
			return nil, rerr
		} else if removed {
			return nil, fmt.Errorf("engine: installation %s: group %x: commit of epoch %d removed this installation, applied already: %w", in.id, groupID, ep, ErrDuplicateMessage)
		}
	}
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, err
	}
	if out.Removed {
		delete(in.group, string(groupID))
	}
	out.ProjectionErr, err = lagged(err)
	return out, err
}

// removedAt reports whether this installation was removed from the group
// by the commit of epoch ep (and is not a member since).
func (in *Installation) removedAt(ctx context.Context, groupID []byte, ep uint64) (bool, error) {
	if member, err := in.isMember(ctx, groupID); err != nil || member {
		return false, err
	}
	removed, err := in.db.MemberRemovedAt(ctx, groupID, []byte(in.id), ep)
	if err != nil {
		return false, fmt.Errorf("engine: installation %s: group %x membership: %w", in.id, groupID, err)
	}
	return removed, nil
}

// messageReceived refuses an application message already recorded, as
// ErrDuplicateMessage.
func (in *Installation) messageReceived(ctx context.Context, groupID, id []byte) error {
	dup, err := in.db.HasMessage(ctx, groupID, id)
	if err != nil {
		return fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, err)
	}
	if dup {
		return fmt.Errorf("engine: installation %s: group %x message %x: %w", in.id, groupID, id, ErrDuplicateMessage)
	}
	return nil
}

// commitApplied reports whether the group's read model records wire as
// the commit that left epoch ep.
func (in *Installation) commitApplied(ctx context.Context, groupID []byte, ep uint64, wire []byte) (bool, error) {
	applied, err := in.db.CommitStartedEpoch(ctx, groupID, ep+1, wire)
	if err != nil {
		return false, fmt.Errorf("engine: installation %s: group %x epoch %d: %w", in.id, groupID, ep+1, err)
	}
	return applied, nil
}

func (in *Installation) processApplication(ctx context.Context, groupID []byte, epoch uint64, m *mls.MLSMessage, wire []byte) (*Received, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	id := messageID(wire)
	var out *Received
	_, err := in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, []events.Body, error) {
		// Checked on every attempt: after a lost race the read model has
		// caught up, and may hold this message as received by another
		// process of this installation (a reloaded group cannot tell, its
		// receiving ratchets start afresh).
		if err := in.messageReceived(ctx, groupID, id); err != nil {
			return nil, nil, err
		}
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
		if errors.Is(err, mls.ErrWrongEpoch) && epoch > cur {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: open message of epoch %d: %w "+
				"(a commit is missing: deliver the commit (SendOutput/CommitOutput .Commit) to this member before messages of the next epoch)",
				in.id, groupID, epoch, err)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: open message of epoch %d: %w", in.id, groupID, epoch, err)
		}
		if rec.ContentType != mls.ContentTypeApplication {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, ErrUnsupportedMessage)
		}
		// Named by the credential its signature was verified with, in the
		// message's own epoch: the leaf may hold another member now.
		sender := events.InstallationID(rec.SenderCredential.Identity)
		if err := sender.Validate(); err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: group %x: sender leaf %d: %w", in.id, groupID, rec.Sender, err)
		}
		out = &Received{GroupID: bytes.Clone(groupID), Epoch: rec.Epoch, Kind: "application", Sender: sender, SenderLeaf: uint32(rec.Sender),
			Content: events.Secret(rec.ApplicationData), AuthenticatedData: rec.AuthenticatedData, MessageID: id}
		return ng, []events.Body{events.ApplicationMessageReceived{
			GroupID: groupID, Epoch: rec.Epoch, SenderLeaf: uint32(rec.Sender), Sender: sender, MessageID: id,
			Content: events.Secret(rec.ApplicationData), AuthenticatedData: rec.AuthenticatedData,
		}}, nil
	})
	if errors.Is(err, mls.ErrNotMember) {
		// Removed since: a message received before is still a duplicate.
		if derr := in.messageReceived(ctx, groupID, id); derr != nil {
			return nil, derr
		}
	}
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, err
	}
	out.ProjectionErr, err = lagged(err)
	return out, err
}

func (in *Installation) epochRetired(ctx context.Context, groupID []byte, epoch uint64) (bool, error) {
	return in.db.EpochRetired(ctx, groupID, epoch)
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
	// Decide against the installation's latest events: another process
	// may have processed this Welcome, or consumed its key package.
	if err := in.project(ctx); err != nil {
		return nil, err
	}
	kp, err := in.findKeyPackage(ctx, refs)
	if errors.Is(err, ErrNoKeyPackage) {
		if gid, joined, cerr := in.joinedWith(ctx, refs); cerr != nil {
			return nil, cerr
		} else if joined {
			return nil, fmt.Errorf("engine: installation %s: welcome with a key package consumed by joining group %x: %w (%w)", in.id, gid, ErrDuplicateMessage, err)
		}
	}
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
	ms := membership.Identities(g)
	for l := mls.LeafIndex(0); len(ms) > 0; l++ {
		if id, ok := ms[l]; ok {
			bodies = append(bodies, events.MemberAdded{GroupID: gid, Epoch: g.Epoch(), Leaf: uint32(l), Identity: id})
			delete(ms, l)
		}
	}
	// A join starts the group's aggregate: it can only be appended at
	// position 0, and loses to anything already there.
	var joinErr error
	for attempt := 0; ; attempt++ {
		pos, err := in.position(ctx, events.AggGroup, groupKey(gid))
		if err != nil {
			return nil, err
		}
		if pos > 0 {
			return nil, in.joinedAlready(ctx, gid, g.Epoch(), kp)
		}
		if attempt == in.opts.MaxAttempts {
			return nil, fmt.Errorf("engine: installation %s: record welcome to group %x: %w", in.id, gid, ErrTooManyConflicts)
		}
		joinErr = in.appendAndProject(ctx, in.groupAgg(gid), 0, bodies)
		if !errors.Is(joinErr, eventlog.ErrConflict) {
			break
		}
		if err := in.project(ctx); err != nil {
			return nil, err
		}
		decidedAgain(in.log, in.groupAgg(gid), attempt+1, joinErr)
	}
	if joinErr != nil && !errors.Is(joinErr, errNotProjected) {
		return nil, fmt.Errorf("engine: installation %s: record welcome to group %x: %w", in.id, gid, joinErr)
	}
	in.group[string(gid)] = &groupState{id: gid, pos: uint64(len(bodies)), g: g}
	rec := &Received{GroupID: gid, Epoch: g.Epoch(), Kind: "welcome"}
	if err := in.consumeKeyPackage(ctx, kp, gid); err != nil {
		// The join is recorded; only the key package's bookkeeping failed
		// (its keys stay held longer, never shorter).
		rec.ProjectionErr = err
		return rec, nil
	}
	rec.ProjectionErr = joinErr
	return rec, nil
}

// joinedAlready explains why a Welcome to group gid is not recorded: the
// read model already has the group. Either this installation is a member
// (the Welcome was processed before: a redelivery, or another process of
// the installation took it), or it was removed from the group, and
// rejoining is not supported (the read model holds one row per group). A
// redelivery also finishes the key package's bookkeeping, in case the
// first processing stopped before it.
func (in *Installation) joinedAlready(ctx context.Context, gid []byte, epoch uint64, kp *heldKeyPackage) error {
	if member, err := in.isMember(ctx, gid); err != nil {
		return err
	} else if !member {
		return fmt.Errorf("engine: installation %s: welcome to group %x (epoch %d): this installation was removed from the group, and rejoining is not supported: %w", in.id, gid, epoch, ErrUnsupportedMessage)
	}
	if err := in.consumeKeyPackage(ctx, kp, gid); err != nil {
		return err
	}
	return fmt.Errorf("engine: installation %s: welcome to group %x (epoch %d): group joined already: %w", in.id, gid, epoch, ErrDuplicateMessage)
}

// joinedWith reports whether one of refs is a one-time key package of
// this installation that was consumed by joining a group it is still in:
// then a Welcome naming it (whose keys are gone) is that join's
// redelivery, or a misuse of the package. Not a last-resort package: it
// serves many Welcomes, and one naming it after its keys were rotated out
// is a new invitation that cannot be processed (ErrNoKeyPackage).
func (in *Installation) joinedWith(ctx context.Context, refs [][]byte) ([]byte, bool, error) {
	for _, ref := range refs {
		gid, found, err := in.db.GroupJoinedWith(ctx, ref, []byte(in.id))
		if err != nil {
			return nil, false, fmt.Errorf("engine: installation %s: key package %x: %w", in.id, ref, err)
		}
		if found {
			return gid, true, nil
		}
	}
	return nil, false, nil
}
