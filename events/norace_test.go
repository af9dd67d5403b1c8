//go:build !race

package events

// raceEnabled reports whether the tests run under the race detector.
const raceEnabled = false
