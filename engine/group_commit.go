package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/membership"
	"github.com/epochlog/epochlog/mls"
)

// commitEvent records a transition from old to ng by the commit message
// of committer: group.commit_applied (with the re-derivable authenticator,
// the new state, who committed and the epochs that fall out of the
// maximum_past_epochs window and, for an own commit, what its output
// needs besides, its Welcome, so that the output survives a crash:
// OwnCommits), one event. The new state is recorded as a delta from
// base, the state the epoch before started with (groupState.epochStart),
// when base is known; whole otherwise.
func (in *Installation) commitEvent(ctx context.Context, old, ng *mls.Group, base, commit, welcome []byte, committer events.Committer) (events.CommitApplied, error) {
	st, err := ng.MarshalBinary()
	if err != nil {
		return events.CommitApplied{}, fmt.Errorf("engine: encode group state: %w", err)
	}
	added, removed := membership.Diff(old, ng)
	if err := in.checkMembers(ctx, old, ng, added); err != nil {
		return events.CommitApplied{}, err
	}
	gc := ng.GroupContext()
	retire, err := in.epochsToRetire(ctx, ng.GroupID(), ng.Epoch())
	if err != nil {
		return events.CommitApplied{}, err
	}
	var own *events.OwnOutput
	if committer.Own {
		own = &events.OwnOutput{Welcome: welcome}
	}
	// One event: the epochs leaving the window go with the commit
	// (RetiredEpochs), so the transition is a single publish, not an
	// atomic batch.
	return events.CommitApplied{
		GroupID: ng.GroupID(), Epoch: ng.Epoch(),
		EpochAuthenticator:      ng.EpochAuthenticator(),
		ConfirmedTranscriptHash: gc.ConfirmedTranscriptHash,
		Commit:                  commit,
		Added:                   added, Removed: removed, Committer: &committer,
		RetiredEpochs: retire, OwnOutput: own,
	}.WithStateFrom(base, st), nil
}

// epochsToRetire lists the group's epochs whose secrets the read model
// still holds and that are older than maximum_past_epochs once the group
// is at epoch cur. It takes them from the group's cached state (the one
// a transition is being decided on), and reads them from the read model
// when that does not know them (once: the cache keeps them).
func (in *Installation) epochsToRetire(ctx context.Context, id []byte, cur uint64) ([]uint64, error) {
	keep := uint64(in.opts.MaxPastEpochs)
	if cur <= keep {
		return nil, nil
	}
	gs, ok := in.group[string(id)]
	if !ok {
		gs = &groupState{id: id}
	}
	if !gs.heldKnown {
		held, err := in.db.HeldEpochs(ctx, id)
		if err != nil {
			return nil, fmt.Errorf("engine: group %x epochs: %w", id, err)
		}
		gs.held, gs.heldKnown = held, true
	}
	var out []uint64
	for _, e := range gs.held {
		if e < cur-keep {
			out = append(out, e)
		}
	}
	return out, nil
}

// commit runs an own commit with a fresh path (every own commit refreshes
// this member's leaf key) and records it. The commit carries, by
// reference, the proposals cached in the epoch that fit together (RFC
// 9420 §12.2), and is sent in the group's handshake wire format.
func (in *Installation) commit(ctx context.Context, id []byte, opts func(g *mls.Group) (mls.CommitOptions, error)) (*CommitOutput, error) {
	var out *CommitOutput
	_, err := in.transact(ctx, id, func(gs *groupState) (*mls.Group, events.Body, error) {
		co, err := opts(gs.g)
		if err != nil {
			return nil, nil, err
		}
		co.ForcePath = true
		g, err := in.handshaking(ctx, gs.g)
		if err != nil {
			return nil, nil, err
		}
		g, strip, err := in.lendPSKs(ctx, g)
		if err != nil {
			return nil, nil, err
		}
		ng, res, err := g.Commit(co)
		if err != nil {
			return nil, nil, fmt.Errorf("engine: installation %s: commit in group %x epoch %d: %w", in.id, id, gs.g.Epoch(), err)
		}
		ng = strip(ng)
		wire, err := res.Commit.Marshal()
		if err != nil {
			return nil, nil, err
		}
		var welcome []byte
		if res.Welcome != nil {
			if welcome, err = res.Welcome.Marshal(); err != nil {
				return nil, nil, err
			}
		}
		self := gs.g.LeafIndex()
		body, err := in.commitEvent(ctx, gs.g, ng, gs.epochStart.Bytes(), wire, welcome, events.Committer{Leaf: uint32(self), Identity: []byte(in.id), Own: true})
		if err != nil {
			return nil, nil, err
		}
		out = &CommitOutput{GroupID: bytes.Clone(id), Epoch: ng.Epoch(), Commit: wire, Recipients: otherMembers(gs.g), Welcome: welcome}
		if welcome != nil {
			// Added inline or by reference: the Welcome is for every
			// member the commit added.
			added, _ := membership.Diff(gs.g, ng)
			for _, m := range added {
				out.Added = append(out.Added, events.InstallationID(m.Identity))
			}
		}
		return ng, body, nil
	})
	if err != nil && !errors.Is(err, errNotProjected) {
		return nil, outcomeUnknown(err, func(u *OutcomeUnknownError) { u.Commit = out })
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
				return mls.CommitOptions{}, fmt.Errorf("engine: remove %s from group %x: no leaf of the group holds it: %w", inst, groupID, mls.ErrNotMember)
			}
		}
		return mls.CommitOptions{Remove: leaves}, nil
	}))
}

// Update commits a path update: a fresh leaf key and new path secrets
// (post-compromise security). Like every own commit it also carries the
// proposals cached in the epoch (see CommitProposals).
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
