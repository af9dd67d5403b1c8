package lookaside

import (
	"fmt"
	"strconv"
)

// The pool of every connection: DefaultSlots slots of SlotSize bytes
// (SQLite splits it into slots of this size and of 128 bytes), unless
// $EPOCHLOG_SQLITE_LOOKASIDE says otherwise when the process starts: a
// number of slots (1 to MaxSlots), or "off" for SQLite's default. Fewer
// slots take less memory per connection and, with memory security on,
// more system calls.
const (
	SlotSize     = 1200
	DefaultSlots = 200
	MaxSlots     = 10000
	EnvSlots     = "EPOCHLOG_SQLITE_LOOKASIDE"
)

// ParseSlots reads a value of $EPOCHLOG_SQLITE_LOOKASIDE: "" is
// DefaultSlots, "off" is 0 (SQLite's default). A tool checks it with this
// to refuse a bad value, which the package itself can only report
// (Configured).
func ParseSlots(v string) (int, error) {
	switch v {
	case "":
		return DefaultSlots, nil
	case "off":
		return 0, nil
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 || n > MaxSlots {
		return 0, fmt.Errorf("%s=%q is not a number of slots from 1 to %d, or off", EnvSlots, v, MaxSlots)
	}
	return n, nil
}
