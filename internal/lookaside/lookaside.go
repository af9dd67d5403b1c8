//go:build cgo

package lookaside

/*
int epochlog_lookaside_configure(int slot_size, int slots);
*/
import "C"

import (
	"fmt"
	"os"

	// The SQLite this package configures; its C symbols are linked with it.
	_ "github.com/mutecomm/go-sqlcipher/v4"
)

// status is "" when connections get the pool, else why they get SQLite's
// default; configured describes the pool (read on hot paths: made once).
var (
	configured string
	status     = configure(os.Getenv(EnvSlots))
)

// configure applies the setting env asks for and returns "" or why the
// connections keep SQLite's default.
func configure(env string) string {
	slots, err := ParseSlots(env)
	if err != nil {
		return "SQLite's default (" + err.Error() + ")"
	}
	if slots == 0 {
		return "SQLite's default (" + EnvSlots + "=off)"
	}
	if rc := C.epochlog_lookaside_configure(SlotSize, C.int(slots)); rc != 0 {
		return fmt.Sprintf("SQLite's default (sqlite3_config refused with error %d: SQLite was initialised before this package)", int(rc))
	}
	configured = fmt.Sprintf("%d slots of %d bytes", slots, SlotSize)
	return ""
}

// Configured reports whether connections get the pool of SlotSize-byte
// slots this package sets, and how many, or why they get SQLite's default.
func Configured() (bool, string) {
	if status == "" {
		return true, configured
	}
	return false, status
}
