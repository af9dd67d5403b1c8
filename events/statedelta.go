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
	c.State, c.StateDelta, c.StateSHA256, c.known = nil, nil, nil, nil
	if base != nil {
		if d := bytedelta.Diff(base, state); len(d)*deltaWorthIt <= len(state) {
			sum := sha256.Sum256(state)
			c.StateDelta, c.StateSHA256 = Secret(d), sum[:]
			k := knownState{state: Secret(state), delta: Secret(d), sum: sum, baseSum: sha256.Sum256(base)}
			c.known = func() knownState { return k }
			return c
		}
	}
	c.State = Secret(state)
	return c
}

// KnownState returns the state at c.Epoch when it is at hand without a
// base: recorded whole, or given to WithStateFrom in this process.
func (c CommitApplied) KnownState() (Secret, bool) {
	switch {
	case c.StateDelta == nil:
		return c.State, true
	case c.known != nil:
		return c.known().state, true
	}
	return nil, false
}

// KnownDelta returns, for a value WithStateFrom made with a delta (in
// this process) and not changed since, the state at c.Epoch and the
// SHA-256 of the base the delta was made from: a reader holding a base
// of that digest may take the state as it is, instead of applying the
// delta (StateOf).
func (c CommitApplied) KnownDelta() (state Secret, baseSum [32]byte, ok bool) {
	if c.StateDelta == nil || c.known == nil {
		return nil, baseSum, false
	}
	k := c.known()
	if !bytes.Equal(c.StateDelta, k.delta) || !bytes.Equal(c.StateSHA256, k.sum[:]) || c.State != nil {
		return nil, baseSum, false // changed since it was made
	}
	return k.state, k.baseSum, true
}

// StateOf returns the state at c.Epoch: State, or StateDelta applied to
// base, the state the epoch before started with, and checked against
// StateSHA256. An error wraps ErrStateBase when the delta does
// not rebuild the recorded state from base (another base, or a
// malformed delta), ErrMalformed for a v4 body recording the state both
// ways or neither.
func (c CommitApplied) StateOf(base []byte) (Secret, error) {
	switch {
	case c.StateDelta == nil && c.StateSHA256 != nil:
		return nil, fmt.Errorf("%w: group.commit_applied of group %x epoch %d has a state digest without a delta", ErrMalformed, c.GroupID, c.Epoch)
	case c.StateDelta == nil:
		return c.State, nil
	case c.State != nil:
		return nil, fmt.Errorf("%w: group.commit_applied of group %x epoch %d records its state both whole and as a delta", ErrMalformed, c.GroupID, c.Epoch)
	case len(c.StateSHA256) != sha256.Size:
		return nil, fmt.Errorf("%w: group.commit_applied of group %x epoch %d: state digest of %d bytes", ErrMalformed, c.GroupID, c.Epoch, len(c.StateSHA256))
	case base == nil:
		return nil, fmt.Errorf("%w: group %x epoch %d: the commit records its state as a delta, and no earlier state of the group is known", ErrStateBase, c.GroupID, c.Epoch)
	}
	st, err := bytedelta.Apply(base, c.StateDelta)
	if err != nil {
		return nil, fmt.Errorf("%w: group %x epoch %d: %w", ErrStateBase, c.GroupID, c.Epoch, err)
	}
	if sum := sha256.Sum256(st); subtle.ConstantTimeCompare(sum[:], c.StateSHA256) != 1 {
		clear(st)
		return nil, fmt.Errorf("%w: group %x epoch %d: the delta applied to the %d-byte state held gives a state with another digest than the one recorded", ErrStateBase, c.GroupID, c.Epoch, len(base))
	}
	return Secret(st), nil
}
