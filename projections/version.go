package projections

import (
	"fmt"

	"github.com/epochlog/epochlog/internal/lookaside"
	"github.com/epochlog/epochlog/internal/pagecipher"
)

// Versions reports the SQLCipher and SQLite versions linked into this
// build (for a tool's version output and bug reports).
func Versions() (sqlcipher, sqlite string, err error) {
	m, err := openMemory()
	if err != nil {
		return "", "", fmt.Errorf("projections: versions: %w", err)
	}
	defer m.Close()
	if err := m.QueryRow(`PRAGMA cipher_version`).Scan(&sqlcipher); err != nil {
		return "", "", fmt.Errorf("projections: cipher_version: %w", err)
	}
	if err := m.QueryRow(`SELECT sqlite_version()`).Scan(&sqlite); err != nil {
		return "", "", fmt.Errorf("projections: sqlite_version: %w", err)
	}
	return sqlcipher, sqlite, nil
}

// PageCipher says what encrypts the read models' pages in this process:
// the CPU's AES instructions (package internal/pagecipher) or
// libtomcrypt's portable AES, and why.
func PageCipher() string {
	_, what := pagecipher.Active()
	return what
}

// Lookaside says how much lookaside memory each SQLite connection of this
// process gets (package internal/lookaside: more than SQLite's default,
// so that memory security's locked allocations stay rare), or why it
// gets SQLite's default.
func Lookaside() string {
	_, what := lookaside.Configured()
	return what
}
