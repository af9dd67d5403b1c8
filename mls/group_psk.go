package mls

import (
	"bytes"
	"fmt"

	"github.com/epochlog/epochlog/mls/ciphersuite"
	"github.com/epochlog/epochlog/mls/keyschedule"
)

// checkPSKNonce reports a psk_nonce that is not KDF.Nh bytes long (RFC
// 9420 §8.4).
func checkPSKNonce(cs *ciphersuite.CipherSuite, id *PreSharedKeyID) error {
	if len(id.PSKNonce) != cs.Nh() {
		return fmt.Errorf("psk_nonce of %d bytes, want %d", len(id.PSKNonce), cs.Nh())
	}
	return nil
}

// pskSecretFor computes psk_secret for the PSKs of a commit or Welcome.
func (g *Group) pskSecretFor(ids []PreSharedKeyID) (keyschedule.Secret, error) {
	if len(ids) == 0 {
		return keyschedule.Secret{}, nil
	}
	psks := make([]keyschedule.PSK, len(ids))
	for i := range ids {
		id := &ids[i]
		b, err := id.Marshal()
		if err != nil {
			return keyschedule.Secret{}, err
		}
		var s keyschedule.Secret
		var ok bool
		switch id.Type {
		case PSKTypeExternal:
			s, ok = g.psks[string(id.PSKID)]
		case PSKTypeResumption:
			if id.Usage == ResumptionPSKUsageApplication && bytes.Equal(id.PSKGroupID, g.ctx.GroupID) {
				s, ok = g.resumptionPSK(id.PSKEpoch)
			} else if startsGroup(id) {
				s, ok = g.lentPSK(id)
			}
		}
		if !ok {
			return keyschedule.Secret{}, fmt.Errorf("%w: psk %d (type %d, id %x, epoch %d)", ErrUnknownPSK, i, id.Type, id.PSKID, id.PSKEpoch)
		}
		psks[i] = keyschedule.PSK{ID: b, Secret: s}
	}
	return keyschedule.PSKSecret(g.cs, psks)
}

func (g *Group) resumptionPSK(epoch uint64) (keyschedule.Secret, bool) {
	if epoch == g.ctx.Epoch && !g.secrets.ResumptionPSK.IsZero() {
		return g.secrets.ResumptionPSK, true
	}
	for _, p := range g.past {
		if p.ctx.Epoch == epoch {
			return p.resumptionPSK, true
		}
	}
	return keyschedule.Secret{}, false
}
