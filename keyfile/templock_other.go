//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package keyfile

import "os"

// flock does not lock on this platform (no flock(2)): waiting "gets" a
// lock at once, trying never does, so no temporary key file is taken for
// a leftover and removed here.
func flock(_ *os.File, _, wait bool) (bool, error) { return wait, nil }

// oNoFollow makes opening a leftover temporary file fail on a symbolic
// link (not available on this platform).
const oNoFollow = 0
