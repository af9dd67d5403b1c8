package projections

import (
	"context"
	"database/sql"
	"fmt"
	"sort"

	"github.com/epochlog/epochlog/events"
)

// Head is how far a read model got in its installation's history: whose
// history it is, the stream sequence of the last applied event (the
// checkpoint) and each aggregate's last applied position. Positions are
// contiguous per aggregate, so a Head says exactly which events a read
// model holds; replay compares the Head of a rebuilt database with the
// live one's so that it never swaps in less.
type Head struct {
	// Installation is "" until installation.created is applied.
	Installation events.InstallationID
	Checkpoint   uint64
	Positions    map[events.Aggregate]uint64
}

// Shortfall is an aggregate one Head holds fewer events of than another:
// positions Have+1 to Want are missing.
type Shortfall struct {
	Aggregate  events.Aggregate
	Have, Want uint64
}

// String names the aggregate and the missing positions.
func (s Shortfall) String() string {
	if s.Have+1 == s.Want {
		return fmt.Sprintf("%s %q position %d", s.Aggregate.Type, s.Aggregate.ID, s.Want)
	}
	return fmt.Sprintf("%s %q positions %d-%d", s.Aggregate.Type, s.Aggregate.ID, s.Have+1, s.Want)
}

// Lacks lists the aggregates of other that h holds fewer events of, in a
// stable order (by type, then id).
func (h Head) Lacks(other Head) []Shortfall {
	var out []Shortfall
	for agg, want := range other.Positions {
		if have := h.Positions[agg]; have < want {
			out = append(out, Shortfall{Aggregate: agg, Have: have, Want: want})
		}
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i].Aggregate, out[j].Aggregate
		if a.Type != b.Type {
			return a.Type < b.Type
		}
		if a.ID != b.ID {
			return a.ID < b.ID
		}
		return a.Installation < b.Installation
	})
	return out
}

// Head reads the read model's Head.
func (db *DB) Head(ctx context.Context) (Head, error) {
	s, err := db.Snapshot(ctx)
	if err != nil {
		return Head{}, err
	}
	defer s.Close()
	return s.Head(ctx)
}

// Head reads the Head as the snapshot sees it (its checkpoint included).
func (s *Snapshot) Head(ctx context.Context) (Head, error) {
	h := Head{Checkpoint: s.cp, Positions: map[events.Aggregate]uint64{}}
	var id string
	err := s.tx.QueryRowContext(ctx, `SELECT installation_id FROM installation WHERE id = 1`).Scan(&id)
	switch {
	case err == sql.ErrNoRows:
	case err != nil:
		return Head{}, s.db.wrapErr("head: installation", err)
	default:
		h.Installation = events.InstallationID(id)
	}
	rows, err := s.tx.QueryContext(ctx, `SELECT installation, agg_type, agg_id, position FROM aggregate_positions`)
	if err != nil {
		return Head{}, s.db.wrapErr("head: positions", err)
	}
	defer rows.Close()
	for rows.Next() {
		var inst, typ, id string
		var pos uint64
		if err := rows.Scan(&inst, &typ, &id, &pos); err != nil {
			return Head{}, s.db.wrapErr("head: positions", err)
		}
		h.Positions[events.Aggregate{Installation: events.InstallationID(inst), Type: events.AggregateType(typ), ID: id}] = pos
	}
	if err := rows.Err(); err != nil {
		return Head{}, s.db.wrapErr("head: positions", err)
	}
	return h, nil
}
