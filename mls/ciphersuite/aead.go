package ciphersuite

import (
	"crypto/aes"
	"crypto/cipher"
	"fmt"

	"golang.org/x/crypto/chacha20poly1305"
)

func (cs *CipherSuite) newAEAD(key, nonce []byte) (cipher.AEAD, error) {
	if len(key) != cs.nk {
		return nil, fmt.Errorf("%w: AEAD key is %d bytes, %s needs %d", ErrInvalidKey, len(key), cs.id, cs.nk)
	}
	if len(nonce) != cs.Nn() {
		return nil, fmt.Errorf("%w: AEAD nonce is %d bytes, %s needs %d", ErrInvalidKey, len(nonce), cs.id, cs.Nn())
	}
	switch cs.aead {
	case aeadChaCha20Poly1305:
		return chacha20poly1305.New(key)
	default:
		b, err := aes.NewCipher(key)
		if err != nil {
			return nil, fmt.Errorf("%w: AES key", ErrInvalidKey)
		}
		return cipher.NewGCM(b)
	}
}

// Seal encrypts and authenticates plaintext with the suite AEAD. key must
// be Nk bytes and nonce Nn bytes.
func (cs *CipherSuite) Seal(key, nonce, aad, plaintext []byte) ([]byte, error) {
	a, err := cs.newAEAD(key, nonce)
	if err != nil {
		return nil, err
	}
	return a.Seal(nil, nonce, plaintext, aad), nil
}

// Open authenticates and decrypts ciphertext with the suite AEAD. Any
// authentication failure is reported as [ErrDecrypt], without detail.
func (cs *CipherSuite) Open(key, nonce, aad, ciphertext []byte) ([]byte, error) {
	a, err := cs.newAEAD(key, nonce)
	if err != nil {
		return nil, err
	}
	pt, err := a.Open(nil, nonce, ciphertext, aad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}
