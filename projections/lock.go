package projections

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"
	"unicode"

	"github.com/epochlog/epochlog/internal/flock"
)

// A read model has one writer at a time. Two writers on one file trample
// each other: a rebuild that swaps a new database in while a follower has
// the old one open leaves the follower writing to an unlinked file, and
// both report success. Every process or component that may write a read
// model (an installation, follow, rebuild, rekey, migrate) therefore holds
// a WriterLock for as long as it may write; readers (verify, inspect) do
// not lock and are unaffected.
//
// The lock is advisory: flock(2) on a lock file beside the database, named
// "<database>.lock". It constrains only code that takes it; SQLite and the
// database file itself know nothing of it. It lives in a file of its own,
// not on the database, so it survives Swap's rename of a rebuilt database
// over the live one (a lock on the database's inode would stay with the
// old, unlinked file), and so it never interferes with SQLite's own
// locking. The lock file is never deleted: removing a flock file races
// (a locker that opened it just before the removal would lock an orphaned
// inode while the next one creates and locks a new file).
//
// The kernel releases the lock when its holder exits, however it exits: a
// crashed writer never leaves a stale lock behind, only a stale
// description, which the next holder overwrites.

// lockSuffix is appended to the database's path to name its lock file.
const lockSuffix = ".lock"

// maxHolderLen bounds the holder description written into and read from
// a lock file.
const maxHolderLen = 256

// WriterLock is the exclusive lock on one read model held by its writer.
// Keep it until the writer is done, then Unlock it. A WriterLock that is
// dropped without Unlock stays held until the process exits; it is never
// released behind the holder's back (no finalizer).
type WriterLock struct {
	mu   sync.Mutex
	path string // the database's absolute path
	fd   int    // the lock file; -1 once released
}

// Lock takes the writer's lock on the read model at path, describing the
// holder by the program's name and its first argument when that is a
// subcommand (e.g. "replayer follow"); LockAs names the holder
// explicitly. See LockAs.
func Lock(path string) (*WriterLock, error) {
	return LockAs(path, "")
}

// LockAs takes the writer's lock on the read model at path and returns at
// once: it never waits. If another writer holds it, in this process or
// another, the error wraps ErrLocked and names the holder as it described
// itself ("locked by pid 1234 replayer follow since ... host ..."). A
// holder that crashed released its lock when it died; LockAs then
// succeeds.
//
// The lock is taken on the file path + ".lock", created with mode 0600 in
// the database's directory, which must exist: LockAs creates no
// directories. The database itself need not exist yet. After locking,
// LockAs writes "pid <pid> <holder> since <time> host <hostname>" into the
// lock file for the next locker to read; holder is sanitised to one line
// of printable characters, and "" means the program's name as Lock
// describes it. The description holds nothing secret: never put a key,
// passphrase or flag value into holder.
//
// The lock is per file: path is made canonical (CanonicalPath), so
// "./a.db", "a.db" and a symbolic link to the database or to its
// directory name the same lock, taken beside the file the link points to;
// a hard link is another name the lock cannot see. The lock file itself
// must not be a symbolic link. The lock works on local file
// systems; on network file systems flock(2) may be emulated or refused.
// The lock is not inherited by child processes.
func LockAs(path, holder string) (*WriterLock, error) {
	if path == "" {
		return nil, &FileError{Path: path, Op: "lock", Err: errors.New("empty database path")}
	}
	abs, err := CanonicalPath(path)
	if err != nil {
		return nil, &FileError{Path: path, Op: "lock", Err: err}
	}
	name := abs + lockSuffix
	fd, err := openLockFile(name)
	if err != nil {
		fe := &FileError{Path: abs, Op: "lock", Err: err}
		if errors.Is(err, fs.ErrNotExist) {
			fe.Hint = "the database's directory must exist"
		}
		return nil, fe
	}
	ok, err := flock.Lock(uintptr(fd), true, false)
	if err != nil {
		closeLockFile(fd)
		return nil, &FileError{Path: abs, Op: "lock", Err: fmt.Errorf("flock %s: %w", name, err),
			Hint: "the file system may not support flock(2); keep the read model on a local file system"}
	}
	if !ok {
		held := readHolder(fd)
		closeLockFile(fd)
		return nil, &FileError{Path: abs, Op: "lock", Err: fmt.Errorf("%w: locked by %s", ErrLocked, held),
			Hint: "stop that writer first, or wait for it"}
	}
	desc := describeHolder(os.Getpid(), holder, time.Now(), hostname())
	if err := writeHolder(fd, []byte(desc+"\n")); err != nil {
		closeLockFile(fd)
		return nil, &FileError{Path: abs, Op: "lock", Err: fmt.Errorf("write %s: %w", name, err)}
	}
	return &WriterLock{path: abs, fd: fd}, nil
}

// Unlock clears the holder's description and releases the lock. Calling
// it again, or on a nil WriterLock, does nothing. The lock is released
// even when clearing the description fails; the error is then reported.
func (l *WriterLock) Unlock() error {
	if l == nil {
		return nil
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.fd < 0 {
		return nil
	}
	fd := l.fd
	l.fd = -1
	// A description left behind would be stale; a crash leaves one, which
	// the next holder overwrites.
	errClear := clearHolder(fd)
	if errClear != nil {
		errClear = fmt.Errorf("clear %s: %w", l.path+lockSuffix, errClear)
	}
	// Closing the only descriptor of the open file releases the flock.
	errClose := closeLockFile(fd)
	if err := errors.Join(errClear, errClose); err != nil {
		return &FileError{Path: l.path, Op: "unlock", Err: err}
	}
	return nil
}

// Path returns the database the lock is on, as LockAs made it canonical.
func (l *WriterLock) Path() string { return l.path }

// Held reports whether l is still held (not unlocked) and is the lock of
// the database at path (made canonical as LockAs does).
func (l *WriterLock) Held(path string) bool {
	if l == nil {
		return false
	}
	abs, err := CanonicalPath(path)
	if err != nil {
		return false
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.fd >= 0 && abs == l.path
}

// readHolder returns the description in a held lock file, sanitised, or
// a placeholder saying why there is none.
func readHolder(fd int) string {
	b, err := readLockFile(fd, maxHolderLen)
	if err != nil {
		return fmt.Sprintf("an unknown writer (its description is unreadable: %v)", err)
	}
	if i := bytes.IndexByte(b, '\n'); i >= 0 {
		b = b[:i]
	}
	s := sanitize(string(b), maxHolderLen)
	if s == "" {
		// The holder has locked but not yet written its description.
		return "a writer that has not described itself yet"
	}
	return s
}

// describeHolder builds the description a holder writes into its lock
// file.
func describeHolder(pid int, holder string, since time.Time, host string) string {
	holder = sanitize(holder, 128)
	if holder == "" {
		holder = programName(os.Args)
	}
	return fmt.Sprintf("pid %d %s since %s host %s", pid, holder, since.UTC().Format(time.RFC3339), host)
}

// programName describes a program by its arguments: the base name of
// args[0], and args[1] when it looks like a subcommand ("replayer
// follow"). Anything else in args[1] (a flag, a path, a value) is left
// out: it could hold a secret.
func programName(args []string) string {
	if len(args) == 0 || args[0] == "" {
		return "unknown program"
	}
	name := sanitize(filepath.Base(args[0]), 64)
	if name == "" {
		name = "unknown program"
	}
	if len(args) > 1 && isSubcommand(args[1]) {
		name += " " + args[1]
	}
	return name
}

// isSubcommand reports whether s looks like a subcommand name: a short
// word of letters, digits, '-' and '_', not starting with '-'. The bound
// on its length keeps out hex keys and most passphrases.
func isSubcommand(s string) bool {
	if s == "" || len(s) > 24 || s[0] == '-' {
		return false
	}
	for _, c := range s {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
			return false
		}
	}
	return true
}

// hostname returns the host's name, sanitised, or "?".
func hostname() string {
	h, err := os.Hostname()
	if err != nil {
		return "?"
	}
	if h = sanitize(h, 64); h == "" {
		return "?"
	}
	return h
}

// sanitize makes s one line of printable characters of at most max
// bytes: other characters become '?', surrounding space is trimmed.
func sanitize(s string, max int) string {
	var b strings.Builder
	for _, r := range s {
		if r == unicode.ReplacementChar || !unicode.IsPrint(r) {
			r = '?'
		}
		if b.Len()+len(string(r)) > max {
			break
		}
		b.WriteRune(r)
	}
	return strings.TrimSpace(b.String())
}

// CanonicalPath returns path absolute, cleaned and with symbolic links
// resolved: of the file when it exists, else of its directory. Every
// operation that writes a read model (a lock, a rebuild's swap) works on
// this name, so that a link to the database changes the database, not the
// link (a rebuild through a link would replace the link with the rebuilt
// file and leave the database as it was). A link to a file that is not
// there names that file, to be created in its directory, which must
// exist: a missing one (a volume not mounted) is an error naming the
// link, not taken as the file itself for a rebuild to replace.
func CanonicalPath(path string) (string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return "", err
	}
	for hops := 0; ; hops++ {
		r, err := filepath.EvalSymlinks(abs)
		if err == nil {
			return r, nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if st, err := os.Lstat(abs); err != nil || st.Mode()&fs.ModeSymlink == 0 {
			break
		}
		if hops == 40 {
			return "", fmt.Errorf("%s: too many symbolic links", path)
		}
		target, err := os.Readlink(abs)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(abs), target)
		}
		if _, err := os.Stat(filepath.Dir(target)); err != nil {
			return "", fmt.Errorf("%s is a symbolic link to %s, whose directory cannot be used (a volume not mounted?): %w", abs, target, err)
		}
		abs = filepath.Clean(target)
	}
	dir, err := filepath.EvalSymlinks(filepath.Dir(abs))
	switch {
	case err == nil:
		return filepath.Join(dir, filepath.Base(abs)), nil
	case errors.Is(err, fs.ErrNotExist):
		return abs, nil
	}
	return "", err
}
