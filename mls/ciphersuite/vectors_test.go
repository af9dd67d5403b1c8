package ciphersuite_test

import (
	"errors"
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/internal/vectortest"
)

type hexb = vectortest.HexBytes

type cryptoBasics struct {
	CipherSuite uint16 `json:"cipher_suite"`
	RefHash     struct {
		Label string `json:"label"`
		Value hexb   `json:"value"`
		Out   hexb   `json:"out"`
	} `json:"ref_hash"`
	ExpandWithLabel struct {
		Secret  hexb   `json:"secret"`
		Label   string `json:"label"`
		Context hexb   `json:"context"`
		Length  int    `json:"length"`
		Out     hexb   `json:"out"`
	} `json:"expand_with_label"`
	DeriveSecret struct {
		Secret hexb   `json:"secret"`
		Label  string `json:"label"`
		Out    hexb   `json:"out"`
	} `json:"derive_secret"`
	DeriveTreeSecret struct {
		Secret     hexb   `json:"secret"`
		Label      string `json:"label"`
		Generation uint32 `json:"generation"`
		Length     int    `json:"length"`
		Out        hexb   `json:"out"`
	} `json:"derive_tree_secret"`
	SignWithLabel struct {
		Priv      hexb   `json:"priv"`
		Pub       hexb   `json:"pub"`
		Content   hexb   `json:"content"`
		Label     string `json:"label"`
		Signature hexb   `json:"signature"`
	} `json:"sign_with_label"`
	EncryptWithLabel struct {
		Priv       hexb   `json:"priv"`
		Pub        hexb   `json:"pub"`
		Label      string `json:"label"`
		Context    hexb   `json:"context"`
		Plaintext  hexb   `json:"plaintext"`
		KEMOutput  hexb   `json:"kem_output"`
		Ciphertext hexb   `json:"ciphertext"`
	} `json:"encrypt_with_label"`
}

func TestCryptoBasicsVectors(t *testing.T) {
	var cases []cryptoBasics
	vectortest.Load(t, "crypto-basics.json", &cases)
	tally := vectortest.NewTally(t, "crypto-basics.json")
	for i, tc := range cases {
		name := fmt.Sprintf("case%d_suite%d", i, tc.CipherSuite)
		cs, err := ciphersuite.Lookup(ciphersuite.Suite(tc.CipherSuite))
		if errors.Is(err, ciphersuite.ErrUnsupportedSuite) {
			tally.Skip(t, name, tc.CipherSuite, err.Error())
			continue
		}
		tally.Run(t, name, tc.CipherSuite, func(t *testing.T) {
			if err != nil {
				t.Fatal(err)
			}
			t.Run("ref_hash", func(t *testing.T) {
				v := tc.RefHash
				out, err := cs.RefHash(v.Label, v.Value)
				if err != nil {
					t.Fatal(err)
				}
				vectortest.Equal(t, "RefHash", out, v.Out)
			})
			t.Run("expand_with_label", func(t *testing.T) {
				v := tc.ExpandWithLabel
				out, err := cs.ExpandWithLabel(v.Secret, v.Label, v.Context, v.Length)
				if err != nil {
					t.Fatal(err)
				}
				vectortest.Equal(t, "ExpandWithLabel", out, v.Out)
			})
			t.Run("derive_secret", func(t *testing.T) {
				v := tc.DeriveSecret
				out, err := cs.DeriveSecret(v.Secret, v.Label)
				if err != nil {
					t.Fatal(err)
				}
				vectortest.Equal(t, "DeriveSecret", out, v.Out)
			})
			t.Run("derive_tree_secret", func(t *testing.T) {
				v := tc.DeriveTreeSecret
				out, err := cs.DeriveTreeSecret(v.Secret, v.Label, v.Generation, v.Length)
				if err != nil {
					t.Fatal(err)
				}
				vectortest.Equal(t, "DeriveTreeSecret", out, v.Out)
			})
			t.Run("sign_with_label", func(t *testing.T) {
				v := tc.SignWithLabel
				if err := cs.VerifyWithLabel(v.Pub, v.Label, v.Content, v.Signature); err != nil {
					t.Fatalf("vector signature: %v", err)
				}
				priv, err := cs.ParseSignaturePrivateKey(v.Priv)
				if err != nil {
					t.Fatal(err)
				}
				vectortest.Equal(t, "public key derived from priv", priv.PublicKey(), v.Pub)
				vectortest.Equal(t, "private key Bytes()", priv.Bytes(), v.Priv)
				sig, err := cs.SignWithLabel(priv, v.Label, v.Content)
				if err != nil {
					t.Fatal(err)
				}
				if err := cs.VerifyWithLabel(v.Pub, v.Label, v.Content, sig); err != nil {
					t.Fatalf("fresh signature: %v", err)
				}
				if err := cs.VerifyWithLabel(v.Pub, v.Label+"x", v.Content, v.Signature); !errors.Is(err, ciphersuite.ErrBadSignature) {
					t.Fatalf("signature under another label: err = %v, want ErrBadSignature", err)
				}
				tampered := append([]byte{}, v.Content...)
				tampered[0] ^= 1
				if err := cs.VerifyWithLabel(v.Pub, v.Label, tampered, v.Signature); !errors.Is(err, ciphersuite.ErrBadSignature) {
					t.Fatalf("signature over tampered content: err = %v, want ErrBadSignature", err)
				}
			})
			t.Run("encrypt_with_label", func(t *testing.T) {
				v := tc.EncryptWithLabel
				priv, err := cs.ParseHPKEPrivateKey(v.Priv)
				if err != nil {
					t.Fatal(err)
				}
				vectortest.Equal(t, "HPKE public key derived from priv", priv.PublicKey(), v.Pub)
				pt, err := cs.DecryptWithLabel(priv, v.Label, v.Context, v.KEMOutput, v.Ciphertext)
				if err != nil {
					t.Fatalf("vector ciphertext: %v", err)
				}
				vectortest.Equal(t, "decrypted vector plaintext", pt, v.Plaintext)
				kem, ct, err := cs.EncryptWithLabel(v.Pub, v.Label, v.Context, v.Plaintext)
				if err != nil {
					t.Fatal(err)
				}
				pt, err = cs.DecryptWithLabel(priv, v.Label, v.Context, kem, ct)
				if err != nil {
					t.Fatalf("fresh ciphertext: %v", err)
				}
				vectortest.Equal(t, "decrypted fresh plaintext", pt, v.Plaintext)
				e, err := cs.NewLabeledEncrypter(v.Label, v.Context)
				if err != nil {
					t.Fatal(err)
				}
				if kem, ct, err = e.Encrypt(v.Pub, v.Plaintext); err != nil {
					t.Fatal(err)
				}
				pt, err = cs.DecryptWithLabel(priv, v.Label, v.Context, kem, ct)
				if err != nil {
					t.Fatalf("LabeledEncrypter's ciphertext: %v", err)
				}
				vectortest.Equal(t, "decrypted LabeledEncrypter plaintext", pt, v.Plaintext)
				if _, err := cs.DecryptWithLabel(priv, v.Label, append(v.Context, 0), v.KEMOutput, v.Ciphertext); !errors.Is(err, ciphersuite.ErrDecrypt) {
					t.Fatalf("decrypt with another context: err = %v, want ErrDecrypt", err)
				}
			})
		})
	}
	cases2, passed, skipped, _ := tally.Counts()
	if cases2 != len(cases) || passed != 7 || skipped != 0 {
		t.Errorf("crypto-basics: %d cases, %d passed, %d skipped; want %d, 7, 0", cases2, passed, skipped, len(cases))
	}
}
