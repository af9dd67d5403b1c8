package main

import (
	"fmt"

	"github.com/epochlog/epochlog/internal/fdlimit"
)

// followCapacity returns how many read models this process can keep open
// under its open-file limit, and the limit; 0, 0 when there is no limit
// to go by.
func followCapacity() (int, uint64) { return fdlimit.ReadModels() }

// checkCapacity refuses to follow more read models than the process can
// keep open: past its open-file limit, every open beyond it fails, the
// failed read models are tried again, and none of them is followed.
func checkCapacity(n int) error {
	capacity, limit := followCapacity()
	if capacity == 0 || n <= capacity {
		return nil
	}
	return fmt.Errorf("follow: %d read models need about %d file descriptors (%d each, and %d for the rest), more than this process may open (%d, ulimit -n): "+
		"raise the limit, follow fewer per process, or share them out among several followers (--share)",
		n, n*fdlimit.PerReadModel+fdlimit.Reserve, fdlimit.PerReadModel, fdlimit.Reserve, limit)
}
