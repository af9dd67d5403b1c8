//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package keyfile

import "os"

// lockTemp does not lock on this platform (no flock(2)).
func lockTemp(*os.File) error { return nil }

// tryLockTemp never gets a lock here: a live writer cannot be told from a
// crashed one, so no temporary key file is removed on this platform.
func tryLockTemp(*os.File) (bool, error) { return false, nil }

// oNoFollow makes opening a leftover temporary file fail on a symbolic
// link (not available on this platform).
const oNoFollow = 0
