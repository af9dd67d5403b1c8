package projections

import (
	"errors"
	"fmt"
	"os"
	"syscall"
)

// fdMargin is how many free descriptors an open of a read model needs at
// least: the database, its -wal and -shm, a journal, the writer's lock.
const fdMargin = 8

// descriptorsExhausted returns an error wrapping EMFILE when this process
// has (nearly) no file descriptor left, nil otherwise. Out of descriptors,
// SQLite may report the errno of a later step of its open ("no such file
// or directory") rather than EMFILE, and the failed open has let its own
// descriptors go by then: so the headroom is measured, not one open tried.
func descriptorsExhausted() error {
	var lim syscall.Rlimit
	if syscall.Getrlimit(syscall.RLIMIT_NOFILE, &lim) != nil {
		return nil
	}
	fds, err := os.ReadDir("/proc/self/fd")
	switch {
	case errors.Is(err, syscall.EMFILE), errors.Is(err, syscall.ENFILE):
		return fmt.Errorf("%w: no file descriptor left to list those open", syscall.EMFILE)
	case err != nil:
		return nil
	case uint64(len(fds))+fdMargin >= lim.Cur:
		return fmt.Errorf("%w: %d file descriptors open of this process's limit of %d", syscall.EMFILE, len(fds), lim.Cur)
	}
	return nil
}
