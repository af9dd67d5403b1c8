//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package flock

import "syscall"

// NoFollow is the open flag that makes opening a symbolic link fail (0
// where the platform has none).
const NoFollow = syscall.O_NOFOLLOW

// Lock takes a flock(2) on fd, exclusive or shared, waiting for it or not.
// It returns false, and no error, only without waiting, when another open
// file description (of this process or another) holds a conflicting lock.
func Lock(fd uintptr, exclusive, wait bool) (bool, error) {
	how := syscall.LOCK_SH
	if exclusive {
		how = syscall.LOCK_EX
	}
	if !wait {
		how |= syscall.LOCK_NB
	}
	for {
		switch err := syscall.Flock(int(fd), how); err {
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
