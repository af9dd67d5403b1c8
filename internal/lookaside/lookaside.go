//go:build cgo

// Package lookaside gives every SQLCipher connection of the process a
// larger lookaside pool than SQLite's default, before SQLite starts.
//
// Lookaside is SQLite's per-connection pool for small, short-lived
// allocations (parsed statements, records, cursors). An allocation the
// pool cannot take goes to the process's allocator, and with SQLCipher's
// memory security on (cipher_memory_security, this build's default) each
// of those is locked with mlock, and zeroed and unlocked with munlock
// when freed: two system calls. SQLite's default pool (48 KB: 30 slots
// of 1,200 bytes and 93 of 128) runs out in the projector's
// transactions, which then spent most of their time in those calls;
// SlotSize × Slots is the smallest pool measured to stop that (applying
// events 2.2 to 2.6 times faster with memory security on, no change with
// it off: docs/read-model.md, "Statements"). The price is memory: each
// connection allocates its pool when it opens, Slots × SlotSize bytes
// instead of 48 KB.
//
// SQLite takes this setting only before it is initialised, so it is made
// when the package is initialised: package pagecipher, which initialises
// SQLite in its own init, imports this one to come after it. [Configured]
// reports whether it took effect.
package lookaside

/*
int epochlog_lookaside_configure(int slot_size, int slots);
*/
import "C"

import (
	"fmt"

	// The SQLite this package configures; its C symbols are linked with it.
	_ "github.com/mutecomm/go-sqlcipher/v4"
)

// The pool of every connection: Slots slots of SlotSize bytes (SQLite
// splits it into slots of this size and of 128 bytes).
const (
	SlotSize = 1200
	Slots    = 200
)

var status = configure()

func configure() string {
	if rc := C.epochlog_lookaside_configure(SlotSize, Slots); rc != 0 {
		return fmt.Sprintf("SQLite's default (sqlite3_config refused with error %d: SQLite was initialised before this package)", int(rc))
	}
	return ""
}

// Configured reports whether connections get the pool of SlotSize ×
// Slots bytes, and if not, why.
func Configured() (bool, string) {
	if status == "" {
		return true, fmt.Sprintf("%d slots of %d bytes", Slots, SlotSize)
	}
	return false, status
}
