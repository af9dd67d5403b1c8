package mls

import (
	"bytes"
	"fmt"
	"iter"
	"slices"

	"github.com/epochlog/epochlog/mls/keyschedule"
)

// ErrRolledBack reports a group state that holds a key a state of the
// same group before it had already used or deleted: it would accept
// again a message that state had received.
var ErrRolledBack = keyschedule.ErrRolledBack

// CheckFollows reports whether g can follow prev, an earlier state of the
// same group (at g's epoch or an earlier one), without anything prev had
// consumed being back: for each epoch whose keys both hold (g's current
// one and the past ones it keeps for late messages), every ratchet is at
// the generation prev's was or later and no key or tree secret prev had
// consumed is back (keyschedule.SecretTree.CheckFollows); and g keeps the
// keys of no epoch up to prev's that prev had let go. A state recorded
// as a group stood (a member's saved state, replayed from a log) is so
// checked against the state before it plus the messages received since
// (MarkReceived), which an honest record can only be ahead of. It fails
// with ErrRolledBack naming the epoch and the ratchet.
func (g *Group) CheckFollows(prev *Group) error {
	if !bytes.Equal(g.ctx.GroupID, prev.ctx.GroupID) {
		return fmt.Errorf("group %x after group %x: not the same group", g.ctx.GroupID, prev.ctx.GroupID)
	}
	if g.ctx.Epoch < prev.ctx.Epoch {
		return fmt.Errorf("%w: group %x at epoch %d after epoch %d", ErrRolledBack, g.ctx.GroupID, g.ctx.Epoch, prev.ctx.Epoch)
	}
	for epoch, keys := range g.heldKeys() {
		was, held := prev.keysOf(epoch)
		switch {
		case !held && epoch > prev.ctx.Epoch:
			continue // an epoch after prev's: nothing to compare
		case !held:
			return fmt.Errorf("%w: group %x keeps the keys of epoch %d, which the state before it (epoch %d) had let go", ErrRolledBack, g.ctx.GroupID, epoch, prev.ctx.Epoch)
		case was == nil || keys == nil:
			// An inactive state's epoch holds no keys: there is nothing
			// to be behind, and nothing that can accept a message.
			continue
		}
		if err := keys.st.CheckFollows(was.st); err != nil {
			return fmt.Errorf("group %x epoch %d: %w", g.ctx.GroupID, epoch, err)
		}
	}
	return nil
}

// heldKeys yields the keys of each epoch g holds: the current one's, then
// each retained past epoch's.
func (g *Group) heldKeys() iter.Seq2[uint64, *epochKeys] {
	return func(yield func(uint64, *epochKeys) bool) {
		if !yield(g.ctx.Epoch, g.epochKeys) {
			return
		}
		for _, p := range g.past {
			if !yield(p.ctx.Epoch, p.keys) {
				return
			}
		}
	}
}

// keysOf returns the keys g holds of epoch, and whether it holds that
// epoch at all.
func (g *Group) keysOf(epoch uint64) (*epochKeys, bool) {
	if epoch == g.ctx.Epoch {
		return g.epochKeys, true
	}
	if i := slices.IndexFunc(g.past, func(p pastEpoch) bool { return p.ctx.Epoch == epoch }); i >= 0 {
		return g.past[i].keys, true
	}
	return nil, false
}

// HoldsEpoch reports whether g holds the keys of epoch: its current one,
// or a past one it keeps for late messages.
func (g *Group) HoldsEpoch(epoch uint64) bool {
	_, held := g.keysOf(epoch)
	return held
}
