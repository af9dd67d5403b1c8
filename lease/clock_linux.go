package lease

import (
	"math"

	"golang.org/x/sys/unix"
)

// leaseClock reads CLOCK_BOOTTIME, which, unlike CLOCK_MONOTONIC (Go's
// monotonic clock), goes on counting while the system is suspended: the
// server's TTL runs on during a suspend, so a holder suspended past its
// lease's validity must find it over when it resumes. Should the clock
// ever fail to read, the reading is the latest there is, so every lease
// counts as expired: a holder that cannot measure its lease stops writing.
func leaseClock() instant {
	var ts unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
		return math.MaxInt64
	}
	return instant(ts.Nano())
}
