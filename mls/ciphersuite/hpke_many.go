package ciphersuite

import (
	"crypto/hkdf"
	"crypto/rand"
	"encoding/binary"
	"fmt"
)

// LabeledEncrypter is EncryptWithLabel for one label and context and any
// number of recipients.
//
// HPKE's key schedule hashes its info (here the EncryptContext, which
// holds the context) for every SetupBaseS (RFC 9180 §5.1: info_hash). A
// Welcome encrypts the group secrets to each new member with the
// encrypted GroupInfo, ratchet tree included, as context (RFC 9420
// §12.4.3.1): crypto/hpke and circl would hash those megabytes once per
// new member, quadratic in a mass add (17 of the 23 seconds of a commit
// adding 10,000 members). A LabeledEncrypter computes the key schedule
// context once and runs, per recipient, the KEM's encapsulation and the
// rest of the base-mode key schedule (RFC 9180 §4.1, §5.1, §5.2): what
// SealBase does, built on the suite's hash and AEAD, whose output
// crypto/hpke's and circl's recipients open (DecryptWithLabel; tested
// for every suite).
type LabeledEncrypter struct {
	cs      *CipherSuite
	suiteID []byte // "HPKE" || kem_id || kdf_id || aead_id
	kemID   []byte // "KEM" || kem_id
	ksc     []byte // key_schedule_context: mode_base || psk_id_hash || info_hash
}

// HPKE identifiers of RFC 9180 §7 for the MLS suites: the KEM, KDF and
// AEAD of each (the KDF's hash and the AEAD are the MLS suite's own).
var hpkeIDs = map[Suite][3]uint16{
	1: {0x0020, 0x0001, 0x0001}, // DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-128-GCM
	2: {0x0010, 0x0001, 0x0001}, // DHKEM(P-256, HKDF-SHA256), HKDF-SHA256, AES-128-GCM
	3: {0x0020, 0x0001, 0x0003}, // DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, ChaCha20Poly1305
	4: {0x0021, 0x0003, 0x0002}, // DHKEM(X448, HKDF-SHA512), HKDF-SHA512, AES-256-GCM
	5: {0x0012, 0x0003, 0x0002}, // DHKEM(P-521, HKDF-SHA512), HKDF-SHA512, AES-256-GCM
	6: {0x0021, 0x0003, 0x0003}, // DHKEM(X448, HKDF-SHA512), HKDF-SHA512, ChaCha20Poly1305
	7: {0x0011, 0x0002, 0x0002}, // DHKEM(P-384, HKDF-SHA384), HKDF-SHA384, AES-256-GCM
}

// NewLabeledEncrypter prepares EncryptWithLabel(·, label, context, ·):
// the context is hashed here, once.
func (cs *CipherSuite) NewLabeledEncrypter(label string, context []byte) (*LabeledEncrypter, error) {
	ids, ok := hpkeIDs[cs.id]
	if !ok {
		return nil, fmt.Errorf("%w: no HPKE identifiers for %s", ErrUnsupportedSuite, cs.id)
	}
	info, err := EncryptContext(label, context)
	if err != nil {
		return nil, fmt.Errorf("mls/ciphersuite: EncryptWithLabel %q: %w", label, err)
	}
	e := &LabeledEncrypter{
		cs:      cs,
		suiteID: binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16(binary.BigEndian.AppendUint16([]byte("HPKE"), ids[0]), ids[1]), ids[2]),
		kemID:   binary.BigEndian.AppendUint16([]byte("KEM"), ids[0]),
	}
	pskIDHash, err := e.labeledExtract(e.suiteID, nil, "psk_id_hash", nil)
	if err != nil {
		return nil, err
	}
	infoHash, err := e.labeledExtract(e.suiteID, nil, "info_hash", info)
	if err != nil {
		return nil, err
	}
	e.ksc = concat([]byte{0x00}, pskIDHash, infoHash) // mode_base
	return e, nil
}

// Encrypt is EncryptWithLabel(pub, label, context, plaintext) for the
// label and context e was made with. pub is in the MLS wire format.
func (e *LabeledEncrypter) Encrypt(pub, plaintext []byte) (kemOutput, ciphertext []byte, err error) {
	cs := e.cs
	shared, enc, err := e.encap(pub)
	if err != nil {
		return nil, nil, err
	}
	secret, err := e.labeledExtract(e.suiteID, shared, "secret", nil)
	if err != nil {
		return nil, nil, err
	}
	key, err := e.labeledExpand(e.suiteID, secret, "key", e.ksc, cs.nk)
	if err != nil {
		return nil, nil, err
	}
	nonce, err := e.labeledExpand(e.suiteID, secret, "base_nonce", e.ksc, cs.Nn())
	if err != nil {
		return nil, nil, err
	}
	// The first message of the context: its nonce is the base nonce.
	ct, err := cs.Seal(key, nonce, nil, plaintext)
	if err != nil {
		return nil, nil, fmt.Errorf("mls/ciphersuite: HPKE seal for %s: %w", cs.id, err)
	}
	return enc, ct, nil
}

// encap is the KEM's Encap(pkR) (RFC 9180 §4.1): an ephemeral key pair,
// the Diffie-Hellman value, and ExtractAndExpand of it with enc || pkR.
// X448 runs on circl's DHKEM, which is the same.
func (e *LabeledEncrypter) encap(pub []byte) (shared, enc []byte, err error) {
	cs := e.cs
	if cs.x448 != nil {
		pk, err := cs.x448.publicKey(pub)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: HPKE public key of %d bytes for %s", ErrInvalidKey, len(pub), cs.id)
		}
		enc, shared, err := cs.x448.scheme.Encapsulate(pk)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: HPKE encapsulation for %s refused the public key", ErrInvalidKey, cs.id)
		}
		return shared, enc, nil
	}
	pkR, err := cs.ecdh.NewPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: HPKE public key of %d bytes for %s", ErrInvalidKey, len(pub), cs.id)
	}
	eph, err := cs.ecdh.GenerateKey(rand.Reader)
	if err != nil {
		return nil, nil, fmt.Errorf("mls/ciphersuite: HPKE ephemeral key for %s: %w", cs.id, err)
	}
	dh, err := eph.ECDH(pkR)
	if err != nil {
		// An all-zero X25519 output: a low-order public key.
		return nil, nil, fmt.Errorf("%w: HPKE encapsulation for %s refused the public key", ErrInvalidKey, cs.id)
	}
	enc = eph.PublicKey().Bytes()
	prk, err := e.labeledExtract(e.kemID, nil, "eae_prk", dh)
	if err != nil {
		return nil, nil, err
	}
	shared, err = e.labeledExpand(e.kemID, prk, "shared_secret", concat(enc, pkR.Bytes()), cs.nh)
	return shared, enc, err
}

// labeledExtract is LabeledExtract(salt, label, ikm) of RFC 9180 §4 under
// suiteID.
func (e *LabeledEncrypter) labeledExtract(suiteID, salt []byte, label string, ikm []byte) ([]byte, error) {
	return hkdf.Extract(e.cs.newHash, concat([]byte("HPKE-v1"), suiteID, []byte(label), ikm), salt)
}

// labeledExpand is LabeledExpand(prk, label, info, length) of RFC 9180 §4
// under suiteID.
func (e *LabeledEncrypter) labeledExpand(suiteID, prk []byte, label string, info []byte, length int) ([]byte, error) {
	labeled := concat(binary.BigEndian.AppendUint16(nil, uint16(length)), []byte("HPKE-v1"), suiteID, []byte(label), info)
	return hkdf.Expand(e.cs.newHash, prk, string(labeled), length)
}
