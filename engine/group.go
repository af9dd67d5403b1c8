package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
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
}

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
	Content           []byte
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

func (in *Installation) mlsOptions() mls.Options {
	return mls.Options{MaxPastEpochs: in.opts.MaxPastEpochs}
}

func (in *Installation) groupAgg(id []byte) events.Aggregate {
	return events.Aggregate{Installation: in.id, Type: events.AggGroup, ID: groupKey(id)}
}

// loadGroup returns the group's cached state, or rebuilds it from the read
// model: the state recorded at the current epoch's start, with this
// member's messages sent since then re-sealed (discarding the ciphertexts)
// so its sending ratchet is where it was and no key is used twice.
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
		return nil, fmt.Errorf("engine: installation %s: removed from group %x: %w", in.id, id, mls.ErrNotMember)
	}
	st, err := in.db.GroupState(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x state: %w", in.id, id, err)
	}
	g, err := mls.UnmarshalState([]byte(st))
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x state: %w", in.id, id, err)
	}
	rows, err := in.db.SQL().QueryContext(ctx, `SELECT content, authenticated_data FROM messages
		WHERE group_id = ? AND epoch = ? AND direction = 'sent' ORDER BY ordinal`, id, g.Epoch())
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x sent messages: %w", in.id, id, err)
	}
	for rows.Next() {
		var content, ad []byte
		if err := rows.Scan(&content, &ad); err != nil {
			rows.Close()
			return nil, err
		}
		if g, _, err = g.SealApplication(content, ad); err != nil {
			rows.Close()
			return nil, fmt.Errorf("engine: installation %s: group %x: advance sending ratchet: %w", in.id, id, err)
		}
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	gs := &groupState{id: bytes.Clone(id), pos: pos, g: g}
	if gs.lastUpdate, err = in.lastPathUpdate(ctx, id, g.LeafIndex()); err != nil {
		return nil, err
	}
	in.group[string(id)] = gs
	return gs, nil
}

// isMember reports whether the read model has this installation as a
// current member of the group.
func (in *Installation) isMember(ctx context.Context, id []byte) (bool, error) {
	var active int
	if err := in.db.SQL().QueryRowContext(ctx, `SELECT count(*) FROM members WHERE group_id = ? AND identity = ? AND removed_epoch IS NULL`, id, []byte(in.id)).Scan(&active); err != nil {
		return false, fmt.Errorf("engine: installation %s: group %x membership: %w", in.id, id, err)
	}
	return active > 0, nil
}

// lastPathUpdate finds when this member last refreshed its path: its
// latest own commit, or the group's creation by this installation.
func (in *Installation) lastPathUpdate(ctx context.Context, id []byte, self mls.LeafIndex) (time.Time, error) {
	rows, err := in.db.SQL().QueryContext(ctx, `SELECT created_at, commit_message FROM epochs WHERE group_id = ? ORDER BY epoch DESC`, id)
	if err != nil {
		return time.Time{}, fmt.Errorf("engine: installation %s: group %x epochs: %w", in.id, id, err)
	}
	defer rows.Close()
	for rows.Next() {
		var at int64
		var commit []byte
		if err := rows.Scan(&at, &commit); err != nil {
			return time.Time{}, err
		}
		if commit == nil {
			continue
		}
		if leaf, ok := membership.CommitSender(commit); ok && leaf == self {
			return time.Unix(0, at).UTC(), nil
		}
	}
	if err := rows.Err(); err != nil {
		return time.Time{}, err
	}
	g, err := in.db.Groups(ctx)
	if err != nil {
		return time.Time{}, err
	}
	for _, r := range g {
		if bytes.Equal(r.ID, id) && r.JoinedVia == "created" {
			return r.CreatedAt, nil
		}
	}
	return time.Time{}, nil
}

// transact runs one group transition with optimistic concurrency (an
// errNotProjected error comes with the new state: the transition
// happened): step
// decides the transition from the current state and returns the new state
// and the events; they are appended at the group's position as one atomic
// batch, then projected. If another writer moved the group first, the
// read model catches up, the state is reloaded and step runs again.
func (in *Installation) transact(ctx context.Context, id []byte, step func(gs *groupState) (*mls.Group, []events.Body, error)) (*groupState, error) {
	for attempt := 0; attempt < in.opts.MaxAttempts; attempt++ {
		gs, err := in.loadGroup(ctx, id)
		if err != nil {
			return nil, err
		}
		ng, bodies, err := step(gs)
		if err != nil {
			return nil, err
		}
		err = in.appendAndProject(ctx, in.groupAgg(id), gs.pos, bodies)
		if errors.Is(err, eventlog.ErrConflict) {
			delete(in.group, string(id))
			if err := in.project(ctx); err != nil {
				return nil, err
			}
			continue
		}
		if err != nil && !errors.Is(err, errNotProjected) {
			delete(in.group, string(id))
			return nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, id, err)
		}
		next := &groupState{id: gs.id, pos: gs.pos + uint64(len(bodies)), g: ng, lastUpdate: gs.lastUpdate}
		in.group[string(id)] = next
		return next, err
	}
	return nil, fmt.Errorf("engine: installation %s: group %x: %w", in.id, id, ErrTooManyConflicts)
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

// CreateGroup creates a one-member group (a nil id draws a random one) and
// records group.created with this member.
func (in *Installation) CreateGroup(ctx context.Context, id []byte) (*GroupOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	kp, secrets, err := mls.NewKeyPackage(in.cs.ID(), in.cred, in.sig, nil)
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
	bodies := []events.Body{
		events.GroupCreated{GroupID: gid, Ciphersuite: uint16(in.cs.ID()), Epoch: g.Epoch(), State: events.Secret(st)},
		events.MemberAdded{GroupID: gid, Epoch: g.Epoch(), Leaf: uint32(g.LeafIndex()), Identity: []byte(in.id)},
	}
	err = in.appendAndProject(ctx, in.groupAgg(gid), 0, bodies)
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, fmt.Errorf("engine: installation %s: create group %x: %w", in.id, gid, err)
	}
	in.group[string(gid)] = &groupState{id: gid, pos: uint64(len(bodies)), g: g, lastUpdate: in.opts.Now().UTC()}
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

// commitEvents records a transition from old to ng by the commit message:
// group.commit_applied (with the re-derivable authenticator and the new
// state) and, when epochs fall out of the maximum_past_epochs window,
// group.epoch_secrets_retired, in one batch.
func (in *Installation) commitEvents(ctx context.Context, old, ng *mls.Group, commit []byte) ([]events.Body, error) {
	st, err := ng.MarshalBinary()
	if err != nil {
		return nil, fmt.Errorf("engine: encode group state: %w", err)
	}
	added, removed := membership.Diff(old, ng)
	gc := ng.GroupContext()
	bodies := []events.Body{events.CommitApplied{
		GroupID: ng.GroupID(), Epoch: ng.Epoch(),
		EpochAuthenticator:      ng.EpochAuthenticator(),
		ConfirmedTranscriptHash: gc.ConfirmedTranscriptHash,
		Commit:                  commit, State: events.Secret(st),
		Added: added, Removed: removed,
	}}
	retire, err := in.epochsToRetire(ctx, ng.GroupID(), ng.Epoch())
	if err != nil {
		return nil, err
	}
	if len(retire) > 0 {
		bodies = append(bodies, events.EpochSecretsRetired{GroupID: ng.GroupID(), Epochs: retire})
	}
	return bodies, nil
}

// epochsToRetire lists the group's epochs whose secrets the read model
// still holds and that are older than maximum_past_epochs once the group
// is at epoch cur.
func (in *Installation) epochsToRetire(ctx context.Context, id []byte, cur uint64) ([]uint64, error) {
	keep := uint64(in.opts.MaxPastEpochs)
	if cur <= keep {
		return nil, nil
	}
	eps, err := in.db.Epochs(ctx, id)
	if err != nil {
		return nil, fmt.Errorf("engine: group %x epochs: %w", id, err)
	}
	var out []uint64
	for _, e := range eps {
		if !e.Retired && e.Epoch < cur-keep {
			out = append(out, e.Epoch)
		}
	}
	return out, nil
}

// commit runs an own commit with a fresh path (every own commit refreshes
// this member's leaf key) and records it.
func (in *Installation) commit(ctx context.Context, id []byte, opts func(g *mls.Group) (mls.CommitOptions, error)) (*CommitOutput, error) {
	var out *CommitOutput
	_, err := in.transact(ctx, id, func(gs *groupState) (*mls.Group, []events.Body, error) {
		co, err := opts(gs.g)
		if err != nil {
			return nil, nil, err
		}
		co.ForcePath = true
		ng, res, err := gs.g.Commit(co)
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: commit in group %x: %w", in.id, id, err)
		}
		wire, err := res.Commit.Marshal()
		if err != nil {
			return nil, nil, err
		}
		bodies, err := in.commitEvents(ctx, gs.g, ng, wire)
		if err != nil {
			return nil, nil, err
		}
		out = &CommitOutput{GroupID: bytes.Clone(id), Epoch: ng.Epoch(), Commit: wire, Recipients: otherMembers(gs.g)}
		if res.Welcome != nil {
			if out.Welcome, err = res.Welcome.Marshal(); err != nil {
				return nil, nil, err
			}
		}
		for _, kp := range co.Add {
			out.Added = append(out.Added, events.InstallationID(kp.LeafNode.Credential.Identity))
		}
		return ng, bodies, nil
	})
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, err
	}
	in.group[string(id)].lastUpdate = in.opts.Now().UTC()
	return out, err
}

// AddMembers adds the clients of the TLS-encoded key packages to the group
// in one commit (with a path update) and returns the commit for the
// current members and the Welcome for the new ones.
func (in *Installation) AddMembers(ctx context.Context, groupID []byte, keyPackages ...[]byte) (*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	kps := make([]*mls.KeyPackage, len(keyPackages))
	for i, raw := range keyPackages {
		kps[i] = new(mls.KeyPackage)
		if err := kps[i].Unmarshal(raw); err != nil {
			return nil, fmt.Errorf("engine: installation %s: add to group %x: key package %d: %w", in.id, groupID, i, err)
		}
	}
	return committed(in.commit(ctx, groupID, func(*mls.Group) (mls.CommitOptions, error) {
		return mls.CommitOptions{Add: kps}, nil
	}))
}

// RemoveMembers removes the named installations from the group in one
// commit. An installation that is not a member is an error naming it
// (errors.Is mls.ErrNotMember), refused before anything is recorded.
func (in *Installation) RemoveMembers(ctx context.Context, groupID []byte, insts ...events.InstallationID) (*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return committed(in.commit(ctx, groupID, func(g *mls.Group) (mls.CommitOptions, error) {
		ms := membership.Identities(g)
		var leaves []mls.LeafIndex
		for _, inst := range insts {
			found := false
			for l, id := range ms {
				if string(id) == string(inst) {
					leaves = append(leaves, l)
					found = true
				}
			}
			if !found {
				return mls.CommitOptions{}, fmt.Errorf("engine: remove %s from group %x: %w", inst, groupID, mls.ErrNotMember)
			}
		}
		return mls.CommitOptions{Remove: leaves}, nil
	}))
}

// Update commits a path update: a fresh leaf key and new path secrets
// (post-compromise security).
func (in *Installation) Update(ctx context.Context, groupID []byte) (*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return committed(in.commit(ctx, groupID, func(*mls.Group) (mls.CommitOptions, error) { return mls.CommitOptions{}, nil }))
}

// committed moves a commit's projection failure into its output.
func committed(out *CommitOutput, err error) (*CommitOutput, error) {
	if out != nil {
		out.ProjectionErr, err = lagged(err)
	}
	return out, err
}

// Send encrypts an application message for the group's current epoch and
// records it (application.message_sent). Before the first message after
// joining by Welcome, and when this member's last path update is older
// than UpdateInterval, it first commits a path update (returned in
// SendOutput.Update, to be delivered first). If the message then fails,
// the error comes with a SendOutput holding only that Update, which
// happened and must be delivered all the same.
func (in *Installation) Send(ctx context.Context, groupID, content, authenticatedData []byte) (*SendOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.loadGroup(ctx, groupID)
	if err != nil {
		return nil, err
	}
	var update *CommitOutput
	if gs.lastUpdate.IsZero() || in.opts.Now().Sub(gs.lastUpdate) > in.opts.UpdateInterval {
		if update, err = committed(in.commit(ctx, groupID, func(*mls.Group) (mls.CommitOptions, error) { return mls.CommitOptions{}, nil })); err != nil {
			return nil, err
		}
	}
	var out *SendOutput
	_, err = in.transact(ctx, groupID, func(gs *groupState) (*mls.Group, []events.Body, error) {
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
		return ng, []events.Body{events.ApplicationMessageSent{
			GroupID: groupID, Epoch: ng.Epoch(), SenderLeaf: uint32(ng.LeafIndex()), Sender: in.id,
			MessageID: id, Content: events.Secret(content), AuthenticatedData: authenticatedData,
		}}, nil
	})
	if err != nil && !errors.Is(err, errNotProjected) {
		if update != nil {
			// The update is recorded: it must still reach the members.
			return &SendOutput{GroupID: bytes.Clone(groupID), Update: update}, err
		}
		return nil, err
	}
	out.ProjectionErr, err = lagged(err)
	return out, err
}

// Members returns the installations currently in the group, this one
// included, as the read model knows them.
func (in *Installation) Members(ctx context.Context, groupID []byte) ([]events.InstallationID, error) {
	ms, err := in.db.Members(ctx, groupID)
	if err != nil {
		return nil, err
	}
	out := make([]events.InstallationID, len(ms))
	for i, m := range ms {
		out[i] = events.InstallationID(m.Identity)
	}
	return out, nil
}

// Epoch returns the group's current epoch.
func (in *Installation) Epoch(ctx context.Context, groupID []byte) (uint64, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.loadGroup(ctx, groupID)
	if err != nil {
		return 0, err
	}
	return gs.g.Epoch(), nil
}
