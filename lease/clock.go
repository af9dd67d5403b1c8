package lease

import "time"

// instant is a reading of the clock a holder measures its leases on
// (leaseClock): nanoseconds from an origin fixed for the process. Lease
// validity is kept in instants, apart from time.Time, whose monotonic
// reading stops while the system is suspended.
type instant int64

// add returns i moved by d.
func (i instant) add(d time.Duration) instant { return i + instant(d) }

// sub returns the time from j to i.
func (i instant) sub(j instant) time.Duration { return time.Duration(i - j) }
