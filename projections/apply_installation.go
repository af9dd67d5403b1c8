package projections

// The installation aggregate (its identity) and the key package
// aggregates: a key package is generated, published, consumed by a
// Welcome and, for a last-resort package, rotated. A one-time package's
// private keys go with its use, a last-resort package's at the next
// rotation after its own.

import (
	"time"

	"errors"

	"github.com/epochlog/epochlog/events"
)

func applyInstallationCreated(a *applier, ev events.Event) error {
	b, err := body[events.InstallationCreated](ev)
	if err != nil {
		return err
	}
	if b.Installation != ev.Aggregate.Installation {
		return cannot("installation %q created on the aggregate of %q", b.Installation, ev.Aggregate.Installation)
	}
	var n int
	if err := a.query1(`SELECT count(*) FROM installation`, nil, &n); err != nil {
		return err
	}
	if n != 0 {
		return cannot("installation already created")
	}
	_, err = a.exec(`INSERT INTO installation(id, installation_id, ciphersuite, signature_public_key, signature_private_key, credential, created_at)
		VALUES (1, ?, ?, ?, ?, ?, ?)`,
		string(b.Installation), int64(b.Ciphersuite), b.SignaturePublicKey, nullBytes(b.SignaturePrivateKey.Bytes()), b.Credential, nanos(ev.Time))
	if err == nil {
		a.inst, a.instLoaded = string(b.Installation), true
	}
	return err
}

// applyExternalPSKRegistered keeps an external PSK (schema v3). A psk_id
// is registered once: registering it again, even after its retirement,
// is refused (a PSK's id names one secret for good).
func applyExternalPSKRegistered(a *applier, ev events.Event) error {
	b, err := body[events.ExternalPSKRegistered](ev)
	if err != nil {
		return err
	}
	if a.db.schema < 3 {
		return nil // an older schema does not keep them
	}
	if len(b.PSKID) == 0 || b.Secret.Len() == 0 {
		return cannot("external PSK without id or secret")
	}
	_, err = a.exec(`INSERT INTO external_psks(psk_id, secret, registered_at) VALUES (?, ?, ?)`, b.PSKID, b.Secret.Bytes(), nanos(ev.Time))
	return err
}

// applyExternalPSKRetired deletes a held external PSK's secret.
func applyExternalPSKRetired(a *applier, ev events.Event) error {
	b, err := body[events.ExternalPSKRetired](ev)
	if err != nil {
		return err
	}
	if a.db.schema < 3 {
		return nil // an older schema does not keep them
	}
	res, err := a.exec(`UPDATE external_psks SET secret = NULL, retired_at = ? WHERE psk_id = ? AND retired_at IS NULL`, nanos(ev.Time), b.PSKID)
	if err != nil {
		return err
	}
	if n, _ := res.RowsAffected(); n != 1 {
		return cannot("retire external PSK %x: not held", b.PSKID)
	}
	return nil
}

func (a *applier) keyPackageState(ref []byte) (state string, lastResort bool, err error) {
	err = a.query1(`SELECT state, last_resort FROM key_packages WHERE ref = ?`, []any{ref}, &state, &lastResort)
	if errors.Is(err, errNoRow) {
		return "", false, cannot("unknown key package %x", ref)
	}
	return state, lastResort, err
}

func applyKeyPackageGenerated(a *applier, ev events.Event) error {
	b, err := body[events.KeyPackageGenerated](ev)
	if err != nil {
		return err
	}
	if len(b.Ref) == 0 {
		return cannot("key package without ref")
	}
	_, err = a.exec(`INSERT INTO key_packages(ref, ciphersuite, key_package, last_resort, state, init_private_key, encryption_private_key, generated_at)
		VALUES (?, ?, ?, ?, 'generated', ?, ?, ?)`,
		b.Ref, int64(b.Ciphersuite), b.KeyPackage, b.LastResort, nullBytes(b.InitPrivateKey.Bytes()), nullBytes(b.EncryptionPrivateKey.Bytes()), nanos(ev.Time))
	if err != nil || !b.Published {
		return err
	}
	// Published as generated (version 2): as keypackage.published would.
	return a.publishKeyPackage(b.Ref, b.Destination, ev.Time)
}

func applyKeyPackagePublished(a *applier, ev events.Event) error {
	b, err := body[events.KeyPackagePublished](ev)
	if err != nil {
		return err
	}
	return a.publishKeyPackage(b.Ref, b.Destination, ev.Time)
}

func (a *applier) publishKeyPackage(ref []byte, destination string, at time.Time) error {
	state, _, err := a.keyPackageState(ref)
	if err != nil {
		return err
	}
	if state != "generated" {
		return cannot("publish key package %x in state %s", ref, state)
	}
	_, err = a.exec(`UPDATE key_packages SET state = 'published', published_at = ?, destination = ? WHERE ref = ?`,
		nanos(at), destination, ref)
	return err
}

func applyKeyPackageConsumed(a *applier, ev events.Event) error {
	b, err := body[events.KeyPackageConsumed](ev)
	if err != nil {
		return err
	}
	state, lastResort, err := a.keyPackageState(b.Ref)
	if err != nil {
		return err
	}
	if lastResort != b.LastResort {
		return cannot("key package %x: last_resort %v recorded, %v in consume", b.Ref, lastResort, b.LastResort)
	}
	switch {
	case state == "generated" || state == "published":
	case state == "consumed" && lastResort: // last-resort packages may be used again until rotated
	default:
		return cannot("consume key package %x in state %s", b.Ref, state)
	}
	if lastResort {
		_, err = a.exec(`UPDATE key_packages SET state = 'consumed', consumed_at = ?, consumed_group = ? WHERE ref = ?`,
			nanos(ev.Time), nullBytes(b.GroupID), b.Ref)
		if err != nil || b.ReplacedBy == nil {
			return err
		}
		// Rotated as consumed (version 2): as keypackage.rotated would.
		return a.rotateKeyPackage(b.Ref, b.ReplacedBy, ev.Time)
	}
	if b.ReplacedBy != nil {
		return cannot("key package %x: a one-time key package is not rotated", b.Ref)
	}
	// A one-time key package's private keys go with its use (forward secrecy).
	_, err = a.exec(`UPDATE key_packages SET state = 'consumed', consumed_at = ?, consumed_group = ?,
		init_private_key = NULL, encryption_private_key = NULL WHERE ref = ?`,
		nanos(ev.Time), nullBytes(b.GroupID), b.Ref)
	return err
}

func applyKeyPackageRotated(a *applier, ev events.Event) error {
	b, err := body[events.KeyPackageRotated](ev)
	if err != nil {
		return err
	}
	return a.rotateKeyPackage(b.Ref, b.ReplacedBy, ev.Time)
}

func (a *applier) rotateKeyPackage(ref, replacedBy []byte, at time.Time) error {
	state, _, err := a.keyPackageState(ref)
	if err != nil {
		return err
	}
	if state == "rotated" {
		return cannot("key package %x rotated twice", ref)
	}
	if _, err := a.exec(`UPDATE key_packages SET state = 'rotated', rotated_at = ?, replaced_by = ? WHERE ref = ?`,
		nanos(at), nullBytes(replacedBy), ref); err != nil {
		return err
	}
	// At most two HPKE key pairs: the current package and the one just
	// rotated out (a Welcome in flight may still use it). Every package
	// rotated earlier loses its private keys now.
	_, err = a.exec(`UPDATE key_packages SET init_private_key = NULL, encryption_private_key = NULL
		WHERE state = 'rotated' AND ref <> ? AND (init_private_key IS NOT NULL OR encryption_private_key IS NOT NULL)`, ref)
	return err
}
