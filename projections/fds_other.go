//go:build !linux

package projections

// descriptorsExhausted is not measured here (no /proc/self/fd).
func descriptorsExhausted() error { return nil }

// inodesExhausted is not measured here.
func inodesExhausted(string) error { return nil }
