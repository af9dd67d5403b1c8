package projections

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/pbkdf2"
	"crypto/sha512"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	sqlite3 "github.com/mutecomm/go-sqlcipher/v4"

	"github.com/epochlog/epochlog/internal/diskspace"
)

// PageSize is the SQLCipher 4 page size (cipher_compatibility = 4).
const PageSize = 4096

// applicationID marks an epochlog read model in the SQLite header
// (PRAGMA application_id): "EPLG".
const applicationID = 0x45504C47

// outputsNotKeptMeta names the epochlog_meta row a file older than
// schema 9 gets at the first own commit output it applied without
// keeping (applier.outputNotKept).
const outputsNotKeptMeta = "outputs_not_kept"

// messageOutputsNotKeptMeta names the epochlog_meta row a file older
// than schema 10 gets at the first own message output it applied
// without keeping (applier.notKept).
const messageOutputsNotKeptMeta = "message_outputs_not_kept"

// generationsNotKeptMeta names the epochlog_meta row a file older than
// schema 11 gets at the first received message whose generation it
// applied without keeping (applier.notKept).
const generationsNotKeptMeta = "generations_not_kept"

// formatMarker is the value of the "format" row of epochlog_meta.
const formatMarker = "epochlog.readmodel"

// DefaultBatchSize is how many events Apply puts in one transaction by
// default, and a replay (package replay) too. A transaction writes each
// page it changed once, at its commit: a larger batch writes the pages
// every event touches (the tables' and indexes' last pages, a group's
// row, the checkpoint) less often, and the state a batch keeps of its
// groups is flushed less often. On the rebuild benchmark (5,189 events,
// MLS-sized rows) 2,048 wrote 515 pages where 512 wrote 754, and replayed
// in 37 ms instead of 44 (docs/benchmarks.md, "Read model"); beyond it
// the gain is small. A batch's dirty pages stay in the page cache until it
// commits (a few hundred for 2,048 such events).
const DefaultBatchSize = 2048

// DefaultMigrationWait is how long a migration step waits by default for
// another writer, such as another process migrating the same file. Steps
// take time in proportion to what they copy: schema 7 took about 7 s on a
// read model of 211 MB, a rate at which ten minutes cover about 18 GB.
const DefaultMigrationWait = 10 * time.Minute

// Options configure Open. The zero value (or nil) means defaults.
type Options struct {
	// SchemaVersion is the schema a new database is created at and an
	// older one is migrated to in place. 0 means LatestSchema.
	SchemaVersion int
	// BusyTimeout bounds how long a connection waits for a lock. Default 5s.
	BusyTimeout time.Duration
	// MigrationWait bounds how long a migration step (Open of an older
	// file, MigrateInPlace) waits for another connection's write to end
	// before it starts: when several processes open one older file at
	// once (a rolling upgrade), the first migrates and the others wait
	// here, then find the step done. Past it the step fails with
	// ErrMigrationWait and writes nothing. Default DefaultMigrationWait.
	MigrationWait time.Duration
	// BatchSize is how many events Apply puts in one transaction. Default
	// DefaultBatchSize.
	BatchSize int
	// SaltPath is the salt sidecar used for passphrase keys. Default
	// SaltPath(path). A rebuild beside a live database points it at the
	// live database's sidecar, so the swapped-in file opens with it.
	SaltPath string
	// Argon2 are the parameters written into a new salt sidecar. Default
	// DefaultArgon2. Existing sidecars keep their own parameters.
	Argon2 Argon2Params
	// CheckIntegrity runs PRAGMA cipher_integrity_check and
	// PRAGMA quick_check at Open (reads the whole file).
	CheckIntegrity bool
	// NoMigrate opens an existing database at the schema version it has:
	// an older one is not migrated to SchemaVersion, and a newer one is
	// refused only when it is newer than LatestSchema (ErrSchemaTooNew).
	// SchemaVersion then only sets the schema of a database Open creates.
	// OpenExisting sets it, and refuses to create a database.
	NoMigrate bool
	// MigrateWithoutOutputs lets Open migrate in place a file that
	// applied own commit or message outputs it could not keep (below
	// schema 9, 10 or 11; DB.OutputsKept): the migrated file lacks what a
	// fresh build of the same events has, for good. Without it Open
	// refuses such a file with a *FileError wrapping ErrOutputsNotKept
	// and writes nothing; migrate it by replay instead (package replay;
	// engine.OpenInstallation does). Only for a copy whose loss the
	// caller accounts for: replay's migration of an old snapshot once
	// the history it covers was compacted away.
	MigrateWithoutOutputs bool

	// createByMigrations makes a new database at the latest schema by
	// schemaV1 and every migration, as before schemaLatest (tests).
	createByMigrations bool
}

func (o *Options) withDefaults(path string) Options {
	var r Options
	if o != nil {
		r = *o
	}
	if r.SchemaVersion == 0 {
		r.SchemaVersion = LatestSchema
	}
	if r.BusyTimeout <= 0 {
		r.BusyTimeout = 5 * time.Second
	}
	if r.MigrationWait <= 0 {
		r.MigrationWait = DefaultMigrationWait
	}
	if r.BatchSize <= 0 {
		r.BatchSize = DefaultBatchSize
	}
	if r.SaltPath == "" {
		r.SaltPath = SaltPath(path)
	}
	if r.Argon2 == (Argon2Params{}) {
		r.Argon2 = DefaultArgon2
	}
	return r
}

// DB is one installation's read model. It is safe for concurrent use:
// Apply calls are serialized on one writer connection, queries run on a
// pool of readers (WAL lets them proceed while the projector writes).
type DB struct {
	path      string
	opts      Options
	plaintext bool
	// readOnly: the file is opened immutable, as a copy that cannot
	// change (readOnlyCopy); every write fails.
	readOnly bool
	// file is the file opened, as stat saw it (Replaced).
	file    os.FileInfo
	sql     *sql.DB // readers: deferred transactions, pooled
	w       *sql.DB // the writer: one connection, BEGIN IMMEDIATE
	schema  int
	applyMu sync.Mutex // one Apply at a time
	// stmts are the projector's statements, prepared once on the writer
	// and reused by every batch (guarded by applyMu): re-preparing about
	// twenty statements per transaction cost a tenth of a replay.
	stmts map[string]*sql.Stmt
	// starts holds, per group, the SHA-256 of the state its current epoch
	// started with, as the committed batches left it, where a commit
	// recorded it (guarded by applyMu): a commit whose delta the writer
	// made in this process from a base of that digest is taken as its
	// writer knows it, without reading the base back (epochStartOK).
	starts    map[string]epochStart
	ckpt      checkpointer // background WAL checkpoints (walcheckpoint.go)
	closeOnce sync.Once
}

// epochStart is a group's current epoch and the digest of the state it
// started with.
type epochStart struct {
	epoch uint64
	sum   [32]byte
	known bool // false: not known; the entry is dropped when published
}

// Path returns the database file.
func (db *DB) Path() string { return db.path }

// Replaced reports whether the file at the read model's path is no longer
// the one this DB opened: a rebuild, rekey or migrate swapped another in
// (or it was removed), so that what this DB writes goes to a file nobody
// will open again. A writer that takes the read model's lock after
// opening it (replay.Project) checks it once it holds the lock.
func (db *DB) Replaced() (bool, error) {
	st, err := os.Stat(db.path)
	if errors.Is(err, fs.ErrNotExist) {
		return true, nil
	}
	if err != nil {
		return false, &FileError{Path: db.path, Op: "stat", Err: err}
	}
	return !os.SameFile(db.file, st), nil
}

// ReadOnly reports whether the file was opened for reading only: as it
// is (OpenExisting), in a directory this process cannot write, with no
// -wal beside it. Every write to it fails.
func (db *DB) ReadOnly() bool { return db.readOnly }

// SchemaVersion returns the schema version of the open database.
func (db *DB) SchemaVersion() int { return db.schema }

// Close checkpoints the WAL and closes every connection.
func (db *DB) Close() error {
	var err error
	db.closeOnce.Do(func() {
		db.stopCheckpoints()
		err = db.sql.Close()
		db.applyMu.Lock()
		for _, s := range db.stmts {
			s.Close()
		}
		db.stmts = nil
		db.applyMu.Unlock()
		if !db.plaintext && !db.readOnly {
			ckErr := db.closeCheckpoint()
			db.ckpt.mu.Lock()
			applied := db.ckpt.applied
			db.ckpt.mu.Unlock()
			if db.opts.NoMigrate && !applied {
				// Opened as it is and not written here (a reader, a
				// verify): the -wal another writer left is not this
				// handle's to fail on.
				ckErr = nil
			}
			err = errors.Join(err, ckErr)
		}
		err = errors.Join(err, db.w.Close())
		if err == nil && !db.plaintext && !db.readOnly {
			err = fixModes(db.path)
		}
	})
	return err
}

// closeCheckpoint checkpoints the WAL into the file before the writer
// closes. A reader still open elsewhere (SQLITE_BUSY) only leaves the
// WAL for later; any other failure is reported (Close drops it for a
// file opened as it is, NoMigrate, that nothing was applied to). Without
// room for the pages in the file (SQLITE_FULL) the last connection's own
// checkpoint fails as well, silently, and the -wal stays beside the
// file: a rebuilt file then cannot be swapped in, and the caller must
// know why.
func (db *DB) closeCheckpoint() error {
	_, err := db.w.Exec("PRAGMA wal_checkpoint(TRUNCATE)")
	if code := sqliteCode(err); err == nil || code == sqlite3.ErrBusy || code == sqlite3.ErrLocked {
		return nil
	}
	return &FileError{Path: db.path, Op: "close", Err: fmt.Errorf("checkpoint of the write-ahead log into the file: %w", err),
		Hint: fmt.Sprintf("what was committed stays in %s-wal, which the next open applies; make room in %s", filepath.Base(db.path), filepath.Dir(db.path))}
}

// Open opens (or creates) the read model at path with key. Every pooled
// connection is keyed and hardened the same way (see docs/read-model.md).
// Failures wrap ErrWrongKey, ErrCorrupt, ErrNotOurs or ErrSchemaTooNew in a
// *FileError naming the file.
func Open(path string, key Key, opts *Options) (*DB, error) {
	o := opts.withDefaults(path)
	fail := func(err error, hint string) (*DB, error) {
		return nil, &FileError{Path: path, Op: "open", Err: err, Hint: hint}
	}
	if !key.Valid() {
		return fail(errors.New("no key given (use RawKey, PassphraseKey or NoKey)"), "")
	}
	if strings.ContainsAny(path, "?#") || path == "" || strings.HasPrefix(path, "file:") {
		return fail(errors.New("unsupported database path"), "use a plain file path without '?' or '#'")
	}
	if o.SchemaVersion < 1 || o.SchemaVersion > LatestSchema {
		return fail(fmt.Errorf("%w: schema version %d requested, this code knows 1..%d", ErrSchemaTooNew, o.SchemaVersion, LatestSchema), "")
	}
	st, err := os.Stat(path)
	exists := err == nil
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err, "")
	}
	if exists && !st.Mode().IsRegular() {
		return fail(fmt.Errorf("%w: not a regular file", ErrNotOurs), "")
	}
	if key.IsPlaintext() {
		if !exists {
			return fail(errors.New("NoKey opens an existing unencrypted database only"), "unencrypted databases are never created")
		}
	}
	if exists && st.Size() > 0 {
		if err := checkHeader(path, st.Size(), key.IsPlaintext()); err != nil {
			return fail(err, hintFor(err))
		}
	} else if !key.IsPlaintext() {
		if err := prepareFile(path); err != nil {
			return fail(err, "")
		}
	}
	var raw []byte
	if !key.IsPlaintext() {
		raw, err = rawKeyFor(key, o.SaltPath, o.Argon2, !exists || st.Size() == 0)
		if err != nil {
			if errors.Is(err, fs.ErrNotExist) {
				return fail(fmt.Errorf("%w: salt sidecar %s is missing", ErrWrongKey, o.SaltPath), "a passphrase key needs the salt file the database was created with")
			}
			return fail(err, "")
		}
	}
	readOnly := exists && !key.IsPlaintext() && readOnlyCopy(path, o)
	wdb := sql.OpenDB(newConnector(path, raw, o, true, readOnly))
	wdb.SetMaxOpenConns(1)
	sdb := sql.OpenDB(newConnector(path, raw, o, false, readOnly))
	db := &DB{path: path, opts: o, plaintext: key.IsPlaintext(), readOnly: readOnly, sql: sdb, w: wdb, file: st}
	if err := db.init(context.Background(), raw); err != nil {
		wdb.Close()
		sdb.Close()
		var fe *FileError
		if errors.As(err, &fe) {
			return nil, err
		}
		return fail(err, hintFor(err))
	}
	if db.file == nil {
		if db.file, err = os.Stat(path); err != nil {
			wdb.Close()
			sdb.Close()
			return fail(err, "")
		}
	}
	if !db.plaintext && !readOnly {
		if err := fixModes(path); err != nil {
			wdb.Close()
			sdb.Close()
			return fail(err, "")
		}
	}
	return db, nil
}

// OpenExisting opens the existing read model at path as it is: at the
// schema version the file has, never migrating it (Open upgrades an older
// schema in place), so that a schema change stays an explicit
// MigrateInPlace or rebuild. Tools that only read, verify or follow a
// database use it. It is Open with opts.NoMigrate set, except that a
// missing or empty file is refused, with a *FileError wrapping
// fs.ErrNotExist, instead of created; Open's other failures are the same.
func OpenExisting(path string, key Key, opts *Options) (*DB, error) {
	if err := mustExist(path, "open"); err != nil {
		return nil, err
	}
	var o Options
	if opts != nil {
		o = *opts
	}
	o.NoMigrate = true
	return Open(path, key, &o)
}

// MustExist returns nil when path holds a read model to open, and a
// *FileError wrapping fs.ErrNotExist for a missing or empty file: for
// callers that open through something that would create one (an engine
// Installation) but must not.
func MustExist(path string) error { return mustExist(path, "open") }

// mustExist refuses a missing or empty database file, where there is no
// read model to open as it is, with a *FileError wrapping fs.ErrNotExist;
// anything but a regular file (a named pipe, a device: size 0 too) with
// ErrNotOurs, as Open does.
func mustExist(path, op string) error {
	st, err := os.Stat(path)
	switch {
	case err != nil:
		return &FileError{Path: path, Op: op, Err: err}
	case !st.Mode().IsRegular():
		return &FileError{Path: path, Op: op, Err: fmt.Errorf("%w: not a regular file", ErrNotOurs)}
	case st.Size() == 0:
		return &FileError{Path: path, Op: op, Err: fmt.Errorf("%w: empty file", fs.ErrNotExist)}
	}
	return nil
}

func hintFor(err error) string {
	switch {
	case errors.Is(err, ErrWrongKey):
		return "check the key (and for a passphrase, its salt sidecar)"
	case errors.Is(err, ErrCorrupt):
		return "keep the file; replayer rebuild replaces it from the stream and keeps the damaged file beside it (<name>.damaged-*)"
	case errors.Is(err, ErrSchemaTooNew):
		return "use a newer epochlog, or rebuild at this version from the stream"
	case errors.Is(err, ErrNotOurs):
		return "point at an epochlog read model"
	case errors.Is(err, ErrOutputsNotKept):
		return "migrate it by replay (replayer migrate without --in-place; engine.OpenInstallation does so itself), which keeps them"
	}
	return ""
}

// prepareFile creates the directory (0700) and an empty database file
// (0600) before SQLite does, so the modes never depend on the umask.
func prepareFile(path string) error {
	dir := filepath.Dir(path)
	if _, err := os.Stat(dir); errors.Is(err, fs.ErrNotExist) {
		if err := os.MkdirAll(dir, 0o700); err != nil {
			return err
		}
		if err := os.Chmod(dir, 0o700); err != nil {
			return err
		}
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// fixModes sets 0600 on the database and every sidecar that exists. SQLite
// creates -wal/-shm with the database's mode; this is belt and braces for
// files created by other tools.
func fixModes(path string) error {
	for _, p := range []string{path, path + "-wal", path + "-shm", path + "-journal"} {
		if err := os.Chmod(p, 0o600); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return err
		}
	}
	return nil
}

var sqliteHeader = []byte("SQLite format 3\x00")

// checkHeader classifies a non-empty file before SQLite touches it.
func checkHeader(path string, size int64, plaintext bool) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	hdr := make([]byte, 16)
	if _, err := io.ReadFull(f, hdr); err != nil {
		return fmt.Errorf("%w: shorter than a database header", ErrNotOurs)
	}
	isPlain := bytes.Equal(hdr, sqliteHeader)
	switch {
	case plaintext && !isPlain:
		return fmt.Errorf("%w: the file is encrypted but no key was given", ErrWrongKey)
	case !plaintext && isPlain:
		return fmt.Errorf("%w: unencrypted SQLite file", ErrNotOurs)
	case !plaintext && size%PageSize != 0:
		return fmt.Errorf("%w: size %d is not a multiple of the %d-byte SQLCipher 4 page", ErrNotOurs, size, PageSize)
	}
	return nil
}

// connector opens keyed, hardened connections. The key goes into the DSN
// (the driver runs PRAGMA key before anything else, which SQLCipher
// requires); the DSN exists only here and is never printed.
type connector struct {
	dsn string
	drv *sqlite3.SQLiteDriver
}

// newConnector connects to the read model at path; writer marks the one
// writing connection (its transactions take the write lock at BEGIN, and
// it keeps a larger page cache: harden).
func newConnector(path string, raw []byte, o Options, writer, readOnly bool) *connector {
	txlock := "deferred"
	if writer {
		txlock = "immediate"
	}
	q := url.Values{}
	q.Set("_busy_timeout", fmt.Sprint(o.BusyTimeout.Milliseconds()))
	q.Set("_foreign_keys", "1")
	q.Set("_txlock", txlock)
	encrypted := raw != nil
	if encrypted {
		// The driver runs `PRAGMA key = "<value>";` through sqlite3_exec,
		// which executes every statement in the string: this puts
		// cipher_compatibility = 4 right after the key, before anything
		// reads the file (setting it later fails in SQLCipher). The value
		// is hex we produce, so nothing user-supplied reaches this SQL.
		q.Set("_pragma_key", "x'"+hex.EncodeToString(raw)+"'\"; PRAGMA cipher_compatibility = 4; --")
		q.Set("_pragma_cipher_page_size", fmt.Sprint(PageSize))
		if readOnly {
			q.Set("mode", "ro")
			q.Set("immutable", "1")
		} else {
			q.Set("_journal_mode", "WAL")
			q.Set("_sync", "NORMAL")
		}
	} else {
		q.Set("_query_only", "1")
	}
	name := path
	if readOnly {
		// SQLite reads mode and immutable from a URI filename only.
		name = "file:" + (&url.URL{Path: path}).EscapedPath()
	}
	return &connector{
		dsn: name + "?" + q.Encode(),
		drv: &sqlite3.SQLiteDriver{ConnectHook: func(c *sqlite3.SQLiteConn) error { return harden(c, encrypted, writer, readOnly) }},
	}
}

func (c *connector) Connect(context.Context) (driver.Conn, error) {
	conn, err := c.drv.Open(c.dsn)
	if err != nil {
		// SQLite's own errors carry its message, never the DSN; anything
		// else (DSN parsing) is replaced so the key cannot leak through it.
		var se sqlite3.Error
		if errors.As(err, &se) {
			return nil, se
		}
		return nil, errors.New("sqlcipher: open failed")
	}
	return conn, nil
}

func (c *connector) Driver() driver.Driver { return c.drv }

// writerCacheKiB is the page cache of a read model's writing connection
// (SQLite's default is 2,000 KiB, about 480 pages). A commit rewrites a
// group's state in place, comparing each of its pages with the new bytes;
// a state larger than the cache (1.7 MB at 10,000 members, next to the
// commit's own 800 KiB) was read back from the file, every page decrypted
// and authenticated, at every commit: a quarter of a processed commit's
// time at 10,000 members. SQLite allocates the cache as pages are used,
// so a read model of small groups holds no more than before.
const writerCacheKiB = 8 << 10

// harden runs on every new connection, after the driver has set the key,
// the page size, the busy timeout, foreign keys and the journal mode.
// writer marks the read model's one writing connection.
func harden(c *sqlite3.SQLiteConn, encrypted, writer, readOnly bool) error {
	exec := func(q string) error {
		_, err := c.Exec(q, nil)
		return err
	}
	qs := []string{
		"PRAGMA temp_store = MEMORY",
		"PRAGMA foreign_keys = ON",
		"PRAGMA trusted_schema = OFF",
		// Deleted secrets (retention, past epochs, consumed key packages)
		// are overwritten in the file. SQLCipher builds default to it;
		// forward secrecy must not rest on a build default.
		"PRAGMA secure_delete = ON",
	}
	if encrypted {
		// The read model checkpoints in the background (walcheckpoint.go);
		// a writing connection does past this many WAL pages only.
		qs = append(qs, fmt.Sprintf("PRAGMA wal_autocheckpoint = %d", walSafetyPages))
	}
	if writer {
		qs = append(qs, fmt.Sprintf("PRAGMA cache_size = -%d", writerCacheKiB))
	}
	for _, q := range qs {
		if err := exec(q); err != nil {
			return err
		}
	}
	return checkSettings(c, encrypted, readOnly)
}

// checkSettings confirms a connection runs with the settings the file
// format and the hardening promise; a connection that does not is refused.
// A file opened immutable (readOnly) reports journal_mode "delete": it
// reads no WAL, and readOnlyCopy opens it so only when it has none.
func checkSettings(c *sqlite3.SQLiteConn, encrypted, readOnly bool) error {
	want := [][2]string{{"temp_store", "2"}, {"foreign_keys", "1"}, {"secure_delete", "1"}}
	if encrypted {
		want = append(want,
			[2]string{"cipher_page_size", "4096"},
			[2]string{"cipher_hmac_algorithm", "HMAC_SHA512"},
			[2]string{"cipher_kdf_algorithm", "PBKDF2_HMAC_SHA512"},
			[2]string{"kdf_iter", "256000"},
		)
		if !readOnly {
			want = append(want, [2]string{"journal_mode", "wal"})
		}
	}
	for _, w := range want {
		rows, err := c.Query("PRAGMA "+w[0], nil)
		if err != nil {
			return err
		}
		dest := make([]driver.Value, len(rows.Columns()))
		err = rows.Next(dest)
		rows.Close()
		if err != nil {
			return fmt.Errorf("read PRAGMA %s: %w", w[0], err)
		}
		if got := fmt.Sprint(asString(dest[0])); !strings.EqualFold(got, w[1]) {
			return fmt.Errorf("connection hardening failed: PRAGMA %s = %s, want %s", w[0], got, w[1])
		}
	}
	return nil
}

func asString(v driver.Value) string {
	if b, ok := v.([]byte); ok {
		return string(b)
	}
	return fmt.Sprint(v)
}

// sqliteCode returns the primary SQLite result code inside err, or 0.
func sqliteCode(err error) sqlite3.ErrNo {
	if err == nil {
		return 0 // the common case, without errors.As's allocation
	}
	var se sqlite3.Error
	if errors.As(err, &se) {
		return se.Code
	}
	return 0
}

// classify maps SQLite failures to the sentinels. raw is the key (nil for
// plaintext); it is used to tell a wrong key from a damaged file by
// checking page HMACs the way SQLCipher 4 computes them.
func (db *DB) classify(err error, raw []byte) error {
	switch sqliteCode(err) {
	case sqlite3.ErrNotADB:
		if raw == nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, err)
		}
		ok, cerr := anyPageAuthenticates(db.path, raw)
		if cerr != nil {
			return fmt.Errorf("%w: %v", ErrCorrupt, cerr)
		}
		if ok {
			return fmt.Errorf("%w: pages fail authentication", ErrCorrupt)
		}
		return ErrWrongKey
	case sqlite3.ErrCorrupt:
		return fmt.Errorf("%w: %v", ErrCorrupt, err)
	case sqlite3.ErrCantOpen:
		// Out of descriptors, SQLite may report the errno of a later
		// step ("no such file or directory") rather than EMFILE: say
		// what ran out.
		if fdErr := descriptorsExhausted(); fdErr != nil {
			return fmt.Errorf("%w (%w)", err, fdErr)
		}
		// Out of inodes or space, creating the -wal or -shm fails with
		// ENOSPC, reported the same way.
		if fullErr := diskspace.Exhausted(filepath.Dir(db.path), 0); fullErr != nil {
			return fmt.Errorf("%w (%w)", err, fullErr)
		}
		// The file is there but its directory cannot be written: SQLite
		// said only "no such file or directory", of the -wal or -shm it
		// could not create.
		if _, serr := os.Stat(db.path); serr == nil {
			if dir := filepath.Dir(db.path); !dirWritable(dir) {
				base := filepath.Base(db.path)
				return fmt.Errorf("%v: directory %s cannot be written, and a read model (in WAL mode) needs %s-wal and %s-shm created beside it, to read it too: copy it to a writable directory", err, dir, base, base)
			}
		}
	}
	return err
}

// readOnlyCopy reports whether the existing read model at path is to be
// opened immutable, for reading only: it is opened as it is (NoMigrate),
// its directory cannot be written by this process (a backup on a
// read-only mount, an immutable directory), and no -wal is beside it. In
// WAL mode SQLite creates -wal and -shm to open a file at all, even to
// read. A file without a -wal is open nowhere (the last connection to
// close removes it; one killed leaves it) and, its directory unwritable,
// cannot be opened for writing, so nothing changes it while it is read.
//
// The checks are of the file itself: through a symbolic link, of its real
// directory and -wal; a file with more than one name (a hard link) is
// never opened so, since its -wal would be beside whichever name its
// writer used.
func readOnlyCopy(path string, o Options) bool {
	if !o.NoMigrate {
		return false
	}
	real, err := filepath.EvalSymlinks(path)
	if err != nil {
		return false
	}
	st, err := os.Stat(real)
	if err != nil || fileLinks(st) != 1 || dirWritable(filepath.Dir(real)) {
		return false
	}
	_, err = os.Lstat(real + "-wal")
	return errors.Is(err, fs.ErrNotExist)
}

// wrapErr turns a runtime SQLite error into a FileError with a sentinel
// where one applies.
func (db *DB) wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	switch sqliteCode(err) {
	case sqlite3.ErrNotADB, sqlite3.ErrCorrupt:
		return &FileError{Path: db.path, Op: op, Err: fmt.Errorf("%w: %v", ErrCorrupt, err), Hint: hintFor(ErrCorrupt)}
	case sqlite3.ErrReadonly:
		if db.readOnly {
			return &FileError{Path: db.path, Op: op, Err: err,
				Hint: "opened for reading only, its directory cannot be written; copy it to a writable directory to write to it"}
		}
	}
	return &FileError{Path: db.path, Op: op, Err: err}
}

// SQLCipher 4 page layout with HMAC-SHA512: each page ends with a reserve
// of IV (16) + HMAC (64) bytes; page 1 starts with the 16-byte salt.
const (
	reserveIV   = 16
	reserveHMAC = 64
	saltMask    = 0x3a
	fastKDFIter = 2
)

// anyPageAuthenticates reports whether any page of the file (up to a few
// hundred) carries a valid SQLCipher 4 HMAC under raw. A wrong key fails
// on every page; a damaged file still has authentic pages.
func anyPageAuthenticates(path string, raw []byte) (bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return false, err
	}
	defer f.Close()
	page := make([]byte, PageSize)
	if _, err := io.ReadFull(f, page); err != nil {
		return false, err
	}
	salt := make([]byte, 16)
	copy(salt, page[:16])
	for i := range salt {
		salt[i] ^= saltMask
	}
	hkey, err := pbkdf2.Key(sha512.New, string(raw), salt, fastKDFIter, KeySize)
	if err != nil {
		return false, err
	}
	check := func(pgno uint32, p []byte) bool {
		start := 0
		if pgno == 1 {
			start = 16
		}
		end := PageSize - reserveHMAC
		m := hmac.New(sha512.New, hkey)
		m.Write(p[start:end])
		m.Write([]byte{byte(pgno), byte(pgno >> 8), byte(pgno >> 16), byte(pgno >> 24)})
		return hmac.Equal(m.Sum(nil), p[end:])
	}
	if check(1, page) {
		return true, nil
	}
	for pgno := uint32(2); pgno <= 512; pgno++ {
		if _, err := io.ReadFull(f, page); err != nil {
			break
		}
		if check(pgno, page) {
			return true, nil
		}
	}
	return false, nil
}
