package ciphersuite

import (
	"crypto/hpke"
	"crypto/rand"
	"fmt"
)

// HPKE's secret export (RFC 9180 §5.3) in base mode with an empty info,
// which MLS uses for external initialization (RFC 9420 §8.3):
//
//	kem_output, context = SetupBaseS(external_pub, "")
//	init_secret = context.export("MLS 1.0 external init secret", KDF.Nh)

// ExportSend runs SetupBaseS(pub, "") and exports length bytes under
// exporterContext. pub is in the MLS wire format. The exported secret is
// returned as bytes; the caller keeps it as secret as a key.
func (cs *CipherSuite) ExportSend(pub []byte, exporterContext string, length int) (kemOutput, secret []byte, err error) {
	if cs.x448 != nil {
		pk, err := cs.x448.publicKey(pub)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: HPKE public key of %d bytes for %s", ErrInvalidKey, len(pub), cs.id)
		}
		s, err := cs.x448.suite.NewSender(pk, nil)
		if err != nil {
			return nil, nil, fmt.Errorf("mls/ciphersuite: HPKE setup for %s: %w", cs.id, err)
		}
		enc, sealer, err := s.Setup(rand.Reader)
		if err != nil {
			return nil, nil, fmt.Errorf("mls/ciphersuite: HPKE setup for %s: %w", cs.id, err)
		}
		return enc, sealer.Export([]byte(exporterContext), uint(length)), nil
	}
	pk, err := cs.kem.NewPublicKey(pub)
	if err != nil {
		return nil, nil, fmt.Errorf("%w: HPKE public key of %d bytes for %s", ErrInvalidKey, len(pub), cs.id)
	}
	enc, s, err := hpkeNewSender(pk, cs)
	if err != nil {
		return nil, nil, fmt.Errorf("mls/ciphersuite: HPKE setup for %s: %w", cs.id, err)
	}
	out, err := s.Export(exporterContext, length)
	if err != nil {
		return nil, nil, fmt.Errorf("mls/ciphersuite: HPKE export for %s: %w", cs.id, err)
	}
	return enc, out, nil
}

// ExportReceive runs SetupBaseR(kemOutput, priv, "") and exports length
// bytes under exporterContext. Every failure, a malformed kemOutput
// included, is [ErrDecrypt].
func (cs *CipherSuite) ExportReceive(priv *HPKEPrivateKey, kemOutput []byte, exporterContext string, length int) ([]byte, error) {
	if priv == nil || priv.suite != cs.id {
		return nil, fmt.Errorf("%w: HPKE private key is not for %s", ErrInvalidKey, cs.id)
	}
	if cs.x448 != nil {
		r, err := cs.x448.suite.NewReceiver(priv.x.Get(), nil)
		if err != nil {
			return nil, ErrDecrypt
		}
		opener, err := r.Setup(kemOutput)
		if err != nil {
			return nil, ErrDecrypt
		}
		return opener.Export([]byte(exporterContext), uint(length)), nil
	}
	r, err := hpkeNewRecipient(kemOutput, priv, cs)
	if err != nil {
		return nil, ErrDecrypt
	}
	out, err := r.Export(exporterContext, length)
	if err != nil {
		return nil, ErrDecrypt
	}
	return out, nil
}

func hpkeNewSender(pk hpke.PublicKey, cs *CipherSuite) ([]byte, *hpke.Sender, error) {
	return hpke.NewSender(pk, cs.kdf, cs.hpAEAD, nil)
}

func hpkeNewRecipient(enc []byte, priv *HPKEPrivateKey, cs *CipherSuite) (*hpke.Recipient, error) {
	return hpke.NewRecipient(enc, priv.k.Get(), cs.kdf, cs.hpAEAD, nil)
}
