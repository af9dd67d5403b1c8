package projections

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// BuildAside returns a fresh temporary path in dir for rebuilding the
// read model named name (e.g. "installation.db") beside the live one: same
// directory, hence same file system, so Swap's rename is atomic. Nothing
// is created; Open creates the file. Leftovers of an interrupted rebuild
// match "<name>.rebuild-*": RemoveAside removes one, RemoveLeftovers all.
func BuildAside(dir, name string) (string, error) {
	if name == "" || strings.ContainsRune(name, os.PathSeparator) {
		return "", fmt.Errorf("projections: bad database name %q", name)
	}
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", err
	}
	return filepath.Join(dir, name+".rebuild-"+hex.EncodeToString(b[:])), nil
}

// RemoveAside deletes a temporary database and its sidecars (used after a
// failed or abandoned rebuild). It never touches the salt sidecar of a
// live database.
func RemoveAside(tmp string) error {
	var errs []error
	for _, p := range []string{tmp, tmp + "-wal", tmp + "-shm", tmp + "-journal"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

// RemoveLeftovers deletes what interrupted rebuilds beside the live
// database at live left behind: every "<live>.rebuild-*" database (see
// BuildAside) with its sidecars, and sidecars whose database is gone. It
// returns how many databases it removed. It never touches live, its
// sidecars or its salt sidecar, nor another database's leftovers. Call it
// before rebuilding beside live, holding live's writer lock (Lock): it
// would delete another writer's database under construction, and a
// reader without the lock (a verify) may not call it at all.
func RemoveLeftovers(live string) (int, error) {
	matches, err := filepath.Glob(globEscape(live) + ".rebuild-*")
	if err != nil {
		return 0, err
	}
	n := 0
	var errs []error
	for _, m := range matches {
		if isSidecar(m) {
			continue
		}
		if err := RemoveAside(m); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	// Sidecars whose database is already gone.
	for _, m := range matches {
		if isSidecar(m) {
			if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
				errs = append(errs, err)
			}
		}
	}
	return n, errors.Join(errs...)
}

// KeptCopies lists the databases a rebuild kept beside the read model at
// live ("<live>.replaced-*", "<live>.damaged-*": see replay.RebuildResult),
// without their sidecars. They hold the history live held then, under its
// key.
func KeptCopies(live string) ([]string, error) {
	var out []string
	for _, kept := range []string{".replaced-*", ".damaged-*"} {
		matches, err := filepath.Glob(globEscape(live) + kept)
		if err != nil {
			return nil, err
		}
		for _, m := range matches {
			if !isSidecar(m) {
				out = append(out, m)
			}
		}
	}
	return out, nil
}

// RemoveCopies deletes every copy of the read model at live that
// epochlog keeps beside it: what RemoveLeftovers removes, and KeptCopies
// with their sidecars. They hold the live database's history under its
// key, so erasing an installation removes them with it. It returns how
// many databases it removed and never touches live or its sidecars. The
// caller holds live's writer lock (Lock), so no rebuild is under way.
func RemoveCopies(live string) (int, error) {
	n, err := RemoveLeftovers(live)
	errs := []error{err}
	kept, err := KeptCopies(live)
	if err != nil {
		return n, errors.Join(append(errs, err)...)
	}
	for _, m := range kept {
		if err := RemoveAside(m); err != nil {
			errs = append(errs, err)
			continue
		}
		n++
	}
	// Sidecars whose database is already gone.
	for _, kept := range []string{".replaced-*", ".damaged-*"} {
		matches, _ := filepath.Glob(globEscape(live) + kept)
		for _, m := range matches {
			if isSidecar(m) {
				if err := os.Remove(m); err != nil && !errors.Is(err, fs.ErrNotExist) {
					errs = append(errs, err)
				}
			}
		}
	}
	return n, errors.Join(errs...)
}

// isSidecar reports whether p names a SQLite sidecar (-wal, -shm,
// -journal).
func isSidecar(p string) bool {
	for _, s := range []string{"-wal", "-shm", "-journal"} {
		if strings.HasSuffix(p, s) && len(p) > len(s) {
			return true
		}
	}
	return false
}

// globEscape quotes the metacharacters of filepath.Match in p.
func globEscape(p string) string {
	out := make([]byte, 0, len(p))
	for i := 0; i < len(p); i++ {
		switch p[i] {
		case '*', '?', '[', '\\':
			out = append(out, '\\')
		}
		out = append(out, p[i])
	}
	return string(out)
}

// Swap replaces the live database with the rebuilt one at tmp, durably and
// atomically. tmp must be closed (DB.Close checkpoints its WAL into the
// main file); the live database must be closed by every user first.
//
// The sequence: (1) refuse if tmp still has a non-empty -wal (not fully
// checkpointed) or -journal (a transaction in progress: the rename would
// part the file from the journal that undoes it); (2) fsync tmp; (3)
// remove the live database's stale -wal, -shm and -journal, which belong
// to the old file and would otherwise be replayed (WAL) or rolled back (a
// hot journal) into the new one (the live one was closed, so its WAL is
// checkpointed and these hold nothing the old file lacks; a journal never
// holds committed data, only the pages an unfinished transaction
// overwrote, and the old file is not kept); (4) rename tmp over live; (5)
// fsync the directory. A crash before (4) leaves the old database intact;
// after it, the new one complete. Any failure before (4) leaves live as it
// was.
func Swap(tmp, live string) error {
	fail := func(err error) error {
		return &FileError{Path: live, Op: "swap", Err: err, Hint: "the live database is unchanged; rebuild again"}
	}
	if filepath.Dir(filepath.Clean(tmp)) != filepath.Dir(filepath.Clean(live)) {
		return fail(fmt.Errorf("rebuilt file %s is not in the live database's directory", tmp))
	}
	if st, err := os.Stat(tmp + "-wal"); err == nil && st.Size() > 0 {
		return fail(fmt.Errorf("rebuilt file %s still has a write-ahead log: close it before swapping", tmp))
	}
	if st, err := os.Stat(tmp + "-journal"); err == nil && st.Size() > 0 {
		return fail(fmt.Errorf("rebuilt file %s has a rollback journal (a transaction in progress): close it before swapping", tmp))
	}
	st, err := os.Stat(tmp)
	if err != nil {
		return fail(err)
	}
	if st.Size() == 0 || st.Size()%PageSize != 0 {
		return fail(fmt.Errorf("rebuilt file %s has size %d: not a complete database", tmp, st.Size()))
	}
	if err := fsyncFile(tmp); err != nil {
		return fail(err)
	}
	if err := os.Chmod(tmp, 0o600); err != nil {
		return fail(err)
	}
	// If live has a non-empty WAL, someone still has it open or it was not
	// closed cleanly: its last transactions would be lost. Refuse.
	if st, err := os.Stat(live + "-wal"); err == nil && st.Size() > 0 {
		return fail(fmt.Errorf("live database %s has a non-empty write-ahead log: close every user first", live))
	}
	for _, p := range []string{live + "-wal", live + "-shm", live + "-journal", tmp + "-wal", tmp + "-shm", tmp + "-journal"} {
		if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return fail(err)
		}
	}
	if err := os.Rename(tmp, live); err != nil {
		return fail(err)
	}
	if err := syncDir(filepath.Dir(live)); err != nil {
		// The rename happened; only its durability is in doubt.
		return &FileError{Path: live, Op: "swap", Err: fmt.Errorf("fsync directory: %w", err)}
	}
	return nil
}

func fsyncFile(p string) error {
	f, err := os.OpenFile(p, os.O_RDWR, 0)
	if err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}
