package ciphersuite

import (
	"crypto/subtle"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/internal/hidden"
)

// ErrSecretMarshal is returned when a secret-holding type is marshaled to
// JSON or text: secrets leave the process only through an explicit Bytes().
var ErrSecretMarshal = errors.New("mls/ciphersuite: refusing to marshal secret material")

// Secret is an immutable byte string holding key material (an epoch secret,
// a ratchet secret, an AEAD key). Its bytes are unexported and never printed:
// every fmt verb shows a placeholder with the length only.
type Secret struct {
	b hidden.Value[[]byte] // so that a Secret in an unexported field prints no byte either
}

// NewSecret returns a Secret holding a copy of b.
func NewSecret(b []byte) Secret { return Secret{b: hidden.New(append([]byte(nil), b...))} }

// Bytes returns a copy of the secret's bytes.
func (s Secret) Bytes() []byte { return append([]byte(nil), s.b.Get()...) }

// Len returns the length of the secret in bytes.
func (s Secret) Len() int { return len(s.b.Get()) }

// IsZero reports whether s holds no bytes (the zero Secret).
func (s Secret) IsZero() bool { return s.Len() == 0 }

// Equal reports in constant time whether s and o hold the same bytes.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare(s.b.Get(), o.b.Get()) == 1
}

// String returns a placeholder that shows only the length.
func (s Secret) String() string { return fmt.Sprintf("Secret(REDACTED, %d bytes)", s.Len()) }

// GoString returns the same placeholder as String.
func (s Secret) GoString() string { return s.String() }

// Format prints the placeholder under every verb, so %x and %d cannot leak
// the bytes either.
func (s Secret) Format(f fmt.State, _ rune) { fmt.Fprint(f, s.String()) }

// MarshalJSON refuses, with [ErrSecretMarshal].
func (s Secret) MarshalJSON() ([]byte, error) { return nil, ErrSecretMarshal }

// MarshalText refuses, with [ErrSecretMarshal].
func (s Secret) MarshalText() ([]byte, error) { return nil, ErrSecretMarshal }
