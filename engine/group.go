package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/membership"
	"github.com/epochlog/epochlog/mls"
)

// groupState is the cached current state of one group: its aggregate
// position and the MLS group after every recorded event (ratchets
// included). It is valid while no other writer appended to the group; an
// append at a stale position fails with eventlog.ErrConflict and the cache is
// reloaded.
type groupState struct {
	id  []byte
	pos uint64
	g   *mls.Group
	// lastUpdate is when this member last refreshed its path (its own
	// commit, or the group's creation); zero after joining by Welcome.
	lastUpdate time.Time
	// held lists, oldest first, the epochs whose secrets the read model
	// holds once this state's events are projected, when heldKnown: the
	// epochs a commit retires are chosen from it (epochsToRetire) without
	// reading the epochs table, whose rows carry large states. Not known
	// (a state loaded, joined, or built by a Host) it is read from the
	// read model by the next commit.
	held      []uint64
	heldKnown bool
	// epochStart is the serialized state the group's current epoch
	// started with, as recorded (by the group's latest commit, or the
	// event that created or joined it; a proposal cached since does not
	// change it): a commit's state is recorded as a delta from it
	// (events.CommitApplied, StateDelta). Nil when not known: the next
	// commit records its state whole. It holds the epoch's secrets and
	// the signature key: an events.Secret, so that fmt prints none of it.
	epochStart events.Secret
}

// epochStartAfter returns the group's epochStart (see groupState) after
// the transition recorded by b, from prev before it: b's state if b
// starts an epoch; prev if b leaves the epoch as it is; the zero Secret
// (not known) otherwise.
func epochStartAfter(prev events.Secret, b events.Body) events.Secret {
	switch b := b.(type) {
	case events.GroupCreated:
		if c := b.FirstCommit; c != nil {
			st, ok := c.KnownState()
			if !ok {
				return events.Secret{}
			}
			return st
		}
		return b.State
	case events.WelcomeProcessed:
		return b.State
	case events.ExternalJoined:
		return b.State
	case events.CommitApplied:
		st, ok := b.KnownState()
		if !ok {
			return events.Secret{}
		}
		return st
	case events.ProposalStaged, events.StateRecorded, events.ApplicationMessageSent, events.ApplicationMessageReceived, events.HandshakeFormatSet,
		events.EpochSecretsRetired, events.MemberAdded, events.MemberRemoved:
		return prev
	default:
		return events.Secret{}
	}
}

// heldAfter returns the epochs gs holds (see groupState.held) after the
// transition recorded by b: a commit adds its epoch and takes away the
// epochs it retires, and the events that touch no epoch's secrets keep
// them. Any other event makes them unknown.
func heldAfter(gs *groupState, b events.Body) ([]uint64, bool) {
	if !gs.heldKnown {
		return nil, false
	}
	switch b := b.(type) {
	case events.CommitApplied:
		held := append(slices.Clone(gs.held), b.Epoch)
		return slices.DeleteFunc(held, func(e uint64) bool { return slices.Contains(b.RetiredEpochs, e) }), true
	case events.ProposalStaged, events.StateRecorded, events.ApplicationMessageSent, events.ApplicationMessageReceived, events.HandshakeFormatSet:
		return slices.Clone(gs.held), true
	default:
		return nil, false
	}
}

func (in *Installation) mlsOptions() mls.Options {
	return mls.Options{MaxPastEpochs: in.opts.MaxPastEpochs}
}

func (in *Installation) groupAgg(id []byte) events.Aggregate {
	return events.Aggregate{Installation: in.id, Type: events.AggGroup, ID: groupKey(id)}
}

// loadGroup returns the group's cached state, or rebuilds it from the read
// model: the state recorded last (at the current epoch's start, or by the
// latest proposal cached in it), with this member's messages sent since
// then marked sent (mls.Group.MarkSent: its sending ratchet moved on as
// sealing them did, without signing them again) so no key is used
// twice, and the messages it received
// since marked received (mls.Group.MarkReceived) so its receiving
// ratchets are where they were: no generation is accepted twice, and a
// sender's next message is within maximum_forward_ratchets of where the
// ratchet was, not of the saved state.
func (in *Installation) loadGroup(ctx context.Context, id []byte) (*groupState, error) {
	if gs, ok := in.group[string(id)]; ok {
		return gs, nil
	}
	pos, err := in.position(ctx, events.AggGroup, groupKey(id))
	if err != nil {
		return nil, err
	}
	if pos == 0 {
		return nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, id, ErrUnknownGroup)
	}
	if member, err := in.isMember(ctx, id); err != nil {
		return nil, err
	} else if !member {
		return nil, fmt.Errorf("engine: installation %s is no longer a member of group %x (it was removed or left; a Welcome can add it back): %w", in.id, id, mls.ErrNotMember)
	}
	st, start, err := in.db.GroupStates(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x state: %w", in.id, id, err)
	}
	g, err := mls.UnmarshalState(st.Bytes())
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x state: %w", in.id, id, err)
	}
	row, _, err := in.db.Group(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, id, err)
	}
	if !bytes.Equal(g.GroupID(), id) || g.Epoch() != row.Epoch {
		// Sending or receiving with it would record messages and
		// commits sealed with another group's keys, or an older epoch's
		// (generations used before), under this group's aggregate.
		return nil, fmt.Errorf("engine: installation %s: group %x at epoch %d: its state in the read model is of group %x epoch %d: %w",
			in.id, id, row.Epoch, g.GroupID(), g.Epoch(), ErrStateMismatch)
	}
	sent, err := in.db.SentSinceState(ctx, id, g.Epoch())
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x sent messages: %w", in.id, id, err)
	}
	if sent > 0 {
		if g, err = g.MarkSent(sent); err != nil {
			return nil, fmt.Errorf("engine: installation %s: group %x: advance sending ratchet: %w", in.id, id, err)
		}
	}
	received, err := in.db.MessagesReceivedSinceState(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x received messages: %w", in.id, id, err)
	}
	if len(received) > 0 {
		marks := make([]mls.ReceivedGeneration, len(received))
		for i, r := range received {
			marks[i] = mls.ReceivedGeneration{Epoch: r.Epoch, Sender: mls.LeafIndex(r.SenderLeaf), Generation: r.Generation}
		}
		if g, err = g.MarkReceived(marks); err != nil {
			return nil, fmt.Errorf("engine: installation %s: group %x: advance receiving ratchets: %w", in.id, id, err)
		}
	}
	gs := &groupState{id: bytes.Clone(id), pos: pos, g: g, epochStart: start}
	if gs.lastUpdate, err = in.lastPathUpdate(ctx, id, g.LeafIndex()); err != nil {
		return nil, err
	}
	if in.wireFormat[string(id)], err = in.groupWireFormat(ctx, id); err != nil {
		return nil, err
	}
	in.group[string(id)] = gs
	return gs, nil
}

// loadGroupCaughtUp is loadGroup, tried again after catching the read
// model up when it has the group unknown or left: another process of
// the installation may have joined it, or joined it again, since. It
// reports whether it caught up.
func (in *Installation) loadGroupCaughtUp(ctx context.Context, id []byte) (*groupState, bool, error) {
	gs, err := in.loadGroup(ctx, id)
	if err == nil || !errors.Is(err, ErrUnknownGroup) && !errors.Is(err, mls.ErrNotMember) {
		return gs, false, err
	}
	if perr := in.project(ctx); perr != nil {
		return nil, false, err
	}
	gs, err = in.loadGroup(ctx, id)
	return gs, true, err
}

// isMember reports whether the read model has this installation as a
// current member of the group.
func (in *Installation) isMember(ctx context.Context, id []byte) (bool, error) {
	member, err := in.db.IsMember(ctx, id, []byte(in.id))
	if err != nil {
		return false, fmt.Errorf("engine: installation %s: group %x membership: %w", in.id, id, err)
	}
	return member, nil
}

// lastPathUpdate finds when this member last refreshed its path in its
// current membership of the group: its latest own commit, or the group's
// creation by this installation. The zero time means never (a member that
// joined by Welcome and has not committed since); Send treats it as due.
func (in *Installation) lastPathUpdate(ctx context.Context, id []byte, self mls.LeafIndex) (time.Time, error) {
	ec, found, err := in.db.NewestOwnCommit(ctx, id, func(c []byte) bool {
		// Recorded before commits named their committer: a PublicMessage.
		leaf, ok := membership.CommitSender(c)
		return ok && leaf == self
	})
	if err != nil {
		return time.Time{}, fmt.Errorf("engine: installation %s: group %x epochs: %w", in.id, id, err)
	}
	if found {
		return ec.CreatedAt, nil
	}
	ms, err := in.db.Memberships(ctx, id)
	if err != nil {
		return time.Time{}, fmt.Errorf("engine: installation %s: group %x memberships: %w", in.id, id, err)
	}
	if n := len(ms); n > 0 && ms[n-1].JoinedVia == "created" {
		return ms[n-1].JoinedAt, nil
	}
	return time.Time{}, nil
}

// updateDue reports whether gs's member must refresh its path before
// sending at now: never refreshed, or longer ago than interval. A last
// update recorded further in the future than interval (by a process
// whose clock ran ahead) is due too: counted as recent, it would keep
// the path unrefreshed until that clock's time came.
func (gs *groupState) updateDue(now time.Time, interval time.Duration) bool {
	return gs.lastUpdate.IsZero() || now.Sub(gs.lastUpdate) > interval || gs.lastUpdate.Sub(now) > interval
}

// transact runs one group transition with optimistic concurrency (an
// errNotProjected error comes with the new state: the transition
// happened): step
// decides the transition from the current state and returns the new state
// and the body of its event; it is appended at the group's position in one append
// (no atomic batch: every transition is one event), then projected (a
// commit's or a proposal's from memory when
// nothing else is new: appendAndProjectKnown). If another writer moved
// the group first, the
// read model catches up, the state is reloaded and step runs again.
func (in *Installation) transact(ctx context.Context, id []byte, step func(gs *groupState) (*mls.Group, events.Body, error)) (*groupState, error) {
	caughtUp := false
	for attempt := 0; attempt < in.opts.MaxAttempts; attempt++ {
		var gs *groupState
		var err error
		if caughtUp {
			gs, err = in.loadGroup(ctx, id)
		} else {
			gs, caughtUp, err = in.loadGroupCaughtUp(ctx, id)
		}
		if err != nil {
			return nil, err
		}
		ng, body, err := step(gs)
		if err != nil && !caughtUp && !errors.Is(err, ErrDuplicateMessage) {
			// Refused on the cached state, which another process of this
			// installation may have moved on (a message of an epoch it
			// reached, a commit of a proposal it received): catch up
			// once and, if the group moved, decide again. A duplicate
			// stays one.
			caughtUp = true
			if moved, merr := in.groupMoved(ctx, id, gs.pos); merr == nil && moved {
				delete(in.group, string(id))
				attempt-- // not a lost race
				continue
			}
		}
		if err != nil {
			return nil, err
		}
		if carriesState(body) {
			err = in.appendAndProjectKnown(ctx, in.groupAgg(id), gs.pos, body)
		} else {
			err = in.appendAndProject(ctx, in.groupAgg(id), gs.pos, body)
		}
		if errors.Is(err, eventlog.ErrConflict) {
			delete(in.group, string(id))
			if err := in.project(ctx); err != nil {
				return nil, err
			}
			if attempt+1 < in.opts.MaxAttempts {
				decidedAgain(in.log, in.groupAgg(id), attempt+1, err)
			}
			continue
		}
		if err != nil && !errors.Is(err, errNotProjected) {
			delete(in.group, string(id))
			return nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, id, err)
		}
		next := &groupState{id: gs.id, pos: gs.pos + 1, g: ng, lastUpdate: gs.lastUpdate}
		next.held, next.heldKnown = heldAfter(gs, body)
		next.epochStart = epochStartAfter(gs.epochStart, body)
		in.group[string(id)] = next
		return next, err
	}
	return nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, id, ErrTooManyConflicts)
}

// carriesState reports whether b carries the group's state (a commit, a
// proposal, a recorded state): events as large as the group's ratchet
// trees, which appendAndProjectKnown spares reading back.
func carriesState(b events.Body) bool {
	switch b.(type) {
	case events.CommitApplied, events.ProposalStaged, events.StateRecorded:
		return true
	}
	return false
}

// CreateGroup creates a one-member group (a nil id draws a random one) and
// records group.created with this member.
func (in *Installation) CreateGroup(ctx context.Context, id []byte) (*GroupOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	kp, secrets, err := mls.NewKeyPackage(in.cs.ID(), in.cred, in.sig, in.capabilities())
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: create group: %w", in.id, err)
	}
	opts := in.mlsOptions()
	g, err := mls.NewGroup(id, kp, secrets, &opts)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: create group: %w", in.id, err)
	}
	st, err := g.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: create group: %w", in.id, err)
	}
	gid := g.GroupID()
	created := events.GroupCreated{GroupID: gid, Ciphersuite: uint16(in.cs.ID()), Epoch: g.Epoch(), State: events.NewSecret(st),
		Members: []events.Member{{Leaf: uint32(g.LeafIndex()), Identity: []byte(in.id)}}}
	err = in.appendAndProject(ctx, in.groupAgg(gid), 0, created)
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, fmt.Errorf("engine: installation %s: create group %x: %w", in.id, gid, err)
	}
	in.group[string(gid)] = &groupState{id: gid, pos: 1, g: g, lastUpdate: in.opts.Now().UTC(),
		held: []uint64{g.Epoch()}, heldKnown: true, epochStart: epochStartAfter(events.Secret{}, created)}
	in.wireFormat[string(gid)] = WireFormatDefault
	out := &GroupOutput{GroupID: bytes.Clone(gid), Epoch: g.Epoch()}
	out.ProjectionErr, err = lagged(err)
	return out, err
}

// otherMembers lists the installations of g other than self, by leaf order.
func otherMembers(g *mls.Group) []events.InstallationID {
	var out []events.InstallationID
	self := g.LeafIndex()
	g.Tree().Leaves(func(l mls.LeafIndex, leaf *mls.LeafNode) {
		if leaf != nil && l != self {
			out = append(out, events.InstallationID(leaf.Credential.Identity))
		}
	})
	return out
}

// Members returns the installations currently in the group, this one
// included, as the read model knows them. A group the read model does
// not hold is ErrUnknownGroup.
func (in *Installation) Members(ctx context.Context, groupID []byte) ([]events.InstallationID, error) {
	if err := in.errIfClosed(); err != nil {
		return nil, err
	}
	ms, err := in.db.Members(ctx, groupID)
	if err != nil {
		if in.closed.Load() {
			// Closed under it (Members does not hold the operation
			// lock): the read model's own error says less.
			return nil, fmt.Errorf("engine: installation %s: %w (%v)", in.id, ErrClosed, err)
		}
		return nil, err
	}
	if len(ms) == 0 {
		// No member at all: a group the read model does not know (one
		// it holds lists at least this installation, or, once left, the
		// members that stayed).
		if _, found, err := in.db.Group(ctx, groupID); err != nil {
			return nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, err)
		} else if !found {
			return nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, groupID, ErrUnknownGroup)
		}
	}
	out := make([]events.InstallationID, len(ms))
	for i, m := range ms {
		out[i] = events.InstallationID(m.Identity)
	}
	return out, nil
}

// EpochAuthenticator returns the group's current epoch and its epoch
// authenticator (RFC 9420 §8.7), once the read model has caught up with
// the installation's events (another process's included): members in the
// same epoch of the same group agree on it, so comparing it with a peer's
// detects a fork.
func (in *Installation) EpochAuthenticator(ctx context.Context, groupID []byte) (uint64, []byte, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.currentGroup(ctx, groupID)
	if err != nil {
		return 0, nil, err
	}
	return gs.g.Epoch(), gs.g.EpochAuthenticator(), nil
}

// currentGroup is loadGroup after catching the read model up: a cached
// state another process has moved past is reloaded.
func (in *Installation) currentGroup(ctx context.Context, id []byte) (*groupState, error) {
	if gs, ok := in.group[string(id)]; ok {
		moved, err := in.groupMoved(ctx, id, gs.pos)
		if err != nil {
			return nil, err
		}
		if moved {
			delete(in.group, string(id))
		}
	} else if err := in.project(ctx); err != nil {
		return nil, err
	}
	return in.loadGroup(ctx, id)
}

// groupMoved catches the read model up and reports whether the group's
// position is no longer pos (a cached state's): another process of the
// installation appended to it.
func (in *Installation) groupMoved(ctx context.Context, id []byte, pos uint64) (bool, error) {
	if err := in.project(ctx); err != nil {
		return false, err
	}
	cur, err := in.position(ctx, events.AggGroup, groupKey(id))
	if err != nil {
		return false, err
	}
	return cur != pos, nil
}

// Epoch returns the group's current epoch, once the read model has caught
// up with the installation's events (another process's included, as
// EpochAuthenticator).
func (in *Installation) Epoch(ctx context.Context, groupID []byte) (uint64, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.currentGroup(ctx, groupID)
	if err != nil {
		return 0, err
	}
	return gs.g.Epoch(), nil
}
