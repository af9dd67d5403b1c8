package projections

import (
	"database/sql"
	"fmt"

	"github.com/epochlog/epochlog/internal/bytedelta"
)

// From schema v5 a group's state is stored once (see migrateV5): whole
// for the epoch the group is at, and for each held past epoch as a delta
// from the state of the next epoch that has one. This file rebuilds the
// whole states from that chain.

// pastDelta is a row of epoch_states.
type pastDelta struct {
	epoch uint64
	delta []byte
}

// pastDeltasQuery reads a group's epoch_states rows, newest first, as
// pastStates takes them.
const pastDeltasQuery = `SELECT epoch, state_delta FROM epoch_states WHERE group_id = ? ORDER BY epoch DESC`

// scanPastDeltas reads and closes the rows of pastDeltasQuery.
func scanPastDeltas(rows *sql.Rows) ([]pastDelta, error) {
	defer rows.Close()
	var ds []pastDelta
	for rows.Next() {
		var d pastDelta
		if err := rows.Scan(&d.epoch, &d.delta); err != nil {
			return nil, err
		}
		ds = append(ds, d)
	}
	return ds, rows.Err()
}

// pastStates returns the state every held epoch of group id started
// with, by epoch: cur's is start, and each of ds (newest first) applies
// to the state of the epoch after it. A delta that does not apply is
// ErrCorrupt, naming the epoch.
func pastStates(id []byte, cur uint64, start []byte, ds []pastDelta) (map[uint64][]byte, error) {
	states := map[uint64][]byte{cur: start}
	next, nextEpoch := start, cur
	for _, d := range ds {
		if d.epoch >= nextEpoch {
			return nil, fmt.Errorf("%w: group %x: state of epoch %d stored after epoch %d's", ErrCorrupt, id, d.epoch, nextEpoch)
		}
		st, err := bytedelta.Apply(next, d.delta)
		if err != nil {
			return nil, fmt.Errorf("%w: group %x: state of epoch %d: %w", ErrCorrupt, id, d.epoch, err)
		}
		states[d.epoch] = st
		next, nextEpoch = st, d.epoch
	}
	return states, nil
}

// withProposal returns the group's current state: start, the state its
// epoch started with, or the state the latest cached proposal left,
// stored as a delta from it (nil: none).
func withProposal(id []byte, start, proposal []byte) ([]byte, error) {
	if proposal == nil {
		return start, nil
	}
	st, err := bytedelta.Apply(start, proposal)
	if err != nil {
		return nil, fmt.Errorf("%w: group %x: the state its latest proposal left: %w", ErrCorrupt, id, err)
	}
	return st, nil
}
