//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package keyfile

import (
	"os"
	"syscall"
)

// A temporary key file is locked (flock(2)) by its writer from creation
// until it is renamed or removed; the lock dies with the writer. So a
// temporary file nobody holds a lock on is one a crash left, and is
// removed; one a live writer holds is left alone.

// lockTemp takes an exclusive lock on f, waiting for a cleaner that holds
// it (only for as long as the cleaner takes to remove the file).
func lockTemp(f *os.File) error {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX)
		if err != syscall.EINTR {
			return err
		}
	}
}

// tryLockTemp takes an exclusive lock on f without waiting; false means
// a writer holds it.
func tryLockTemp(f *os.File) (bool, error) {
	for {
		switch err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err {
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
