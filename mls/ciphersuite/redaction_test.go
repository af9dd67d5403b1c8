package ciphersuite_test

import (
	"testing"

	"github.com/epochlog/epochlog/internal/redacttest"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// The secret types print no byte of their secrets however they are held:
// their Format covers them where fmt can call it, and where it cannot (an
// unexported field, under %s or %q too) their bytes are out of fmt's
// reach.
func TestSecretsPrintNothingAnywhere(t *testing.T) {
	s := []byte("EPOCH-SECRET-redaction-0123456789")
	redacttest.Check(t, ciphersuite.NewSecret(s), map[string][]byte{"secret": s})
	for _, cs := range supported(t) {
		t.Run(cs.ID().String(), func(t *testing.T) {
			sig, err := cs.GenerateSignatureKey()
			if err != nil {
				t.Fatal(err)
			}
			hpke, err := cs.GenerateHPKEKey()
			if err != nil {
				t.Fatal(err)
			}
			redacttest.Check(t, sig, map[string][]byte{"signature key": sig.Bytes()})
			redacttest.Check(t, hpke, map[string][]byte{"HPKE key": hpke.Bytes()})
		})
	}
}
