package events

import (
	"crypto/cipher"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

// Snapshot envelope layout (all integers big-endian); see
// docs/forward-secrecy.md, Snapshots.
//
//	offset size
//	0      3    magic "ELS" (an event envelope starts "ELG")
//	3      1    snapshot envelope format version (1)
//	4      4    root key id
//	8      8    key-check value of the snapshot key
//	16     24   XChaCha20-Poly1305 nonce
//	40     n+16 ciphertext of the snapshot, with the Poly1305 tag
//
// The key is derived from the root key under labels no event key uses,
// for one installation, so a snapshot never opens as an event (nor an
// event as a snapshot, nor one installation's snapshot as another's).
// The associated data binds the stream, the installation and the
// checkpoint as well as the clear header: a snapshot moved to another
// stream, installation or checkpoint does not open.
const (
	snapshotMagic      = "ELS"
	snapshotFormat     = 1
	snapOffKeyID       = 4
	snapOffKeyCheck    = 8
	snapOffNonce       = snapOffKeyCheck + snapKeyCheckSize
	snapshotHeaderSize = snapOffNonce + chacha20poly1305.NonceSizeX
	minSnapshotSize    = snapshotHeaderSize + chacha20poly1305.Overhead
)

// Derivation labels of snapshot keys. Part of the stored format.
const (
	snapshotKDFSalt       = "epochlog/snapshots/v1"
	labelSnapshotAEAD     = "epochlog snapshot v1 aead key"
	labelSnapshotKeyCheck = "epochlog snapshot v1 key check"
	labelSnapshotAD       = "epochlog snapshot v1"
)

// snapKeyCheckSize is the size of a snapshot key's check value.
const snapKeyCheckSize = 8

// snapLP appends s prefixed by its 32-bit big-endian length.
func snapLP(b []byte, s string) []byte {
	b = binary.BigEndian.AppendUint32(b, uint32(len(s)))
	return append(b, s...)
}

// SnapshotOverhead is the number of bytes SealSnapshot adds.
const SnapshotOverhead = snapshotHeaderSize + chacha20poly1305.Overhead

// SnapshotBinding is what a sealed snapshot is bound to: the stream whose
// history it replaces, the installation and the checkpoint (the stream
// sequence of the last event it holds).
type SnapshotBinding struct {
	Stream       string
	Installation InstallationID
	Checkpoint   uint64
}

func (b SnapshotBinding) validate() error {
	if b.Stream == "" {
		return errors.New("binding needs a stream")
	}
	if err := b.Installation.Validate(); err != nil {
		return err
	}
	if b.Checkpoint == 0 {
		return errors.New("binding needs a checkpoint")
	}
	return nil
}

// snapshotKeys derives the AEAD and the key-check value of inst's
// snapshots under root key id. Only the keyring's exported API is used:
// the root key's bytes are copied out, used and wiped.
func snapshotKeys(r *Keyring, id KeyID, inst InstallationID) (aead cipher.AEAD, check [snapKeyCheckSize]byte, err error) {
	root, ok := r.RootKey(id)
	if !ok {
		return nil, check, fmt.Errorf("key id %d: %w", id, ErrUnknownKey)
	}
	rb := root.Bytes()
	defer clear(rb)
	info := binary.BigEndian.AppendUint32([]byte(labelSnapshotKeyCheck), uint32(id))
	c, err := hkdf.Key(sha256.New, rb, []byte(snapshotKDFSalt), string(info), snapKeyCheckSize)
	if err != nil {
		return nil, check, err
	}
	copy(check[:], c)
	info = binary.BigEndian.AppendUint32([]byte(labelSnapshotAEAD), uint32(id))
	info = snapLP(info, string(inst))
	k, err := hkdf.Key(sha256.New, rb, []byte(snapshotKDFSalt), string(info), chacha20poly1305.KeySize)
	if err != nil {
		return nil, check, err
	}
	defer clear(k)
	a, err := chacha20poly1305.NewX(k)
	if err != nil {
		return nil, check, err
	}
	return a, check, nil
}

// snapshotAD is label || lp(stream) || lp(installation) || checkpoint ||
// lp(header).
func snapshotAD(b SnapshotBinding, header []byte) []byte {
	ad := []byte(labelSnapshotAD)
	ad = snapLP(ad, b.Stream)
	ad = snapLP(ad, string(b.Installation))
	ad = binary.BigEndian.AppendUint64(ad, b.Checkpoint)
	return snapLP(ad, string(header))
}

// SealSnapshot seals a snapshot (the bytes projections exports) under the
// keyring's current root key for b.Installation, bound to b. The returned
// bytes start with a clear header naming the root key id (SnapshotKeyID),
// so a rekey knows which root key a snapshot needs.
func SealSnapshot(r *Keyring, b SnapshotBinding, plain []byte) ([]byte, error) {
	if r == nil {
		return nil, errors.New("events: seal snapshot: nil keyring")
	}
	if err := b.validate(); err != nil {
		return nil, fmt.Errorf("events: seal snapshot: %w", err)
	}
	id := r.Current()
	aead, check, err := snapshotKeys(r, id, b.Installation)
	if err != nil {
		return nil, fmt.Errorf("events: seal snapshot: %w", err)
	}
	out := make([]byte, snapshotHeaderSize, snapshotHeaderSize+len(plain)+chacha20poly1305.Overhead)
	copy(out, snapshotMagic)
	out[3] = snapshotFormat
	binary.BigEndian.PutUint32(out[snapOffKeyID:], uint32(id))
	copy(out[snapOffKeyCheck:], check[:])
	nonce := out[snapOffNonce:snapshotHeaderSize]
	if _, err := rand.Read(nonce); err != nil {
		return nil, fmt.Errorf("events: seal snapshot: nonce: %w", err)
	}
	return aead.Seal(out, nonce, plain, snapshotAD(b, out[:snapshotHeaderSize])), nil
}

// OpenSnapshot verifies and decrypts a sealed snapshot read for b. Apart
// from caller errors, failures wrap exactly one of ErrMalformed (not a
// snapshot envelope, an event envelope included), ErrUnknownVersion,
// ErrUnknownKey, ErrWrongKey or ErrTampered (altered, or sealed for
// another stream, installation or checkpoint: the two are one opaque
// failure), with the key id as context.
func OpenSnapshot(r *Keyring, b SnapshotBinding, sealed []byte) ([]byte, error) {
	if r == nil {
		return nil, errors.New("events: open snapshot: nil keyring")
	}
	if err := b.validate(); err != nil {
		return nil, fmt.Errorf("events: open snapshot: %w", err)
	}
	aead, id, err := snapshotHeaderKeys(r, b.Installation, sealed, uint64(len(sealed)))
	if err != nil {
		return nil, err
	}
	header := sealed[:snapshotHeaderSize]
	plain, err := aead.Open(nil, sealed[snapOffNonce:snapshotHeaderSize], sealed[snapshotHeaderSize:], snapshotAD(b, header))
	if err != nil {
		return nil, fmt.Errorf("events: open snapshot: key id %d: %w", id, ErrTampered)
	}
	return plain, nil
}

// SnapshotHeaderSize is the size of a sealed snapshot's clear header,
// what CheckSnapshotHeader reads.
const SnapshotHeaderSize = snapshotHeaderSize

// CheckSnapshotHeader checks the clear header of a sealed snapshot of
// size bytes for inst (header: its first SnapshotHeaderSize bytes, or
// all of it when shorter) as OpenSnapshot checks it before decrypting,
// with its errors: ErrMalformed, ErrUnknownVersion, ErrUnknownKey or
// ErrWrongKey. A snapshot whose header fails does not open, so a reader
// need not fetch the rest. One whose header passes may still not open:
// the header is in the clear (every snapshot under one root key carries
// the same key check), and only OpenSnapshot authenticates it.
func CheckSnapshotHeader(r *Keyring, inst InstallationID, header []byte, size uint64) error {
	if r == nil {
		return errors.New("events: check snapshot header: nil keyring")
	}
	if err := inst.Validate(); err != nil {
		return fmt.Errorf("events: check snapshot header: %w", err)
	}
	_, _, err := snapshotHeaderKeys(r, inst, header, size)
	return err
}

// snapshotHeaderKeys checks the clear header of a sealed snapshot of
// size bytes for inst (header: at least its first snapshotHeaderSize
// bytes, unless size is less) and returns the AEAD it is sealed under
// and its root key id.
func snapshotHeaderKeys(r *Keyring, inst InstallationID, header []byte, size uint64) (cipher.AEAD, KeyID, error) {
	id, err := snapshotKeyID(header, size)
	if err != nil {
		return nil, 0, err
	}
	aead, check, err := snapshotKeys(r, id, inst)
	if err != nil {
		return nil, 0, fmt.Errorf("events: open snapshot: %w", err)
	}
	if subtle.ConstantTimeCompare(header[snapOffKeyCheck:snapOffNonce], check[:]) != 1 {
		return nil, 0, fmt.Errorf("events: open snapshot: key id %d: %w", id, ErrWrongKey)
	}
	return aead, id, nil
}

// SnapshotKeyID returns the root key id in a sealed snapshot's clear
// header without opening it. It checks only the length, magic and format
// version, so the id is unauthenticated.
func SnapshotKeyID(sealed []byte) (KeyID, error) {
	return snapshotKeyID(sealed, uint64(len(sealed)))
}

// snapshotKeyID is SnapshotKeyID of a sealed snapshot of size bytes that
// starts with header.
func snapshotKeyID(header []byte, size uint64) (KeyID, error) {
	switch {
	case size < minSnapshotSize:
		return 0, fmt.Errorf("events: snapshot envelope is %d bytes, shorter than the minimum %d: %w", size, minSnapshotSize, ErrMalformed)
	case len(header) < snapshotHeaderSize:
		return 0, fmt.Errorf("events: snapshot header is %d bytes of the envelope's %d, shorter than the header's %d: %w", len(header), size, snapshotHeaderSize, ErrMalformed)
	case string(header[:3]) != snapshotMagic:
		return 0, fmt.Errorf("events: not a snapshot envelope (bad magic): %w", ErrMalformed)
	case header[3] > snapshotFormat:
		return 0, fmt.Errorf("events: snapshot envelope format version %d is newer than this code reads (%d): %w", header[3], snapshotFormat, ErrUnknownVersion)
	case header[3] < 1:
		return 0, fmt.Errorf("events: snapshot envelope format version %d: %w", header[3], ErrMalformed)
	}
	id := KeyID(binary.BigEndian.Uint32(header[snapOffKeyID:]))
	if id == 0 {
		return 0, fmt.Errorf("events: snapshot envelope names key id 0: %w", ErrMalformed)
	}
	return id, nil
}
