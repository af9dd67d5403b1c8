package events

import (
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"sync"

	"golang.org/x/crypto/chacha20poly1305"
)

// Envelope layout (all integers big-endian); see docs/events.md.
// Formats 1 and 2 are sealed under a key derived from a root key:
//
//	offset size
//	0      3    magic "ELG"
//	3      1    envelope format version (2; 1 before events carried links)
//	4      4    key id
//	8      8    key-check value
//	16     16   binding tag
//	32     24   XChaCha20-Poly1305 nonce
//	56     n+16 ciphertext of the msgpack event, with the Poly1305 tag
//
// Format 3 is sealed under a data key ([DataKey]) and names it:
//
//	0      3    magic "ELG"
//	3      1    envelope format version (3)
//	4      1    data key class
//	5      3    zero
//	8      16   period pseudonym
//	24     8    key-check value of the data key
//	32     16   binding tag (under the data key)
//	48     24   XChaCha20-Poly1305 nonce
//	72     n+16 ciphertext of the msgpack event, with the Poly1305 tag
const (
	envelopeMagic   = "ELG"
	envelopeFormat  = 2 // written by Seal; 1 is still read (no Prev link)
	envelopeFormat1 = 1
	envelopeFormat3 = 3 // written by SealData and MessageIDs.SealData
	envelopeNewest  = envelopeFormat3
	off3Class       = 4
	off3Period      = 8
	off3KeyCheck    = off3Period + PeriodSize
	off3BindTag     = off3KeyCheck + keyCheckSize
	off3Nonce       = off3BindTag + bindTagSize
	header3Size     = off3Nonce + chacha20poly1305.NonceSizeX
	offKeyID        = 4
	offKeyCheck     = 8
	offBindTag      = offKeyCheck + keyCheckSize
	offNonce        = offBindTag + bindTagSize
	headerSize      = offNonce + chacha20poly1305.NonceSizeX
	tagSize         = chacha20poly1305.Overhead
	minEnvelopeSize = headerSize + tagSize
)

// HeaderSize is the size of the clear envelope header, and Overhead the
// number of bytes an envelope adds to the msgpack event it seals, for
// formats 1 and 2; Header3Size and Overhead3 are those of format 3.
const (
	HeaderSize  = headerSize
	Overhead    = headerSize + tagSize
	Header3Size = header3Size
	Overhead3   = header3Size + tagSize
)

// Binding is where an envelope lives (its JetStream stream and subject). It
// is bound into the binding tag and the AEAD associated data, so an
// envelope copied elsewhere does not open.
type Binding struct{ Stream, Subject string }

// associatedData appends lp(stream) || lp(subject) || lp(installation) ||
// lp(header) to ad.
func associatedData(ad []byte, b Binding, inst InstallationID, header []byte) []byte {
	ad = appendLP(ad, b.Stream)
	ad = appendLP(ad, b.Subject)
	ad = appendLP(ad, string(inst))
	return appendLP(ad, header)
}

// adPool holds associated-data buffers: the AEAD takes them through an
// interface, so a stack buffer would escape and allocate on every seal and
// open. They hold no secrets (stream, subject, installation, clear header).
var adPool = sync.Pool{New: func() any { return new([]byte) }}

func getAD() *[]byte  { return adPool.Get().(*[]byte) }
func putAD(b *[]byte) { adPool.Put(b) }

// Seal encodes e (msgpack), seals it under the current key of r for
// e.Aggregate.Installation, bound to b, and returns the envelope bytes.
// To seal for the log, with the event's message id, use [MessageIDs.Seal].
func Seal(r *Keyring, b Binding, e Event) ([]byte, error) {
	spec, v, err := checkEvent(e)
	if err != nil {
		return nil, fmt.Errorf("events: seal: %w", err)
	}
	return sealTo(sealer{r: r}, b, e.Aggregate.Installation, spec.info.Kind, spec.info.Version, eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time, Prev: e.Prev}, v, nil)
}

// SealData is [Seal] under the data key k named id: an envelope of format
// 3, which only k opens ([OpenData]). To seal for the log, with the
// event's message id, use [MessageIDs.SealData].
func SealData(k DataKey, id DataKeyID, b Binding, e Event) ([]byte, error) {
	spec, v, err := checkEvent(e)
	if err != nil {
		return nil, fmt.Errorf("events: seal: %w", err)
	}
	return sealTo(sealer{dk: k, id: id}, b, e.Aggregate.Installation, spec.info.Kind, spec.info.Version, eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time, Prev: e.Prev}, v, nil)
}

// sealer is what seals: the keyring's current root key (formats 1 and 2)
// or, when dk is set, the data key dk named id (format 3).
type sealer struct {
	r  *Keyring
	dk DataKey
	id DataKeyID
}

// seal seals body written as (k, version); Seal passes the current version.
func seal(r *Keyring, b Binding, inst InstallationID, k Kind, version uint16, h eventHeader, body any) ([]byte, error) {
	return sealTo(sealer{r: r}, b, inst, k, version, h, body, nil)
}

// sealTo is seal, writing the body's encoding to bodyOut unless it is nil.
func sealTo(sk sealer, b Binding, inst InstallationID, k Kind, version uint16, h eventHeader, body any, bodyOut io.Writer) ([]byte, error) {
	if sk.r == nil && sk.dk.st == nil {
		return nil, errors.New("events: seal: nil keyring")
	}
	if sk.dk.st != nil && (!sk.dk.Valid() || !sk.id.Class.Valid()) {
		return nil, fmt.Errorf("events: seal %s: no data key, or data key class %d: %w", k, sk.id.Class, ErrUnknownKey)
	}
	if b.Stream == "" || b.Subject == "" {
		return nil, fmt.Errorf("events: seal %s: binding needs a stream and a subject (got stream %q, subject %q)", k, b.Stream, b.Subject)
	}
	re := getRecordEncoder()
	defer re.put() // wipes the plaintext
	plain, err := re.encode(k, version, h, body)
	if err != nil {
		return nil, err
	}
	if bodyOut != nil {
		if _, err := bodyOut.Write(re.body.Bytes()); err != nil {
			return nil, fmt.Errorf("events: seal %s: write body: %w", k, err)
		}
	}
	if sk.dk.st != nil {
		return sealPlaintext3(sk.dk, sk.id, b, inst, plain)
	}
	return sealPlaintext(sk.r, b, inst, plain)
}

// sealPlaintext3 seals already-encoded event bytes under a data key.
func sealPlaintext3(k DataKey, id DataKeyID, b Binding, inst InstallationID, plain []byte) ([]byte, error) {
	st := k.state()
	env := make([]byte, header3Size, header3Size+len(plain)+tagSize)
	copy(env, envelopeMagic)
	env[3] = envelopeFormat3
	env[off3Class] = byte(id.Class)
	copy(env[off3Period:], id.Period[:])
	copy(env[off3KeyCheck:], st.keyCheck[:])
	tag := st.bindingTag(b, inst)
	copy(env[off3BindTag:], tag[:])
	nonce := env[off3Nonce:header3Size]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("events: seal: nonce: %w", err)
	}
	aead, err := chacha20poly1305.NewX(st.key[:])
	if err != nil {
		panic("events: chacha20poly1305: " + err.Error()) // fixed key size
	}
	ad := getAD()
	defer putAD(ad)
	*ad = associatedData((*ad)[:0], b, inst, env[:header3Size])
	return aead.Seal(env, nonce, plain, *ad), nil
}

// sealPlaintext seals already-encoded event bytes.
func sealPlaintext(r *Keyring, b Binding, inst InstallationID, plain []byte) ([]byte, error) {
	id := r.Current()
	rk := r.key(id)
	if rk == nil {
		return nil, fmt.Errorf("events: seal: current key id %d: %w", id, ErrUnknownKey)
	}
	env := make([]byte, headerSize, headerSize+len(plain)+tagSize)
	copy(env, envelopeMagic)
	env[3] = envelopeFormat
	binary.BigEndian.PutUint32(env[offKeyID:], uint32(id))
	copy(env[offKeyCheck:], rk.keyCheck[:])
	tag := rk.bindingTag(b, inst)
	copy(env[offBindTag:], tag[:])
	nonce := env[offNonce:headerSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("events: seal: nonce: %w", err)
	}
	aead := r.aead(id, rk, inst)
	ad := getAD()
	defer putAD(ad)
	*ad = associatedData((*ad)[:0], b, inst, env[:headerSize])
	return aead.Seal(env, nonce, plain, *ad), nil
}

// Open verifies and decrypts an envelope read at b for installation inst,
// decodes the event and upcasts its body to the current version. Apart from
// caller errors (a nil keyring, an invalid inst), failures wrap exactly one
// of ErrMalformed, ErrUnknownKey, ErrWrongKey, ErrMoved, ErrTampered or
// ErrUnknownVersion, with the key id as context. Open never panics on any
// envelope bytes.
func Open(r *Keyring, inst InstallationID, b Binding, envelope []byte) (Event, error) {
	if r == nil {
		return Event{}, errors.New("events: open: nil keyring")
	}
	if err := inst.Validate(); err != nil {
		return Event{}, fmt.Errorf("events: open: %w", err)
	}
	if len(envelope) < minEnvelopeSize {
		return Event{}, fmt.Errorf("events: open: envelope is %d bytes, shorter than the minimum %d: %w", len(envelope), minEnvelopeSize, ErrMalformed)
	}
	if string(envelope[:3]) != envelopeMagic {
		return Event{}, fmt.Errorf("events: open: bad magic: %w", ErrMalformed)
	}
	switch f := envelope[3]; {
	case f > envelopeNewest:
		return Event{}, fmt.Errorf("events: open: envelope format version %d is newer than this code reads (%d): %w", f, envelopeNewest, ErrUnknownVersion)
	case f < envelopeFormat1:
		return Event{}, fmt.Errorf("events: open: envelope format version %d: %w", f, ErrMalformed)
	case f == envelopeFormat3:
		id, _, err := EnvelopeDataKeyID(envelope)
		if err != nil {
			return Event{}, fmt.Errorf("events: open: %w", err)
		}
		return Event{}, fmt.Errorf("events: open: a format 3 envelope is sealed under data key %s, which root keys do not open (OpenData): %w", id, ErrUnknownKey)
	}
	id := KeyID(binary.BigEndian.Uint32(envelope[offKeyID:]))
	rk := r.key(id)
	if rk == nil {
		return Event{}, fmt.Errorf("events: open: key id %d: %w", id, ErrUnknownKey)
	}
	if subtle.ConstantTimeCompare(envelope[offKeyCheck:offBindTag], rk.keyCheck[:]) != 1 {
		return Event{}, fmt.Errorf("events: open: key id %d: %w", id, ErrWrongKey)
	}
	tag := rk.bindingTag(b, inst)
	if subtle.ConstantTimeCompare(envelope[offBindTag:offNonce], tag[:]) != 1 {
		return Event{}, fmt.Errorf("events: open: key id %d: %w", id, ErrMoved)
	}
	aead := r.aead(id, rk, inst)
	header := envelope[:headerSize]
	ad := getAD()
	defer putAD(ad)
	*ad = associatedData((*ad)[:0], b, inst, header)
	plain, err := aead.Open(nil, envelope[offNonce:headerSize], envelope[headerSize:], *ad)
	if err != nil {
		return Event{}, fmt.Errorf("events: open: key id %d: %w", id, ErrTampered)
	}
	return decodeOpened(plain, envelope[3], inst, fmt.Sprintf("key id %d", id))
}

// decodeOpened decodes (and wipes) an opened envelope's plaintext and
// checks it against the envelope's format and installation; what names
// the key for errors.
func decodeOpened(plain []byte, format byte, inst InstallationID, what string) (Event, error) {
	e, err := UnmarshalEvent(plain)
	clear(plain)
	if err != nil {
		return Event{}, fmt.Errorf("events: open: %s: %w", what, err)
	}
	if format == envelopeFormat1 && !e.Prev.IsZero() {
		return Event{}, fmt.Errorf("events: open: %s: a format 1 envelope with a link: %w", what, ErrMalformed)
	}
	if e.Aggregate.Installation != inst {
		return Event{}, fmt.Errorf("events: open: %s: event belongs to another installation: %w", what, ErrMoved)
	}
	return e, nil
}

// OpenData is [Open] for an envelope of format 3, under the data key k its
// header names ([EnvelopeDataKeyID]). Failures wrap exactly one of
// ErrMalformed, ErrWrongKey (k is not the key that sealed it), ErrMoved,
// ErrTampered or ErrUnknownVersion, naming the data key id; an envelope of
// format 1 or 2 is ErrMalformed here (open it with [Open]).
func OpenData(k DataKey, inst InstallationID, b Binding, envelope []byte) (Event, error) {
	if err := inst.Validate(); err != nil {
		return Event{}, fmt.Errorf("events: open: %w", err)
	}
	id, ok, err := EnvelopeDataKeyID(envelope)
	if err != nil {
		return Event{}, fmt.Errorf("events: open: %w", err)
	}
	if !ok {
		return Event{}, fmt.Errorf("events: open: envelope format %d is sealed under a root key (Open), not a data key: %w", envelope[3], ErrMalformed)
	}
	st := k.state()
	if st == nil || !k.Valid() {
		return Event{}, fmt.Errorf("events: open: data key %s: no key: %w", id, ErrUnknownKey)
	}
	if subtle.ConstantTimeCompare(envelope[off3KeyCheck:off3BindTag], st.keyCheck[:]) != 1 {
		return Event{}, fmt.Errorf("events: open: data key %s: %w", id, ErrWrongKey)
	}
	tag := st.bindingTag(b, inst)
	if subtle.ConstantTimeCompare(envelope[off3BindTag:off3Nonce], tag[:]) != 1 {
		return Event{}, fmt.Errorf("events: open: data key %s: %w", id, ErrMoved)
	}
	aead, err := chacha20poly1305.NewX(st.key[:])
	if err != nil {
		panic("events: chacha20poly1305: " + err.Error())
	}
	ad := getAD()
	defer putAD(ad)
	*ad = associatedData((*ad)[:0], b, inst, envelope[:header3Size])
	plain, err := aead.Open(nil, envelope[off3Nonce:header3Size], envelope[header3Size:], *ad)
	if err != nil {
		return Event{}, fmt.Errorf("events: open: data key %s: %w", id, ErrTampered)
	}
	return decodeOpened(plain, envelopeFormat3, inst, "data key "+id.String())
}

// EnvelopeDataKeyID returns the data key id in the clear header of a
// format-3 envelope, and ok false for an envelope of format 1 or 2 (sealed
// under a root key). It checks only the length, magic, format and class,
// so the id is unauthenticated until [OpenData] succeeds.
func EnvelopeDataKeyID(envelope []byte) (id DataKeyID, ok bool, err error) {
	if len(envelope) < minEnvelopeSize || string(envelope[:3]) != envelopeMagic {
		return DataKeyID{}, false, fmt.Errorf("events: envelope of %d bytes: bad magic or too short: %w", len(envelope), ErrMalformed)
	}
	switch f := envelope[3]; {
	case f == envelopeFormat1 || f == envelopeFormat:
		return DataKeyID{}, false, nil
	case f > envelopeNewest:
		return DataKeyID{}, false, fmt.Errorf("events: envelope format version %d is newer than this code reads (%d): %w", f, envelopeNewest, ErrUnknownVersion)
	case f != envelopeFormat3:
		return DataKeyID{}, false, fmt.Errorf("events: envelope format version %d: %w", f, ErrMalformed)
	}
	if len(envelope) < header3Size+tagSize {
		return DataKeyID{}, false, fmt.Errorf("events: format 3 envelope is %d bytes, shorter than the minimum %d: %w", len(envelope), header3Size+tagSize, ErrMalformed)
	}
	id.Class = DataKeyClass(envelope[off3Class])
	if !id.Class.Valid() { // the zero bytes after it are checked by the AEAD (header)
		return DataKeyID{}, false, fmt.Errorf("events: format 3 envelope: data key class %d: %w", envelope[off3Class], ErrMalformed)
	}
	copy(id.Period[:], envelope[off3Period:off3KeyCheck])
	return id, true, nil
}

// EnvelopeKeyID returns the root key id in the clear header of an
// envelope of format 1 or 2 without opening it (for tools deciding which
// key a rekey must keep). It checks only the length, magic and format
// version, so the id is unauthenticated. A format-3 envelope names a data
// key instead ([EnvelopeDataKeyID]) and is ErrMalformed here.
func EnvelopeKeyID(envelope []byte) (KeyID, error) {
	if len(envelope) < minEnvelopeSize || string(envelope[:3]) != envelopeMagic || envelope[3] < envelopeFormat1 || envelope[3] > envelopeFormat {
		return 0, fmt.Errorf("events: envelope key id: not an envelope of format %d to %d (%d bytes): %w", envelopeFormat1, envelopeFormat, len(envelope), ErrMalformed)
	}
	return KeyID(binary.BigEndian.Uint32(envelope[offKeyID:])), nil
}
