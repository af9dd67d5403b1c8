//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package eventlog

import (
	"errors"
	"os"
	"syscall"
)

// oNoFollow makes opening the lock file fail on a symbolic link.
const oNoFollow = syscall.O_NOFOLLOW

// tryLock takes an exclusive flock(2) on f without waiting: false if
// another open file (of this process or another) holds one. The kernel
// releases it when f is closed or the process dies.
func tryLock(f *os.File) (bool, error) {
	for {
		err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.EINTR):
			continue
		case errors.Is(err, syscall.EWOULDBLOCK):
			return false, nil
		default:
			return false, err
		}
	}
}
