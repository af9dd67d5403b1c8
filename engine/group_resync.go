package engine

// Forks and lost state: detecting that this installation's state of a
// group is not the group's, and what to do about it (Resync, in
// group_external.go).

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/mls"
)

// ForkError is a detected fork: at Epoch this installation's state of the
// group has epoch authenticator Ours, the group's (a peer's, the delivery
// service's, or the one a commit of the group derives) is Theirs. Theirs
// is nil when the commit that shows the fork could not be processed on
// this installation's state of the epoch before (its proposals are gone).
// It unwraps to ErrForked; Resync with reason "forked" rejoins the group.
type ForkError struct {
	Installation string
	GroupID      []byte
	Epoch        uint64
	Ours, Theirs []byte
	// Evidence says how it was found: "reported" (an authenticator given
	// to CheckEpochAuthenticator) or "commit" (another commit of an epoch
	// this installation left by its own).
	Evidence string
}

// Error names the group, the epoch and a fingerprint of each
// authenticator (their first bytes; the values are in the fields).
func (e *ForkError) Error() string {
	fp := func(b []byte) string {
		if b == nil {
			return "unknown"
		}
		return hex.EncodeToString(b[:min(len(b), 6)])
	}
	return fmt.Sprintf("engine: installation %s: group %x forked at epoch %d (%s): epoch authenticator %s here, %s in the group: %v",
		e.Installation, e.GroupID, e.Epoch, e.Evidence, fp(e.Ours), fp(e.Theirs), ErrForked)
}

// Unwrap returns ErrForked.
func (e *ForkError) Unwrap() error { return ErrForked }

// CheckEpochAuthenticator compares the group's epoch authenticator at
// epoch, as a peer or the delivery service reports it, with this
// installation's (once its read model has caught up): nil when they
// agree, a *ForkError (errors.Is ErrForked) when they differ. An epoch
// this installation has not reached is an error wrapping
// mls.ErrWrongEpoch (commits are missing: deliver them, or Resync with
// reason "lost" if they are gone); one before its current membership, or
// whose authenticator it does not hold, an error wrapping ErrUnknownGroup.
func (in *Installation) CheckEpochAuthenticator(ctx context.Context, groupID []byte, epoch uint64, authenticator []byte) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.currentGroup(ctx, groupID)
	if err != nil {
		return err
	}
	cur := gs.g.Epoch()
	var ours []byte
	switch {
	case epoch > cur:
		return fmt.Errorf("engine: installation %s: group %x: epoch %d reported, this installation is at epoch %d: %w "+
			"(commits are missing: deliver them, or resync if they are lost)", in.id, groupID, epoch, cur, mls.ErrWrongEpoch)
	case epoch == cur:
		ours = gs.g.EpochAuthenticator()
	default:
		eps, err := in.db.Epochs(ctx, groupID)
		if err != nil {
			return fmt.Errorf("engine: installation %s: group %x epochs: %w", in.id, groupID, err)
		}
		for _, e := range eps {
			if e.Epoch == epoch {
				ours = e.EpochAuthenticator
			}
		}
		if ours == nil {
			return fmt.Errorf("engine: installation %s: group %x: no epoch authenticator of epoch %d in this membership: %w", in.id, groupID, epoch, ErrUnknownGroup)
		}
	}
	if !bytes.Equal(ours, authenticator) {
		return &ForkError{Installation: string(in.id), GroupID: bytes.Clone(groupID), Epoch: epoch, Ours: bytes.Clone(ours),
			Theirs: bytes.Clone(authenticator), Evidence: "reported"}
	}
	return nil
}

// forkedBy explains a commit of epoch ep, which this installation left
// by another commit (its own, mostly, which the group did not take): it
// processes the commit on the recorded state of epoch ep, and returns the
// *ForkError with both authenticators of epoch ep+1 (Theirs nil when the
// commit cannot be processed on that state: it references proposals the
// read model no longer keeps, or the epoch's state was retired). It
// returns nil when the commit does not authenticate in that epoch (not a
// commit of the group's epoch ep at all), or derives the same epoch.
func (in *Installation) forkedBy(ctx context.Context, groupID []byte, ep uint64, m *mls.MLSMessage) (*ForkError, error) {
	eps, err := in.db.Epochs(ctx, groupID)
	if err != nil {
		return nil, fmt.Errorf("engine: installation %s: group %x epochs: %w", in.id, groupID, err)
	}
	var before, ours []byte
	for _, e := range eps {
		switch e.Epoch {
		case ep:
			before = e.State
		case ep + 1:
			ours = e.EpochAuthenticator
		}
	}
	if ours == nil {
		return nil, nil // not an epoch of this membership
	}
	fe := &ForkError{Installation: string(in.id), GroupID: bytes.Clone(groupID), Epoch: ep + 1, Ours: bytes.Clone(ours), Evidence: "commit"}
	if before == nil {
		return fe, nil
	}
	g, err := mls.UnmarshalState(before)
	if err != nil {
		return fe, nil
	}
	process := g.ProcessCommit
	if mls.IsExternalCommit(m) {
		process = g.ProcessExternalCommit
	}
	ng, _, err := process(m)
	if errors.Is(err, mls.ErrInvalidProposal) {
		return fe, nil // references proposals not kept: cannot tell theirs
	}
	if err != nil {
		return nil, nil
	}
	if bytes.Equal(ng.EpochAuthenticator(), ours) {
		return nil, nil // the same epoch after all: not a fork
	}
	fe.Theirs = ng.EpochAuthenticator()
	return fe, nil
}
