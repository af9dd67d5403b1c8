//go:build !linux

package lease

import "time"

// clockStart is the origin of leaseClock's readings.
var clockStart = time.Now()

// leaseClock reads Go's monotonic clock, the only one the standard
// library offers everywhere. Where it stops while the system sleeps, a
// holder suspended past its lease's validity counts the lease valid after
// resuming until its next renewal fails (package doc, Caveats).
func leaseClock() instant { return instant(time.Since(clockStart)) }
