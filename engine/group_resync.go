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

// competingCommit explains a commit of epoch ep that is not the one
// this installation applied to leave ep. It processes the commit on the
// recorded state of epoch ep, which authenticates it, and returns:
//   - a *ForkError with both authenticators of epoch ep+1 when this
//     installation left ep by a commit of its own: the group went one
//     way, this installation the other;
//   - an error wrapping ErrStaleCommit when another member's commit took
//     it out of ep: this one came second in the delivery order (its
//     committer, not this installation, is the one forked);
//   - an error wrapping ErrEpochRetired when the state of epoch ep is
//     retired, or was never held (joined later): the commit cannot be
//     authenticated, so it proves nothing, not a fork;
//   - nil when ep is not an epoch of this membership, the commit does
//     not authenticate in epoch ep (not a commit of the group's epoch at
//     all: processing it goes on and says why), or it derives the same
//     epoch.
//
// Only the first is a *ForkError: were an unauthenticated commit one, any
// bytes naming a retired epoch could raise it.
func (in *Installation) competingCommit(ctx context.Context, groupID []byte, ep uint64, m *mls.MLSMessage) error {
	eps, err := in.db.Epochs(ctx, groupID)
	if err != nil {
		return fmt.Errorf("engine: installation %s: group %x epochs: %w", in.id, groupID, err)
	}
	var before, ours []byte
	held := false
	for _, e := range eps {
		switch e.Epoch {
		case ep:
			before, held = e.State.Bytes(), true
		case ep + 1:
			ours = e.EpochAuthenticator
		}
	}
	if ours == nil {
		return nil // not an epoch of this membership
	}
	if before == nil {
		why := "its state is retired"
		if !held {
			why = "this installation joined the group after it"
		}
		return fmt.Errorf("engine: installation %s: group %x: a commit of epoch %d, not the one this installation applied; %s, so the commit cannot be authenticated: %w",
			in.id, groupID, ep, why, ErrEpochRetired)
	}
	g, err := mls.UnmarshalState(before)
	if err != nil {
		return fmt.Errorf("engine: installation %s: group %x: the recorded state of epoch %d does not decode: %w", in.id, groupID, ep, err)
	}
	external := mls.IsExternalCommit(m)
	process := g.ProcessCommit
	if external {
		process = g.ProcessExternalCommit
	}
	ng, rec, err := process(m)
	var theirs []byte
	switch {
	case err == nil:
		if bytes.Equal(ng.EpochAuthenticator(), ours) {
			return nil // the same epoch after all
		}
		theirs = ng.EpochAuthenticator()
	case errors.Is(err, mls.ErrInvalidProposal) && !external:
		// A member's commit is authenticated (signature, membership tag
		// or decryption) before its proposals are resolved: this one is
		// the group's, and references proposals this installation did not
		// keep, so its epoch cannot be derived here.
	default:
		return nil
	}
	own, known, err := in.db.EpochCommitter(ctx, groupID, ep+1)
	if err != nil {
		return fmt.Errorf("engine: installation %s: group %x epoch %d: %w", in.id, groupID, ep+1, err)
	}
	if known && !own {
		from := "a member"
		if rec != nil {
			from = fmt.Sprintf("leaf %d", rec.Sender)
		}
		return fmt.Errorf("engine: installation %s: group %x: a commit of epoch %d by %s, not the one this installation applied (another member's): it came second: %w",
			in.id, groupID, ep, from, ErrStaleCommit)
	}
	return &ForkError{Installation: string(in.id), GroupID: bytes.Clone(groupID), Epoch: ep + 1, Ours: bytes.Clone(ours),
		Theirs: theirs, Evidence: "commit"}
}
