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

// inodesExhausted returns an error wrapping ENOSPC when the file system
// holding dir has no free inode left, nil otherwise (or when it cannot
// tell). Out of inodes, creating the -wal, -shm or a rebuilt file fails
// with ENOSPC, which SQLite reports as "unable to open database file" with
// the errno of a later step ("no such file or directory").
func inodesExhausted(dir string) error {
	var st syscall.Statfs_t
	if syscall.Statfs(dir, &st) != nil || st.Files == 0 || st.Ffree > 0 {
		return nil // Files 0: a file system that does not count inodes
	}
	return fmt.Errorf("%w: the file system of %s has no free inode (%d in all): remove files there or give it more", syscall.ENOSPC, dir, st.Files)
}
