//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package keyfile

import (
	"os"
	"syscall"
)

// flock takes a flock(2) on f, exclusive or shared, waiting for it or
// not; false means another holds it (only without waiting). Locks die
// with their holder, so a crash releases them.
func flock(f *os.File, exclusive, wait bool) (bool, error) {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		switch err := syscall.Flock(int(f.Fd()), how); err {
		case nil:
			return true, nil
		case syscall.EINTR:
			continue
		case syscall.EWOULDBLOCK:
			return false, nil
		default:
			return false, err
		}
	}
}

// oNoFollow makes opening a leftover temporary file fail on a symbolic
// link.
const oNoFollow = syscall.O_NOFOLLOW
