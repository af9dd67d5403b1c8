package projections

import (
	"bytes"
	"context"
	"crypto/sha256"
	"database/sql"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"slices"
	"sort"
	"strings"
)

// Digest is a logical fingerprint of a read model: per table, a SHA-256
// over its rows in primary-key order with a canonical encoding. It depends
// on content only, not on the key, page layout, column order or rowids.
type Digest struct {
	Schema int
	Tables []TableDigest // sorted by name
}

// TableDigest is one table's part of a Digest.
type TableDigest struct {
	Name    string
	Columns []string // sorted by name; part of the hash
	Rows    int
	Sum     [32]byte
}

// Equal reports whether two digests describe the same content.
func (d Digest) Equal(o Digest) bool { return Compare(d, o) == nil }

// String renders the digest as one line per table.
func (d Digest) String() string {
	var b strings.Builder
	fmt.Fprintf(&b, "schema %d\n", d.Schema)
	for _, t := range d.Tables {
		fmt.Fprintf(&b, "%s rows=%d sha256=%s\n", t.Name, t.Rows, hex.EncodeToString(t.Sum[:]))
	}
	return b.String()
}

// Difference names where two read models first differ.
type Difference struct {
	Table  string // the first table (by name) that differs
	RowKey string // the first differing row's primary key, when known
	Detail string
}

// String renders the difference for an operator.
func (d *Difference) String() string {
	s := "table " + d.Table
	if d.RowKey != "" {
		s += " row " + d.RowKey
	}
	if d.Detail != "" {
		s += ": " + d.Detail
	}
	return s
}

// Compare returns nil when a and b are equal, otherwise the first table
// (in name order) that differs. Use CompareDB to find the row.
func Compare(a, b Digest) *Difference {
	if a.Schema != b.Schema {
		return &Difference{Table: "(schema)", Detail: fmt.Sprintf("schema version %d vs %d", a.Schema, b.Schema)}
	}
	i, j := 0, 0
	for i < len(a.Tables) || j < len(b.Tables) {
		switch {
		case j >= len(b.Tables) || (i < len(a.Tables) && a.Tables[i].Name < b.Tables[j].Name):
			return &Difference{Table: a.Tables[i].Name, Detail: "table only in the first database"}
		case i >= len(a.Tables) || b.Tables[j].Name < a.Tables[i].Name:
			return &Difference{Table: b.Tables[j].Name, Detail: "table only in the second database"}
		}
		ta, tb := a.Tables[i], b.Tables[j]
		switch {
		case strings.Join(ta.Columns, ",") != strings.Join(tb.Columns, ","):
			return &Difference{Table: ta.Name, Detail: "columns differ"}
		case ta.Rows != tb.Rows:
			return &Difference{Table: ta.Name, Detail: fmt.Sprintf("%d rows vs %d", ta.Rows, tb.Rows)}
		case ta.Sum != tb.Sum:
			return &Difference{Table: ta.Name, Detail: "row content differs"}
		}
		i++
		j++
	}
	return nil
}

type tableInfo struct {
	name string
	cols []string // sorted by name
	pk   []string // primary key columns in key order
}

func (db *DB) tables(ctx context.Context, q queryer) ([]tableInfo, error) {
	rows, err := q.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' ORDER BY name`)
	if err != nil {
		return nil, err
	}
	var names []string
	for rows.Next() {
		var n string
		if err := rows.Scan(&n); err != nil {
			rows.Close()
			return nil, err
		}
		names = append(names, n)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return nil, err
	}
	var out []tableInfo
	for _, n := range names {
		ti := tableInfo{name: n}
		cr, err := q.QueryContext(ctx, `SELECT name, pk FROM pragma_table_info(?)`, n)
		if err != nil {
			return nil, err
		}
		type pkcol struct {
			name string
			pos  int
		}
		var pks []pkcol
		for cr.Next() {
			var c string
			var pk int
			if err := cr.Scan(&c, &pk); err != nil {
				cr.Close()
				return nil, err
			}
			ti.cols = append(ti.cols, c)
			if pk > 0 {
				pks = append(pks, pkcol{c, pk})
			}
		}
		cr.Close()
		sort.Strings(ti.cols)
		sort.Slice(pks, func(i, j int) bool { return pks[i].pos < pks[j].pos })
		for _, p := range pks {
			ti.pk = append(ti.pk, p.name)
		}
		if len(ti.pk) == 0 {
			return nil, fmt.Errorf("table %s has no primary key: cannot digest it canonically", n)
		}
		out = append(out, ti)
	}
	return out, nil
}

type queryer interface {
	QueryContext(ctx context.Context, q string, args ...any) (*sql.Rows, error)
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

// selectRows selects every row of t: the primary key columns first, then
// all columns in name order, sorted by the primary key.
func (t tableInfo) selectRows() string {
	var cols []string
	for _, c := range t.pk {
		cols = append(cols, quoteIdent(c))
	}
	for _, c := range t.cols {
		cols = append(cols, quoteIdent(c))
	}
	var order []string
	for _, c := range t.pk {
		order = append(order, quoteIdent(c))
	}
	return "SELECT " + strings.Join(cols, ", ") + " FROM " + quoteIdent(t.name) + " ORDER BY " + strings.Join(order, ", ")
}

// encodeValue appends SQLite's storage class and the value, length
// prefixed, so distinct rows never encode alike.
func encodeValue(b []byte, v any) []byte {
	switch x := v.(type) {
	case nil:
		return append(b, 0)
	case int64:
		b = append(b, 1)
		return binary.BigEndian.AppendUint64(b, uint64(x))
	case float64:
		b = append(b, 2)
		return binary.BigEndian.AppendUint64(b, math.Float64bits(x))
	case string:
		b = append(b, 3)
		b = binary.BigEndian.AppendUint64(b, uint64(len(x)))
		return append(b, x...)
	case []byte:
		b = append(b, 4)
		b = binary.BigEndian.AppendUint64(b, uint64(len(x)))
		return append(b, x...)
	case bool:
		b = append(b, 1)
		n := uint64(0)
		if x {
			n = 1
		}
		return binary.BigEndian.AppendUint64(b, n)
	}
	s := fmt.Sprint(v)
	b = append(b, 5)
	b = binary.BigEndian.AppendUint64(b, uint64(len(s)))
	return append(b, s...)
}

// rowCursor iterates one table's rows with their canonical encodings.
type rowCursor struct {
	t    tableInfo
	rows *sql.Rows
	vals []any
	ptrs []any
}

func openCursor(ctx context.Context, q queryer, t tableInfo) (*rowCursor, error) {
	rows, err := q.QueryContext(ctx, t.selectRows())
	if err != nil {
		return nil, err
	}
	n := len(t.pk) + len(t.cols)
	c := &rowCursor{t: t, rows: rows, vals: make([]any, n), ptrs: make([]any, n)}
	for i := range c.vals {
		c.ptrs[i] = &c.vals[i]
	}
	return c, nil
}

// next returns the canonical key and row encodings, or ok=false at the end.
func (c *rowCursor) next(keyBuf, rowBuf []byte) (key, row []byte, ok bool, err error) {
	if !c.rows.Next() {
		return nil, nil, false, c.rows.Err()
	}
	if err := c.rows.Scan(c.ptrs...); err != nil {
		return nil, nil, false, err
	}
	key = keyBuf[:0]
	for _, v := range c.vals[:len(c.t.pk)] {
		key = encodeValue(key, v)
	}
	row = rowBuf[:0]
	for _, v := range c.vals[len(c.t.pk):] {
		row = encodeValue(row, v)
	}
	return key, row, true, nil
}

// keyString renders the current row's primary key for reports. Keys are
// identifiers (group ids, sequences, refs), never secrets.
func (c *rowCursor) keyString() string {
	var parts []string
	for i, name := range c.t.pk {
		switch v := c.vals[i].(type) {
		case []byte:
			parts = append(parts, fmt.Sprintf("%s=x'%s'", name, hex.EncodeToString(v)))
		case string:
			parts = append(parts, fmt.Sprintf("%s=%q", name, v))
		default:
			parts = append(parts, fmt.Sprintf("%s=%v", name, v))
		}
	}
	return strings.Join(parts, ", ")
}

// Snapshot is one read transaction on a read model: every read through it
// sees the database as it was when the snapshot was taken, whatever a
// writer commits meanwhile (WAL keeps the pages it needs). Reading the
// checkpoint and the tables through one Snapshot is what lets a caller
// compare a live database with a replay up to that checkpoint while the
// database's own writer keeps applying events. Close it promptly: while
// it is open the WAL cannot be checkpointed past it.
type Snapshot struct {
	db *DB
	tx *sql.Tx
	cp uint64
}

// Snapshot takes a snapshot of the read model. It reads the checkpoint at
// once, because SQLite fixes a deferred transaction's view at its first
// read, not at BEGIN: the snapshot is taken when Snapshot returns.
func (db *DB) Snapshot(ctx context.Context) (*Snapshot, error) {
	tx, err := db.sql.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, db.wrapErr("snapshot", err)
	}
	s := &Snapshot{db: db, tx: tx}
	if err := tx.QueryRowContext(ctx, `SELECT seq FROM checkpoint WHERE id = 1`).Scan(&s.cp); err != nil {
		tx.Rollback()
		return nil, db.wrapErr("checkpoint", err)
	}
	return s, nil
}

// Checkpoint returns the stream sequence of the last event applied in the
// snapshot.
func (s *Snapshot) Checkpoint() uint64 { return s.cp }

// Close ends the snapshot's read transaction. Closing twice is harmless.
func (s *Snapshot) Close() error {
	if err := s.tx.Rollback(); err != nil && !errors.Is(err, sql.ErrTxDone) {
		return s.db.wrapErr("snapshot", err)
	}
	return nil
}

// Digest computes the logical digest of the whole read model in one read
// transaction (a consistent snapshot).
func (db *DB) Digest(ctx context.Context) (Digest, error) {
	s, err := db.Snapshot(ctx)
	if err != nil {
		return Digest{}, err
	}
	defer s.Close()
	return s.Digest(ctx)
}

// Digest computes the logical digest of the read model as the snapshot
// sees it.
func (s *Snapshot) Digest(ctx context.Context) (Digest, error) {
	db, tx := s.db, s.tx
	ts, err := db.tables(ctx, tx)
	if err != nil {
		return Digest{}, db.wrapErr("digest", err)
	}
	d := Digest{Schema: db.schema}
	var kb, rb []byte
	for _, t := range ts {
		h := sha256.New()
		var hdr []byte
		for _, c := range t.cols {
			hdr = encodeValue(hdr, c)
		}
		h.Write(hdr)
		c, err := openCursor(ctx, tx, t)
		if err != nil {
			return Digest{}, db.wrapErr("digest", err)
		}
		n := 0
		for {
			k, r, ok, err := c.next(kb, rb)
			if err != nil {
				c.rows.Close()
				return Digest{}, db.wrapErr("digest "+t.name, err)
			}
			if !ok {
				break
			}
			kb, rb = k, r
			var lens [16]byte
			binary.BigEndian.PutUint64(lens[:8], uint64(len(k)))
			binary.BigEndian.PutUint64(lens[8:], uint64(len(r)))
			h.Write(lens[:])
			h.Write(k)
			h.Write(r)
			n++
		}
		c.rows.Close()
		td := TableDigest{Name: t.name, Columns: t.cols, Rows: n}
		copy(td.Sum[:], h.Sum(nil))
		d.Tables = append(d.Tables, td)
	}
	return d, nil
}

// CompareDB walks both read models table by table in primary-key order and
// returns the first difference (table and row key), or nil when their
// content is equal. Each side is read in one snapshot.
func CompareDB(ctx context.Context, a, b *DB) (*Difference, error) {
	sa, err := a.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	defer sa.Close()
	return sa.CompareDB(ctx, b)
}

// CompareDB compares the read model as the snapshot sees it (the first
// database) with b's current content (the second, read in one snapshot
// of its own), like the function CompareDB.
func (s *Snapshot) CompareDB(ctx context.Context, b *DB) (*Difference, error) {
	a := s.db
	if a.schema != b.schema {
		return &Difference{Table: "(schema)", Detail: fmt.Sprintf("schema version %d vs %d", a.schema, b.schema)}, nil
	}
	sb, err := b.Snapshot(ctx)
	if err != nil {
		return nil, err
	}
	defer sb.Close()
	ta, tb := s.tx, sb.tx
	// The schema's objects first: a trigger, view or index planted in a
	// read model changes what the next event does to it (or what a query
	// returns) without changing a row.
	if d, err := compareSchemaObjects(ctx, ta, tb, a, b); err != nil || d != nil {
		return d, err
	}
	tia, err := a.tables(ctx, ta)
	if err != nil {
		return nil, a.wrapErr("compare", err)
	}
	tib, err := b.tables(ctx, tb)
	if err != nil {
		return nil, b.wrapErr("compare", err)
	}
	da := Digest{Schema: a.schema}
	db := Digest{Schema: b.schema}
	for _, t := range tia {
		da.Tables = append(da.Tables, TableDigest{Name: t.name, Columns: t.cols})
	}
	for _, t := range tib {
		db.Tables = append(db.Tables, TableDigest{Name: t.name, Columns: t.cols})
	}
	if d := Compare(da, db); d != nil {
		return d, nil
	}
	for i := range tia {
		d, err := compareTable(ctx, ta, tb, tia[i], a, b)
		if err != nil || d != nil {
			return d, err
		}
	}
	return nil, nil
}

func compareTable(ctx context.Context, qa, qb queryer, t tableInfo, a, b *DB) (*Difference, error) {
	ca, err := openCursor(ctx, qa, t)
	if err != nil {
		return nil, a.wrapErr("compare", err)
	}
	defer ca.rows.Close()
	cb, err := openCursor(ctx, qb, t)
	if err != nil {
		return nil, b.wrapErr("compare", err)
	}
	defer cb.rows.Close()
	var ka, ra, kb, rb []byte
	for {
		var oka, okb bool
		ka, ra, oka, err = ca.next(ka, ra)
		if err != nil {
			return nil, a.wrapErr("compare "+t.name, err)
		}
		kb, rb, okb, err = cb.next(kb, rb)
		if err != nil {
			return nil, b.wrapErr("compare "+t.name, err)
		}
		switch {
		case !oka && !okb:
			return nil, nil
		case !okb:
			return &Difference{Table: t.name, RowKey: ca.keyString(), Detail: "row only in the first database"}, nil
		case !oka:
			return &Difference{Table: t.name, RowKey: cb.keyString(), Detail: "row only in the second database"}, nil
		case !bytes.Equal(ka, kb):
			// Both are sorted by key, so the smaller key is the row
			// missing from the other side. Encoded keys do not sort like
			// SQLite, so report the first database's key.
			return &Difference{Table: t.name, RowKey: ca.keyString(), Detail: "row keys differ (other side has " + cb.keyString() + ")"}, nil
		case !bytes.Equal(ra, rb):
			return &Difference{Table: t.name, RowKey: ca.keyString(), Detail: "row content differs"}, nil
		}
	}
}

// schemaObject is one entry of sqlite_master as compared: its SQL with
// runs of white space made one space.
type schemaObject struct{ typ, name, table, sql string }

// schemaObjects lists the schema's tables, indexes, views and triggers
// (the indexes SQLite makes for a table's constraints, which have no SQL
// of their own, follow from their table's).
func schemaObjects(ctx context.Context, q queryer) (map[string]schemaObject, error) {
	rows, err := q.QueryContext(ctx, `SELECT type, name, tbl_name, sql FROM sqlite_master WHERE sql IS NOT NULL`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	out := map[string]schemaObject{}
	for rows.Next() {
		var o schemaObject
		if err := rows.Scan(&o.typ, &o.name, &o.table, &o.sql); err != nil {
			return nil, err
		}
		o.sql = strings.Join(strings.Fields(o.sql), " ")
		out[o.typ+" "+o.name] = o
	}
	return out, rows.Err()
}

// compareSchemaObjects returns the first schema object (by type and name)
// that one database has and the other has not, or has with other SQL.
func compareSchemaObjects(ctx context.Context, ta, tb queryer, a, b *DB) (*Difference, error) {
	oa, err := schemaObjects(ctx, ta)
	if err != nil {
		return nil, a.wrapErr("compare schema", err)
	}
	ob, err := schemaObjects(ctx, tb)
	if err != nil {
		return nil, b.wrapErr("compare schema", err)
	}
	keys := make([]string, 0, len(oa)+len(ob))
	for k := range oa {
		keys = append(keys, k)
	}
	for k := range ob {
		if _, ok := oa[k]; !ok {
			keys = append(keys, k)
		}
	}
	slices.Sort(keys)
	for _, k := range keys {
		x, inA := oa[k]
		y, inB := ob[k]
		switch {
		case !inB:
			return &Difference{Table: "(schema)", RowKey: k, Detail: fmt.Sprintf("%s on %s is not in the other database: %s", k, x.table, x.sql)}, nil
		case !inA:
			return &Difference{Table: "(schema)", RowKey: k, Detail: fmt.Sprintf("%s on %s is missing", k, y.table)}, nil
		case x != y:
			return &Difference{Table: "(schema)", RowKey: k, Detail: fmt.Sprintf("%s differs: %s vs %s", k, x.sql, y.sql)}, nil
		}
	}
	return nil, nil
}
