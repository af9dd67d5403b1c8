// Package flock takes flock(2) locks for the packages that keep files of
// their own (the embedded server's store lock, a read model's writer lock,
// key files' temporary files), so that the retry on EINTR and the
// platform split are written once.
//
// flock(2) locks belong to an open file description: they are released
// when it is closed or its process dies, so a crash leaves no lock
// behind. Each caller decides what to do where there is no flock(2)
// ([ErrUnsupported]).
package flock

import (
	"errors"
	"fmt"
)

// ErrUnsupported is returned by [Lock] on platforms without flock(2). It
// wraps errors.ErrUnsupported.
var ErrUnsupported = fmt.Errorf("flock(2) is not available on this platform: %w", errors.ErrUnsupported)
