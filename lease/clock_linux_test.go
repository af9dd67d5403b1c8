package lease

import (
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The lease clock reads CLOCK_BOOTTIME: never behind CLOCK_MONOTONIC
// (boot time is monotonic time plus the time suspended), and moving on
// with time.
func TestLeaseClockIsBootTime(t *testing.T) {
	var mono unix.Timespec
	if err := unix.ClockGettime(unix.CLOCK_MONOTONIC, &mono); err != nil {
		t.Fatal(err)
	}
	first := leaseClock()
	if first < instant(mono.Nano()) {
		t.Fatalf("lease clock %d behind CLOCK_MONOTONIC %d: not boot time", first, mono.Nano())
	}
	time.Sleep(10 * time.Millisecond)
	if d := leaseClock().sub(first); d < 10*time.Millisecond {
		t.Fatalf("lease clock moved %v over a 10ms sleep", d)
	}
}
