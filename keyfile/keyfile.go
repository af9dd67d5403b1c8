// Package keyfile reads and writes the key files of epochlog's tools: the
// event keyring file (the replayer's --keys-file, $EPOCHLOG_ROOT_KEYS) and
// read-model key files (--db-key-file, --db-passphrase-file), so that a
// service loads the same files the replayer and its demo write.
//
// # Formats
//
// An event keyring file holds one entry per line, "<key-id>:<64 hex
// digits>" (a 32-byte events.RootKey under a positive 32-bit id); blank
// lines and lines starting with "#" are ignored. The entry with the highest
// id is the current key, which seals new events; the others open older
// events. ParseKeyring also accepts entries separated by commas (the
// environment variable's form).
//
// A raw read-model key file holds 64 hex digits (a raw 32-byte SQLCipher
// key, used without a KDF) and an optional newline. A passphrase file holds
// one line; the key is stretched with Argon2id and the salt kept beside the
// database (projections.PassphraseKey).
//
// # Permissions
//
// Every file here is a secret. The loaders refuse a file that users other
// than its owner can access (any of the mode bits 0077) with a
// *PermissionError naming the file and its mode (errors.Is ErrNotPrivate),
// and, on Unix, a file owned by neither the effective user nor root with an
// *OwnerError (errors.Is ErrNotOwned): its owner can rewrite it, and so
// choose the key a command run by another user (root) reads. A symbolic link
// is judged by the file it leads to. The savers write mode 0600 files, in
// directories they create 0700, through a temporary file that is fsynced and
// renamed (or linked) into place, so a crash never leaves a partial key
// file. A crash between the two leaves the temporary file
// (<file>.tmp-<digits>, a full key): the next write of that key file removes
// it, with a warning on slog's default logger naming it. Reads do not look
// for leftovers: a key is read at each open of a read model, and listing a
// directory of thousands of them at each would cost more than the leftover
// (a key the write never put in place) is worth. Writers hold a lock
// (flock(2)) on their temporary file, taken under a lock on the directory
// that the removal holds exclusively, so a write in progress is never taken
// for a leftover; where there is no flock(2), leftovers are not removed.
//
// No error of this package contains a key, a passphrase or any part of a
// file's content: entries are named by their position and key id.
package keyfile

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/flock"
	"github.com/epochlog/epochlog/projections"
)

// ErrNotPrivate is what a *PermissionError wraps: a key file that users
// other than its owner can access.
var ErrNotPrivate = errors.New("keyfile: key file is accessible by other users")

// PermissionError reports a key file whose mode lets users other than its
// owner access it.
type PermissionError struct {
	// What names the file's role: "key file" or "keyring file".
	What string
	// Path is the file.
	Path string
	// Mode is its permission bits.
	Mode fs.FileMode
}

func (e *PermissionError) Error() string {
	return fmt.Sprintf("%s %s is accessible by other users (mode %04o): chmod 600 it", e.What, e.Path, e.Mode.Perm())
}

// Unwrap returns ErrNotPrivate.
func (e *PermissionError) Unwrap() error { return ErrNotPrivate }

// ErrNotOwned is what an *OwnerError wraps: a key file owned by a user
// other than the one reading it (and not root).
var ErrNotOwned = errors.New("keyfile: key file is owned by another user")

// OwnerError reports a key file owned by neither the effective user nor
// root. Its owner can rewrite it, so a command run by another user (root
// above all) would use a key that user chose: the rule OpenSSH applies to
// authorized_keys. Root's own files are accepted, as root can rewrite any
// file anyway.
type OwnerError struct {
	// What names the file's role: "key file" or "keyring file".
	What string
	// Path is the file as given; Target is the file it leads to when Path
	// is a symbolic link, else "".
	Path, Target string
	// Owner is the file's uid, Self the effective uid reading it.
	Owner, Self int
}

func (e *OwnerError) Error() string {
	target := ""
	if e.Target != "" {
		target = " (a link to " + e.Target + ")"
	}
	return fmt.Sprintf("%s %s%s is owned by uid %d, not by uid %d reading it nor by root: uid %d could rewrite the key; chown %d it (or run as uid %d)",
		e.What, e.Path, target, e.Owner, e.Self, e.Owner, e.Self, e.Owner)
}

// Unwrap returns ErrNotOwned.
func (e *OwnerError) Unwrap() error { return ErrNotOwned }

// CheckPrivate returns a *PermissionError when users other than the owner
// can access the file at path (a read-model key leaking through file modes
// defeats the encryption at rest), an *OwnerError when it is owned by
// neither the effective user nor root, and the error of stat when it cannot
// be examined. A symbolic link is judged by the file it leads to.
func CheckPrivate(path string) error {
	return checkPrivate(path, "key file")
}

func checkPrivate(path, what string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return judgePrivate(path, what, fi)
}

// judgePrivate applies CheckPrivate's rules to fi, path's file.
func judgePrivate(path, what string, fi fs.FileInfo) error {
	if err := checkOwner(path, what, fi); err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return &PermissionError{What: what, Path: path, Mode: fi.Mode().Perm()}
	}
	return nil
}

// readPrivate reads the secret file at path (what names it in errors)
// once CheckPrivate's rules pass. A regular file is opened first and the
// rules applied to the open file, which is the one read: a file put in
// its place between a check and a read is not read unjudged. Anything
// else (a FIFO) is checked, then read as ReadSecretFile reads it. An
// error of the rules is returned as it is; one of reading says reading
// first.
func readPrivate(path, what, reading string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	if !fi.Mode().IsRegular() {
		if err := judgePrivate(path, what, fi); err != nil {
			return nil, err
		}
		b, err := ReadSecretFile(path)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", reading, err)
		}
		return b, nil
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", reading, err)
	}
	defer f.Close()
	if fi, err = f.Stat(); err != nil {
		return nil, fmt.Errorf("%s: %w", reading, err)
	}
	if err := judgePrivate(path, what, fi); err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s: %s is no longer a regular file (%s)", reading, path, fi.Mode().Type())
	}
	b, err := io.ReadAll(f)
	if err != nil {
		clear(b)
		return nil, fmt.Errorf("%s: %w", reading, err)
	}
	return b, nil
}

// CheckOwner returns an *OwnerError when the file at path (or the file a
// symbolic link there leads to) is owned by neither the effective user nor
// root, and the error of stat when it cannot be examined. It does not look
// at the mode (CheckPrivate does both).
func CheckOwner(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("key file: %w", err)
	}
	return checkOwner(path, "key file", fi)
}

// checkOwner applies the owner rule to fi, the result of os.Stat(path).
func checkOwner(path, what string, fi fs.FileInfo) error {
	owner, self, ok := fileOwner(fi)
	if !ok || owner == self || owner == 0 {
		return nil
	}
	e := &OwnerError{What: what, Path: path, Owner: owner, Self: self}
	if t, err := filepath.EvalSymlinks(path); err == nil && t != filepath.Clean(path) {
		e.Target = t
	}
	return e
}

// ParseKeyring reads keyring entries "<id>:<hex>" separated by newlines or
// commas, skipping blank lines and "#" comments; the highest id is the
// current key. Errors name an entry by its position (and key id once it is
// read), never its contents, and do not name the source: the caller does.
func ParseKeyring(text string) (*events.Keyring, error) {
	type entry struct {
		id  events.KeyID
		key events.RootKey
	}
	var entries []entry
	fields := strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == ',' || r == '\r' })
	for i, f := range fields {
		f = strings.TrimSpace(f)
		if f == "" || strings.HasPrefix(f, "#") {
			continue
		}
		idText, hexKey, ok := strings.Cut(f, ":")
		if !ok {
			return nil, fmt.Errorf("entry %d: want \"<key-id>:<64 hex digits>\"", i+1)
		}
		id, err := strconv.ParseUint(strings.TrimSpace(idText), 10, 32)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("entry %d: key id must be a positive 32-bit number", i+1)
		}
		raw, err := hex.DecodeString(strings.TrimSpace(hexKey))
		if err != nil {
			return nil, fmt.Errorf("entry %d (key id %d): key is not hex", i+1, id)
		}
		key, err := events.NewRootKey(raw)
		clear(raw)
		if err != nil {
			return nil, fmt.Errorf("entry %d (key id %d): %w", i+1, id, err)
		}
		entries = append(entries, entry{events.KeyID(id), key})
	}
	if len(entries) == 0 {
		return nil, errors.New("no keys")
	}
	// The highest key id is the current one.
	cur := 0
	for i, e := range entries {
		if e.id > entries[cur].id {
			cur = i
		}
	}
	ring, err := events.NewKeyring(entries[cur].id, entries[cur].key)
	if err != nil {
		return nil, err
	}
	for i, e := range entries {
		if i == cur {
			continue
		}
		if err := ring.Add(e.id, e.key); err != nil {
			return nil, err
		}
	}
	return ring, nil
}

// LoadKeyring reads the event keyring file at path. A file others can
// access is refused (*PermissionError); a malformed one is an error naming
// the file and the entry.
func LoadKeyring(path string) (*events.Keyring, error) {
	data, err := readPrivate(path, "keyring file", "reading keyring")
	if err != nil {
		return nil, err
	}
	defer clear(data)
	ring, err := ParseKeyring(string(data))
	if err != nil {
		return nil, fmt.Errorf("keyring file %s: %w", path, err)
	}
	return ring, nil
}

// keyringHeader opens every keyring file this package writes.
const keyringHeader = "# epochlog event keyring: <key-id>:<hex>; the highest id seals new events\n"

// marshalKeyring returns ring in the keyring file format. The format makes
// the highest id the current key, so a ring whose current key is not its
// highest id cannot be written. The caller wipes the result.
func marshalKeyring(ring *events.Keyring) ([]byte, error) {
	if ring == nil {
		return nil, errors.New("no keyring")
	}
	ids := ring.IDs()
	if len(ids) == 0 {
		return nil, errors.New("the keyring holds no keys")
	}
	if cur, top := ring.Current(), ids[len(ids)-1]; cur != top {
		return nil, fmt.Errorf("the keyring's current key is id %d, not its highest id %d: in a keyring file the highest id is the current key", cur, top)
	}
	out := []byte(keyringHeader)
	for _, id := range ids {
		k, ok := ring.RootKey(id)
		if !ok {
			clear(out)
			return nil, fmt.Errorf("key id %d vanished from the keyring while it was written", id)
		}
		raw := k.Bytes()
		out = strconv.AppendUint(out, uint64(id), 10)
		out = append(out, ':')
		out = hex.AppendEncode(out, raw)
		out = append(out, '\n')
		clear(raw)
	}
	return out, nil
}

// SaveKeyring writes ring to path in the keyring file format (mode 0600,
// fsynced, atomically replacing any file there; the directory is created
// 0700 if missing). Its current key must be its highest id, which is what
// the format makes current. Replacing a keyring drops the keys it held and
// ring does not: events sealed under them can no longer be opened with the
// file.
func SaveKeyring(path string, ring *events.Keyring) error {
	data, err := marshalKeyring(ring)
	if err != nil {
		return fmt.Errorf("keyfile: saving keyring file %s: %w", path, err)
	}
	defer clear(data)
	if err := install(path, data, false); err != nil {
		return fmt.Errorf("keyfile: saving keyring file %s: %w", path, err)
	}
	return nil
}

// CreateKeyring creates a keyring file at path with one fresh random key
// under id 1, unless a file is there already, and reports whether it
// created one. It never replaces a file, even one another process creates
// meanwhile (the key is written to a temporary file, fsynced, and linked
// into place), and never leaves an empty or partial keyring: after a
// failed write or a crash there is no file, and the next call creates one.
func CreateKeyring(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	}
	key, err := events.GenerateRootKey()
	if err != nil {
		return false, err
	}
	ring, err := events.NewKeyring(1, key)
	if err != nil {
		return false, err
	}
	data, err := marshalKeyring(ring)
	if err != nil {
		return false, fmt.Errorf("keyfile: creating keyring file %s: %w", path, err)
	}
	defer clear(data)
	if err := install(path, data, true); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("keyfile: creating keyring file %s: %w", path, err)
	}
	return true, nil
}

// ParseDBKey parses a raw read-model key given as 64 hex digits
// (surrounding white space ignored). Errors say what is wrong with the
// text, never the text, and do not name its source: the caller does.
func ParseDBKey(text string) (projections.Key, error) {
	text = strings.TrimSpace(text)
	if len(text) != 2*projections.KeySize {
		return projections.Key{}, fmt.Errorf("want %d hex digits (a %d-byte key), got %d characters", 2*projections.KeySize, projections.KeySize, len(text))
	}
	b, err := hex.DecodeString(text)
	if err != nil {
		return projections.Key{}, errors.New("not hex digits")
	}
	defer clear(b)
	return projections.RawKey(b)
}

// LoadDBKey reads a raw read-model key file: 64 hex digits and an optional
// newline, mode 0600 or stricter (a file others can access is refused with
// a *PermissionError).
func LoadDBKey(path string) (projections.Key, error) {
	b, err := readPrivate(path, "key file", "reading key file")
	if err != nil {
		return projections.Key{}, err
	}
	defer clear(b)
	k, err := ParseDBKey(string(b))
	if err != nil {
		return projections.Key{}, fmt.Errorf("key file %s: %w", path, err)
	}
	return k, nil
}

// LoadDBPassphrase reads a read-model passphrase file (one line; the line
// break is not part of the passphrase), mode 0600 or stricter, and returns
// the passphrase key (projections.PassphraseKey: Argon2id, with the salt
// kept beside the database).
func LoadDBPassphrase(path string) (projections.Key, error) {
	b, err := readPrivate(path, "key file", "reading passphrase file")
	if err != nil {
		return projections.Key{}, err
	}
	defer clear(b)
	pass := []byte(strings.TrimRight(string(b), "\r\n"))
	defer clear(pass)
	if len(pass) == 0 {
		return projections.Key{}, fmt.Errorf("passphrase file %s is empty", path)
	}
	return projections.PassphraseKey(pass)
}

// SaveDBKey writes raw, a 32-byte read-model key, to path as 64 hex digits
// and a newline (mode 0600, fsynced, atomically replacing any file there;
// the directory is created 0700 if missing). It returns the key, as
// projections.RawKey gives it.
func SaveDBKey(path string, raw []byte) (projections.Key, error) {
	key, err := projections.RawKey(raw)
	if err != nil {
		return projections.Key{}, fmt.Errorf("keyfile: saving key file %s: %w", path, err)
	}
	text := hex.AppendEncode(make([]byte, 0, 2*len(raw)+1), raw)
	text = append(text, '\n')
	defer clear(text)
	if err := install(path, text, false); err != nil {
		return projections.Key{}, fmt.Errorf("keyfile: saving key file %s: %w", path, err)
	}
	return key, nil
}

// NewDBKeyFile generates a random raw read-model key, writes it to path as
// SaveDBKey does and returns it.
func NewDBKeyFile(path string) (projections.Key, error) {
	raw := make([]byte, projections.KeySize)
	defer clear(raw)
	if _, err := rand.Read(raw); err != nil {
		return projections.Key{}, fmt.Errorf("keyfile: generating a key for %s: %w", path, err)
	}
	return SaveDBKey(path, raw)
}

// install writes data to path through a fsynced temporary file beside it
// (mode 0600), then renames it over path, or with exclusive set links it
// into place (failing with fs.ErrExist when path exists), and fsyncs the
// directory. The directory is created 0700 if missing. A failure leaves no
// temporary file; a crash may, and the next write of path removes it
// (removeStaleTemps).
func install(path string, data []byte, exclusive bool) error {
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	removeStaleTemps(path)
	tmp, err := writeTemp(path, data)
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	renamed := false
	defer func() {
		// Removed before closing, which drops the lock: a cleaner never
		// sees it unlocked. After a rename the name is no longer ours.
		if !renamed {
			os.Remove(tmp.Name())
		}
		tmp.Close()
	}()
	if afterTempWritten != nil {
		afterTempWritten(tmp.Name())
	}
	if exclusive {
		// Link, not rename: it fails if the file appeared meanwhile, so a
		// key in use is never replaced.
		if err := os.Link(tmp.Name(), path); err != nil {
			if errors.Is(err, fs.ErrExist) {
				return err
			}
			return fmt.Errorf("installing %s: %w", path, err)
		}
	} else if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("installing %s: %w", path, err)
	} else {
		renamed = true
	}
	if err := syncDir(dir); err != nil {
		return fmt.Errorf("syncing the directory of %s: %w", path, err)
	}
	return nil
}

// afterTempWritten, when set (by tests), is called between writing the
// temporary file and installing it: where a crash leaves it behind.
var afterTempWritten func(tmp string)

// tempSuffix joins a key file's name and the random digits of its
// temporary files (os.CreateTemp's pattern base+tempSuffix+"*").
const tempSuffix = ".tmp-"

// writeTemp writes data to a new temporary file beside path (mode 0600,
// as os.CreateTemp makes it), locked (flock, exclusive) so that no other
// process takes it for a crash's leftover, and fsyncs it. It returns the
// file open and locked; the caller removes (or renames) it, then closes
// it. A failure leaves no file.
func writeTemp(path string, data []byte) (*os.File, error) {
	dir := filepath.Dir(path)
	// A cleaner (removeStaleTemps) holds the directory's lock exclusively:
	// held shared from the file's creation to its lock, no cleaner sees
	// the new file unlocked.
	d, err := os.Open(dir)
	if err != nil {
		return nil, err
	}
	defer d.Close()
	if _, err := lock(d, false, true); err != nil {
		return nil, fmt.Errorf("locking %s: %w", dir, err)
	}
	f, err := os.CreateTemp(dir, filepath.Base(path)+tempSuffix+"*")
	if err != nil {
		return nil, err
	}
	_, err = lock(f, true, true)
	d.Close() // the directory's lock: the file holds its own now
	if err != nil {
		err = fmt.Errorf("locking %s: %w", f.Name(), err)
	} else if _, err = f.Write(data); err == nil {
		err = f.Sync()
	}
	if err != nil {
		os.Remove(f.Name())
		f.Close()
		return nil, err
	}
	return f, nil
}

// stillNamed reports whether f's name still leads to f.
func stillNamed(f *os.File) bool {
	fi, err := f.Stat()
	if err != nil {
		return false
	}
	named, err := os.Lstat(f.Name())
	return err == nil && os.SameFile(fi, named)
}

// removeStaleTemps removes the temporary files of path's own name
// (<path>.tmp-<digits>) that a write interrupted by a crash left beside
// it, each a full copy of a key, and logs a warning naming each one
// removed (slog's default logger), or one it could not remove. A file a
// live writer holds (locked) is left alone, and so is one that is not a
// regular file or not owned by this user; while a writer is creating one
// (the directory's lock, see writeTemp), nothing is removed this time.
// Where there is no flock(2), nothing is removed.
func removeStaleTemps(path string) {
	dir := filepath.Dir(path)
	d, err := os.Open(dir)
	if err != nil {
		return // reading or writing the key file reports what is wrong
	}
	defer d.Close()
	// Writers hold the directory's lock shared while they create and lock
	// a temporary file: one is at that step now; the leftovers wait for
	// the next write.
	if ok, err := lock(d, true, false); err != nil || !ok {
		return
	}
	entries, err := d.ReadDir(-1)
	if err != nil {
		return
	}
	prefix := filepath.Base(path) + tempSuffix
	for _, e := range entries {
		digits, ok := strings.CutPrefix(e.Name(), prefix)
		if !ok || digits == "" || strings.Trim(digits, "0123456789") != "" || !e.Type().IsRegular() {
			continue
		}
		name := filepath.Join(dir, e.Name())
		removed, err := removeIfStale(name)
		switch {
		case err != nil:
			slog.Warn("keyfile: a temporary key file an interrupted write left could not be removed", "file", name, "key_file", path, "err", err)
		case removed:
			slog.Warn("keyfile: removed a temporary key file an interrupted write left", "file", name, "key_file", path)
		}
	}
}

// removeIfStale removes the temporary key file name unless a writer holds
// its lock, it is not a regular file, or another user owns it.
func removeIfStale(name string) (bool, error) {
	f, err := os.OpenFile(name, os.O_RDONLY|flock.NoFollow, 0)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return false, nil // its writer finished meanwhile
		}
		return false, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, err
	}
	if owner, self, ok := fileOwner(fi); !fi.Mode().IsRegular() || ok && owner != self {
		return false, nil
	}
	locked, err := lock(f, true, false)
	if err != nil || !locked {
		return false, err
	}
	// Held: no writer holds it. Remove it if the name still leads to the
	// file locked (a writer may have renamed it into place meanwhile).
	if !stillNamed(f) {
		return false, nil
	}
	if err := os.Remove(name); err != nil {
		return false, err
	}
	return true, nil
}

// syncDir fsyncs a directory so a file just installed in it survives a
// crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}

// SecretReadTimeout bounds ReadSecretFile's wait for a file that is not a
// regular one (a pipe, such as a shell's <(...), or a device).
var SecretReadTimeout = 30 * time.Second

// ReadSecretFile reads the key or keyring file at path. A regular file is
// read at once; anything else (a FIFO, whose writer may never come) is
// read for at most SecretReadTimeout, then given up with an error naming
// the file: a read never hangs a command for good. Over a pipe, the
// caller's file descriptor may stay open until the process ends.
func ReadSecretFile(path string) ([]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if fi.Mode().IsRegular() {
		return os.ReadFile(path)
	}
	type result struct {
		b   []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		b, err := os.ReadFile(path)
		done <- result{b, err}
	}()
	select {
	case r := <-done:
		return r.b, r.err
	case <-time.After(SecretReadTimeout):
		return nil, fmt.Errorf("%s (%s) gave nothing within %v: a pipe without a writer?", path, fi.Mode().Type(), SecretReadTimeout)
	}
}

// lock takes a flock(2) on f, exclusive or shared, waiting for it or not;
// false means another holds it (only without waiting). Locks die with
// their holder, so a crash releases them. Where there is no flock(2),
// waiting "gets" a lock at once and trying never does, so no temporary
// key file is taken for a leftover and removed there.
func lock(f *os.File, exclusive, wait bool) (bool, error) {
	ok, err := flock.Lock(f.Fd(), exclusive, wait)
	if errors.Is(err, flock.ErrUnsupported) {
		return wait, nil
	}
	return ok, err
}
