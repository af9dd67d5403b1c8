package projections

// Queries about the installation itself and its key packages.

import (
	"context"
	"database/sql"
	"time"

	"github.com/epochlog/epochlog/events"
)

// Installation is the installation's identity, as installation.created
// recorded it. SignaturePrivateKey is secret (redacted when printed).
type Installation struct {
	ID                  events.InstallationID
	Ciphersuite         uint16
	SignaturePublicKey  []byte
	SignaturePrivateKey events.Secret // nil if the event carried none
	Credential          []byte
	CreatedAt           time.Time
}

// Installation returns the identity of the installation whose read model
// this is. found is false until its installation.created event is applied.
func (db *DB) Installation(ctx context.Context) (inst Installation, found bool, err error) {
	var id string
	var priv []byte
	var at sql.NullInt64
	found, err = db.lookup(ctx, "installation", `SELECT installation_id, ciphersuite, signature_public_key, signature_private_key, credential, created_at
		FROM installation WHERE id = 1`, nil, &id, &inst.Ciphersuite, &inst.SignaturePublicKey, &priv, &inst.Credential, &at)
	if !found || err != nil {
		return Installation{}, false, err
	}
	inst.ID, inst.CreatedAt = events.InstallationID(id), fromNanos(at)
	if priv != nil {
		inst.SignaturePrivateKey = events.NewSecret(priv)
	}
	return inst, true, nil
}

// KeyPackage is a key package the installation can hand out.
type KeyPackage struct {
	Ref         []byte
	Ciphersuite uint16
	KeyPackage  []byte
	LastResort  bool
	State       string
	GeneratedAt time.Time
}

// AvailableKeyPackages lists key packages that can still be used to join
// this installation: generated or published and not consumed, plus
// consumed last-resort packages until they are rotated; all with their
// private keys still held.
func (db *DB) AvailableKeyPackages(ctx context.Context) ([]KeyPackage, error) {
	rows, err := db.sql.QueryContext(ctx, `SELECT ref, ciphersuite, key_package, last_resort, state, generated_at FROM key_packages
		WHERE (state IN ('generated','published') OR (state = 'consumed' AND last_resort = 1))
		AND init_private_key IS NOT NULL ORDER BY generated_at, ref`)
	if err != nil {
		return nil, db.wrapErr("key packages", err)
	}
	defer rows.Close()
	var out []KeyPackage
	for rows.Next() {
		var k KeyPackage
		var at sql.NullInt64
		if err := rows.Scan(&k.Ref, &k.Ciphersuite, &k.KeyPackage, &k.LastResort, &k.State, &at); err != nil {
			return nil, db.wrapErr("key packages", err)
		}
		k.GeneratedAt = fromNanos(at)
		out = append(out, k)
	}
	return out, db.wrapErr("key packages", rows.Err())
}

// The states of a key package, in the order it goes through them
// (KeyPackage.State, KeyPackageState).
const (
	KeyPackageGenerated = "generated"
	KeyPackagePublished = "published"
	KeyPackageConsumed  = "consumed"
	KeyPackageRotated   = "rotated"
)

// HeldKeyPackage is a key package with its private keys (secret; redacted
// when printed).
type HeldKeyPackage struct {
	KeyPackage
	InitPrivateKey       events.Secret
	EncryptionPrivateKey events.Secret
}

// HeldKeyPackage returns the key package ref with its private keys, in
// whatever state it is. found is false when the read model does not know
// ref or no longer holds both its private keys: a one-time package's go
// with its use, a last-resort package's at the next rotation after its own.
func (db *DB) HeldKeyPackage(ctx context.Context, ref []byte) (kp HeldKeyPackage, found bool, err error) {
	var at sql.NullInt64
	var initPriv, encPriv []byte
	found, err = db.lookup(ctx, "held key package", `SELECT ref, ciphersuite, key_package, last_resort, state, generated_at, init_private_key, encryption_private_key
		FROM key_packages WHERE ref = ?`, []any{ref},
		&kp.Ref, &kp.Ciphersuite, &kp.KeyPackage.KeyPackage, &kp.LastResort, &kp.State, &at, &initPriv, &encPriv)
	if !found || err != nil || initPriv == nil || encPriv == nil {
		return HeldKeyPackage{}, false, err
	}
	kp.GeneratedAt = fromNanos(at)
	kp.InitPrivateKey, kp.EncryptionPrivateKey = events.NewSecret(initPriv), events.NewSecret(encPriv)
	return kp, true, nil
}

// KeyPackageState returns the state of key package ref: KeyPackageGenerated,
// KeyPackagePublished, KeyPackageConsumed or KeyPackageRotated. found is
// false when the read model does not know ref.
func (db *DB) KeyPackageState(ctx context.Context, ref []byte) (state string, found bool, err error) {
	found, err = db.lookup(ctx, "key package state", `SELECT state FROM key_packages WHERE ref = ?`, []any{ref}, &state)
	return state, found, err
}

// GroupJoinedWith returns the group that the one-time key package ref was
// consumed to join, if member (a credential identity) is still a current
// member of it. found is false otherwise: ref unknown or not consumed, a
// last-resort package (it serves many Welcomes, so naming it says nothing
// about one join), or member not (or no longer) in the group.
func (db *DB) GroupJoinedWith(ctx context.Context, ref, member []byte) (groupID []byte, found bool, err error) {
	found, err = db.lookup(ctx, "key package join", `SELECT k.consumed_group FROM key_packages k
		JOIN members m ON m.group_id = k.consumed_group AND m.identity = ? AND m.removed_epoch IS NULL
		WHERE k.ref = ? AND k.consumed_group IS NOT NULL AND NOT k.last_resort`, []any{member, ref}, &groupID)
	if !found {
		groupID = nil
	}
	return groupID, found, err
}

// ExternalPSK is an external pre-shared key the installation holds.
type ExternalPSK struct {
	ID []byte
	// Secret is the PSK (redacted when printed).
	Secret       events.Secret
	RegisteredAt time.Time
}

// ExternalPSKs lists the external PSKs the installation holds (registered,
// not retired), by id. Before schema v3 there are none.
func (db *DB) ExternalPSKs(ctx context.Context) ([]ExternalPSK, error) {
	if db.schema < 3 {
		return nil, nil
	}
	rows, err := db.sql.QueryContext(ctx, `SELECT psk_id, secret, registered_at FROM external_psks WHERE secret IS NOT NULL ORDER BY psk_id`)
	if err != nil {
		return nil, db.wrapErr("external psks", err)
	}
	defer rows.Close()
	var out []ExternalPSK
	for rows.Next() {
		var p ExternalPSK
		var s []byte
		var at sql.NullInt64
		if err := rows.Scan(&p.ID, &s, &at); err != nil {
			return nil, db.wrapErr("external psks", err)
		}
		p.Secret, p.RegisteredAt = events.NewSecret(s), fromNanos(at)
		out = append(out, p)
	}
	return out, db.wrapErr("external psks", rows.Err())
}

// ExternalPSKRegistered reports whether psk id was ever registered (held
// or retired).
func (db *DB) ExternalPSKRegistered(ctx context.Context, id []byte) (bool, error) {
	if db.schema < 3 {
		return false, nil
	}
	return db.exists(ctx, "external psk", `SELECT 1 FROM external_psks WHERE psk_id = ?`, id)
}
