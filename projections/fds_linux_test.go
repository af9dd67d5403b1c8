package projections

import (
	"errors"
	"os"
	"syscall"
	"testing"
)

// Near the limit of file descriptors, descriptorsExhausted says so (EMFILE,
// with the counts): an open that fails then is explained by it whatever
// errno SQLite reports. With room to spare it says nothing.
func TestDescriptorsExhausted(t *testing.T) {
	if err := descriptorsExhausted(); err != nil {
		t.Fatalf("with the test's limit: %v", err)
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	var old syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &old); err != nil {
		t.Fatal(err)
	}
	low := old
	low.Cur = uint64(len(fds) + fdMargin/2)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip(err)
	}
	err = descriptorsExhausted()
	if rerr := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &old); rerr != nil {
		t.Fatal(rerr)
	}
	if !errors.Is(err, syscall.EMFILE) {
		t.Fatalf("%d descriptors open, limit %d: %v, want EMFILE", len(fds), low.Cur, err)
	}
	t.Log(err)
}
