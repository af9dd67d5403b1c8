package events

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"hash"
	"log/slog"
	"slices"
	"strings"
	"sync"

	"github.com/epochlog/epochlog/internal/hidden"
	"golang.org/x/crypto/chacha20poly1305"
)

// RootKeySize is the length in bytes of a [RootKey].
const RootKeySize = 32

const redactedRootKey = "events.RootKey(REDACTED)"

// RootKey is a 32-byte root secret from which per-installation envelope keys,
// key-check values, binding keys and the pseudonym key are derived. Its bytes
// are unexported and never printed: every textual form is
// "events.RootKey(REDACTED)". The zero value is not a usable key.
//
// The bytes sit behind a pointer to a pointer (never written after
// construction, so copies may share it). fmt cannot call Format on a RootKey
// held in an unexported field of another struct and falls back to
// reflection, which dereferences one pointer (even when reporting a bad
// verb such as %s) but prints a pointer to a pointer as an address; so the
// key is not dumped there either.
type RootKey struct {
	b **[RootKeySize]byte
}

func newRootKeyStorage() RootKey {
	p := new([RootKeySize]byte)
	return RootKey{b: &p}
}

// bytes returns the key array; a zero RootKey reads as all zero.
func (k RootKey) bytes() *[RootKeySize]byte {
	if k.b == nil {
		return new([RootKeySize]byte)
	}
	return *k.b
}

// NewRootKey returns a RootKey holding a copy of b, which must be exactly
// [RootKeySize] bytes and not all zero. The error never echoes the input.
func NewRootKey(b []byte) (RootKey, error) {
	if len(b) != RootKeySize {
		return RootKey{}, fmt.Errorf("events: root key must be %d bytes, got %d", RootKeySize, len(b))
	}
	k := newRootKeyStorage()
	copy(k.bytes()[:], b)
	if k.isZero() {
		return RootKey{}, errors.New("events: root key is all zero bytes")
	}
	return k, nil
}

// GenerateRootKey returns a new random RootKey from crypto/rand.
func GenerateRootKey() (RootKey, error) {
	k := newRootKeyStorage()
	if _, err := rand.Read(k.bytes()[:]); err != nil {
		return RootKey{}, fmt.Errorf("events: generate root key: %w", err)
	}
	return k, nil
}

// Bytes returns a copy of the key bytes; the caller owns (and should wipe)
// the copy.
func (k RootKey) Bytes() []byte { return slices.Clone(k.bytes()[:]) }

// Equal reports whether k and o hold the same bytes, in constant time.
func (k RootKey) Equal(o RootKey) bool {
	return subtle.ConstantTimeCompare(k.bytes()[:], o.bytes()[:]) == 1
}

// isZero reports whether k is the zero value (never a usable key).
func (k RootKey) isZero() bool {
	var z [RootKeySize]byte
	return subtle.ConstantTimeCompare(k.bytes()[:], z[:]) == 1
}

// String returns a redacted placeholder.
func (k RootKey) String() string { return redactedRootKey }

// GoString returns a redacted placeholder, so %#v does not dump the array.
func (k RootKey) GoString() string { return redactedRootKey }

// Format prints the redacted placeholder for every verb (%v, %+v, %#v, %x,
// %s, %q, ...), so no verb reaches the bytes.
func (k RootKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redactedRootKey)) }

// MarshalText returns the redacted placeholder.
func (k RootKey) MarshalText() ([]byte, error) { return []byte(redactedRootKey), nil }

// MarshalJSON returns the redacted placeholder as a JSON string.
func (k RootKey) MarshalJSON() ([]byte, error) { return []byte(`"` + redactedRootKey + `"`), nil }

// LogValue redacts the key for every slog handler.
func (k RootKey) LogValue() slog.Value { return slog.StringValue(redactedRootKey) }

// KeyID names a root key in a [Keyring] and in the envelope header. 0 is
// invalid.
type KeyID uint32

// Domain-separation labels for everything derived from a root key. They are
// part of the on-disk format: changing one makes old envelopes unreadable.
const (
	kdfSalt        = "epochlog/events/v1"
	labelAEAD      = "epochlog events v1 aead key"
	labelKeyCheck  = "epochlog events v1 key check"
	labelBinding   = "epochlog events v1 binding key"
	labelPseudonym = "epochlog events v1 pseudonym key"
	labelBindTag   = "epochlog events v1 binding tag"
	labelPseudoMAC = "epochlog events v1 pseudonym"
)

const (
	keyCheckSize = 8
	bindTagSize  = 16
	// aeadCacheMax bounds the per-(key, installation) AEAD cache; a backend
	// serving many installations re-derives on a miss instead of growing.
	aeadCacheMax = 4096
)

// derive runs HKDF-SHA256 over root with the package salt and the given info.
func derive(root RootKey, info []byte, n int) []byte {
	out, err := hkdf.Key(sha256.New, root.bytes()[:], []byte(kdfSalt), string(info), n)
	if err != nil {
		// Only reachable for n > 255*32, which no caller asks for.
		panic("events: hkdf: " + err.Error())
	}
	return out
}

func infoWithKeyID(label string, id KeyID) []byte {
	b := make([]byte, 0, len(label)+4)
	b = append(b, label...)
	return binary.BigEndian.AppendUint32(b, uint32(id))
}

// appendLP appends s prefixed by its 32-bit big-endian length, so that
// concatenations of variable parts are unambiguous.
func appendLP[T string | []byte](b []byte, s T) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// ringKey is one root key with the values derived from it once.
type ringKey struct {
	root       RootKey
	keyCheck   [keyCheckSize]byte
	bindingKey [32]byte
	// bindingMACs pools *bindingMAC keyed with bindingKey: every seal and
	// open computes a binding tag.
	bindingMACs sync.Pool
}

func newRingKey(id KeyID, k RootKey) *ringKey {
	rk := &ringKey{root: k}
	copy(rk.keyCheck[:], derive(k, infoWithKeyID(labelKeyCheck, id), keyCheckSize))
	copy(rk.bindingKey[:], derive(k, infoWithKeyID(labelBinding, id), 32))
	rk.bindingMACs.New = func() any { return &bindingMAC{mac: hmac.New(sha256.New, rk.bindingKey[:])} }
	return rk
}

// bindingMAC is a pooled HMAC-SHA256 state with its scratch space, so a
// binding tag allocates nothing (a fresh HMAC allocates ~500 B, and bytes
// handed to a hash.Hash escape to the heap).
type bindingMAC struct {
	mac hash.Hash
	msg []byte
	sum []byte
}

// bindingTag is HMAC-SHA256(bindingKey, label || lp(stream) || lp(subject) ||
// lp(installation)) truncated to bindTagSize bytes.
func (rk *ringKey) bindingTag(b Binding, inst InstallationID) [bindTagSize]byte {
	m := rk.bindingMACs.Get().(*bindingMAC)
	defer rk.bindingMACs.Put(m)
	m.mac.Reset()
	m.msg = append(m.msg[:0], labelBindTag...)
	m.msg = appendLP(m.msg, b.Stream)
	m.msg = appendLP(m.msg, b.Subject)
	m.msg = appendLP(m.msg, string(inst))
	m.mac.Write(m.msg)
	m.sum = m.mac.Sum(m.sum[:0])
	var tag [bindTagSize]byte
	copy(tag[:], m.sum)
	return tag
}

type aeadCacheKey struct {
	id   KeyID
	inst InstallationID
}

// Keyring holds every root key that ever sealed events (so old events stay
// readable) and names the current one (which new events use). It is safe
// for concurrent use. Its printed and JSON forms list key ids only.
type Keyring struct {
	mu sync.RWMutex
	// st is behind a pointer so that fmt's reflection fallback (a *Keyring
	// in an unexported field, printed with a bad verb) shows an address, not
	// the derived keys.
	st *ringState
}

type ringState struct {
	keys         map[KeyID]*ringKey
	current      KeyID
	pseudoAnchor KeyID
	// pseudoKey is behind a hidden.Value: a caller's struct may hold a
	// Keyring by value (the zero Keyring is usable), and fmt's bad-verb
	// path prints what st points to, and so a key held inline here.
	pseudoKey hidden.Value[[]byte]
	aeads     map[aeadCacheKey]cipher.AEAD
}

// NewKeyring returns a keyring holding k under id, which is also the current
// key.
func NewKeyring(id KeyID, k RootKey) (*Keyring, error) {
	r := &Keyring{st: &ringState{keys: map[KeyID]*ringKey{}, aeads: map[aeadCacheKey]cipher.AEAD{}}}
	if err := r.Rotate(id, k); err != nil {
		return nil, err
	}
	return r, nil
}

// Add adds k under id without changing the current key, to read events sealed
// with an older (or another writer's) key. Adding the same key again under
// the same id is a no-op; a different key under an existing id is an error.
// Adding an id lower than every id already present changes all pseudonyms
// (see [Keyring.Pseudonym]).
func (r *Keyring) Add(id KeyID, k RootKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.addLocked(id, k)
}

func (r *Keyring) addLocked(id KeyID, k RootKey) error {
	if r.st == nil { // a zero Keyring, not from NewKeyring
		r.st = &ringState{keys: map[KeyID]*ringKey{}, aeads: map[aeadCacheKey]cipher.AEAD{}}
	}
	if id == 0 {
		return errors.New("events: key id 0 is invalid")
	}
	if k.isZero() {
		return fmt.Errorf("events: key id %d: root key is the zero value", id)
	}
	if old, ok := r.st.keys[id]; ok {
		if !old.root.Equal(k) {
			return fmt.Errorf("events: key id %d already holds a different key", id)
		}
		return nil
	}
	r.st.keys[id] = newRingKey(id, k)
	if r.st.pseudoAnchor == 0 || id < r.st.pseudoAnchor {
		r.st.pseudoAnchor = id
		r.st.pseudoKey = hidden.New(derive(k, []byte(labelPseudonym), 32))
	}
	return nil
}

// Rotate adds k under id (as [Keyring.Add]) and makes it the current key, so
// that every later [Seal] uses it.
func (r *Keyring) Rotate(id KeyID, k RootKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if err := r.addLocked(id, k); err != nil {
		return err
	}
	r.st.current = id
	return nil
}

// Current returns the id of the key new envelopes are sealed with.
func (r *Keyring) Current() KeyID {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.st == nil {
		return 0
	}
	return r.st.current
}

// Has reports whether the ring holds a key under id.
func (r *Keyring) Has(id KeyID) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.st == nil {
		return false
	}
	_, ok := r.st.keys[id]
	return ok
}

// IDs returns the ids of every key in the ring, ascending.
func (r *Keyring) IDs() []KeyID {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.st == nil {
		return nil
	}
	ids := make([]KeyID, 0, len(r.st.keys))
	for id := range r.st.keys {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	return ids
}

// RootKey returns the root key held under id, and whether the ring holds
// one, so that a ring can be stored (package keyfile writes it to a file
// with [Keyring.IDs] and [Keyring.Current]). The key prints redacted; its
// bytes ([RootKey.Bytes]) are the secret every event of the ring is sealed
// under.
func (r *Keyring) RootKey(id KeyID) (RootKey, bool) {
	rk := r.key(id)
	if rk == nil {
		return RootKey{}, false
	}
	return rk.root, true
}

var pseudonymEncoding = base32.NewEncoding("abcdefghijklmnopqrstuvwxyz234567").WithPadding(base32.NoPadding)

// Pseudonym returns a keyed, stable token for use in NATS subjects: the
// lowercase base32 (no padding) of HMAC-SHA256(pseudonymKey, label ||
// lp(part1) || lp(part2) ...)[:16], 26 characters. Parts are length-prefixed,
// so ("ab","c") and ("a","bc") differ. The pseudonym key is derived (HKDF)
// from the key with the LOWEST KeyID in the ring, so pseudonyms survive
// rotation as long as that key stays in the ring. A nil or empty ring
// returns "".
func (r *Keyring) Pseudonym(parts ...string) string {
	if r == nil {
		return ""
	}
	r.mu.RLock()
	if r.st == nil || r.st.pseudoAnchor == 0 {
		r.mu.RUnlock()
		return ""
	}
	m := hmac.New(sha256.New, r.st.pseudoKey.Get())
	r.mu.RUnlock()
	msg := []byte(labelPseudoMAC)
	for _, p := range parts {
		msg = appendLP(msg, p)
	}
	m.Write(msg)
	return pseudonymEncoding.EncodeToString(m.Sum(nil)[:16])
}

// key returns the ring entry for id, or nil.
func (r *Keyring) key(id KeyID) *ringKey {
	r.mu.RLock()
	defer r.mu.RUnlock()
	if r.st == nil {
		return nil
	}
	return r.st.keys[id]
}

// aead returns the XChaCha20-Poly1305 instance for installation inst under
// key id, deriving and caching it on first use.
func (r *Keyring) aead(id KeyID, rk *ringKey, inst InstallationID) cipher.AEAD {
	ck := aeadCacheKey{id, inst}
	r.mu.RLock()
	a := r.st.aeads[ck]
	r.mu.RUnlock()
	if a != nil {
		return a
	}
	info := infoWithKeyID(labelAEAD, id)
	info = appendLP(info, string(inst))
	k := derive(rk.root, info, chacha20poly1305.KeySize)
	a, err := chacha20poly1305.NewX(k)
	clear(k)
	if err != nil {
		panic("events: chacha20poly1305: " + err.Error()) // key size is fixed; unreachable
	}
	r.mu.Lock()
	if len(r.st.aeads) >= aeadCacheMax {
		clear(r.st.aeads)
	}
	r.st.aeads[ck] = a
	r.mu.Unlock()
	return a
}

func (r *Keyring) describe() string {
	if r == nil {
		return "events.Keyring(nil)"
	}
	ids := r.IDs()
	s := make([]string, len(ids))
	for i, id := range ids {
		s[i] = fmt.Sprint(uint32(id))
	}
	return fmt.Sprintf("events.Keyring(current=%d, keys=[%s], REDACTED)", r.Current(), strings.Join(s, " "))
}

// String lists the key ids and the current id, never key bytes.
func (r *Keyring) String() string { return r.describe() }

// GoString is String, so %#v does not dump the unexported keys.
func (r *Keyring) GoString() string { return r.describe() }

// Format prints the String form for every verb.
func (r *Keyring) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(r.describe())) }

// MarshalText returns the String form.
func (r *Keyring) MarshalText() ([]byte, error) { return []byte(r.describe()), nil }

// MarshalJSON returns the String form as a JSON string.
func (r *Keyring) MarshalJSON() ([]byte, error) { return fmt.Appendf(nil, "%q", r.describe()), nil }

// Secret holds secret bytes inside an event body: private keys, serialized
// MLS group state (which contains epoch secrets) and message plaintext. It
// encodes to msgpack as plain bytes (it is inside the sealed envelope), but
// every printed form and its JSON and text forms are redacted; use
// [Secret.Bytes] or [MarshalJSONReveal] to see the bytes on purpose.
//
// The bytes sit two pointers away (internal/hidden), so that no fmt verb
// prints them wherever a Secret is held: fmt cannot call Format on a Secret
// in an unexported field (of an Event, of a caller's struct) and falls back
// to reflection, which shows only an address there.
//
// A Secret is immutable by convention: [NewSecret] keeps the slice it is
// given and [Secret.Bytes] returns it, neither copies (plaintext and group
// states can be large, and every event recorded or read would pay for the
// copy), so neither side may change the bytes afterwards. Its zero value is
// what a nil []byte was: no bytes recorded.
type Secret struct {
	b hidden.Value[[]byte]
}

// NewSecret returns a Secret holding b itself, not a copy (see [Secret]):
// the caller must not change b afterwards. A nil b gives the zero Secret; an
// empty non-nil b gives an empty Secret that is not zero, as msgpack keeps
// them apart (nil and empty bytes).
func NewSecret(b []byte) Secret {
	if b == nil {
		return Secret{}
	}
	return Secret{b: hidden.New(b)}
}

// Bytes returns the bytes held, not a copy: the caller must not change
// them. It is nil for the zero Secret.
func (s Secret) Bytes() []byte { return s.b.Get() }

// Len returns the number of bytes held.
func (s Secret) Len() int { return len(s.b.Get()) }

// IsZero reports whether s is the zero Secret (no bytes recorded, nil),
// as opposed to one holding bytes or an empty slice.
func (s Secret) IsZero() bool { return s.b.Get() == nil }

// Equal reports in constant time whether s and o hold the same bytes (a
// zero and an empty Secret hold the same: none).
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare(s.b.Get(), o.b.Get()) == 1
}

func (s Secret) redacted() string {
	if s.IsZero() {
		return "events.Secret(nil)"
	}
	return fmt.Sprintf("events.Secret(REDACTED, %d bytes)", s.Len())
}

// String returns a redacted placeholder with the length.
func (s Secret) String() string { return s.redacted() }

// GoString returns a redacted placeholder with the length.
func (s Secret) GoString() string { return s.redacted() }

// Format prints the redacted placeholder for every verb.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(s.redacted())) }

// MarshalText returns the redacted placeholder.
func (s Secret) MarshalText() ([]byte, error) { return []byte(s.redacted()), nil }

// MarshalJSON returns the redacted placeholder as a JSON string.
func (s Secret) MarshalJSON() ([]byte, error) { return fmt.Appendf(nil, "%q", s.redacted()), nil }

// LogValue redacts the secret for every slog handler, including one that
// encodes values by reflection.
func (s Secret) LogValue() slog.Value { return slog.StringValue(s.redacted()) }
