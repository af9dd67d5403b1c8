//go:build unix

package main

import "syscall"

// openFileLimit returns the process's open-file limit (RLIMIT_NOFILE's
// soft limit), and whether there is one.
var openFileLimit = func() (uint64, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == ^uint64(0) {
		return 0, false
	}
	return rl.Cur, true
}
