package mls

import (
	"errors"
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
)

// TestErrorContract pins the sentinel identities callers rely on: the
// aliases are the same values as the lower packages', and wrapped errors
// from this package match with errors.Is.
func TestErrorContract(t *testing.T) {
	if ErrDecode != codec.ErrDecode || ErrBadSignature != ciphersuite.ErrBadSignature || ErrDecrypt != ciphersuite.ErrDecrypt {
		t.Fatal("sentinel aliases differ from the codec/ciphersuite values")
	}
	var gi GroupInfo
	err := gi.Unmarshal([]byte{0, 1})
	if !errors.Is(err, ErrDecode) || !errors.Is(fmt.Errorf("context: %w", err), codec.ErrDecode) {
		t.Fatalf("decode error %v does not match ErrDecode", err)
	}
	cs := mustSuite(t, ciphersuite.Default)
	m := newTestMember(t, cs, "carol")
	kp := m.keyPackage(t, cs)
	kp.Signature[0] ^= 1
	err = kp.Validate()
	if !errors.Is(err, ErrInvalidKeyPackage) || !errors.Is(err, ErrBadSignature) || errors.Is(err, ErrInvalidTree) {
		t.Fatalf("tampered key package: %v", err)
	}
	for _, e := range []error{ErrInvalidTree, ErrInvalidLeafNode, ErrInvalidKeyPackage, ErrInvalidUpdatePath} {
		for _, o := range []error{ErrInvalidTree, ErrInvalidLeafNode, ErrInvalidKeyPackage, ErrInvalidUpdatePath} {
			if (e == o) != errors.Is(e, o) {
				t.Errorf("errors.Is(%v, %v) = %t", e, o, errors.Is(e, o))
			}
		}
	}
}
