package projections

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"sync/atomic"

	"github.com/epochlog/epochlog/internal/lookaside"
)

// ExportTo copies the read model into a new database file at path,
// encrypted under key, with SQLCipher's own sqlcipher_export() (page-level
// copy of schema and rows), then stamps the schema marker and version.
// It is the fast path for rekeying and for moving an unencrypted read
// model (opened with NoKey) to an encrypted one; replay is the general
// path. path must not exist or be empty. For a passphrase key, opts.SaltPath
// (default SaltPath(path)) is created.
func (db *DB) ExportTo(ctx context.Context, path string, key Key, opts *Options) error {
	fail := func(err error) error { return &FileError{Path: path, Op: "export", Err: err} }
	if !key.Valid() || key.IsPlaintext() {
		return fail(errors.New("export needs an encryption key"))
	}
	if st, err := os.Stat(path); err == nil && st.Size() > 0 {
		return fail(errors.New("destination exists"))
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fail(err)
	}
	o := opts.withDefaults(path)
	raw, err := rawKeyFor(key, o.SaltPath, o.Argon2, true)
	if err != nil {
		return fail(err)
	}
	if err := prepareFile(path); err != nil {
		return fail(err)
	}
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		return db.wrapErr("export", err)
	}
	// The connection is discarded afterwards: it had query_only lifted
	// (plaintext sources) and another database attached.
	defer conn.Close()
	defer conn.Raw(func(any) error { return driver.ErrBadConn })
	if db.plaintext {
		if _, err := conn.ExecContext(ctx, "PRAGMA query_only = 0"); err != nil {
			return fail(err)
		}
	}
	keyspec := "x'" + hex.EncodeToString(raw) + "'"
	if _, err := conn.ExecContext(ctx, `ATTACH DATABASE ? AS export KEY ?`, path, keyspec); err != nil {
		return fail(err)
	}
	steps := []string{
		"PRAGMA export.cipher_compatibility = 4",
		"SELECT sqlcipher_export('export')",
		fmt.Sprintf("PRAGMA export.user_version = %d", db.schema),
		fmt.Sprintf("PRAGMA export.application_id = %d", applicationID),
		"DETACH DATABASE export",
	}
	for _, s := range steps {
		if _, err := conn.ExecContext(ctx, s); err != nil {
			_, _ = conn.ExecContext(ctx, "DETACH DATABASE export")
			return fail(fmt.Errorf("%s: %w", s, err))
		}
	}
	if err := fsyncFile(path); err != nil {
		return fail(err)
	}
	return fixModes(path)
}

// SetMemorySecurity switches SQLCipher's cipher_memory_security, which
// locks and wipes every SQLCipher allocation so freed memory keeps no key
// or page material. It is process-wide (every SQLCipher database in the
// process) and ON in this build; turning it OFF (SQLCipher's own default
// since 4.5) makes writes several times faster at the cost of that
// hygiene. Call it before opening databases; the choice belongs to the
// application, so this package never changes it by itself.
func SetMemorySecurity(on bool) error {
	m, err := openMemory()
	if err != nil {
		return err
	}
	defer m.Close()
	v := "OFF"
	if on {
		v = "ON"
	}
	if _, err := m.Exec("PRAGMA cipher_memory_security = " + v); err != nil {
		return fmt.Errorf("projections: set cipher_memory_security: %w", err)
	}
	memSecurity.Store(memSecurityState(on))
	return nil
}

// memSecurity caches the setting for the projector (see reuseStmts):
// 0 not read yet, 1 on, 2 off.
var memSecurity atomic.Int32

func memSecurityState(on bool) int32 {
	if on {
		return 1
	}
	return 2
}

// reuseStmts reports whether the projector keeps its statements prepared
// across transactions, which saves re-preparing them for every batch (a
// fifth of a small transaction, as the engine's are). It does unless
// memory security is ON and the connections have SQLite's default
// lookaside (internal/lookaside could not configure it): statements kept
// prepared then hold most of that small pool, so every other SQLite
// allocation takes an mlock/munlock pair instead (measured: twice the
// system calls and twice the replay time). With the larger pool they
// cost nothing measurable. The setting is read once and tracked through
// SetMemorySecurity; a stale value costs speed, never correctness.
func reuseStmts() bool {
	if ok, _ := lookaside.Configured(); ok {
		return true
	}
	st := memSecurity.Load()
	if st == 0 {
		on, err := MemorySecurity()
		if err != nil {
			on = true // the build's default
		}
		st = memSecurityState(on)
		memSecurity.Store(st)
	}
	return st == 2
}

// MemorySecurity reports whether cipher_memory_security is on.
func MemorySecurity() (bool, error) {
	m, err := openMemory()
	if err != nil {
		return false, err
	}
	defer m.Close()
	var v string
	if err := m.QueryRow("PRAGMA cipher_memory_security").Scan(&v); err != nil {
		return false, fmt.Errorf("projections: read cipher_memory_security: %w", err)
	}
	return v == "1", nil
}

func openMemory() (*sql.DB, error) {
	m, err := sql.Open("sqlite3", ":memory:")
	if err != nil {
		return nil, err
	}
	m.SetMaxOpenConns(1)
	return m, nil
}
