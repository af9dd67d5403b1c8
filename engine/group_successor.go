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

// Successor groups (RFC 9420 §11.2, §11.3): a subgroup branched from a
// group, or the group that replaces one a ReInit closed. Either is a new
// group whose first commit injects a resumption PSK of the old group, so
// that joining it proves membership of the old one. The new group is
// recorded on its own aggregate in one event (group.created carrying its
// first commit); the old group is not touched. Joiners need nothing new: a
// Welcome that names a predecessor is joined with the predecessor's state
// from the read model (ProcessWelcome), and VerifyMLS re-derives it.

// Branch starts a subgroup of the group (newGroupID nil: a random id)
// with the installations whose key packages are given, each of which
// must be a member of the group: its first commit carries a resumption
// PSK (usage branch) of the group's current epoch. The output's Welcome
// goes to Added; Commit is for no one (Recipients is empty: nobody else
// was in the new group's epoch 0). The old group is unchanged.
func (in *Installation) Branch(ctx context.Context, groupID, newGroupID []byte, keyPackages ...[]byte) (*CommitOutput, error) {
	return in.startSuccessor(ctx, groupID, "branch", keyPackages, func(g *mls.Group, kp *mls.KeyPackage, sec *mls.KeyPackageSecrets, members []*mls.KeyPackage) (*mls.Group, mls.CommitOptions, error) {
		return g.PrepareBranch(newGroupID, kp, sec, members)
	})
}

// ProposeReInit proposes reinitialising the group with ri (its group id,
// version, suite and extensions), for a commit of this epoch to carry
// alone.
func (in *Installation) ProposeReInit(ctx context.Context, groupID []byte, ri mls.ReInit) (*ProposalOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.propose(ctx, groupID, "reinit", func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) { return g.ProposeReInit(ri) })
}

// CommitReInit commits a ReInit of the group (alone: the commit carries
// no cached proposal). Like a received commit that carries one (also by
// reference, see CommitProposals), it closes the group: every operation
// on it but reading late application messages then fails with
// mls.ErrReInitialized, and a member starts the successor with
// Reinitialize.
func (in *Installation) CommitReInit(ctx context.Context, groupID []byte, ri mls.ReInit) (*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return committed(in.commit(ctx, groupID, func(*mls.Group) (mls.CommitOptions, error) {
		r := ri
		return mls.CommitOptions{ReInit: &r}, nil
	}))
}

// ReInitOf returns the ReInit the group's last commit carried (nil if
// none): the parameters of its successor.
func (in *Installation) ReInitOf(ctx context.Context, groupID []byte) (*mls.ReInit, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.currentGroup(ctx, groupID)
	if err != nil {
		return nil, err
	}
	return gs.g.ReInit(), nil
}

// Reinitialize starts the group that succeeds one a ReInit closed: the
// ReInit's group id and extensions, every other member added from the
// key packages given (one per member), and a resumption PSK (usage
// reinit) of the closing epoch in its first commit. The engine keeps
// one ciphersuite per installation, so the ReInit must name this
// installation's suite (the mls package reinitialises across suites).
func (in *Installation) Reinitialize(ctx context.Context, groupID []byte, keyPackages ...[]byte) (*CommitOutput, error) {
	return in.startSuccessor(ctx, groupID, "reinitialise", keyPackages, func(g *mls.Group, kp *mls.KeyPackage, sec *mls.KeyPackageSecrets, members []*mls.KeyPackage) (*mls.Group, mls.CommitOptions, error) {
		if ri := g.ReInit(); ri != nil && ri.CipherSuite != in.cs.ID() {
			return nil, mls.CommitOptions{}, fmt.Errorf("%w: the ReInit asks for suite %d; this installation's is %d", ErrUnsupportedMessage, ri.CipherSuite, in.cs.ID())
		}
		return g.PrepareReinitialize(kp, sec, members)
	})
}

// startSuccessor records a successor of the group: prepare gives its
// first state (epoch 0, holding the predecessor's PSK) and the options of
// its first commit, from a fresh key package of this installation.
func (in *Installation) startSuccessor(ctx context.Context, groupID []byte, what string, keyPackages [][]byte,
	prepare func(g *mls.Group, kp *mls.KeyPackage, sec *mls.KeyPackageSecrets, members []*mls.KeyPackage) (*mls.Group, mls.CommitOptions, error)) (*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	fail := func(err error) (*CommitOutput, error) {
		return nil, fmt.Errorf("engine: installation %s: %s group %x: %w", in.id, what, groupID, err)
	}
	members := make([]*mls.KeyPackage, len(keyPackages))
	for i, raw := range keyPackages {
		members[i] = new(mls.KeyPackage)
		if err := members[i].Unmarshal(raw); err != nil {
			return fail(fmt.Errorf("key package %d: %w", i, err))
		}
	}
	gs, err := in.currentGroup(ctx, groupID)
	if err != nil {
		return fail(err)
	}
	kp, secrets, err := mls.NewKeyPackage(in.cs.ID(), in.cred, in.sig, in.capabilities())
	if err != nil {
		return fail(err)
	}
	first, co, err := prepare(gs.g, kp, secrets, members)
	if err != nil {
		return fail(err)
	}
	co.ForcePath = true
	st, err := first.MarshalBinary() // the lent PSK is never saved
	if err != nil {
		return fail(err)
	}
	ng, res, err := first.Commit(co)
	if err != nil {
		return fail(err)
	}
	wire, err := res.Commit.Marshal()
	if err != nil {
		return fail(err)
	}
	gid := ng.GroupID()
	var welcome []byte
	if res.Welcome != nil {
		if welcome, err = res.Welcome.Marshal(); err != nil {
			return fail(err)
		}
	}
	fc, err := in.commitEvent(ctx, first, ng, st, wire, welcome, events.Committer{Leaf: uint32(first.LeafIndex()), Identity: []byte(in.id), Own: true})
	if err != nil {
		return fail(err)
	}
	// One event, the creation carrying the first commit: no atomic batch,
	// which a server could store in part (a group created whose first
	// commit and Welcome never existed).
	created := events.GroupCreated{GroupID: gid, Ciphersuite: uint16(in.cs.ID()), Epoch: first.Epoch(), State: events.NewSecret(st),
		Members: []events.Member{{Leaf: uint32(first.LeafIndex()), Identity: []byte(in.id)}}, FirstCommit: &fc}
	// Commit is for no one (the successor had only this member before
	// it), but it is the epoch's commit, as OwnCommits hands it back.
	out := &CommitOutput{GroupID: bytes.Clone(gid), Epoch: ng.Epoch(), Commit: wire, Welcome: welcome}
	if welcome != nil {
		added, _ := membership.Diff(first, ng)
		for _, m := range added {
			out.Added = append(out.Added, events.InstallationID(m.Identity))
		}
	}
	err = in.appendAndProject(ctx, in.groupAgg(gid), 0, created)
	if errors.Is(err, eventlog.ErrConflict) {
		return fail(in.successorTaken(ctx, gid, err))
	}
	if err != nil && !errors.Is(err, errNotProjected) {
		// Undecided, the Welcome comes in the error: recorded, the
		// members added must get it (Decide).
		return nil, outcomeUnknown(fmt.Errorf("engine: installation %s: %s group %x: record group %x: %w", in.id, what, groupID, gid, err),
			func(u *OutcomeUnknownError) { u.Commit = out })
	}
	in.group[string(gid)] = &groupState{id: gid, pos: 1, g: ng, lastUpdate: in.opts.Now().UTC(), epochStart: epochStartAfter(events.Secret{}, created)}
	in.wireFormat[string(gid)] = WireFormatDefault
	out.ProjectionErr, err = lagged(err)
	return out, err
}

// successorTaken explains err, a successor's start refused because the
// aggregate of its group (gid) holds events already: a group created at
// epoch 0 and nothing after is ErrSuccessorStranded; anything else is
// err as it is.
func (in *Installation) successorTaken(ctx context.Context, gid []byte, err error) error {
	if in.project(ctx) != nil {
		return err
	}
	pos, perr := in.position(ctx, events.AggGroup, groupKey(gid))
	if perr != nil || pos != 1 {
		return err
	}
	row, _, perr := in.db.Group(ctx, gid)
	if perr != nil || row.Epoch != 0 {
		return err
	}
	// err (not wrapped: no retry gets past it) names the stream sequence.
	return fmt.Errorf("successor group %x: %w: its aggregate holds one event, the group created at epoch 0 "+
		"(the first half of a start recorded as an atomic batch the server stored in part, or a group created under this id); "+
		"its first commit and Welcome were never recorded (%v)", gid, ErrSuccessorStranded, err)
}

// predecessorFinder lends ProcessWelcome the groups this installation
// holds, for a Welcome that names one as its predecessor.
func (in *Installation) predecessorFinder(ctx context.Context) func(groupID []byte) *mls.Group {
	return func(groupID []byte) *mls.Group {
		gs, err := in.loadGroup(ctx, groupID)
		if err != nil {
			return nil
		}
		return gs.g
	}
}
