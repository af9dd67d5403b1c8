package lease

import (
	"errors"
	"fmt"
	"time"

	"github.com/epochlog/epochlog/events"
)

var (
	// ErrHeld: another holder holds the lease. Acquire returns a
	// *HeldError, which names the holder, wrapping it.
	ErrHeld = errors.New("lease: held by another holder")
	// ErrLeaseLost: the lease is no longer this holder's (not renewed in
	// time, taken by another holder, or released): stop writing. Lease.Check
	// and Lease.Err return it, wrapped with the installation and why.
	ErrLeaseLost = errors.New("lease: lost")
	// ErrBucketMismatch: the bucket exists with settings other than those
	// asked for (another TTL), or is not a lease bucket (no TTL).
	ErrBucketMismatch = errors.New("lease: the bucket's settings differ")
)

// HeldError says who holds a lease that Acquire could not take.
type HeldError struct {
	Installation events.InstallationID
	// Holder is the holder's own description ("pid 4242 replayer follow
	// host app-1"), Member its share-group member id ("" for a holder
	// outside a share group).
	Holder, Member string
	// Since is when the holder acquired it, by the holder's clock.
	Since time.Time
}

func (e *HeldError) Error() string {
	who := e.Holder
	if e.Member != "" {
		who += " (member " + e.Member + ")"
	}
	return fmt.Sprintf("lease: installation %s is held by %s since %s", e.Installation, who, e.Since.UTC().Format(time.RFC3339))
}

// Unwrap makes errors.Is(err, ErrHeld) hold.
func (e *HeldError) Unwrap() error { return ErrHeld }
