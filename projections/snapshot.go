package projections

// Snapshots of a read model: every row of every table, exported in a
// deterministic order, and imported into a fresh read model of the same
// schema version. Rebuild, rekey, migrate and verify start from one and
// replay only the events after its checkpoint (package replay; see
// docs/forward-secrecy.md, Snapshots). The export is plaintext (it holds
// the read model's secrets): the caller seals it before it leaves the
// process (events.SealSnapshot).

import (
	"bufio"
	"context"
	"database/sql"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"time"

	sqlite3 "github.com/mutecomm/go-sqlcipher/v4"

	"github.com/epochlog/epochlog/events"
)

// Snapshot export format (integers big-endian):
//
//	"EPLGSNAP" | u32 format | u32 n | n bytes of JSON SnapshotMeta
//	then per table, in name order:
//	  'T' | lp(name) | u32 columns | lp(column)... (in name order)
//	  'R' | one value per column (encodeValue's tags 0-4) ... per row, in
//	        primary-key order
//	  'E'
//	'Z'
//
// lp is a u32 length then the bytes.
const (
	snapshotMagic     = "EPLGSNAP"
	SnapshotFormat    = 1
	maxSnapshotMeta   = 1 << 20
	maxSnapshotString = 1 << 30
)

// ErrSnapshot means a snapshot cannot be imported: it is not one, it is
// damaged or inconsistent (its rows do not give the digest it records), or
// it does not fit the read model it is imported into (another schema
// version: ErrSnapshotSchema, which wraps ErrSnapshot too; a read model
// that is not empty).
var ErrSnapshot = errors.New("projections: unusable snapshot")

// ErrSnapshotSchema means a snapshot's schema version is not the read
// model's: a snapshot is imported at its own version only. Migrating
// starts from the beginning of the history instead.
var ErrSnapshotSchema = fmt.Errorf("%w: schema version differs", ErrSnapshot)

// SnapshotMeta describes a snapshot: whose read model it is, up to which
// event, at which schema, and the content digest of the read model it was
// exported from (which an import must reproduce).
type SnapshotMeta struct {
	Format       int                   `json:"format"`
	Installation events.InstallationID `json:"installation"`
	// Checkpoint is the stream sequence of the last event the snapshot's
	// read model applied.
	Checkpoint uint64 `json:"checkpoint"`
	Schema     int    `json:"schema"`
	// Head is the installation chain's head at the checkpoint: the link
	// to the event at Checkpoint (set by the caller, which reads the
	// stream). Links of later events into the history the snapshot
	// replaces are checked against it.
	Head events.Link `json:"head"`
	// Digest is the read model's content digest at the checkpoint.
	Digest Digest `json:"digest"`
	// CreatedAt is when the snapshot was made (set by the caller).
	CreatedAt time.Time `json:"created_at"`
	// Tables and Rows count what the snapshot holds.
	Tables int `json:"tables"`
	Rows   int `json:"rows"`
}

// ExportSnapshot writes a snapshot of the read model, taken in one read
// transaction, to w; see Snapshot.Export.
func (db *DB) ExportSnapshot(ctx context.Context, w io.Writer, meta SnapshotMeta) (SnapshotMeta, error) {
	s, err := db.Snapshot(ctx)
	if err != nil {
		return SnapshotMeta{}, err
	}
	defer s.Close()
	return s.Export(ctx, w, meta)
}

// Export writes every row of every table, as the snapshot sees them, to
// w: tables in name order, rows in primary-key order, so one content
// always exports to the same bytes. It fills meta's Format,
// Installation, Checkpoint, Schema, Digest, Tables and Rows, keeps its
// Head and CreatedAt, and returns it. A read model without
// installation.created is refused (nothing to continue from).
func (s *Snapshot) Export(ctx context.Context, w io.Writer, meta SnapshotMeta) (SnapshotMeta, error) {
	db := s.db
	fail := func(err error) (SnapshotMeta, error) {
		return SnapshotMeta{}, &FileError{Path: db.path, Op: "export snapshot", Err: err}
	}
	h, err := s.Head(ctx)
	if err != nil {
		return SnapshotMeta{}, err
	}
	if h.Installation == "" || s.cp == 0 {
		return fail(errors.New("the read model holds no installation yet"))
	}
	d, err := s.Digest(ctx)
	if err != nil {
		return SnapshotMeta{}, err
	}
	ts, err := db.tables(ctx, s.tx)
	if err != nil {
		return SnapshotMeta{}, db.wrapErr("export snapshot", err)
	}
	meta.Format, meta.Installation, meta.Checkpoint, meta.Schema, meta.Digest = SnapshotFormat, h.Installation, s.cp, db.schema, d
	meta.Tables, meta.Rows = len(ts), 0
	for _, t := range d.Tables {
		meta.Rows += t.Rows
	}
	mj, err := json.Marshal(meta)
	if err != nil {
		return fail(err)
	}
	bw := bufio.NewWriterSize(w, 1<<16)
	var buf []byte
	buf = append(buf, snapshotMagic...)
	buf = binary.BigEndian.AppendUint32(buf, SnapshotFormat)
	buf = binary.BigEndian.AppendUint32(buf, uint32(len(mj)))
	buf = append(buf, mj...)
	if _, err := bw.Write(buf); err != nil {
		return fail(err)
	}
	for _, t := range ts {
		buf = append(buf[:0], 'T')
		buf = appendLP32(buf, t.name)
		buf = binary.BigEndian.AppendUint32(buf, uint32(len(t.cols)))
		for _, c := range t.cols {
			buf = appendLP32(buf, c)
		}
		if _, err := bw.Write(buf); err != nil {
			return fail(err)
		}
		if err := exportTable(ctx, s.tx, t, bw); err != nil {
			return SnapshotMeta{}, db.wrapErr("export snapshot "+t.name, err)
		}
		if err := bw.WriteByte('E'); err != nil {
			return fail(err)
		}
	}
	if err := bw.WriteByte('Z'); err != nil {
		return fail(err)
	}
	if err := bw.Flush(); err != nil {
		return fail(err)
	}
	return meta, nil
}

// exportRows selects t's columns in name order, sorted by the primary key.
func (t tableInfo) exportRows() string {
	cols := make([]string, len(t.cols))
	for i, c := range t.cols {
		cols[i] = quoteIdent(c)
	}
	order := make([]string, len(t.pk))
	for i, c := range t.pk {
		order[i] = quoteIdent(c)
	}
	return "SELECT " + strings.Join(cols, ", ") + " FROM " + quoteIdent(t.name) + " ORDER BY " + strings.Join(order, ", ")
}

func exportTable(ctx context.Context, q queryer, t tableInfo, w *bufio.Writer) error {
	rows, err := q.QueryContext(ctx, t.exportRows())
	if err != nil {
		return err
	}
	defer rows.Close()
	vals := make([]any, len(t.cols))
	ptrs := make([]any, len(t.cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	var buf []byte
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return err
		}
		buf = append(buf[:0], 'R')
		for i, v := range vals {
			switch v.(type) {
			case nil, int64, float64, string, []byte:
			default:
				return fmt.Errorf("column %s holds a %T, which a snapshot cannot carry", t.cols[i], v)
			}
			buf = encodeValue(buf, v)
		}
		if _, err := w.Write(buf); err != nil {
			return err
		}
	}
	return rows.Err()
}

func appendLP32(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// snapReader decodes the export format.
type snapReader struct {
	r   *bufio.Reader
	buf []byte
}

// snapChunk is the most a length field makes the reader allocate before
// the bytes it announces are there: past it, the buffer grows with what
// is read, so a forged length (up to maxSnapshotString) at the end of a
// short snapshot costs no more than the snapshot.
const snapChunk = 1 << 16

// full reads the next n bytes into r's buffer, reused from call to call.
func (r *snapReader) full(n int) ([]byte, error) {
	b, err := readBounded(r.r, r.buf[:0], n)
	if err != nil {
		return nil, err
	}
	r.buf = b
	return b, nil
}

// readBounded appends the next n bytes of rd to b, allocating ahead of
// the bytes read no more than snapChunk or as many as were read.
func readBounded(rd io.Reader, b []byte, n int) ([]byte, error) {
	start := len(b)
	for len(b)-start < n {
		if len(b) == cap(b) {
			b = slices.Grow(b, min(n-(len(b)-start), max(cap(b), snapChunk)))
		}
		m := min(cap(b), start+n)
		k, err := io.ReadFull(rd, b[len(b):m])
		b = b[:len(b)+k]
		if err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return nil, err
		}
	}
	return b, nil
}

func (r *snapReader) u32() (uint32, error) {
	b, err := r.full(4)
	if err != nil {
		return 0, err
	}
	return binary.BigEndian.Uint32(b), nil
}

func (r *snapReader) str() (string, error) {
	n, err := r.u32()
	if err != nil {
		return "", err
	}
	if n > maxSnapshotString {
		return "", fmt.Errorf("a %d-byte string", n)
	}
	b, err := r.full(int(n))
	return string(b), err
}

// value decodes one encodeValue encoding.
func (r *snapReader) value() (any, error) {
	tag, err := r.r.ReadByte()
	if err != nil {
		return nil, io.ErrUnexpectedEOF
	}
	switch tag {
	case 0:
		return nil, nil
	case 1, 2:
		b, err := r.full(8)
		if err != nil {
			return nil, err
		}
		u := binary.BigEndian.Uint64(b)
		if tag == 1 {
			return int64(u), nil
		}
		return math.Float64frombits(u), nil
	case 3, 4:
		b, err := r.full(8)
		if err != nil {
			return nil, err
		}
		n := binary.BigEndian.Uint64(b)
		if n > maxSnapshotString {
			return nil, fmt.Errorf("a %d-byte value", n)
		}
		v, err := readBounded(r.r, nil, int(n))
		if err != nil {
			return nil, io.ErrUnexpectedEOF
		}
		if v == nil {
			v = []byte{}
		}
		if tag == 3 {
			return string(v), nil
		}
		return v, nil
	}
	return nil, fmt.Errorf("unknown value tag %d", tag)
}

// readMeta reads the header.
func (r *snapReader) readMeta() (SnapshotMeta, error) {
	var m SnapshotMeta
	b, err := r.full(len(snapshotMagic))
	if err != nil || string(b) != snapshotMagic {
		return m, errors.New("not a read-model snapshot (bad magic)")
	}
	f, err := r.u32()
	if err != nil {
		return m, err
	}
	if f != SnapshotFormat {
		return m, fmt.Errorf("snapshot format %d, this code reads %d", f, SnapshotFormat)
	}
	n, err := r.u32()
	if err != nil {
		return m, err
	}
	if n > maxSnapshotMeta {
		return m, fmt.Errorf("a %d-byte header", n)
	}
	if b, err = r.full(int(n)); err != nil {
		return m, err
	}
	if err := json.Unmarshal(b, &m); err != nil {
		return m, fmt.Errorf("header: %w", err)
	}
	return m, nil
}

// ReadSnapshotMeta reads a snapshot's header only.
func ReadSnapshotMeta(r io.Reader) (SnapshotMeta, error) {
	sr := &snapReader{r: bufio.NewReader(r)}
	m, err := sr.readMeta()
	if err != nil {
		return m, fmt.Errorf("%w: %w", ErrSnapshot, err)
	}
	return m, nil
}

// Import loads a snapshot (Export's output) into db, which must be a
// fresh read model (nothing applied) at the snapshot's schema version. It
// runs in one transaction: every table's rows are replaced by the
// snapshot's (the checkpoint and the aggregate positions included, so
// the read model continues from the snapshot's checkpoint), foreign keys
// are checked at the commit, and the content digest must equal the one
// the snapshot records before anything commits. A failure leaves db as it
// was. Failures wrap ErrSnapshot (ErrSnapshotSchema for another schema
// version) unless the database itself failed.
func (db *DB) Import(ctx context.Context, r io.Reader) (SnapshotMeta, error) {
	fail := func(err error) (SnapshotMeta, error) {
		return SnapshotMeta{}, &FileError{Path: db.path, Op: "import snapshot", Err: err}
	}
	bad := func(format string, args ...any) (SnapshotMeta, error) {
		return fail(fmt.Errorf("%w: "+format, append([]any{ErrSnapshot}, args...)...))
	}
	if db.plaintext {
		return fail(errors.New("an unencrypted database is a read-only migration source"))
	}
	sr := &snapReader{r: bufio.NewReaderSize(r, 1<<16)}
	meta, err := sr.readMeta()
	if err != nil {
		return bad("%v", err)
	}
	if meta.Schema != db.schema {
		return fail(fmt.Errorf("%w: the snapshot is at schema %d, the read model at %d (a migration replays from the start)", ErrSnapshotSchema, meta.Schema, db.schema))
	}
	db.applyMu.Lock()
	defer db.applyMu.Unlock()
	nctx := context.WithoutCancel(ctx)
	tx, err := db.w.BeginTx(nctx, nil)
	if err != nil {
		return SnapshotMeta{}, db.wrapErr("import snapshot", err)
	}
	defer tx.Rollback()
	var cp, insts int64
	if err := tx.QueryRowContext(nctx, `SELECT (SELECT seq FROM checkpoint WHERE id = 1), (SELECT count(*) FROM installation)`).Scan(&cp, &insts); err != nil {
		return SnapshotMeta{}, db.wrapErr("import snapshot", err)
	}
	if cp != 0 || insts != 0 {
		return fail(fmt.Errorf("%w: the read model is not empty (checkpoint %d)", ErrSnapshot, cp))
	}
	if _, err := tx.ExecContext(nctx, `PRAGMA defer_foreign_keys = ON`); err != nil {
		return SnapshotMeta{}, db.wrapErr("import snapshot", err)
	}
	ts, err := db.tables(nctx, tx)
	if err != nil {
		return SnapshotMeta{}, db.wrapErr("import snapshot", err)
	}
	want := map[string]tableInfo{}
	for _, t := range ts {
		want[t.name] = t
	}
	seen := map[string]bool{}
	rows := 0
	for {
		if err := ctx.Err(); err != nil {
			return SnapshotMeta{}, db.wrapErr("import snapshot", err)
		}
		tag, err := sr.r.ReadByte()
		if err != nil {
			return bad("truncated")
		}
		if tag == 'Z' {
			break
		}
		if tag != 'T' {
			return bad("unexpected record %q", tag)
		}
		name, err := sr.str()
		if err != nil {
			return bad("table name: %v", err)
		}
		n, err := sr.u32()
		if err != nil || n > 4096 {
			return bad("table %s: column count", name)
		}
		cols := make([]string, n)
		for i := range cols {
			if cols[i], err = sr.str(); err != nil {
				return bad("table %s: column: %v", name, err)
			}
		}
		t, ok := want[name]
		switch {
		case !ok:
			return bad("table %s is not in the read model's schema", name)
		case seen[name]:
			return bad("table %s twice", name)
		case !slices.Equal(cols, t.cols):
			return bad("table %s has other columns than the read model's", name)
		}
		seen[name] = true
		nr, err := importTable(nctx, tx, sr, t)
		if err != nil {
			if errors.Is(err, ErrSnapshot) {
				return fail(err)
			}
			return SnapshotMeta{}, db.wrapErr("import snapshot "+name, err)
		}
		rows += nr
	}
	if len(seen) != len(want) {
		for _, t := range ts {
			if !seen[t.name] {
				return bad("table %s is missing", t.name)
			}
		}
	}
	if _, err := sr.r.ReadByte(); err != io.EOF {
		return bad("data after the end")
	}
	var got Digest
	snap := &Snapshot{db: db, tx: tx}
	if got, err = snap.Digest(nctx); err != nil {
		return SnapshotMeta{}, err
	}
	if d := Compare(meta.Digest, got); d != nil {
		return bad("the imported rows do not give the digest the snapshot records (%s)", d)
	}
	h, err := snap.Head(nctx)
	if err != nil {
		return SnapshotMeta{}, err
	}
	if err := tx.QueryRowContext(nctx, `SELECT seq FROM checkpoint WHERE id = 1`).Scan(&cp); err != nil {
		return SnapshotMeta{}, db.wrapErr("import snapshot", err)
	}
	if uint64(cp) != meta.Checkpoint || h.Installation != meta.Installation {
		return bad("the rows are installation %s's at checkpoint %d, the header says %s's at %d", h.Installation, cp, meta.Installation, meta.Checkpoint)
	}
	if err := tx.Commit(); err != nil {
		if sqliteCode(err) == sqlite3.ErrConstraint {
			return bad("rows break a foreign key: %v", err)
		}
		return SnapshotMeta{}, db.wrapErr("import snapshot", err)
	}
	return meta, nil
}

// importTable replaces t's rows with the snapshot's next table's rows.
func importTable(ctx context.Context, tx *sql.Tx, sr *snapReader, t tableInfo) (int, error) {
	if _, err := tx.ExecContext(ctx, "DELETE FROM "+quoteIdent(t.name)); err != nil {
		return 0, err
	}
	cols := make([]string, len(t.cols))
	marks := make([]string, len(t.cols))
	for i, c := range t.cols {
		cols[i], marks[i] = quoteIdent(c), "?"
	}
	stmt, err := tx.PrepareContext(ctx, "INSERT INTO "+quoteIdent(t.name)+"("+strings.Join(cols, ", ")+") VALUES ("+strings.Join(marks, ", ")+")")
	if err != nil {
		return 0, err
	}
	defer stmt.Close()
	vals := make([]any, len(t.cols))
	n := 0
	for {
		tag, err := sr.r.ReadByte()
		if err != nil {
			return n, fmt.Errorf("%w: table %s: truncated", ErrSnapshot, t.name)
		}
		if tag == 'E' {
			return n, nil
		}
		if tag != 'R' {
			return n, fmt.Errorf("%w: table %s: unexpected record %q", ErrSnapshot, t.name, tag)
		}
		for i := range vals {
			if vals[i], err = sr.value(); err != nil {
				return n, fmt.Errorf("%w: table %s row %d: %v", ErrSnapshot, t.name, n+1, err)
			}
		}
		if _, err := stmt.ExecContext(ctx, vals...); err != nil {
			if sqliteCode(err) == sqlite3.ErrConstraint {
				return n, fmt.Errorf("%w: table %s row %d: %v", ErrSnapshot, t.name, n+1, err)
			}
			return n, err
		}
		n++
	}
}
