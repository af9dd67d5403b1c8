package projections

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
)

type keyKind uint8

const (
	keyInvalid    keyKind = iota // the zero Key: refused everywhere
	keyPlaintext                 // NoKey: only as a migration source
	keyRaw                       // 32 raw bytes, used as x'..' (no KDF)
	keyPassphrase                // Argon2id(passphrase, salt sidecar) -> raw key
)

// KeySize is the size of a raw SQLCipher key.
const KeySize = 32

// Key is the secret that opens a read model: a raw 32-byte key, a
// passphrase (stretched with Argon2id and a salt kept beside the database),
// or NoKey for reading an unencrypted database being migrated. The zero Key
// is invalid. Its bytes are unexported and never printed.
//
// The bytes sit behind a pointer to a pointer, as events.RootKey's do: a
// Key in an unexported field of another struct is printed by fmt's
// reflection without its Format method, and that reflection prints a
// nested pointer as an address, where it would print a slice's bytes.
type Key struct {
	kind keyKind
	b    **[]byte
	_    [0]func() // not comparable with ==: compare keys with Equal
}

// makeKey returns a Key of kind holding b, which it takes over.
func makeKey(kind keyKind, b []byte) Key {
	p := &b
	return Key{kind: kind, b: &p}
}

// bytes returns the key's bytes (nil for NoKey and the zero Key).
func (k Key) bytes() []byte {
	if k.b == nil || *k.b == nil {
		return nil
	}
	return **k.b
}

// RawKey returns a key that SQLCipher uses as is (x'..', no KDF). b must be
// exactly 32 bytes; it is copied.
func RawKey(b []byte) (Key, error) {
	if len(b) != KeySize {
		return Key{}, fmt.Errorf("projections: raw key must be %d bytes, got %d", KeySize, len(b))
	}
	return makeKey(keyRaw, append([]byte(nil), b...)), nil
}

// GenerateRawKey returns a fresh random raw key.
func GenerateRawKey() (Key, error) {
	b := make([]byte, KeySize)
	if _, err := rand.Read(b); err != nil {
		return Key{}, fmt.Errorf("projections: generate key: %w", err)
	}
	return makeKey(keyRaw, b), nil
}

// PassphraseKey returns a key derived at Open time with Argon2id from the
// passphrase and the salt sidecar of the database (created with a random
// salt when the database is new). The passphrase is copied; it must not be
// empty.
func PassphraseKey(passphrase []byte) (Key, error) {
	if len(passphrase) == 0 {
		return Key{}, errors.New("projections: empty passphrase")
	}
	return makeKey(keyPassphrase, append([]byte(nil), passphrase...)), nil
}

// NoKey opens an existing unencrypted SQLite read model, read-only. It
// exists only as the source of a migration to an encrypted database; Open
// never creates an unencrypted file.
func NoKey() Key { return Key{kind: keyPlaintext} }

// IsPlaintext reports whether k is NoKey.
func (k Key) IsPlaintext() bool { return k.kind == keyPlaintext }

// Valid reports whether k was built by one of the constructors.
func (k Key) Valid() bool { return k.kind != keyInvalid }

// Equal reports whether both keys are of the same kind with the same
// bytes, in constant time with respect to the bytes.
func (k Key) Equal(o Key) bool {
	same := subtle.ConstantTimeCompare(k.bytes(), o.bytes()) == 1
	return same && k.kind == o.kind
}

func (k Key) redacted() string {
	switch k.kind {
	case keyPlaintext:
		return "projections.Key(none)"
	case keyRaw:
		return "projections.Key(raw, REDACTED)"
	case keyPassphrase:
		return "projections.Key(passphrase, REDACTED)"
	}
	return "projections.Key(invalid)"
}

// String redacts the key.
func (k Key) String() string { return k.redacted() }

// GoString redacts the key.
func (k Key) GoString() string { return k.redacted() }

// Format redacts the key for every verb and flag (%v, %+v, %#v, %x, %s, ...).
func (k Key) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(k.redacted())) }

// MarshalJSON redacts the key.
func (k Key) MarshalJSON() ([]byte, error) { return []byte(`"` + k.redacted() + `"`), nil }

// MarshalText redacts the key.
func (k Key) MarshalText() ([]byte, error) { return []byte(k.redacted()), nil }

// LogValue redacts the key for every slog handler.
func (k Key) LogValue() slog.Value { return slog.StringValue(k.redacted()) }

// Argon2Params are the Argon2id parameters for passphrase keys. They are
// stored in the salt sidecar, so a database stays openable when defaults
// change.
type Argon2Params struct {
	Time      uint32 // passes
	MemoryKiB uint32 // memory in KiB
	Threads   uint8  // lanes
}

// DefaultArgon2 follows RFC 9106's second recommended option
// (t=3, m=64 MiB, p=4).
var DefaultArgon2 = Argon2Params{Time: 3, MemoryKiB: 64 * 1024, Threads: 4}

// maxArgon2Work bounds an Argon2id derivation's passes times its memory
// (in KiB): 16 GiB-passes, four passes over 4 GiB or 256 over 64 MiB,
// a minute or so of one core. A sidecar asking for more (damaged, or
// written to stall every open) is refused rather than derived: a
// derivation cannot be cancelled, and it holds its share of the
// process's Argon2 budget (argon2Gate) while it runs.
const maxArgon2Work = 16 << 20

func (p Argon2Params) validate() error {
	if p.Time < 1 || p.MemoryKiB < 8*uint32(p.Threads) || p.Threads < 1 || p.MemoryKiB > 4<<20 {
		return fmt.Errorf("projections: invalid argon2id parameters t=%d m=%dKiB p=%d", p.Time, p.MemoryKiB, p.Threads)
	}
	if uint64(p.Time)*uint64(p.MemoryKiB) > maxArgon2Work {
		return fmt.Errorf("projections: argon2id parameters t=%d m=%dKiB p=%d ask for more than %d GiB-passes of work", p.Time, p.MemoryKiB, p.Threads, maxArgon2Work>>20)
	}
	return nil
}

// Salt sidecar format, version 1 (26 bytes):
//
//	[0]      version = 1
//	[1:5]    Argon2id time, big endian
//	[5:9]    Argon2id memory in KiB, big endian
//	[9]      Argon2id threads
//	[10:26]  16 random salt bytes
const (
	saltVersion  = 1
	saltLen      = 16
	saltFileSize = 10 + saltLen
)

// SaltPath returns the default salt sidecar path of a database: "<db>.salt".
func SaltPath(dbPath string) string { return dbPath + ".salt" }

type saltFile struct {
	params Argon2Params
	salt   []byte
}

func readSalt(path string) (saltFile, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return saltFile{}, err
	}
	if len(b) != saltFileSize || b[0] != saltVersion {
		return saltFile{}, fmt.Errorf("salt sidecar %s: unknown format (version byte or size)", path)
	}
	sf := saltFile{
		params: Argon2Params{
			Time:      binary.BigEndian.Uint32(b[1:5]),
			MemoryKiB: binary.BigEndian.Uint32(b[5:9]),
			Threads:   b[9],
		},
		salt: append([]byte(nil), b[10:]...),
	}
	if err := sf.params.validate(); err != nil {
		return saltFile{}, fmt.Errorf("salt sidecar %s: %w", path, err)
	}
	return sf, nil
}

// writeSalt creates a new salt sidecar durably (temp file, fsync, rename,
// fsync directory) with mode 0600. It refuses to replace an existing one:
// that would make the database unopenable.
func writeSalt(path string, p Argon2Params) (saltFile, error) {
	if err := p.validate(); err != nil {
		return saltFile{}, err
	}
	sf := saltFile{params: p, salt: make([]byte, saltLen)}
	if _, err := rand.Read(sf.salt); err != nil {
		return saltFile{}, fmt.Errorf("salt sidecar %s: %w", path, err)
	}
	b := make([]byte, saltFileSize)
	b[0] = saltVersion
	binary.BigEndian.PutUint32(b[1:5], p.Time)
	binary.BigEndian.PutUint32(b[5:9], p.MemoryKiB)
	b[9] = p.Threads
	copy(b[10:], sf.salt)
	tmp := path + ".tmp"
	if err := writeFileSync(tmp, b); err != nil {
		return saltFile{}, fmt.Errorf("salt sidecar %s: %w", path, err)
	}
	// Link instead of rename: it fails if another process created the
	// sidecar meanwhile, so a salt in use is never replaced.
	if err := os.Link(tmp, path); err != nil {
		_ = os.Remove(tmp)
		return saltFile{}, fmt.Errorf("salt sidecar %s: %w", path, err)
	}
	_ = os.Remove(tmp)
	if err := syncDir(filepath.Dir(path)); err != nil {
		return saltFile{}, fmt.Errorf("salt sidecar %s: %w", path, err)
	}
	return sf, nil
}

// rawKeyFor returns the 32 raw SQLCipher key bytes for k. For a passphrase
// it reads the salt sidecar, creating it when create is set and it does not
// exist.
func rawKeyFor(k Key, saltPath string, p Argon2Params, create bool) ([]byte, error) {
	switch k.kind {
	case keyRaw:
		return k.bytes(), nil
	case keyPassphrase:
		sf, err := readSalt(saltPath)
		if errors.Is(err, fs.ErrNotExist) && create {
			sf, err = writeSalt(saltPath, p)
		}
		if err != nil {
			return nil, err
		}
		return deriveArgon2(k.bytes(), sf.salt, sf.params, KeySize), nil
	}
	return nil, errors.New("projections: no usable key (use RawKey, PassphraseKey or NoKey)")
}

func writeFileSync(path string, b []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	if err := f.Chmod(0o600); err != nil {
		f.Close()
		return err
	}
	if _, err := f.Write(b); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}
