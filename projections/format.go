package projections

import (
	"fmt"
	"io"
)

// String describes the DB by its file and schema version. Its key is in
// the SQLite driver's connection string (as hex), beyond fmt's reach from
// here but not to be left to the driver's layout.
func (db *DB) String() string {
	return fmt.Sprintf("projections.DB(%s, schema %d)", db.path, db.schema)
}

// GoString is String.
func (db *DB) GoString() string { return db.String() }

// Format prints String under every verb.
func (db *DB) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, db.String()) }
