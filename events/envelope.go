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
//
//	offset size
//	0      3    magic "ELG"
//	3      1    envelope format version (2; 1 before events carried links)
//	4      4    key id
//	8      8    key-check value
//	16     16   binding tag
//	32     24   XChaCha20-Poly1305 nonce
//	56     n+16 ciphertext of the msgpack event, with the Poly1305 tag
const (
	envelopeMagic   = "ELG"
	envelopeFormat  = 2 // written; 1 is still read (no Prev link)
	envelopeFormat1 = 1
	offKeyID        = 4
	offKeyCheck     = 8
	offBindTag      = offKeyCheck + keyCheckSize
	offNonce        = offBindTag + bindTagSize
	headerSize      = offNonce + chacha20poly1305.NonceSizeX
	tagSize         = chacha20poly1305.Overhead
	minEnvelopeSize = headerSize + tagSize
)

// HeaderSize is the size of the clear envelope header, and Overhead the
// number of bytes an envelope adds to the msgpack event it seals.
const (
	HeaderSize = headerSize
	Overhead   = headerSize + tagSize
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
	return appendLP(ad, string(header))
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
	return sealTo(r, b, e.Aggregate.Installation, spec.info.Kind, spec.info.Version, eventHeader{Aggregate: e.Aggregate, Position: e.Position, Time: e.Time, Prev: e.Prev}, v, nil)
}

// seal seals body written as (k, version); Seal passes the current version.
func seal(r *Keyring, b Binding, inst InstallationID, k Kind, version uint16, h eventHeader, body any) ([]byte, error) {
	return sealTo(r, b, inst, k, version, h, body, nil)
}

// sealTo is seal, writing the body's encoding to bodyOut unless it is nil.
func sealTo(r *Keyring, b Binding, inst InstallationID, k Kind, version uint16, h eventHeader, body any, bodyOut io.Writer) ([]byte, error) {
	if r == nil {
		return nil, errors.New("events: seal: nil keyring")
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
	return sealPlaintext(r, b, inst, plain)
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
	case f > envelopeFormat:
		return Event{}, fmt.Errorf("events: open: envelope format version %d is newer than this code reads (%d): %w", f, envelopeFormat, ErrUnknownVersion)
	case f < envelopeFormat1:
		return Event{}, fmt.Errorf("events: open: envelope format version %d: %w", f, ErrMalformed)
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
	e, err := UnmarshalEvent(plain)
	clear(plain)
	if err != nil {
		return Event{}, fmt.Errorf("events: open: key id %d: %w", id, err)
	}
	if envelope[3] == envelopeFormat1 && !e.Prev.IsZero() {
		return Event{}, fmt.Errorf("events: open: key id %d: a format 1 envelope with a link: %w", id, ErrMalformed)
	}
	if e.Aggregate.Installation != inst {
		return Event{}, fmt.Errorf("events: open: key id %d: event belongs to another installation: %w", id, ErrMoved)
	}
	return e, nil
}

// EnvelopeKeyID returns the key id in an envelope's clear header without
// opening it (for tools deciding which key a rekey must keep). It checks
// only the length, magic and format version, so the id is unauthenticated.
func EnvelopeKeyID(envelope []byte) (KeyID, error) {
	if len(envelope) < minEnvelopeSize || string(envelope[:3]) != envelopeMagic || envelope[3] < envelopeFormat1 || envelope[3] > envelopeFormat {
		return 0, fmt.Errorf("events: envelope key id: not an envelope of format %d to %d (%d bytes): %w", envelopeFormat1, envelopeFormat, len(envelope), ErrMalformed)
	}
	return KeyID(binary.BigEndian.Uint32(envelope[offKeyID:])), nil
}
