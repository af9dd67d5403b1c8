package lease

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The lease clock reads CLOCK_BOOTTIME (which counts a suspend; Go's
// monotonic clock, CLOCK_MONOTONIC, does not): a reading falls between
// two readings of CLOCK_BOOTTIME taken around it, and moves on with time.
func TestLeaseClockIsBootTime(t *testing.T) {
	boot := func() instant {
		var ts unix.Timespec
		if err := unix.ClockGettime(unix.CLOCK_BOOTTIME, &ts); err != nil {
			t.Fatal(err)
		}
		return instant(ts.Nano())
	}
	before := boot()
	got := leaseClock()
	after := boot()
	if got < before || got > after {
		t.Fatalf("lease clock read %d, CLOCK_BOOTTIME %d then %d: not boot time", got, before, after)
	}
	time.Sleep(10 * time.Millisecond)
	if d := leaseClock().sub(got); d < 10*time.Millisecond {
		t.Fatalf("lease clock moved %v over a 10ms sleep", d)
	}
}
