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
	"sync/atomic"
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
	// ClassEpoch seals a group's events that carry its MLS state
	// (creation, joins, proposals, commits), one key per epoch, each
	// derived from the group's epoch chain (EpochChainKey): retention
	// by count advances the chain and the epochs before it die.
	ClassEpoch DataKeyClass = 4
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
	case ClassEpoch:
		return "epoch"
	}
	return "class-" + strconv.Itoa(int(c))
}

// Valid reports whether c is a declared class.
func (c DataKeyClass) Valid() bool { return c >= ClassState && c <= ClassEpoch }

// PeriodSize is the size of a period pseudonym.
const PeriodSize = 16

// DataKeyID names one data key of an installation: its class and the
// pseudonym of its period. It is in the clear header of a format-3
// envelope and, with the installation's pseudonym, is the data key's name
// in the key bucket ([DataKeyID.Name]).
//
// For ClassEpoch the period is the group's chain pseudonym (8 bytes)
// followed by the epoch, big-endian (8 bytes): every epoch of a group
// shares one bucket entry, the chain, and the epoch says how far to
// derive along it.
type DataKeyID struct {
	Class  DataKeyClass
	Period [PeriodSize]byte
}

// chainTokenSize is the size of a ClassEpoch id's chain pseudonym.
const chainTokenSize = 8

// Epoch returns the epoch of a ClassEpoch id, and false for other classes.
func (id DataKeyID) Epoch() (uint64, bool) {
	if id.Class != ClassEpoch {
		return 0, false
	}
	return binary.BigEndian.Uint64(id.Period[chainTokenSize:]), true
}

// WithEpoch returns the ClassEpoch id of the same chain at epoch n
// (id itself for other classes).
func (id DataKeyID) WithEpoch(n uint64) DataKeyID {
	if id.Class == ClassEpoch {
		binary.BigEndian.PutUint64(id.Period[chainTokenSize:], n)
	}
	return id
}

// Token is the period pseudonym as 26 characters of lowercase base32, the
// alphabet of subject pseudonyms; for ClassEpoch, the chain pseudonym
// alone, 13 characters (the name of the group's chain, whatever the
// epoch).
func (id DataKeyID) Token() string {
	if id.Class == ClassEpoch {
		return pseudonymEncoding.EncodeToString(id.Period[:chainTokenSize])
	}
	return pseudonymEncoding.EncodeToString(id.Period[:])
}

// Name is the data key's name in the key bucket, given the installation's
// pseudonym: "<installation pseudonym>.<class>.<period token>"; for
// ClassEpoch the name of the group's chain.
func (id DataKeyID) Name(instPseudonym string) string {
	return instPseudonym + "." + id.Class.String() + "." + id.Token()
}

// String names the class and period token (no secret: a pseudonym), and
// the epoch of a ClassEpoch id.
func (id DataKeyID) String() string {
	if n, ok := id.Epoch(); ok {
		return id.Class.String() + "/" + id.Token() + "@" + strconv.FormatUint(n, 10)
	}
	return id.Class.String() + "/" + id.Token()
}

// Period names the period of one data key of an installation: its class
// and the parts the period pseudonym covers ([Keyring.DataKeyID]). It is
// comparable, so writers can cache a period's key id by it.
type Period struct {
	Class DataKeyClass
	Scope string // "queue", "group" or "installation"
	ID    string // the queue or group aggregate id; empty for "installation"
	Day   string // the UTC day, YYYY-MM-DD, of messages and delivery periods; else empty
	Epoch uint64 // the group epoch of a ClassEpoch period (not in Parts: one chain per group)
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

// dayName is one UTC day and its name, the last one utcDay formatted.
type dayName struct {
	day  int64 // days since the Unix epoch
	name string
}

var lastDay atomic.Pointer[dayName]

// utcDay is t's UTC day as YYYY-MM-DD; the last one is cached (every
// event of a day names it, and formatting allocates).
func utcDay(t time.Time) string {
	sec := t.Unix()
	d := sec / 86400
	if sec < 0 && sec%86400 != 0 {
		d-- // floor, before 1970
	}
	if c := lastDay.Load(); c != nil && c.day == d {
		return c.name
	}
	name := t.UTC().Format(time.DateOnly)
	lastDay.Store(&dayName{day: d, name: name})
	return name
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
//   - group events that carry the group's MLS state (creation, proposals,
//     commits, joins by Welcome or external commit, a state recorded
//     before retention): epoch, one period per group epoch, the epoch the
//     recorded state is at (for a group.created that carries its first
//     commit, the epoch that commit starts: the group's, which the member
//     keeps longest). Their keys are derived along the group's chain, so a
//     new epoch costs no round trip;
//   - other group events (membership, secrets retired, handshake
//     format): state, one period per group;
//   - installation and key package events, and any aggregate type this
//     code does not know: state, one period per installation.
func PeriodKeyOf(e Event, now time.Time) Period {
	day := func() string {
		t := e.Time
		if t.IsZero() {
			t = now
		}
		return utcDay(t)
	}
	switch e.Aggregate.Type {
	case AggDelivery:
		return Period{Class: ClassDelivery, Scope: "queue", ID: e.Aggregate.ID, Day: day()}
	case AggGroup:
		epoch := func(n uint64) Period {
			return Period{Class: ClassEpoch, Scope: "group", ID: e.Aggregate.ID, Epoch: n}
		}
		switch b := e.Body.(type) {
		case ApplicationMessageSent, ApplicationMessageReceived:
			return Period{Class: ClassMessages, Scope: "group", ID: e.Aggregate.ID, Day: day()}
		case GroupCreated:
			if b.FirstCommit != nil {
				return epoch(b.FirstCommit.Epoch)
			}
			return epoch(b.Epoch)
		case ProposalStaged:
			return epoch(b.Epoch)
		case StateRecorded:
			return epoch(b.Epoch)
		case CommitApplied:
			return epoch(b.Epoch)
		case WelcomeProcessed:
			return epoch(b.Epoch)
		case ExternalJoined:
			return epoch(b.Epoch)
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

// PeriodID returns the id of inst's data key for period p: [Keyring.DataKeyID]
// of its class and parts, and for ClassEpoch the chain pseudonym (the
// first 8 bytes of that) followed by p.Epoch.
func (r *Keyring) PeriodID(inst InstallationID, p Period) (DataKeyID, error) {
	id, err := r.DataKeyID(inst, p.Class, p.Parts()...)
	if err != nil {
		return id, err
	}
	return id.WithEpoch(p.Epoch), nil
}

// Epoch chains. A group's epoch keys are not random one by one: the key
// bucket holds one random chain key per group, C_k, at the oldest epoch
// k the installation keeps, and
//
//	C_{n+1} = HKDF(C_n, "epochlog events v3 epoch chain step")
//	E_n     = HKDF(C_n, "epochlog events v3 epoch key")    (the data key of epoch n)
//
// so any kept epoch's key is derived from the entry, a new epoch costs no
// round trip, and replacing C_k by C_j (j > k) makes epochs k to j-1
// underivable: HKDF is one-way. This is the seekable forward-secure key
// generator of the anchors, in its simplest (linear) form; it suits
// epochs because a group's epochs die in order, oldest first.
const (
	labelEpochChainStep = "epochlog events v3 epoch chain step"
	labelEpochKey       = "epochlog events v3 epoch key"
)

func chainDerive(in *[DataKeySize]byte, label string, out *[DataKeySize]byte) {
	b, err := hkdf.Key(sha256.New, in[:], []byte(kdfSalt), label, DataKeySize)
	if err != nil {
		panic("events: hkdf: " + err.Error()) // fixed sizes; unreachable
	}
	copy(out[:], b)
	clear(b)
}

// EpochChainKey returns the chain key steps epochs after chain (C_{k+steps}
// from C_k): a new key, chain is left as it is. It costs one HKDF per
// step.
func EpochChainKey(chain DataKey, steps uint64) (DataKey, error) {
	st := chain.state()
	if st == nil || !chain.Valid() {
		return DataKey{}, errors.New("events: epoch chain: no key")
	}
	cur := st.key
	for range steps {
		chainDerive(&cur, labelEpochChainStep, &cur)
	}
	k := newDataKey(cur[:])
	clear(cur[:])
	return k, nil
}

// EpochDataKey returns the data key of the epoch chain is at (E_n from
// C_n).
func EpochDataKey(chain DataKey) (DataKey, error) {
	st := chain.state()
	if st == nil || !chain.Valid() {
		return DataKey{}, errors.New("events: epoch key: no chain key")
	}
	var b [DataKeySize]byte
	chainDerive(&st.key, labelEpochKey, &b)
	k := newDataKey(b[:])
	clear(b[:])
	return k, nil
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
//
// A group's epoch chain key (ClassEpoch) is wrapped in format 2: the same
// with the chain's epoch, 8 bytes big-endian, between the first 16 bytes
// and the nonce, and covered by the associated data (the first 24 bytes),
// so an older chain value cannot be passed off as a newer one's epoch.
const (
	wrapMagic   = "ELK"
	wrapFormat  = 1
	wrapFormat2 = 2
	wrapHeader  = 16 + chacha20poly1305.NonceSizeX
	WrappedSize = wrapHeader + DataKeySize + chacha20poly1305.Overhead
	// WrappedChainSize is the size of a wrapped epoch chain key.
	WrappedChainSize = WrappedSize + 8
)

func wrapAD(stream string, inst InstallationID, id DataKeyID, header []byte) []byte {
	ad := appendLP(nil, stream)
	ad = appendLP(ad, string(inst))
	ad = appendLP(ad, id.Class.String())
	ad = appendLP(ad, id.Token())
	return append(ad, header...)
}

// wrapLayout is where a wrap of id's class keeps its parts: the format,
// the size, and the end of the clear header (the nonce follows).
func wrapLayout(c DataKeyClass) (format byte, size, clearEnd int) {
	if c == ClassEpoch {
		return wrapFormat2, WrappedChainSize, 24
	}
	return wrapFormat, WrappedSize, 16
}

func wrapAEAD(rk *ringKey, id KeyID) []byte {
	return derive(rk.root, infoWithKeyID(labelDataKeyWrap, id), chacha20poly1305.KeySize)
}

// WrapDataKey wraps k under the ring's current root key, bound to the
// stream, the installation and the data key's id. For a ClassEpoch id, k
// is the group's chain key at the id's epoch (format 2 keeps the epoch).
// The result holds no secret in clear.
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
	format, size, clearEnd := wrapLayout(id.Class)
	hdr := clearEnd + chacha20poly1305.NonceSizeX
	out := make([]byte, hdr, size)
	copy(out, wrapMagic)
	out[3] = format
	binary.BigEndian.PutUint32(out[4:], uint32(kid))
	copy(out[8:16], rk.keyCheck[:])
	if n, ok := id.Epoch(); ok {
		binary.BigEndian.PutUint64(out[16:24], n)
	}
	if _, err := rand.Read(out[clearEnd:hdr]); err != nil {
		return nil, fmt.Errorf("events: wrap data key: nonce: %w", err)
	}
	wk := wrapAEAD(rk, kid)
	defer clear(wk)
	a, err := chacha20poly1305.NewX(wk)
	if err != nil {
		panic("events: chacha20poly1305: " + err.Error()) // fixed key size
	}
	return a.Seal(out, out[clearEnd:hdr], st.key[:], wrapAD(stream, inst, id, out[:clearEnd])), nil
}

// UnwrapDataKey opens a wrapped data key read under the name of id for
// inst on stream. For a ClassEpoch id (a group's chain; its epoch bytes
// are ignored) it returns the chain key, at the epoch [WrappedChainEpoch]
// reads, which the unwrap authenticates. Failures wrap ErrMalformed,
// ErrUnknownKey (the wrapping root key is not in the ring), ErrWrongKey
// or ErrTampered.
func (r *Keyring) UnwrapDataKey(stream string, inst InstallationID, id DataKeyID, wrapped []byte) (DataKey, error) {
	k, _, err := r.unwrapDataKey(stream, inst, id, wrapped)
	return k, err
}

// WrappedChainEpoch returns the epoch a wrapped epoch chain key is at,
// checking only its length and magic (UnwrapDataKey authenticates it).
func WrappedChainEpoch(wrapped []byte) (uint64, error) {
	if len(wrapped) != WrappedChainSize || string(wrapped[:3]) != wrapMagic || wrapped[3] != wrapFormat2 {
		return 0, fmt.Errorf("events: wrapped epoch chain key: %w", ErrMalformed)
	}
	return binary.BigEndian.Uint64(wrapped[16:24]), nil
}

func (r *Keyring) unwrapDataKey(stream string, inst InstallationID, id DataKeyID, wrapped []byte) (DataKey, uint64, error) {
	format, size, clearEnd := wrapLayout(id.Class)
	if len(wrapped) != size || string(wrapped[:3]) != wrapMagic || wrapped[3] != format {
		return DataKey{}, 0, fmt.Errorf("events: unwrap data key %s: not a wrapped key of format %d: %w", id, format, ErrMalformed)
	}
	var epoch uint64
	if id.Class == ClassEpoch {
		epoch = binary.BigEndian.Uint64(wrapped[16:24])
		id = id.WithEpoch(epoch)
	}
	kid := KeyID(binary.BigEndian.Uint32(wrapped[4:]))
	rk := r.key(kid)
	if rk == nil {
		return DataKey{}, 0, fmt.Errorf("events: unwrap data key %s: root key id %d: %w", id, kid, ErrUnknownKey)
	}
	if subtle.ConstantTimeCompare(wrapped[8:16], rk.keyCheck[:]) != 1 {
		return DataKey{}, 0, fmt.Errorf("events: unwrap data key %s: root key id %d: %w", id, kid, ErrWrongKey)
	}
	wk := wrapAEAD(rk, kid)
	defer clear(wk)
	a, err := chacha20poly1305.NewX(wk)
	if err != nil {
		panic("events: chacha20poly1305: " + err.Error())
	}
	hdr := clearEnd + chacha20poly1305.NonceSizeX
	plain, err := a.Open(nil, wrapped[clearEnd:hdr], wrapped[hdr:], wrapAD(stream, inst, id, wrapped[:clearEnd]))
	if err != nil {
		return DataKey{}, 0, fmt.Errorf("events: unwrap data key %s: root key id %d: %w", id, kid, ErrTampered)
	}
	defer clear(plain)
	k, err := NewDataKey(plain)
	return k, epoch, err
}

// WrappedKeyID returns the root key id a wrapped data key names (for
// tools that re-wrap), checking only its length and magic.
func WrappedKeyID(wrapped []byte) (KeyID, error) {
	ok := len(wrapped) == WrappedSize && wrapped[3] == wrapFormat ||
		len(wrapped) == WrappedChainSize && wrapped[3] == wrapFormat2
	if !ok || string(wrapped[:3]) != wrapMagic {
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
	for c := ClassState; c <= ClassEpoch; c++ {
		if parts[1] == c.String() {
			id.Class = c
		}
	}
	if !id.Class.Valid() {
		return "", DataKeyID{}, fmt.Errorf("events: data key name: unknown class: %w", ErrMalformed)
	}
	size := PeriodSize
	if id.Class == ClassEpoch {
		size = chainTokenSize // the chain; its epoch is in the value
	}
	if len(parts[2]) != pseudonymEncoding.EncodedLen(size) {
		return "", DataKeyID{}, fmt.Errorf("events: data key name: period token: %w", ErrMalformed)
	}
	if n, err := pseudonymEncoding.Decode(id.Period[:size], []byte(parts[2])); err != nil || n != size {
		return "", DataKeyID{}, fmt.Errorf("events: data key name: period token: %w", ErrMalformed)
	}
	// base32 ignores the bits past the last byte: several tokens decode
	// to one period, and only the one Token gives back names its key.
	if id.Token() != parts[2] {
		return "", DataKeyID{}, fmt.Errorf("events: data key name: period token not in canonical form: %w", ErrMalformed)
	}
	return parts[0], id, nil
}
