//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package eventlog

import "os"

// oNoFollow is not available here.
const oNoFollow = 0

// tryLock does not lock on this platform (no flock(2)): the lock file is
// written, but a second embedded server on the same store is not refused.
func tryLock(*os.File) (bool, error) { return true, nil }
