package events

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"fmt"

	"github.com/epochlog/epochlog/internal/bytedelta"
)

// A commit's state as a delta (group.commit_applied v4): a group's state
// is mostly its ratchet tree, which a commit changes along one path, so
// the writer records the new state as the few runs that differ from the
// state the epoch started with, and a reader rebuilds it from the state
// it holds. The SHA-256 of the whole state goes with the delta: a delta
// applied to another base than the writer's is refused (ErrStateBase),
// never taken for the state.

// deltaWorthIt is the largest delta, as a share of the state, recorded
// instead of the whole state: below it the delta saves more than the
// bytes it costs a reader to look the base up.
const deltaWorthIt = 2 // the delta is at most 1/2 of the state

// WithStateFrom returns c with state, the serialized group state at
// c.Epoch, recorded: as a delta from base (the state the epoch before
// started with: see CommitApplied.StateDelta) when base is given and the
// delta is at most half the state, else whole. The returned value
// also keeps state in memory (KnownState); only what is recorded is
// sealed.
func (c CommitApplied) WithStateFrom(base, state []byte) CommitApplied {
	c.State, c.StateDelta, c.StateSHA256, c.known = recordState(base, state)
	return c
}

// recordState returns state recorded whole, or as a delta from base with
// its digest and what a writer keeps of it in memory (WithStateFrom).
func recordState(base, state []byte) (whole, delta Secret, sum []byte, known func() knownState) {
	if base != nil {
		if d := bytedelta.Diff(base, state); len(d)*deltaWorthIt <= len(state) {
			s := sha256.Sum256(state)
			k := knownState{state: NewSecret(state), base: NewSecret(base), delta: NewSecret(d), sum: s, baseSum: sha256.Sum256(base)}
			return Secret{}, k.delta, s[:], func() knownState { return k }
		}
	}
	return NewSecret(state), Secret{}, nil, nil
}

// WithStateFrom returns p with state, the serialized group state with
// the proposal cached, recorded as CommitApplied.WithStateFrom records
// a commit's: as a delta from base (the state the epoch started with)
// when given and small enough, else whole.
func (p ProposalStaged) WithStateFrom(base, state []byte) ProposalStaged {
	p.State, p.StateDelta, p.StateSHA256, _ = recordState(base, state)
	return p
}

// StateOf returns the state p recorded (nil for a proposal recorded
// without one, before version 2): State, or StateDelta applied to base,
// the state the epoch started with, and checked as CommitApplied.StateOf
// checks a commit's.
func (p ProposalStaged) StateOf(base []byte) (Secret, error) {
	return stateOf("group.proposal_staged", p.GroupID, p.Epoch, p.State, p.StateDelta, p.StateSHA256, base)
}

// WithStateFrom returns r with state recorded as
// ProposalStaged.WithStateFrom records a proposal's: as a delta from base
// (the state the epoch started with) when given and small enough, else
// whole.
func (r StateRecorded) WithStateFrom(base, state []byte) StateRecorded {
	r.State, r.StateDelta, r.StateSHA256, _ = recordState(base, state)
	return r
}

// StateOf returns the state r recorded: State, or StateDelta applied to
// base, the state the epoch started with, checked as
// ProposalStaged.StateOf checks a proposal's.
func (r StateRecorded) StateOf(base []byte) (Secret, error) {
	return stateOf("group.state_recorded", r.GroupID, r.Epoch, r.State, r.StateDelta, r.StateSHA256, base)
}

// KnownState returns the state at c.Epoch when it is at hand without a
// base: recorded whole, or given to WithStateFrom in this process.
func (c CommitApplied) KnownState() (Secret, bool) {
	switch {
	case c.StateDelta.IsZero():
		return c.State, true
	case c.known != nil:
		return c.known().state, true
	}
	return Secret{}, false
}

// KnownDelta returns, for a value WithStateFrom made with a delta (in
// this process) and not changed since, the state at c.Epoch, the base
// the delta was made from and that base's SHA-256: a reader holding a
// base of that digest may take the state (and the base) as they are,
// instead of applying the delta (StateOf).
func (c CommitApplied) KnownDelta() (state, base Secret, baseSum [32]byte, ok bool) {
	if c.StateDelta.IsZero() || c.known == nil {
		return Secret{}, Secret{}, baseSum, false
	}
	k := c.known()
	if !bytes.Equal(c.StateDelta.Bytes(), k.delta.Bytes()) || !bytes.Equal(c.StateSHA256, k.sum[:]) || !c.State.IsZero() {
		return Secret{}, Secret{}, baseSum, false // changed since it was made
	}
	return k.state, k.base, k.baseSum, true
}

// StateOf returns the state at c.Epoch: State, or StateDelta applied to
// base, the state the epoch before started with, and checked against
// StateSHA256. An error wraps ErrStateBase when the delta does
// not rebuild the recorded state from base (another base, or a
// malformed delta), ErrMalformed for a v4 body recording the state both
// ways or neither.
func (c CommitApplied) StateOf(base []byte) (Secret, error) {
	return stateOf("group.commit_applied", c.GroupID, c.Epoch, c.State, c.StateDelta, c.StateSHA256, base)
}

// stateOf is StateOf of a body of kind recording a state of group gid at
// epoch whole, or as delta with digest sum.
func stateOf(kind string, gid []byte, epoch uint64, whole, delta Secret, sum, base []byte) (Secret, error) {
	switch {
	case delta.IsZero() && sum != nil:
		return Secret{}, fmt.Errorf("%w: %s of group %x epoch %d has a state digest without a delta", ErrMalformed, kind, gid, epoch)
	case delta.IsZero():
		return whole, nil
	case !whole.IsZero():
		return Secret{}, fmt.Errorf("%w: %s of group %x epoch %d records its state both whole and as a delta", ErrMalformed, kind, gid, epoch)
	case len(sum) != sha256.Size:
		return Secret{}, fmt.Errorf("%w: %s of group %x epoch %d: state digest of %d bytes", ErrMalformed, kind, gid, epoch, len(sum))
	case base == nil:
		return Secret{}, fmt.Errorf("%w: %s of group %x epoch %d records its state as a delta, and no earlier state of the group is known", ErrStateBase, kind, gid, epoch)
	}
	st, err := bytedelta.Apply(base, delta.Bytes())
	if err != nil {
		return Secret{}, fmt.Errorf("%w: %s of group %x epoch %d: %w", ErrStateBase, kind, gid, epoch, err)
	}
	if s := sha256.Sum256(st); subtle.ConstantTimeCompare(s[:], sum) != 1 {
		clear(st)
		return Secret{}, fmt.Errorf("%w: %s of group %x epoch %d: the delta applied to the %d-byte state held gives a state with another digest than the one recorded", ErrStateBase, kind, gid, epoch, len(base))
	}
	return NewSecret(st), nil
}
