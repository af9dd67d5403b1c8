package projections

// What every query shares. The queries are methods of DB, one file per
// aggregate (queries_installation.go, queries_group.go,
// queries_message.go, queries_delivery.go), and follow the same rules: a
// context first; typed results (times as time.Time in UTC, the zero Time
// for none; secrets as events.Secret, redacted when printed); a lookup of
// one row returns found = false rather than an error when there is no such
// row; every other failure is a *FileError naming the database file and
// the query.

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"github.com/epochlog/epochlog/events"
)

func fromNanos(n sql.NullInt64) time.Time {
	if !n.Valid || n.Int64 == 0 {
		return time.Time{}
	}
	return time.Unix(0, n.Int64).UTC()
}

// lookup scans the one row q returns into dest; found is false when there
// is none. op names the query in errors.
func (db *DB) lookup(ctx context.Context, op, q string, args []any, dest ...any) (found bool, err error) {
	err = db.sql.QueryRowContext(ctx, q, args...).Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return false, nil
	}
	if err != nil {
		return false, db.wrapErr(op, err)
	}
	return true, nil
}

// exists reports whether the query q (a SELECT) returns a row. op names the
// query in errors.
func (db *DB) exists(ctx context.Context, op, q string, args ...any) (bool, error) {
	var ok bool
	err := db.sql.QueryRowContext(ctx, `SELECT EXISTS (`+q+`)`, args...).Scan(&ok)
	return ok, db.wrapErr(op, err)
}

// Position returns the position of the last applied event of agg: 0 when
// none of its events has been applied. A writer appends agg's next event
// at this position (optimistic concurrency).
func (db *DB) Position(ctx context.Context, agg events.Aggregate) (uint64, error) {
	var pos uint64
	_, err := db.lookup(ctx, "aggregate position", `SELECT position FROM aggregate_positions WHERE installation = ? AND agg_type = ? AND agg_id = ?`,
		[]any{string(agg.Installation), string(agg.Type), agg.ID}, &pos)
	return pos, err
}
