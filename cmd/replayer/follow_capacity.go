package main

import "fmt"

// fdsPerReadModel is how many file descriptors a followed read model
// keeps open: its SQLCipher connections' database, WAL and shared-memory
// files, and its writer lock (6, counted on a follower of 2,000 read
// models: 12,019 descriptors; docs/benchmarks.md, "A follower's readiness
// over 1,000 read models").
const fdsPerReadModel = 6

// fdReserve is what follow keeps for everything else: its NATS
// connection, the metrics server's sockets, logs, a rebuild's files.
const fdReserve = 256

// followCapacity returns how many read models this process can keep open
// under its open-file limit (after Go raised the soft limit to the hard
// one), and the limit; 0, 0 when there is no limit to go by.
func followCapacity() (int, uint64) {
	limit, ok := openFileLimit()
	if !ok {
		return 0, 0
	}
	if limit <= fdReserve+fdsPerReadModel {
		return 1, limit
	}
	return int(min((limit-fdReserve)/fdsPerReadModel, 1<<30)), limit
}

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
		n, n*fdsPerReadModel+fdReserve, fdsPerReadModel, fdReserve, limit)
}
