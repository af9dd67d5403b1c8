package engine

import (
	"context"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
)

// PublishKeyPackage generates a key package, records it with its private
// keys (keypackage.generated) and as published to destination
// (keypackage.published) in one atomic append, and returns the TLS-encoded
// KeyPackage for others to add this installation with. A last-resort
// package may be used by several Welcomes; it is rotated after the first
// one is processed (see ProcessWelcome).
func (in *Installation) PublishKeyPackage(ctx context.Context, destination string, lastResort bool) (*KeyPackageOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	ref, raw, err := in.publishKeyPackage(ctx, destination, lastResort)
	if raw == nil {
		return nil, err
	}
	out := &KeyPackageOutput{KeyPackage: raw, Ref: ref}
	out.ProjectionErr, err = lagged(err)
	return out, err
}

func (in *Installation) publishKeyPackage(ctx context.Context, destination string, lastResort bool) ([]byte, []byte, error) {
	kp, secrets, err := mls.NewKeyPackage(in.cs.ID(), in.cred, in.sig, in.capabilities())
	if err != nil {
		return nil, nil, fmt.Errorf("engine: installation %s: new key package: %w", in.id, err)
	}
	ref, err := kp.Ref()
	if err != nil {
		return nil, nil, fmt.Errorf("engine: installation %s: key package ref: %w", in.id, err)
	}
	raw, err := kp.Marshal()
	if err != nil {
		return nil, nil, fmt.Errorf("engine: installation %s: encode key package: %w", in.id, err)
	}
	agg := events.Aggregate{Installation: in.id, Type: events.AggKeyPackage, ID: groupKey(ref)}
	generated := events.KeyPackageGenerated{
		Ref: ref, Ciphersuite: uint16(in.cs.ID()), KeyPackage: raw,
		InitPrivateKey:       events.NewSecret(secrets.InitKey.Bytes()),
		EncryptionPrivateKey: events.NewSecret(secrets.EncryptionKey.Bytes()),
		LastResort:           lastResort,
		Published:            true, Destination: destination,
	}
	if err := in.appendAndProject(ctx, agg, 0, generated); err != nil {
		err = fmt.Errorf("engine: installation %s: publish key package %x: %w", in.id, ref, err)
		if errors.Is(err, errNotProjected) {
			return ref, raw, err
		}
		return nil, nil, err
	}
	return ref, raw, nil
}

// heldKeyPackage is a key package with its private keys, as the read model
// holds it.
type heldKeyPackage struct {
	ref        []byte
	kp         *mls.KeyPackage
	secrets    *mls.KeyPackageSecrets
	lastResort bool
}

// findKeyPackage returns the first of refs whose private keys the read
// model still holds.
func (in *Installation) findKeyPackage(ctx context.Context, refs [][]byte) (*heldKeyPackage, error) {
	for _, ref := range refs {
		held, found, err := in.db.HeldKeyPackage(ctx, ref)
		if err != nil {
			return nil, fmt.Errorf("engine: installation %s: key package %x: %w", in.id, ref, err)
		}
		if !found {
			continue // unknown, or its keys are gone: consumed (one-time) or rotated out
		}
		kp := new(mls.KeyPackage)
		if err := kp.Unmarshal(held.KeyPackage.KeyPackage); err != nil {
			return nil, fmt.Errorf("engine: installation %s: stored key package %x: %w", in.id, ref, err)
		}
		ik, err := in.cs.ParseHPKEPrivateKey(held.InitPrivateKey.Bytes())
		if err != nil {
			return nil, fmt.Errorf("engine: installation %s: key package %x init key: %w", in.id, ref, err)
		}
		ek, err := in.cs.ParseHPKEPrivateKey(held.EncryptionPrivateKey.Bytes())
		if err != nil {
			return nil, fmt.Errorf("engine: installation %s: key package %x encryption key: %w", in.id, ref, err)
		}
		return &heldKeyPackage{ref: ref, kp: kp, lastResort: held.LastResort,
			secrets: &mls.KeyPackageSecrets{InitKey: ik, EncryptionKey: ek, SignatureKey: in.sig}}, nil
	}
	return nil, fmt.Errorf("engine: installation %s: %w", in.id, ErrNoKeyPackage)
}

// consumeKeyPackage records, after the Welcome that used it is durable,
// that kp was consumed; a last-resort package is rotated: a new one is
// published first, then the old one is marked consumed and rotated in one
// append. The read model keeps the private keys of the current and the
// previous last-resort package only.
//
// The package's state is read from the read model on every attempt, not
// taken from kp: another process of this installation may have consumed
// or rotated it since kp was read (two Welcomes using one last-resort
// package), and recording it twice would be an event the read model
// cannot apply. The caller has brought the read model up to date.
func (in *Installation) consumeKeyPackage(ctx context.Context, kp *heldKeyPackage, groupID []byte) error {
	agg := events.Aggregate{Installation: in.id, Type: events.AggKeyPackage, ID: groupKey(kp.ref)}
	var consumed events.Body
	for attempt := 0; attempt < in.opts.MaxAttempts; attempt++ {
		state, found, err := in.db.KeyPackageState(ctx, kp.ref)
		if err != nil {
			return fmt.Errorf("engine: installation %s: key package %x state: %w", in.id, kp.ref, err)
		}
		if !found {
			return fmt.Errorf("engine: installation %s: key package %x state: the read model does not know the key package", in.id, kp.ref)
		}
		if state == projections.KeyPackageConsumed || state == projections.KeyPackageRotated {
			// Done already, after an earlier Welcome (a rotated package's
			// keys go with the next rotation) or by another process.
			return nil
		}
		// The position that goes with the state just read: publishing the
		// rotation package below catches the read model up, perhaps with
		// another process's consumption of kp, and appending after that
		// must be a conflict, not a second consumption.
		pos, err := in.position(ctx, agg.Type, agg.ID)
		if err != nil {
			return err
		}
		if consumed == nil {
			consumed = events.KeyPackageConsumed{Ref: kp.ref, GroupID: groupID, LastResort: kp.lastResort}
			if kp.lastResort {
				// Published once, before the rotation that names it. If
				// another process rotates kp meanwhile, this package stays
				// published and unused: one more valid last-resort package.
				newRef, _, err := in.publishKeyPackage(ctx, "rotation", true)
				if err != nil && !errors.Is(err, errNotProjected) {
					return err
				}
				// One event: the rotation goes with the consumption.
				consumed = events.KeyPackageConsumed{Ref: kp.ref, GroupID: groupID, LastResort: true, ReplacedBy: newRef}
			}
		}
		err = in.appendAndProject(ctx, agg, pos, consumed)
		if errors.Is(err, eventlog.ErrConflict) {
			if err := in.project(ctx); err != nil {
				return err
			}
			if attempt+1 < in.opts.MaxAttempts {
				decidedAgain(in.log, agg, attempt+1, err)
			}
			continue
		}
		if err != nil {
			return fmt.Errorf("engine: installation %s: consume key package %x: %w", in.id, kp.ref, err)
		}
		return nil
	}
	return fmt.Errorf("engine: installation %s: consume key package %x: %w", in.id, kp.ref, ErrTooManyConflicts)
}
