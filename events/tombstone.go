package events

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"time"

	"github.com/vmihailenco/msgpack/v5"
	"golang.org/x/crypto/chacha20poly1305"
)

// Tombstone records that an installation existed and was erased: its data
// keys shredded and its events purged. It is sealed under a key derived
// from a root key (not a data key), so it stays readable for as long as
// the ring holds that root key, and it holds no secret.
type Tombstone struct {
	// Installation is the erased installation.
	Installation InstallationID `msgpack:"installation"`
	// ErasedAt is when the erase began (UTC).
	ErasedAt time.Time `msgpack:"erased_at"`
	// LastSeq is the stream sequence of the installation's last event
	// when the erase began (0: it had none).
	LastSeq uint64 `msgpack:"last_seq"`
	// By says who asked (an operator name, a service), free text.
	By string `msgpack:"by"`
}

// A sealed tombstone:
//
//	offset size
//	0      3    magic "ELT"
//	3      1    tombstone format version (1)
//	4      4    root key id
//	8      8    key-check value of that root key
//	16     24   XChaCha20-Poly1305 nonce
//	40     n+16 ciphertext of the msgpack Tombstone, with the Poly1305 tag
//
// The key is HKDF(root, "epochlog events v3 tombstone" || key id ||
// lp(installation)); the associated data binds stream, subject,
// installation and the 40-byte header, as for events.
const (
	tombMagic      = "ELT"
	tombFormat     = 1
	tombHeaderSize = 16 + chacha20poly1305.NonceSizeX
	labelTombstone = "epochlog events v3 tombstone"
)

func tombAEAD(rk *ringKey, id KeyID, inst InstallationID) []byte {
	info := infoWithKeyID(labelTombstone, id)
	return derive(rk.root, appendLP(info, string(inst)), chacha20poly1305.KeySize)
}

// SealTombstone seals t under the ring's current root key, bound to b.
func SealTombstone(r *Keyring, b Binding, t Tombstone) ([]byte, error) {
	if r == nil {
		return nil, errors.New("events: seal tombstone: nil keyring")
	}
	if err := t.Installation.Validate(); err != nil {
		return nil, fmt.Errorf("events: seal tombstone: %w", err)
	}
	if b.Stream == "" || b.Subject == "" {
		return nil, errors.New("events: seal tombstone: binding needs a stream and a subject")
	}
	t.ErasedAt = t.ErasedAt.UTC()
	plain, err := msgpack.Marshal(&t)
	if err != nil {
		return nil, fmt.Errorf("events: seal tombstone: %w", err)
	}
	return sealTombstonePlain(r, b, t.Installation, plain)
}

// sealTombstonePlain seals the encoded tombstone plain of inst.
func sealTombstonePlain(r *Keyring, b Binding, inst InstallationID, plain []byte) ([]byte, error) {
	id := r.Current()
	rk := r.key(id)
	if rk == nil {
		return nil, fmt.Errorf("events: seal tombstone: current key id %d: %w", id, ErrUnknownKey)
	}
	out := make([]byte, tombHeaderSize, tombHeaderSize+len(plain)+tagSize)
	copy(out, tombMagic)
	out[3] = tombFormat
	binary.BigEndian.PutUint32(out[4:], uint32(id))
	copy(out[8:16], rk.keyCheck[:])
	if _, err := rand.Read(out[16:tombHeaderSize]); err != nil {
		return nil, fmt.Errorf("events: seal tombstone: nonce: %w", err)
	}
	k := tombAEAD(rk, id, inst)
	defer clear(k)
	a, err := chacha20poly1305.NewX(k)
	if err != nil {
		panic("events: chacha20poly1305: " + err.Error())
	}
	return a.Seal(out, out[16:tombHeaderSize], plain, associatedData(nil, b, inst, out[:tombHeaderSize])), nil
}

// OpenTombstone verifies and decodes a tombstone read at b for inst.
// Failures wrap ErrMalformed, ErrUnknownKey, ErrWrongKey, ErrTampered or
// ErrMoved (a tombstone of another installation).
func OpenTombstone(r *Keyring, inst InstallationID, b Binding, sealed []byte) (Tombstone, error) {
	if r == nil {
		return Tombstone{}, errors.New("events: open tombstone: nil keyring")
	}
	if len(sealed) < tombHeaderSize+tagSize || string(sealed[:3]) != tombMagic || sealed[3] != tombFormat {
		return Tombstone{}, fmt.Errorf("events: open tombstone: not a tombstone of format %d: %w", tombFormat, ErrMalformed)
	}
	id := KeyID(binary.BigEndian.Uint32(sealed[4:]))
	rk := r.key(id)
	if rk == nil {
		return Tombstone{}, fmt.Errorf("events: open tombstone: key id %d: %w", id, ErrUnknownKey)
	}
	if subtle.ConstantTimeCompare(sealed[8:16], rk.keyCheck[:]) != 1 {
		return Tombstone{}, fmt.Errorf("events: open tombstone: key id %d: %w", id, ErrWrongKey)
	}
	k := tombAEAD(rk, id, inst)
	defer clear(k)
	a, err := chacha20poly1305.NewX(k)
	if err != nil {
		panic("events: chacha20poly1305: " + err.Error())
	}
	plain, err := a.Open(nil, sealed[16:tombHeaderSize], sealed[tombHeaderSize:], associatedData(nil, b, inst, sealed[:tombHeaderSize]))
	if err != nil {
		return Tombstone{}, fmt.Errorf("events: open tombstone: key id %d: %w", id, ErrTampered)
	}
	// Exactly one msgpack value, as the event decoders read: bytes after
	// the record are refused, not dropped.
	if err := checkMsgpack(plain); err != nil {
		return Tombstone{}, fmt.Errorf("events: open tombstone: key id %d: %w: %v", id, ErrMalformed, err)
	}
	var t Tombstone
	if err := decodeNoPanic(msgpack.NewDecoder(bytes.NewReader(plain)), &t); err != nil {
		return Tombstone{}, fmt.Errorf("events: open tombstone: %w", ErrMalformed)
	}
	if t.Installation != inst {
		return Tombstone{}, fmt.Errorf("events: open tombstone: key id %d: %w", id, ErrMoved)
	}
	t.ErasedAt = t.ErasedAt.UTC()
	return t, nil
}
