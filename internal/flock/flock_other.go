//go:build !(linux || darwin || freebsd || netbsd || openbsd || dragonfly)

package flock

// NoFollow is the open flag that makes opening a symbolic link fail (0
// where the platform has none).
const NoFollow = 0

// Lock fails with [ErrUnsupported]: this platform has no flock(2).
func Lock(uintptr, bool, bool) (bool, error) { return false, ErrUnsupported }
