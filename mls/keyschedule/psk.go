package keyschedule

import (
	"fmt"
	"math"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/codec"
)

// PSK is one pre-shared key injected into an epoch.
type PSK struct {
	// ID is the encoded PreSharedKeyID (RFC 9420 §8.4) naming the PSK; the
	// mls package owns that struct and encodes it.
	ID []byte
	// Secret is the PSK value.
	Secret Secret
}

// PSKSecret computes psk_secret over psks in order (RFC 9420 §8.4). With no
// PSKs it is the all-zero vector of Nh bytes.
func PSKSecret(cs *ciphersuite.CipherSuite, psks []PSK) (Secret, error) {
	if len(psks) > math.MaxUint16 {
		return Secret{}, fmt.Errorf("mls/keyschedule: %d PSKs exceed the uint16 count", len(psks))
	}
	secret := make([]byte, cs.Nh())
	for i, p := range psks {
		extracted := cs.Extract(nil, p.Secret.Bytes())
		var w codec.Writer
		w.Raw(p.ID)
		w.Uint16(uint16(i))
		w.Uint16(uint16(len(psks)))
		label, err := w.Finish()
		if err != nil {
			return Secret{}, fmt.Errorf("mls/keyschedule: PSKLabel %d: %w", i, err)
		}
		input, err := cs.ExpandWithLabel(extracted, "derived psk", label, cs.Nh())
		if err != nil {
			return Secret{}, fmt.Errorf("mls/keyschedule: psk_input %d: %w", i, err)
		}
		secret = cs.Extract(input, secret)
	}
	return ciphersuite.NewSecret(secret), nil
}
