// Package diskspace tells whether the file system holding a directory has
// run out of room, so that an error SQLite or a server reports without
// its cause ("unable to open database file", an append that goes
// unanswered) can say what ran out.
package diskspace

import "syscall"

// Exhausted returns an error wrapping syscall.ENOSPC, naming dir, when
// the file system holding dir has fewer than minFree bytes available to
// this user, or no free inode; nil otherwise, or when it cannot tell.
func Exhausted(dir string, minFree uint64) error {
	return exhausted(dir, minFree)
}

// Error says which directory's file system has run out of what.
type Error struct {
	Dir  string // the directory asked about
	What string // "no free inode (N in all)", "N bytes free"
}

// Error names the directory and what ran out.
func (e *Error) Error() string {
	return "the file system of " + e.Dir + " is out of room: " + e.What
}

// Unwrap returns syscall.ENOSPC.
func (e *Error) Unwrap() error { return syscall.ENOSPC }
