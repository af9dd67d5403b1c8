package ciphersuite_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"testing"

	circlhpke "github.com/cloudflare/circl/hpke"
	"github.com/cloudflare/circl/sign/ed448"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// x448Suites returns suites 4 and 6, the ones on the circl X448/Ed448 path.
func x448Suites(t *testing.T) []*ciphersuite.CipherSuite {
	t.Helper()
	return lookupAll(t, ciphersuite.MLS256DHKEMX448AES256GCMSHA512Ed448, ciphersuite.MLS256DHKEMX448ChaCha20Poly1305SHA512Ed448)
}

func TestEd448SignVerify(t *testing.T) {
	for _, cs := range x448Suites(t) {
		t.Run(fmt.Sprint(uint16(cs.ID())), func(t *testing.T) {
			sk, err := cs.GenerateSignatureKey()
			if err != nil {
				t.Fatal(err)
			}
			if len(sk.PublicKey()) != ed448.PublicKeySize || len(sk.Bytes()) != ed448.SeedSize {
				t.Fatalf("public key %d bytes, private key %d bytes; want %d, %d",
					len(sk.PublicKey()), len(sk.Bytes()), ed448.PublicKeySize, ed448.SeedSize)
			}
			content := []byte("content")
			sig, err := cs.SignWithLabel(sk, "Test", content)
			if err != nil {
				t.Fatal(err)
			}
			if len(sig) != ed448.SignatureSize {
				t.Fatalf("signature is %d bytes, want %d", len(sig), ed448.SignatureSize)
			}
			if err := cs.VerifyWithLabel(sk.PublicKey(), "Test", content, sig); err != nil {
				t.Fatalf("round trip: %v", err)
			}

			// MLS uses pure Ed448 with an empty context over SignContent.
			msg, err := ciphersuite.SignContent("Test", content)
			if err != nil {
				t.Fatal(err)
			}
			if !ed448.Verify(sk.PublicKey(), msg, sig, "") {
				t.Error("signature is not pure Ed448 with an empty context over SignContent")
			}
			priv := ed448.NewKeyFromSeed(sk.Bytes())
			if err := cs.VerifyWithLabel(sk.PublicKey(), "Test", content, ed448.Sign(priv, msg, "ctx")); err != ciphersuite.ErrBadSignature {
				t.Errorf("signature under a non-empty context: err = %v, want ErrBadSignature", err)
			}

			// Flip one bit in R (bytes 0-56), then in S (57-113), staying
			// below the group order: each must be refused.
			for _, i := range []int{0, ed448.PublicKeySize + 3} {
				bad := bytes.Clone(sig)
				bad[i] ^= 1
				if err := cs.VerifyWithLabel(sk.PublicKey(), "Test", content, bad); err != ciphersuite.ErrBadSignature {
					t.Errorf("signature tampered at byte %d: err = %v, want exactly ErrBadSignature", i, err)
				}
			}
			for _, bad := range [][]byte{nil, sig[:len(sig)-1], append(bytes.Clone(sig), 0)} {
				if err := cs.VerifyWithLabel(sk.PublicKey(), "Test", content, bad); err != ciphersuite.ErrBadSignature {
					t.Errorf("signature of %d bytes: err = %v, want exactly ErrBadSignature", len(bad), err)
				}
			}
			if err := cs.VerifyWithLabel(sk.PublicKey()[1:], "Test", content, sig); err != ciphersuite.ErrBadSignature {
				t.Errorf("truncated public key: err = %v, want exactly ErrBadSignature", err)
			}
		})
	}
}

func TestEd448Keys(t *testing.T) {
	cs := x448Suites(t)[0]
	seed := bytes.Repeat([]byte{0x5a}, ed448.SeedSize)
	sk, err := cs.ParseSignaturePrivateKey(seed)
	if err != nil {
		t.Fatal(err)
	}
	seed[0] ^= 0xff // the key holds its own copy
	want := ed448.NewKeyFromSeed(bytes.Repeat([]byte{0x5a}, ed448.SeedSize)).Public().(ed448.PublicKey)
	if !bytes.Equal(sk.PublicKey(), want) || !bytes.Equal(sk.Bytes(), bytes.Repeat([]byte{0x5a}, ed448.SeedSize)) {
		t.Fatal("parsed Ed448 key does not match its seed")
	}
	again, _ := cs.ParseSignaturePrivateKey(sk.Bytes())
	other, _ := cs.GenerateSignatureKey()
	if !sk.Equal(again) || sk.Equal(other) {
		t.Fatal("Equal is wrong for Ed448 keys")
	}
	// The same seed under suite 6 is a key of another suite.
	cs6 := x448Suites(t)[1]
	sk6, _ := cs6.ParseSignaturePrivateKey(sk.Bytes())
	if sk.Equal(sk6) {
		t.Fatal("keys of suites 4 and 6 compare Equal")
	}
	if _, err := cs6.SignWithLabel(sk, "Test", nil); !errors.Is(err, ciphersuite.ErrInvalidKey) {
		t.Fatalf("signing with a suite-4 key under suite 6: err = %v, want ErrInvalidKey", err)
	}
	for _, n := range []int{0, 32, ed448.SeedSize - 1, ed448.SeedSize + 1, ed448.PrivateKeySize} {
		if _, err := cs.ParseSignaturePrivateKey(make([]byte, n)); !errors.Is(err, ciphersuite.ErrInvalidKey) {
			t.Errorf("Ed448 private key of %d bytes: err = %v, want ErrInvalidKey", n, err)
		}
	}
	if err := cs.ValidateSignaturePublicKey(sk.PublicKey()); err != nil {
		t.Fatal(err)
	}
	// 57 bytes of 0xff encode no point (y >= p), so the key is refused.
	for _, pub := range [][]byte{sk.PublicKey()[1:], bytes.Repeat([]byte{0xff}, ed448.PublicKeySize)} {
		if err := cs.ValidateSignaturePublicKey(pub); !errors.Is(err, ciphersuite.ErrInvalidKey) {
			t.Errorf("Ed448 public key %x...: err = %v, want ErrInvalidKey", pub[:4], err)
		}
	}
}

func TestX448HPKESealOpen(t *testing.T) {
	for _, cs := range x448Suites(t) {
		t.Run(fmt.Sprint(uint16(cs.ID())), func(t *testing.T) {
			hk, err := cs.GenerateHPKEKey()
			if err != nil {
				t.Fatal(err)
			}
			if len(hk.PublicKey()) != 56 || len(hk.Bytes()) != 56 {
				t.Fatalf("X448 public key %d bytes, private key %d bytes; want 56, 56", len(hk.PublicKey()), len(hk.Bytes()))
			}
			ctx, msg := []byte("ctx"), []byte("message")
			kem, ct, err := cs.EncryptWithLabel(hk.PublicKey(), "Test", ctx, msg)
			if err != nil {
				t.Fatal(err)
			}
			if len(kem) != 56 || len(ct) != len(msg)+16 {
				t.Fatalf("kem output %d bytes, ciphertext %d bytes; want 56, %d", len(kem), len(ct), len(msg)+16)
			}
			pt, err := cs.DecryptWithLabel(hk, "Test", ctx, kem, ct)
			if err != nil || !bytes.Equal(pt, msg) {
				t.Fatalf("round trip: %q, %v", pt, err)
			}

			other, _ := cs.GenerateHPKEKey()
			if _, err := cs.DecryptWithLabel(other, "Test", ctx, kem, ct); err != ciphersuite.ErrDecrypt {
				t.Errorf("open with the wrong key: err = %v, want exactly ErrDecrypt", err)
			}
			for name, try := range map[string]func() ([]byte, error){
				"other label":         func() ([]byte, error) { return cs.DecryptWithLabel(hk, "Tesu", ctx, kem, ct) },
				"other context":       func() ([]byte, error) { return cs.DecryptWithLabel(hk, "Test", []byte("cty"), kem, ct) },
				"tampered ciphertext": func() ([]byte, error) { return cs.DecryptWithLabel(hk, "Test", ctx, kem, flip(ct)) },
				"tampered kem output": func() ([]byte, error) { return cs.DecryptWithLabel(hk, "Test", ctx, flip(kem), ct) },
				"empty kem output":    func() ([]byte, error) { return cs.DecryptWithLabel(hk, "Test", ctx, nil, ct) },
				"all-zero kem output": func() ([]byte, error) { return cs.DecryptWithLabel(hk, "Test", ctx, make([]byte, 56), ct) },
			} {
				if _, err := try(); err != ciphersuite.ErrDecrypt {
					t.Errorf("%s: err = %v, want exactly ErrDecrypt", name, err)
				}
			}

			// A low-order point (here 0) makes the DH output all zero,
			// which RFC 9180 §7.1.4 says must be refused.
			if _, _, err := cs.EncryptWithLabel(make([]byte, 56), "Test", ctx, msg); !errors.Is(err, ciphersuite.ErrInvalidKey) {
				t.Errorf("seal to the zero point: err = %v, want ErrInvalidKey", err)
			}
			for _, pub := range [][]byte{nil, hk.PublicKey()[1:], append(hk.PublicKey(), 0)} {
				if _, _, err := cs.EncryptWithLabel(pub, "Test", ctx, msg); !errors.Is(err, ciphersuite.ErrInvalidKey) {
					t.Errorf("seal to a %d-byte public key: err = %v, want ErrInvalidKey", len(pub), err)
				}
				if err := cs.ValidateHPKEPublicKey(pub); !errors.Is(err, ciphersuite.ErrInvalidKey) {
					t.Errorf("ValidateHPKEPublicKey of %d bytes: err = %v, want ErrInvalidKey", len(pub), err)
				}
			}
		})
	}
}

func TestX448KeysOfOtherSuiteRejected(t *testing.T) {
	cs4, cs6 := x448Suites(t)[0], x448Suites(t)[1]
	hk, _ := cs4.GenerateHPKEKey()
	kem, ct, err := cs4.EncryptWithLabel(hk.PublicKey(), "x", nil, []byte("m"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := cs6.DecryptWithLabel(hk, "x", nil, kem, ct); !errors.Is(err, ciphersuite.ErrInvalidKey) {
		t.Errorf("decrypting with a suite-4 key under suite 6: err = %v, want ErrInvalidKey", err)
	}
	cs1, _ := ciphersuite.Lookup(1)
	hk1, _ := cs1.GenerateHPKEKey()
	if _, err := cs4.DecryptWithLabel(hk1, "x", nil, kem, ct); !errors.Is(err, ciphersuite.ErrInvalidKey) {
		t.Errorf("decrypting with a suite-1 key under suite 4: err = %v, want ErrInvalidKey", err)
	}
}

// TestX448DeriveKeyPair checks the RFC 9180 DeriveKeyPair done in this
// package against circl's for the one input length circl accepts, and that
// the other lengths MLS uses (Nh = 64 bytes) work.
func TestX448DeriveKeyPair(t *testing.T) {
	cs := x448Suites(t)[0]
	scheme := circlhpke.KEM_X448_HKDF_SHA512.Scheme()
	for _, seed := range [][]byte{bytes.Repeat([]byte{1}, 56), []byte("0123456789abcdef0123456789abcdef0123456789abcdef01234567")} {
		k, err := cs.DeriveKeyPair(seed)
		if err != nil {
			t.Fatal(err)
		}
		pub, _ := scheme.DeriveKeyPair(seed)
		want, _ := pub.MarshalBinary()
		if !bytes.Equal(k.PublicKey(), want) {
			t.Errorf("DeriveKeyPair(%x...) public key differs from circl's", seed[:4])
		}
	}
	a, err := cs.DeriveKeyPair(bytes.Repeat([]byte{2}, 64))
	if err != nil {
		t.Fatal(err)
	}
	b, _ := cs.DeriveKeyPair(bytes.Repeat([]byte{2}, 64))
	c, _ := cs.DeriveKeyPair(bytes.Repeat([]byte{3}, 64))
	if !a.Equal(b) || a.Equal(c) || bytes.Equal(a.PublicKey(), c.PublicKey()) {
		t.Fatal("DeriveKeyPair is not a deterministic function of ikm")
	}
	if _, err := cs.DeriveKeyPair(nil); err != nil {
		t.Fatalf("DeriveKeyPair of empty ikm: %v", err)
	}
}

// TestX448PrivateKeyClamped: RFC 9180 §7.1.2 has DeserializePrivateKey and
// SerializePrivateKey clamp, so an unclamped key parses to the same key as
// its clamped form and serializes clamped.
func TestX448PrivateKeyClamped(t *testing.T) {
	cs := x448Suites(t)[0]
	raw := bytes.Repeat([]byte{0xff}, 56)
	raw[55] = 0x01
	k, err := cs.ParseHPKEPrivateKey(raw)
	if err != nil {
		t.Fatal(err)
	}
	if raw[0] != 0xff || raw[55] != 0x01 {
		t.Fatal("ParseHPKEPrivateKey modified its input")
	}
	clamped := bytes.Clone(raw)
	clamped[0], clamped[55] = 0xfc, 0x81
	if !bytes.Equal(k.Bytes(), clamped) {
		t.Fatalf("Bytes() = %x..%x, want the clamped key", k.Bytes()[:1], k.Bytes()[55:])
	}
	kc, _ := cs.ParseHPKEPrivateKey(clamped)
	if !k.Equal(kc) || !bytes.Equal(k.PublicKey(), kc.PublicKey()) {
		t.Fatal("an unclamped key and its clamped form differ")
	}
	for _, n := range []int{0, 32, 55, 57} {
		if _, err := cs.ParseHPKEPrivateKey(make([]byte, n)); !errors.Is(err, ciphersuite.ErrInvalidKey) {
			t.Errorf("X448 private key of %d bytes: err = %v, want ErrInvalidKey", n, err)
		}
	}
}

// TestX448Ed448KeysNeverPrint is TestSecretsNeverPrint for the key types of
// the circl path (whose own X448 key type prints its bytes in hex).
func TestX448Ed448KeysNeverPrint(t *testing.T) {
	for _, cs := range x448Suites(t) {
		sk, err := cs.ParseSignaturePrivateKey(bytes.Repeat([]byte{0xab}, ed448.SeedSize))
		if err != nil {
			t.Fatal(err)
		}
		hk, err := cs.ParseHPKEPrivateKey(bytes.Repeat([]byte{0xab}, 56))
		if err != nil {
			t.Fatal(err)
		}
		type holder struct {
			SK *ciphersuite.SignaturePrivateKey
			HK *ciphersuite.HPKEPrivateKey
		}
		h := holder{sk, hk}
		forbidden := []string{"abab", "ABAB", "171, 171", "\xab\xab"}
		for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
			for _, v := range []any{sk, hk, h, &h} {
				out := fmt.Sprintf(verb, v)
				for _, f := range forbidden {
					if strings.Contains(out, f) {
						t.Errorf("suite %d: fmt %s of %T leaks key bytes: %s", cs.ID(), verb, v, out)
					}
				}
			}
		}
		if got := fmt.Sprint(sk, " ", hk); got != "SignaturePrivateKey(REDACTED) HPKEPrivateKey(REDACTED)" {
			t.Errorf("suite %d: String = %q", cs.ID(), got)
		}
		for _, v := range []any{sk, hk, h} {
			if _, err := json.Marshal(v); !errors.Is(err, ciphersuite.ErrSecretMarshal) {
				t.Errorf("suite %d: json.Marshal(%T) err = %v, want ErrSecretMarshal", cs.ID(), v, err)
			}
		}
		if _, err := cs.ParseHPKEPrivateKey(bytes.Repeat([]byte{0xab}, 55)); err == nil || strings.Contains(err.Error(), "abab") {
			t.Errorf("suite %d: parse error of a short X448 key: %v", cs.ID(), err)
		}
		if _, err := cs.ParseSignaturePrivateKey(bytes.Repeat([]byte{0xab}, 56)); err == nil || strings.Contains(err.Error(), "abab") {
			t.Errorf("suite %d: parse error of a short Ed448 key: %v", cs.ID(), err)
		}
	}
}

// flip returns a copy of b with the low bit of its first byte flipped.
func flip(b []byte) []byte {
	c := bytes.Clone(b)
	c[0] ^= 1
	return c
}
