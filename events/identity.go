package events

import (
	"errors"
	"fmt"
)

// InstallationID names one installation (one app on one device). It is not
// secret, but it never appears in subjects in clear (see
// [Keyring.Pseudonym]). Valid ids are 1 to 128 bytes of printable ASCII
// without spaces, '.', '*' or '>' (the NATS subject metacharacters).
type InstallationID string

const (
	maxInstallationIDLen = 128
	maxAggregateIDLen    = 256
)

// Validate reports why id is not a valid installation id, or nil.
func (id InstallationID) Validate() error {
	if err := validToken(string(id), maxInstallationIDLen); err != nil {
		return fmt.Errorf("events: installation id: %w", err)
	}
	return nil
}

// validToken checks the rules shared by installation ids and aggregate ids.
// The error quotes at most a short prefix of s: these are identifiers, not
// secrets, but a hostile one should not flood a log.
func validToken(s string, maxLen int) error {
	if s == "" {
		return errors.New("empty")
	}
	if len(s) > maxLen {
		return fmt.Errorf("%d bytes, longer than %d", len(s), maxLen)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case c <= ' ' || c > '~':
			return fmt.Errorf("%s: byte %d (0x%02x) is not printable ASCII", quoteShort(s), i, c)
		case c == '.' || c == '*' || c == '>':
			return fmt.Errorf("%s: byte %d is %q, which is reserved in subjects", quoteShort(s), i, c)
		}
	}
	return nil
}

// quoteShort quotes s, cut to 40 bytes, for error messages.
func quoteShort(s string) string {
	if len(s) > 40 {
		return fmt.Sprintf("%q...", s[:40])
	}
	return fmt.Sprintf("%q", s)
}

// AggregateType is the kind of aggregate an event belongs to; each has its
// own ordered history (see [Event.Position]).
type AggregateType string

// The aggregate types.
const (
	// AggInstallation is the installation itself (identity and credential).
	AggInstallation AggregateType = "installation"
	// AggKeyPackage is one key package, identified by its ref (hex).
	AggKeyPackage AggregateType = "keypackage"
	// AggGroup is one MLS group as seen by the installation, identified by
	// its group id (hex).
	AggGroup AggregateType = "group"
	// AggDelivery is one (recipient installation, channel) delivery queue,
	// identified by the channel name.
	AggDelivery AggregateType = "delivery"
)

// Valid reports whether t is one of the declared aggregate types.
func (t AggregateType) Valid() bool {
	switch t {
	case AggInstallation, AggKeyPackage, AggGroup, AggDelivery:
		return true
	}
	return false
}

// Aggregate identifies one ordered history: an installation, a type, and an
// id within that type.
type Aggregate struct {
	// Installation owns the aggregate; its key seals the aggregate's events.
	Installation InstallationID `msgpack:"installation"`
	// Type is the aggregate type.
	Type AggregateType `msgpack:"type"`
	// ID is the group id (hex), key package ref (hex) or channel name, and ""
	// for AggInstallation. Same character rules as InstallationID, at most
	// 256 bytes.
	ID string `msgpack:"id"`
}

// Validate reports what is wrong with a, or nil.
func (a Aggregate) Validate() error {
	if err := a.Installation.Validate(); err != nil {
		return fmt.Errorf("events: aggregate: %w", err)
	}
	if !a.Type.Valid() {
		return fmt.Errorf("events: aggregate: unknown aggregate type %s", quoteShort(string(a.Type)))
	}
	if a.Type == AggInstallation {
		if a.ID != "" {
			return fmt.Errorf("events: aggregate: an %s aggregate has no id, got %s", AggInstallation, quoteShort(a.ID))
		}
		return nil
	}
	if err := validToken(a.ID, maxAggregateIDLen); err != nil {
		return fmt.Errorf("events: aggregate %s id: %w", a.Type, err)
	}
	return nil
}
