package ciphersuite_test

import (
	"bytes"
	"errors"
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// A LabeledEncrypter's ciphertexts are EncryptWithLabel's: the standard
// library's (or circl's) HPKE recipient opens them, under the label and
// context they were made for only, for every recipient of one encrypter
// and in every suite; a public key that is not one is refused as
// EncryptWithLabel refuses it.
func TestLabeledEncrypter(t *testing.T) {
	for _, cs := range supported(t) {
		t.Run(cs.String(), func(t *testing.T) {
			context := bytes.Repeat([]byte("encrypted group info "), 5000) // about 100 KiB
			e, err := cs.NewLabeledEncrypter("Welcome", context)
			if err != nil {
				t.Fatal(err)
			}
			for i := range 3 {
				k, err := cs.GenerateHPKEKey()
				if err != nil {
					t.Fatal(err)
				}
				msg := fmt.Appendf(nil, "group secrets of joiner %d", i)
				kem, ct, err := e.Encrypt(k.PublicKey(), msg)
				if err != nil {
					t.Fatal(err)
				}
				pt, err := cs.DecryptWithLabel(k, "Welcome", context, kem, ct)
				if err != nil || !bytes.Equal(pt, msg) {
					t.Fatalf("recipient %d: %q, %v", i, pt, err)
				}
				other := bytes.Clone(context)
				other[len(other)-1] ^= 1
				if _, err := cs.DecryptWithLabel(k, "Welcome", other, kem, ct); !errors.Is(err, ciphersuite.ErrDecrypt) {
					t.Fatalf("recipient %d, another context: %v, want ErrDecrypt", i, err)
				}
				if _, err := cs.DecryptWithLabel(k, "UpdatePathNode", context, kem, ct); !errors.Is(err, ciphersuite.ErrDecrypt) {
					t.Fatalf("recipient %d, another label: %v, want ErrDecrypt", i, err)
				}
			}
			k, err := cs.GenerateHPKEKey()
			if err != nil {
				t.Fatal(err)
			}
			pub := k.PublicKey()
			bad := [][]byte{nil, pub[1:], append(bytes.Clone(pub), 0)}
			if len(pub) == 32 || len(pub) == 56 { // X25519, X448: the zero point is of low order
				bad = append(bad, make([]byte, len(pub)))
			}
			for _, b := range bad {
				if _, _, err := e.Encrypt(b, []byte("x")); !errors.Is(err, ciphersuite.ErrInvalidKey) {
					t.Errorf("a %d-byte public key: %v, want ErrInvalidKey", len(b), err)
				}
				if _, _, err := cs.EncryptWithLabel(b, "Welcome", context, []byte("x")); !errors.Is(err, ciphersuite.ErrInvalidKey) {
					t.Errorf("EncryptWithLabel, a %d-byte public key: %v, want ErrInvalidKey", len(b), err)
				}
			}
		})
	}
}

// BenchmarkLabeledEncrypter times encrypting to one more recipient under a
// context of 100 KiB and 1 MiB (a Welcome's encrypted GroupInfo at about
// 400 and 4,000 members): EncryptWithLabel hashes the context each time,
// a LabeledEncrypter once.
func BenchmarkLabeledEncrypter(b *testing.B) {
	cs := lookupAll(b, ciphersuite.Suite(1))[0]
	k, err := cs.GenerateHPKEKey()
	if err != nil {
		b.Fatal(err)
	}
	secrets := make([]byte, 64)
	for _, size := range []int{100 << 10, 1 << 20} {
		context := make([]byte, size)
		b.Run(fmt.Sprintf("context=%dKiB/EncryptWithLabel", size>>10), func(b *testing.B) {
			for b.Loop() {
				if _, _, err := cs.EncryptWithLabel(k.PublicKey(), "Welcome", context, secrets); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("context=%dKiB/LabeledEncrypter", size>>10), func(b *testing.B) {
			e, err := cs.NewLabeledEncrypter("Welcome", context)
			if err != nil {
				b.Fatal(err)
			}
			for b.Loop() {
				if _, _, err := e.Encrypt(k.PublicKey(), secrets); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
