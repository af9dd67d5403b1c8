package events

import (
	"crypto/hkdf"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/chacha20poly1305"
)

// DataKeySize is the length in bytes of a [DataKey].
const DataKeySize = 32

const redactedDataKey = "events.DataKey(REDACTED)"

// DataKey is a random 256-bit key that seals the events of one period of
// one installation (envelope format 3; see docs/forward-secrecy.md). It is
// never derived from anything that outlives it, so destroying every copy
// makes its period unreadable for good. It travels only wrapped under a
// root key ([Keyring.WrapDataKey]); its bytes are unexported and every
// textual form is "events.DataKey(REDACTED)".
//
// The state sits behind a pointer to a pointer, for the reason given at
// [RootKey]. Copies of a DataKey share that state: [DataKey.Wipe] zeroes it
// for all of them, so a holder that may wipe (a cache evicting) hands out
// [DataKey.Clone]s.
type DataKey struct {
	st **dataKeyState
}

// dataKeyState is the key and the values derived from it once.
type dataKeyState struct {
	key        [DataKeySize]byte
	keyCheck   [keyCheckSize]byte
	bindingKey [32]byte

	// tags caches binding tags by binding: a key's events share a few
	// subjects, and an HMAC per seal and open was a tenth of a bulk
	// append's sealing. Tags are in clear envelope headers: no secret.
	tagsMu sync.Mutex
	tags   map[tagInput][bindTagSize]byte
}

// tagInput is what a binding tag covers besides the key.
type tagInput struct {
	b    Binding
	inst InstallationID
}

// maxCachedTags bounds a data key's tag cache; when full it starts over.
const maxCachedTags = 64

// Labels of the values derived from a data key (HKDF-SHA256, salt
// kdfSalt). Part of the on-disk format.
const (
	labelDataKeyCheck   = "epochlog events v3 data key check"
	labelDataKeyBinding = "epochlog events v3 data key binding"
	labelDataKeyWrap    = "epochlog events v3 data key wrap"
	labelPeriod         = "period"
)

func newDataKey(b []byte) DataKey {
	st := new(dataKeyState)
	copy(st.key[:], b)
	check, err := hkdf.Key(sha256.New, st.key[:], []byte(kdfSalt), labelDataKeyCheck, keyCheckSize)
	if err != nil {
		panic("events: hkdf: " + err.Error()) // fixed sizes; unreachable
	}
	copy(st.keyCheck[:], check)
	bind, err := hkdf.Key(sha256.New, st.key[:], []byte(kdfSalt), labelDataKeyBinding, 32)
	if err != nil {
		panic("events: hkdf: " + err.Error())
	}
	copy(st.bindingKey[:], bind)
	clear(bind)
	return DataKey{st: &st}
}

// GenerateDataKey returns a new random DataKey from crypto/rand.
func GenerateDataKey() (DataKey, error) {
	var b [DataKeySize]byte
	if _, err := rand.Read(b[:]); err != nil {
		return DataKey{}, fmt.Errorf("events: generate data key: %w", err)
	}
	k := newDataKey(b[:])
	clear(b[:])
	return k, nil
}

// NewDataKey returns a DataKey holding a copy of b, which must be exactly
// [DataKeySize] bytes and not all zero (tests and tools; new keys come from
// [GenerateDataKey]). The error never echoes the input.
func NewDataKey(b []byte) (DataKey, error) {
	if len(b) != DataKeySize {
		return DataKey{}, fmt.Errorf("events: data key must be %d bytes, got %d", DataKeySize, len(b))
	}
	var z [DataKeySize]byte
	if subtle.ConstantTimeCompare(b, z[:]) == 1 {
		return DataKey{}, errors.New("events: data key is all zero bytes")
	}
	return newDataKey(b), nil
}

// state returns the key's state, or nil for the zero DataKey.
func (k DataKey) state() *dataKeyState {
	if k.st == nil {
		return nil
	}
	return *k.st
}

// Valid reports whether k holds a key (not the zero value, not wiped).
func (k DataKey) Valid() bool {
	st := k.state()
	if st == nil {
		return false
	}
	var z [DataKeySize]byte
	return subtle.ConstantTimeCompare(st.key[:], z[:]) != 1
}

// Clone returns an independent copy of k: wiping either leaves the other.
func (k DataKey) Clone() DataKey {
	st := k.state()
	if st == nil {
		return DataKey{}
	}
	p := &dataKeyState{key: st.key, keyCheck: st.keyCheck, bindingKey: st.bindingKey}
	return DataKey{st: &p}
}

// Wipe zeroes the key and what was derived from it, in place, for every
// copy sharing its state. A wiped key seals and opens nothing.
func (k DataKey) Wipe() {
	if st := k.state(); st != nil {
		clear(st.key[:])
		clear(st.keyCheck[:])
		clear(st.bindingKey[:])
		st.tagsMu.Lock()
		st.tags = nil
		st.tagsMu.Unlock()
	}
}

// Equal reports whether k and o hold the same bytes, in constant time.
func (k DataKey) Equal(o DataKey) bool {
	a, b := k.state(), o.state()
	if a == nil || b == nil {
		return a == b
	}
	return subtle.ConstantTimeCompare(a.key[:], b.key[:]) == 1
}

// String returns a redacted placeholder.
func (k DataKey) String() string { return redactedDataKey }

// GoString returns a redacted placeholder.
func (k DataKey) GoString() string { return redactedDataKey }

// Format prints the redacted placeholder for every verb.
func (k DataKey) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(redactedDataKey)) }

// MarshalText returns the redacted placeholder.
func (k DataKey) MarshalText() ([]byte, error) { return []byte(redactedDataKey), nil }

// MarshalJSON returns the redacted placeholder as a JSON string.
func (k DataKey) MarshalJSON() ([]byte, error) { return []byte(`"` + redactedDataKey + `"`), nil }

// LogValue redacts the key for every slog handler.
func (k DataKey) LogValue() slog.Value { return slog.StringValue(redactedDataKey) }

// bindingTag is the format-3 binding tag: HMAC-SHA256 under the data
// key's binding key, over the same input as the root keys' tag; cached.
func (st *dataKeyState) bindingTag(b Binding, inst InstallationID) [bindTagSize]byte {
	in := tagInput{b, inst}
	st.tagsMu.Lock()
	tag, ok := st.tags[in]
	st.tagsMu.Unlock()
	if ok {
		return tag
	}
	tag = st.computeBindingTag(b, inst)
	st.tagsMu.Lock()
	if st.tags == nil || len(st.tags) >= maxCachedTags {
		st.tags = make(map[tagInput][bindTagSize]byte)
	}
	st.tags[in] = tag
	st.tagsMu.Unlock()
	return tag
}

func (st *dataKeyState) computeBindingTag(b Binding, inst InstallationID) [bindTagSize]byte {
	m := hmac.New(sha256.New, st.bindingKey[:])
	msg := append(make([]byte, 0, 64+len(b.Stream)+len(b.Subject)+len(inst)), labelBindTag...)
	msg = appendLP(msg, b.Stream)
	msg = appendLP(msg, b.Subject)
	msg = appendLP(msg, string(inst))
	m.Write(msg)
	var tag [bindTagSize]byte
	copy(tag[:], m.Sum(nil))
	return tag
}

// DataKeyClass is what a data key seals, which decides when it dies (see
// docs/forward-secrecy.md, Key hierarchy).
type DataKeyClass uint8

// The data key classes. Their numbers are part of the envelope format.
const (
	// ClassState seals an installation's identity, key packages, delivery
	// cursors and each group's recorded state.
	ClassState DataKeyClass = 1
	// ClassMessages seals application messages sent and received.
	ClassMessages DataKeyClass = 2
	// ClassDelivery seals delivery queue events.
	ClassDelivery DataKeyClass = 3
)

// String is the class's name: "state", "messages" or "delivery".
func (c DataKeyClass) String() string {
	switch c {
	case ClassState:
		return "state"
	case ClassMessages:
		return "messages"
	case ClassDelivery:
		return "delivery"
	}
	return "class-" + strconv.Itoa(int(c))
}

// Valid reports whether c is a declared class.
func (c DataKeyClass) Valid() bool { return c >= ClassState && c <= ClassDelivery }

// PeriodSize is the size of a period pseudonym.
const PeriodSize = 16

// DataKeyID names one data key of an installation: its class and the
// pseudonym of its period. It is in the clear header of a format-3
// envelope and, with the installation's pseudonym, is the data key's name
// in the key bucket ([DataKeyID.Name]).
type DataKeyID struct {
	Class  DataKeyClass
	Period [PeriodSize]byte
}

// Token is the period pseudonym as 26 characters of lowercase base32, the
// alphabet of subject pseudonyms.
func (id DataKeyID) Token() string { return pseudonymEncoding.EncodeToString(id.Period[:]) }

// Name is the data key's name in the key bucket, given the installation's
// pseudonym: "<installation pseudonym>.<class>.<period token>".
func (id DataKeyID) Name(instPseudonym string) string {
	return instPseudonym + "." + id.Class.String() + "." + id.Token()
}

// String names the class and period token (no secret: a pseudonym).
func (id DataKeyID) String() string { return id.Class.String() + "/" + id.Token() }

// Period names the period of one data key of an installation: its class
// and the parts the period pseudonym covers ([Keyring.DataKeyID]). It is
// comparable, so writers can cache a period's key id by it.
type Period struct {
	Class DataKeyClass
	Scope string // "queue", "group" or "installation"
	ID    string // the queue or group aggregate id; empty for "installation"
	Day   string // the UTC day, YYYY-MM-DD, of messages and delivery periods; else empty
}

// Parts are the period's parts as [Keyring.DataKeyID] takes them.
func (p Period) Parts() []string {
	switch {
	case p.Scope == "installation":
		return []string{p.Scope}
	case p.Day == "":
		return []string{p.Scope, p.ID}
	}
	return []string{p.Scope, p.ID, p.Day}
}

// PeriodOf is [PeriodKeyOf] as a class and the parts naming the period.
func PeriodOf(e Event, now time.Time) (DataKeyClass, []string) {
	p := PeriodKeyOf(e, now)
	return p.Class, p.Parts()
}

// PeriodKeyOf is THE function that chooses the data key of an event: its
// class and period (made a pseudonym by [Keyring.DataKeyID]). now stands
// in for a zero e.Time, as the seal does.
//
//   - application messages (sent, received): messages, one period per
//     group per UTC day of the event's time;
//   - delivery queue events: delivery, one period per queue per UTC day;
//   - other group events (creation, proposals, commits, joins,
//     membership, secrets retired, handshake format): state, one period
//     per group. Not per group epoch, as docs/forward-secrecy.md plans:
//     a new period costs round trips to the key bucket before the first
//     event of the period is published, and per epoch that is on every
//     commit's critical path (see the doc's "What is built");
//   - installation and key package events, and any aggregate type this
//     code does not know: state, one period per installation.
func PeriodKeyOf(e Event, now time.Time) Period {
	day := func() string {
		t := e.Time
		if t.IsZero() {
			t = now
		}
		return t.UTC().Format(time.DateOnly)
	}
	switch e.Aggregate.Type {
	case AggDelivery:
		return Period{Class: ClassDelivery, Scope: "queue", ID: e.Aggregate.ID, Day: day()}
	case AggGroup:
		switch e.Body.(type) {
		case ApplicationMessageSent, ApplicationMessageReceived:
			return Period{Class: ClassMessages, Scope: "group", ID: e.Aggregate.ID, Day: day()}
		}
		return Period{Class: ClassState, Scope: "group", ID: e.Aggregate.ID}
	}
	return Period{Class: ClassState, Scope: "installation"}
}

// DataKeyID returns the id of inst's data key of class c for the period
// named by parts: the period pseudonym is keyed by the ring's pseudonym
// key (so the bus operator cannot tell which group or day a key is for)
// and covers the installation and the class.
func (r *Keyring) DataKeyID(inst InstallationID, c DataKeyClass, parts ...string) (DataKeyID, error) {
	p := make([]string, 0, len(parts)+3)
	p = append(p, labelPeriod, string(inst), c.String())
	tok := r.Pseudonym(append(p, parts...)...)
	if tok == "" {
		return DataKeyID{}, errors.New("events: data key id: keyring has no key")
	}
	id := DataKeyID{Class: c}
	if _, err := pseudonymEncoding.Decode(id.Period[:], []byte(tok)); err != nil {
		return DataKeyID{}, fmt.Errorf("events: data key id: %w", err) // unreachable: our own encoding
	}
	return id, nil
}

// A wrapped data key (the value stored in the key bucket):
//
//	offset size
//	0      3    magic "ELK"
//	3      1    wrap format version (1)
//	4      4    root key id that wraps it
//	8      8    key-check value of that root key
//	16     24   XChaCha20-Poly1305 nonce
//	40     48   ciphertext of the 32 key bytes, with the Poly1305 tag
//
// The wrapping key is HKDF(root, label "epochlog events v3 data key wrap"
// || key id); the associated data is lp(stream) || lp(installation) ||
// lp(class) || lp(period token) || the first 16 bytes above, so a wrap
// moved to another name, installation or stream does not open.
const (
	wrapMagic   = "ELK"
	wrapFormat  = 1
	wrapHeader  = 16 + chacha20poly1305.NonceSizeX
	WrappedSize = wrapHeader + DataKeySize + chacha20poly1305.Overhead
)

func wrapAD(stream string, inst InstallationID, id DataKeyID, header []byte) []byte {
	ad := appendLP(nil, stream)
	ad = appendLP(ad, string(inst))
	ad = appendLP(ad, id.Class.String())
	ad = appendLP(ad, id.Token())
	return append(ad, header...)
}

func wrapAEAD(rk *ringKey, id KeyID) []byte {
	return derive(rk.root, infoWithKeyID(labelDataKeyWrap, id), chacha20poly1305.KeySize)
}

// WrapDataKey wraps k under the ring's current root key, bound to the
// stream, the installation and the data key's id. The result holds no
// secret in clear.
func (r *Keyring) WrapDataKey(stream string, inst InstallationID, id DataKeyID, k DataKey) ([]byte, error) {
	st := k.state()
	if st == nil || !k.Valid() {
		return nil, errors.New("events: wrap data key: no key")
	}
	if !id.Class.Valid() {
		return nil, fmt.Errorf("events: wrap data key: class %d: %w", id.Class, ErrMalformed)
	}
	kid := r.Current()
	rk := r.key(kid)
	if rk == nil {
		return nil, fmt.Errorf("events: wrap data key: current key id %d: %w", kid, ErrUnknownKey)
	}
	out := make([]byte, wrapHeader, WrappedSize)
	copy(out, wrapMagic)
	out[3] = wrapFormat
	binary.BigEndian.PutUint32(out[4:], uint32(kid))
	copy(out[8:16], rk.keyCheck[:])
	if _, err := rand.Read(out[16:wrapHeader]); err != nil {
		return nil, fmt.Errorf("events: wrap data key: nonce: %w", err)
	}
	wk := wrapAEAD(rk, kid)
	defer clear(wk)
	a, err := chacha20poly1305.NewX(wk)
	if err != nil {
		panic("events: chacha20poly1305: " + err.Error()) // fixed key size
	}
	return a.Seal(out, out[16:wrapHeader], st.key[:], wrapAD(stream, inst, id, out[:16])), nil
}

// UnwrapDataKey opens a wrapped data key read under the name of id for
// inst on stream. Failures wrap ErrMalformed, ErrUnknownKey (the wrapping
// root key is not in the ring), ErrWrongKey or ErrTampered.
func (r *Keyring) UnwrapDataKey(stream string, inst InstallationID, id DataKeyID, wrapped []byte) (DataKey, error) {
	if len(wrapped) != WrappedSize || string(wrapped[:3]) != wrapMagic || wrapped[3] != wrapFormat {
		return DataKey{}, fmt.Errorf("events: unwrap data key %s: not a wrapped key of format %d: %w", id, wrapFormat, ErrMalformed)
	}
	kid := KeyID(binary.BigEndian.Uint32(wrapped[4:]))
	rk := r.key(kid)
	if rk == nil {
		return DataKey{}, fmt.Errorf("events: unwrap data key %s: root key id %d: %w", id, kid, ErrUnknownKey)
	}
	if subtle.ConstantTimeCompare(wrapped[8:16], rk.keyCheck[:]) != 1 {
		return DataKey{}, fmt.Errorf("events: unwrap data key %s: root key id %d: %w", id, kid, ErrWrongKey)
	}
	wk := wrapAEAD(rk, kid)
	defer clear(wk)
	a, err := chacha20poly1305.NewX(wk)
	if err != nil {
		panic("events: chacha20poly1305: " + err.Error())
	}
	plain, err := a.Open(nil, wrapped[16:wrapHeader], wrapped[wrapHeader:], wrapAD(stream, inst, id, wrapped[:16]))
	if err != nil {
		return DataKey{}, fmt.Errorf("events: unwrap data key %s: root key id %d: %w", id, kid, ErrTampered)
	}
	defer clear(plain)
	return NewDataKey(plain)
}

// WrappedKeyID returns the root key id a wrapped data key names (for
// tools that re-wrap), checking only its length and magic.
func WrappedKeyID(wrapped []byte) (KeyID, error) {
	if len(wrapped) != WrappedSize || string(wrapped[:3]) != wrapMagic || wrapped[3] != wrapFormat {
		return 0, fmt.Errorf("events: wrapped data key: %w", ErrMalformed)
	}
	return KeyID(binary.BigEndian.Uint32(wrapped[4:])), nil
}

// ParseDataKeyName splits a key bucket name ([DataKeyID.Name]) into the
// installation pseudonym and the data key id, for tools that walk the
// bucket (re-wrap). It checks the form only; the error never echoes the
// name beyond its length.
func ParseDataKeyName(name string) (instPseudonym string, id DataKeyID, err error) {
	parts := strings.Split(name, ".")
	if len(parts) != 3 || parts[0] == "" {
		return "", DataKeyID{}, fmt.Errorf("events: data key name of %d characters: not <installation>.<class>.<period>: %w", len(name), ErrMalformed)
	}
	for c := ClassState; c <= ClassDelivery; c++ {
		if parts[1] == c.String() {
			id.Class = c
		}
	}
	if !id.Class.Valid() {
		return "", DataKeyID{}, fmt.Errorf("events: data key name: unknown class: %w", ErrMalformed)
	}
	if len(parts[2]) != pseudonymEncoding.EncodedLen(PeriodSize) {
		return "", DataKeyID{}, fmt.Errorf("events: data key name: period token: %w", ErrMalformed)
	}
	if n, err := pseudonymEncoding.Decode(id.Period[:], []byte(parts[2])); err != nil || n != PeriodSize {
		return "", DataKeyID{}, fmt.Errorf("events: data key name: period token: %w", ErrMalformed)
	}
	return parts[0], id, nil
}
