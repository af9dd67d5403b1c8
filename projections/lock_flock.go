//go:build linux || darwin || freebsd || netbsd || openbsd || dragonfly

package projections

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"syscall"
)

// The lock file is handled through a raw descriptor rather than an
// *os.File: an *os.File that became unreachable would be closed by its
// finalizer, releasing the lock while its holder still writes.

// openLockFile opens (creating with mode 0600 if need be) the lock file
// name, refusing a symbolic link or anything but a regular file. It never
// truncates: the file may hold the current holder's description.
func openLockFile(name string) (int, error) {
	var fd int
	var err error
	for {
		fd, err = syscall.Open(name, syscall.O_RDWR|syscall.O_CREAT|syscall.O_CLOEXEC|syscall.O_NOFOLLOW, 0o600)
		if err != syscall.EINTR {
			break
		}
	}
	if err != nil {
		return -1, &fs.PathError{Op: "open", Path: name, Err: err}
	}
	var st syscall.Stat_t
	if err := syscall.Fstat(fd, &st); err != nil {
		syscall.Close(fd)
		return -1, &fs.PathError{Op: "stat", Path: name, Err: err}
	}
	if st.Mode&syscall.S_IFMT != syscall.S_IFREG {
		syscall.Close(fd)
		return -1, &fs.PathError{Op: "open", Path: name, Err: errors.New("not a regular file")}
	}
	return fd, nil
}

// readLockFile reads at most max bytes from the start of the lock file.
func readLockFile(fd int, max int) ([]byte, error) {
	b := make([]byte, max)
	n := 0
	for n < max {
		m, err := syscall.Pread(fd, b[n:], int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return nil, err
		}
		if m == 0 {
			break
		}
		n += m
	}
	return b[:n], nil
}

// writeHolder replaces the lock file's content with desc, durably.
func writeHolder(fd int, desc []byte) error {
	if err := clearHolder(fd); err != nil {
		return err
	}
	for n := 0; n < len(desc); {
		m, err := syscall.Pwrite(fd, desc[n:], int64(n))
		if err == syscall.EINTR {
			continue
		}
		if err != nil {
			return err
		}
		if m == 0 {
			return fmt.Errorf("short write")
		}
		n += m
	}
	return syscall.Fsync(fd)
}

// clearHolder empties the lock file.
func clearHolder(fd int) error {
	for {
		err := syscall.Ftruncate(fd, 0)
		if err != syscall.EINTR {
			return err
		}
	}
}

// closeLockFile closes the lock file, releasing the lock if held. It is
// not retried on EINTR: the descriptor is gone either way.
func closeLockFile(fd int) error {
	return syscall.Close(fd)
}

// dirWritable reports whether this process may create files in dir (not
// on a read-only mount, not immutable, its mode allowing it).
func dirWritable(dir string) bool {
	return syscall.Access(dir, 0x2) == nil // W_OK
}

// fileLinks returns how many names (hard links) the file of st has.
func fileLinks(st os.FileInfo) uint64 {
	if sys, ok := st.Sys().(*syscall.Stat_t); ok {
		return uint64(sys.Nlink)
	}
	return 1
}
