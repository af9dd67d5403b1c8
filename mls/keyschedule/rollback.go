package keyschedule

import (
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/epochlog/epochlog/mls/treemath"
)

// ErrRolledBack reports a secret tree that holds a secret another state of
// the same tree had already consumed: a key, a ratchet or a tree node
// secret is back. Such a tree would accept again a message the other state
// had received (or encrypt with a used key).
var ErrRolledBack = errors.New("mls/keyschedule: secret tree rolled back")

// CheckFollows reports whether st can be prev moved on by use alone:
// every ratchet of prev is in st at the same generation or a later one,
// no key prev had deleted is back among st's kept keys, and no tree
// secret prev had consumed is back (st's node secrets and new ratchets
// derive from node secrets prev still held). Both must be trees of the
// same epoch; their secrets themselves are not compared (a wrong one
// derives keys that open nothing). It fails with ErrRolledBack naming
// the first ratchet or node that is behind.
func (st *SecretTree) CheckFollows(prev *SecretTree) error {
	if st.leaves != prev.leaves || st.cs != prev.cs {
		return fmt.Errorf("%w: a tree of %d leaves (%s) after one of %d (%s)", ErrRolledBack, st.leaves, st.cs.ID(), prev.leaves, prev.cs.ID())
	}
	// In a fixed order, so that the error names the same ratchet each time.
	for _, id := range slices.SortedFunc(maps.Keys(prev.ratchets), compareRatchetIDs) {
		was := prev.ratchets[id]
		r, ok := st.ratchets[id]
		if !ok {
			if was.next == 0 && len(was.skipped) == 0 {
				continue // nothing used yet: derived again, it is the same
			}
			return fmt.Errorf("%w: the %s ratchet of leaf %d, at generation %d, is gone", ErrRolledBack, id.typ, id.leaf, was.next)
		}
		if r.next < was.next {
			return fmt.Errorf("%w: the %s ratchet of leaf %d is at generation %d, it was at %d", ErrRolledBack, id.typ, id.leaf, r.next, was.next)
		}
		for g := range r.skipped {
			if _, kept := was.skipped[g]; g < was.next && !kept {
				return fmt.Errorf("%w: the %s ratchet of leaf %d keeps the key of generation %d, which was taken or dropped", ErrRolledBack, id.typ, id.leaf, g)
			}
		}
	}
	for id := range st.ratchets {
		if _, ok := prev.ratchets[id]; !ok && !prev.derivable(id.leaf.Node()) {
			return fmt.Errorf("%w: the %s ratchet of leaf %d derives from a secret already consumed", ErrRolledBack, id.typ, id.leaf)
		}
	}
	for n := range st.nodes {
		if !prev.derivable(n) {
			return fmt.Errorf("%w: the secret of tree node %d, already consumed, is back", ErrRolledBack, n)
		}
	}
	return nil
}

// derivable reports whether the tree still holds node n's secret or an
// ancestor's, from which n's derives.
func (st *SecretTree) derivable(n treemath.NodeIndex) bool {
	if _, ok := st.nodes[n]; ok {
		return true
	}
	for _, a := range treemath.DirectPath(n, st.leaves) {
		if _, ok := st.nodes[a]; ok {
			return true
		}
	}
	return false
}

func compareRatchetIDs(a, b ratchetID) int {
	if a.leaf != b.leaf {
		if a.leaf < b.leaf {
			return -1
		}
		return 1
	}
	return int(a.typ) - int(b.typ)
}
