//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package projections

import (
	"errors"
	"fmt"
	"os"
	"runtime"
)

// Without flock(2), a second writer cannot be kept out: refuse rather
// than pretend to lock. The error wraps errors.ErrUnsupported.
var errLockUnsupported = fmt.Errorf("locking a read model is not supported on %s: %w", runtime.GOOS, errors.ErrUnsupported)

func openLockFile(string) (int, error)      { return -1, errLockUnsupported }
func readLockFile(int, int) ([]byte, error) { return nil, errLockUnsupported }
func writeHolder(int, []byte) error         { return errLockUnsupported }
func clearHolder(int) error                 { return errLockUnsupported }
func closeLockFile(int) error               { return errLockUnsupported }

// dirWritable cannot tell here: it answers yes, and the error stays
// SQLite's.
func dirWritable(string) bool { return true }

// fileLinks cannot tell here: it answers 2, so that a file is never taken
// for a lone read-only copy.
func fileLinks(os.FileInfo) uint64 { return 2 }
