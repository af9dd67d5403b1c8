package projections

import (
	"bufio"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha512"
	"database/sql"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"slices"
	"strconv"
	"strings"

	sqlite3 "github.com/mutecomm/go-sqlcipher/v4"
)

// opCheckFile is the FileError operation of CheckFile.
const opCheckFile = "check file"

// checkFileHint is the hint of a damaged file. It recommends nothing
// destructive: a rebuild keeps the damaged file beside the new one (a
// hard link), and refuses a stream holding less than the file's head
// when that can still be read.
const checkFileHint = "the file is damaged: `replayer rebuild` replaces it from the stream and keeps it beside as <db>.damaged-<time> (refusing a stream that holds less than it can still read of the file)"

// maxReported bounds how many failing pages and how many integrity_check
// findings a CorruptionError lists; the totals are counted in full.
const maxReported = 20

// CorruptionError is the damage CheckFile found in a database file. It
// comes inside a *FileError, and errors.Is(err, ErrCorrupt) holds for it.
// It names pages, tables and indexes, never key material or content.
type CorruptionError struct {
	// Pages are the first (at most 20) pages, ascending, whose SQLCipher
	// HMAC fails; PagesTotal counts them all.
	Pages      []uint32
	PagesTotal int
	// Problems are the first (at most 20) other findings, as SQLite words
	// them: integrity_check's rows, which name the tables and indexes
	// concerned ("row 3 missing from index groups_by_activity"), other
	// rows of cipher_integrity_check, or why SQLite cannot open the file;
	// ProblemsTotal counts them all.
	Problems      []string
	ProblemsTotal int
	// Consequential counts integrity_check rows left out because they only
	// follow from pages that cannot be read ("unable to get the page",
	// "page N is never used" for the pages below an unreadable one).
	Consequential int
	// Tables are the tables in which the damage lies, each with its
	// indexes: those whose own integrity_check fails. Nil when it could
	// not be told (the schema itself cannot be read).
	Tables []string
}

// Error names the failing pages, the integrity_check findings and the
// tables, with ErrCorrupt's message first.
func (e *CorruptionError) Error() string {
	var parts []string
	if n := e.PagesTotal; n > 0 {
		nums := make([]string, len(e.Pages))
		for i, p := range e.Pages {
			nums[i] = strconv.FormatUint(uint64(p), 10)
		}
		list := strings.Join(nums, ", ") + andMore(n, len(e.Pages))
		if n == 1 {
			parts = append(parts, "page "+list+" fails its HMAC")
		} else {
			parts = append(parts, "pages "+list+" fail their HMAC")
		}
	}
	if n := e.ProblemsTotal; n > 0 {
		parts = append(parts, strings.Join(e.Problems, "; ")+andMore(n, len(e.Problems)))
	}
	switch n := e.Consequential; {
	case n == 1:
		parts = append(parts, "1 more row follows from unreadable pages")
	case n > 1:
		parts = append(parts, fmt.Sprintf("%d more rows follow from unreadable pages", n))
	}
	switch len(e.Tables) {
	case 0:
	case 1:
		parts = append(parts, "in table "+e.Tables[0]+" or its indexes")
	default:
		parts = append(parts, "in tables "+strings.Join(e.Tables, ", ")+" or their indexes")
	}
	if len(parts) == 0 {
		return ErrCorrupt.Error()
	}
	return ErrCorrupt.Error() + ": " + strings.Join(parts, "; ")
}

// Unwrap returns ErrCorrupt.
func (e *CorruptionError) Unwrap() error { return ErrCorrupt }

func andMore(total, listed int) string {
	if total > listed {
		return fmt.Sprintf(" (and %d more)", total-listed)
	}
	return ""
}

func (e *CorruptionError) empty() bool { return e.PagesTotal == 0 && e.ProblemsTotal == 0 }

func (e *CorruptionError) addPages(pages []uint32) {
	slices.Sort(pages)
	pages = slices.Compact(pages)
	e.PagesTotal = len(pages)
	e.Pages = slices.Clone(pages[:min(len(pages), maxReported)])
}

func (e *CorruptionError) addProblem(s string) {
	e.ProblemsTotal++
	if len(e.Problems) < maxReported {
		e.Problems = append(e.Problems, s)
	}
}

// CheckFile checks the database file itself, every page of it: that each
// page authenticates under the key (PRAGMA cipher_integrity_check, which
// reads the file from disk, not through the page cache) and that the
// b-trees and every index agree with their tables (PRAGMA integrity_check,
// the full check, not quick_check). A query or a digest reads only the
// pages it needs and misses damage elsewhere, in an index above all.
//
// It returns nil for an undamaged file, and for a damaged one a *FileError
// (operation "check file") wrapping a *CorruptionError, for which
// errors.Is(err, ErrCorrupt) holds, naming the pages that fail their HMAC,
// integrity_check's findings and the tables concerned. A file whose pages
// hold but whose rows break the rule the applier relies on (from schema
// 12, a group's last_ordinal below its highest stored message ordinal)
// gets a *FileError wrapping an *OrdinalError (ErrOrdinalBehind and
// ErrCorrupt) naming the group and both ordinals. Other failures (a
// cancelled ctx, a busy file) are a *FileError without ErrCorrupt.
//
// It reads the whole file, and the pages' HMACs twice where one fails (a
// page a checkpoint is writing at that moment may read torn: it counts
// only if it fails both times), so it may run while the projector writes. An unencrypted
// database (NoKey) has no HMACs: only integrity_check runs. IntegrityCheck,
// the lighter check run after a rebuild or migration, is unchanged.
func (db *DB) CheckFile(ctx context.Context) error {
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return db.wrapErr(opCheckFile, err)
	}
	defer conn.Close()
	// A pooled connection may hold pages read before the file was damaged:
	// drop them, so integrity_check reads what is on disk now.
	if _, err := conn.ExecContext(ctx, "PRAGMA shrink_memory"); err != nil {
		return db.wrapErr(opCheckFile, err)
	}
	ce := &CorruptionError{}
	if !db.plaintext {
		pages, other, err := cipherCheck(ctx, conn)
		if err != nil {
			return db.wrapErr(opCheckFile, err)
		}
		if len(pages) > 0 || len(other) > 0 {
			pages2, other2, err := cipherCheck(ctx, conn)
			if err != nil {
				return db.wrapErr(opCheckFile, err)
			}
			pages = slices.DeleteFunc(pages, func(p uint32) bool { return !slices.Contains(pages2, p) })
			other = slices.DeleteFunc(other, func(s string) bool { return !slices.Contains(other2, s) })
		}
		ce.addPages(pages)
		for _, s := range other {
			ce.addProblem(s)
		}
	}
	if err := btreeCheck(ctx, conn, ce); err != nil {
		return db.wrapErr(opCheckFile, err)
	}
	if ce.empty() {
		// The pages and b-trees hold: then the rule the rows keep.
		oe, err := db.ordinalsBehind(ctx, conn)
		if err != nil {
			return db.wrapErr(opCheckFile, err)
		}
		if oe != nil {
			return &FileError{Path: db.path, Op: opCheckFile, Err: oe, Hint: checkFileHint}
		}
		return nil
	}
	ce.Tables = damagedTables(ctx, conn)
	return &FileError{Path: db.path, Op: opCheckFile, Err: ce, Hint: checkFileHint}
}

// CheckFile opens the existing read model at path as it is (OpenExisting:
// never created or migrated, opts.CheckIntegrity ignored), checks it with
// DB.CheckFile and closes it. When the damage keeps SQLite from opening
// the file at all (the schema's pages), the failing pages are still named:
// their HMACs are checked here the way SQLCipher 4 computes them. Open's
// failures (ErrWrongKey, ErrNotOurs, a missing file) are returned as they
// are; a damaged first page may look like a wrong key.
func CheckFile(ctx context.Context, path string, key Key, opts *Options) error {
	var o Options
	if opts != nil {
		o = *opts
	}
	o.CheckIntegrity = false
	db, err := OpenExisting(path, key, &o)
	if err != nil {
		if errors.Is(err, ErrCorrupt) && !key.IsPlaintext() {
			if ce := unopenable(path, key, &o, err); ce != nil {
				return &FileError{Path: path, Op: opCheckFile, Err: ce, Hint: checkFileHint}
			}
		}
		return err
	}
	err = db.CheckFile(ctx)
	if cerr := db.Close(); err == nil && cerr != nil {
		return &FileError{Path: path, Op: opCheckFile, Err: cerr}
	}
	return err
}

// hmacFailedRow is cipher_integrity_check's row for a failing page.
var hmacFailedRow = regexp.MustCompile(`^HMAC (?:verification|operation) failed for page (\d+)$`)

// cipherCheck runs PRAGMA cipher_integrity_check: the pages whose HMAC
// fails, and any other row it returns (a short read, a partial page).
func cipherCheck(ctx context.Context, conn *sql.Conn) (pages []uint32, other []string, err error) {
	rows, err := conn.QueryContext(ctx, "PRAGMA cipher_integrity_check")
	if err != nil {
		return nil, nil, err
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if err := rows.Scan(&s); err != nil {
			return nil, nil, err
		}
		s = strings.TrimSpace(s)
		if m := hmacFailedRow.FindStringSubmatch(s); m != nil {
			if p, err := strconv.ParseUint(m[1], 10, 32); err == nil {
				pages = append(pages, uint32(p))
				continue
			}
		}
		other = append(other, "cipher_integrity_check: "+s)
	}
	return pages, other, rows.Err()
}

// btreeCheck runs the full PRAGMA integrity_check and adds its findings to
// ce. SQLite returns several findings in one row, a line each; once a page
// cannot be read, the pager fails every later read of the statement
// ("unable to get the page. error code=1") and the pages below it look
// unused: those lines are counted, not listed.
func btreeCheck(ctx context.Context, conn *sql.Conn, ce *CorruptionError) error {
	rows, err := conn.QueryContext(ctx, "PRAGMA integrity_check")
	if err != nil {
		return checkQueryErr(ctx, err, ce, "integrity_check")
	}
	var lines []string
	for rows.Next() {
		var s string
		if err = rows.Scan(&s); err != nil {
			break
		}
		for _, l := range strings.Split(s, "\n") {
			l = strings.TrimSpace(l)
			if l == "" || l == "ok" || strings.HasPrefix(l, "*** in database ") {
				continue
			}
			lines = append(lines, l)
		}
	}
	if err == nil {
		err = rows.Err()
	}
	rows.Close()
	unreadable := ce.PagesTotal > 0 || slices.ContainsFunc(lines, func(l string) bool {
		return strings.Contains(l, "btreeInitPage() returns error") || strings.Contains(l, "unable to get the page")
	})
	for _, l := range lines {
		if unreadable && (strings.HasSuffix(l, "unable to get the page. error code=1") || strings.HasSuffix(l, " is never used")) {
			ce.Consequential++
			continue
		}
		ce.addProblem(l)
	}
	if err != nil {
		return checkQueryErr(ctx, err, ce, "integrity_check")
	}
	return nil
}

// checkQueryErr decides what a failing check query means: damage when SQLite
// says so or when damage was already found (the pager then fails later
// reads with a generic error), otherwise a failure to check.
func checkQueryErr(ctx context.Context, err error, ce *CorruptionError, what string) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	switch code := sqliteCode(err); {
	case code == sqlite3.ErrCorrupt || code == sqlite3.ErrNotADB:
		ce.addProblem(what + " stopped: " + err.Error())
		return nil
	case code != 0 && !ce.empty():
		ce.Consequential++
		return nil
	}
	return err
}

// damagedTables returns the tables (the schema table first) whose own
// integrity_check fails: the damage is in them or their indexes. It
// returns nil when the list of tables cannot be read.
func damagedTables(ctx context.Context, conn *sql.Conn) []string {
	rows, err := conn.QueryContext(ctx, `SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name`)
	if err != nil {
		return nil
	}
	names := []string{"sqlite_master"}
	for rows.Next() {
		var n string
		if rows.Scan(&n) != nil {
			rows.Close()
			return nil
		}
		names = append(names, n)
	}
	err = rows.Err()
	rows.Close()
	if err != nil {
		return nil
	}
	var bad []string
	for _, n := range names {
		if !tableChecksOK(ctx, conn, n) {
			bad = append(bad, n)
		}
	}
	return bad
}

// tableChecksOK runs integrity_check on one table and its indexes.
func tableChecksOK(ctx context.Context, conn *sql.Conn, table string) bool {
	rows, err := conn.QueryContext(ctx, `PRAGMA integrity_check('`+strings.ReplaceAll(table, `'`, `''`)+`')`)
	if err != nil {
		return false
	}
	defer rows.Close()
	for rows.Next() {
		var s string
		if rows.Scan(&s) != nil || s != "ok" {
			return false
		}
	}
	return rows.Err() == nil
}

// unopenable names the pages failing their HMAC in a file SQLite refused
// to open as corrupt, or returns nil when none fails (or it cannot tell).
func unopenable(path string, key Key, o *Options, openErr error) *CorruptionError {
	d := o.withDefaults(path)
	raw, err := rawKeyFor(key, d.SaltPath, d.Argon2, false)
	if err != nil {
		return nil
	}
	pages, err := hmacFailures(path, raw)
	if err != nil || len(pages) == 0 {
		return nil
	}
	ce := &CorruptionError{}
	ce.addPages(pages)
	why := openErr.Error()
	var fe *FileError
	if errors.As(openErr, &fe) {
		why = fe.Err.Error() // without the path and the hint
	}
	if i := strings.LastIndex(why, ErrCorrupt.Error()+": "); i >= 0 {
		why = why[i+len(ErrCorrupt.Error())+2:]
	}
	ce.addProblem("SQLite cannot open the file: " + why)
	return ce
}

// hmacFailures returns the pages of the file whose SQLCipher 4 HMAC fails
// under raw, as cipher_integrity_check computes it: HMAC-SHA512, keyed
// with PBKDF2-HMAC-SHA512 (2 iterations) of the key and the file's salt
// XOR 0x3a, over the page up to its HMAC (page 1 after its salt) and the
// page number, little-endian.
func hmacFailures(path string, raw []byte) ([]uint32, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	r := bufio.NewReaderSize(f, 16*PageSize)
	page := make([]byte, PageSize)
	if _, err := io.ReadFull(r, page); err != nil {
		return nil, err
	}
	salt := make([]byte, 16)
	for i := range salt {
		salt[i] = page[i] ^ saltMask
	}
	hkey, err := pbkdf2.Key(sha512.New, string(raw), salt, fastKDFIter, KeySize)
	if err != nil {
		return nil, err
	}
	m := hmac.New(sha512.New, hkey)
	var failed []uint32
	for pgno := uint32(1); ; pgno++ {
		if pgno > 1 {
			if _, err := io.ReadFull(r, page); err == io.EOF {
				return failed, nil
			} else if err != nil {
				return nil, err // a partial last page: Open refuses such a file first
			}
		}
		start, end := 0, PageSize-reserveHMAC
		if pgno == 1 {
			start = 16
		}
		m.Reset()
		m.Write(page[start:end])
		m.Write([]byte{byte(pgno), byte(pgno >> 8), byte(pgno >> 16), byte(pgno >> 24)})
		if !hmac.Equal(m.Sum(nil), page[end:]) {
			failed = append(failed, pgno)
		}
	}
}

// ordinalsBehind finds the groups whose highest message ordinal handed
// out (groups.last_ordinal, schema 12) is below the highest ordinal of
// their stored messages: damage no page check sees, which otherwise shows
// only when the group's next message is applied (ErrOrdinalBehind). It
// returns nil when there is none, or the file is older than schema 12,
// and an *OrdinalError naming the first by group id and counting the
// others. One seek of the messages' primary key per group.
func (db *DB) ordinalsBehind(ctx context.Context, conn *sql.Conn) (*OrdinalError, error) {
	if db.schema < 12 {
		return nil, nil
	}
	rows, err := conn.QueryContext(ctx, `SELECT group_id, last_ordinal, highest FROM (
		SELECT g.group_id, g.last_ordinal, (SELECT max(m.ordinal) FROM messages m WHERE m.group_id = g.group_id) AS highest FROM groups g)
		WHERE highest > last_ordinal ORDER BY group_id`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var oe *OrdinalError
	for rows.Next() {
		if oe != nil {
			oe.More++
			continue
		}
		oe = &OrdinalError{}
		if err := rows.Scan(&oe.Group, &oe.Last, &oe.Highest); err != nil {
			return nil, err
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return oe, nil
}
