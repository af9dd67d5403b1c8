package engine

// Pre-shared keys (RFC 9420 §8.4, §8.6): external PSKs registered with the
// installation, and resumption PSKs of a group's own epochs, injected into
// a commit inline or by proposal. The group states the engine records
// never carry an external PSK: it lends the held PSKs to a group for the
// one operation that may need them (a commit, processing a commit,
// joining from a Welcome) and strips them from the state that results.

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/mls/ciphersuite"
)

// PSK names a pre-shared key to inject into a group's next epoch: an
// external PSK by its id (registered with RegisterExternalPSK, held by
// every member), or a resumption PSK (RFC 9420 §8.6, usage application)
// of one of the group's own epochs, current or retained.
type PSK struct {
	// ExternalID is the psk_id of an external PSK; nil for a resumption
	// PSK.
	ExternalID []byte
	// ResumptionEpoch is the epoch whose resumption_psk to inject (of the
	// group committed in).
	ResumptionEpoch uint64
}

// ExternalPSK names the external PSK id.
func ExternalPSK(id []byte) PSK { return PSK{ExternalID: bytes.Clone(id)} }

// ResumptionPSK names the group's resumption PSK of epoch.
func ResumptionPSK(epoch uint64) PSK { return PSK{ResumptionEpoch: epoch} }

// pskID is the PreSharedKeyID of p in group g, with a fresh psk_nonce.
func pskID(g *mls.Group, p PSK) (mls.PreSharedKeyID, error) {
	cs, err := ciphersuite.Lookup(g.CipherSuite())
	if err != nil {
		return mls.PreSharedKeyID{}, err
	}
	nonce := make([]byte, cs.Nh())
	if _, err := rand.Read(nonce); err != nil {
		return mls.PreSharedKeyID{}, err
	}
	if p.ExternalID != nil {
		return mls.PreSharedKeyID{Type: mls.PSKTypeExternal, PSKID: bytes.Clone(p.ExternalID), PSKNonce: nonce}, nil
	}
	return mls.PreSharedKeyID{Type: mls.PSKTypeResumption, Usage: mls.ResumptionPSKUsageApplication,
		PSKGroupID: g.GroupID(), PSKEpoch: p.ResumptionEpoch, PSKNonce: nonce}, nil
}

// RegisterExternalPSK records an external PSK the installation holds from
// now on (installation.psk_registered, the secret sealed in the event and
// kept in the read model until retired). Commits and Welcomes that name
// its id can then be made and processed. An id is registered once: again
// is ErrPSKRegistered.
func (in *Installation) RegisterExternalPSK(ctx context.Context, id, secret []byte) error {
	if len(id) == 0 || len(secret) == 0 {
		return fmt.Errorf("engine: installation %s: register external PSK: empty id or secret", in.id)
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.installationEvent(ctx, func() error {
		reg, err := in.db.ExternalPSKRegistered(ctx, id)
		if err != nil {
			return fmt.Errorf("engine: installation %s: external PSK %x: %w", in.id, id, err)
		}
		if reg {
			return fmt.Errorf("engine: installation %s: external PSK %x: %w (an id names one secret)", in.id, id, ErrPSKRegistered)
		}
		return nil
	}, events.ExternalPSKRegistered{PSKID: bytes.Clone(id), Secret: events.NewSecret(bytes.Clone(secret))})
}

// RetireExternalPSK records that the installation no longer holds the
// external PSK id (installation.psk_retired): its secret is deleted from
// the read model, as retired epochs' secrets are, and a commit or Welcome
// that names it fails from then on (mls.ErrUnknownPSK).
func (in *Installation) RetireExternalPSK(ctx context.Context, id []byte) error {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.installationEvent(ctx, func() error {
		ps, err := in.db.ExternalPSKs(ctx)
		if err != nil {
			return fmt.Errorf("engine: installation %s: external PSKs: %w", in.id, err)
		}
		for _, p := range ps {
			if bytes.Equal(p.ID, id) {
				return nil
			}
		}
		return fmt.Errorf("engine: installation %s: retire external PSK %x: %w", in.id, id, mls.ErrUnknownPSK)
	}, events.ExternalPSKRetired{PSKID: bytes.Clone(id)})
}

// installationEvent appends body to the installation aggregate once check
// (run against the read model brought up to date) allows it, deciding
// again after a lost race.
func (in *Installation) installationEvent(ctx context.Context, check func() error, body events.Body) error {
	agg := events.Aggregate{Installation: in.id, Type: events.AggInstallation}
	for attempt := 0; attempt < in.opts.MaxAttempts; attempt++ {
		if err := in.project(ctx); err != nil {
			return err
		}
		if err := check(); err != nil {
			return err
		}
		pos, err := in.position(ctx, agg.Type, agg.ID)
		if err != nil {
			return err
		}
		err = in.appendAndProject(ctx, agg, pos, body)
		if errors.Is(err, eventlog.ErrConflict) {
			if attempt+1 < in.opts.MaxAttempts {
				decidedAgain(in.log, agg, attempt+1, err)
			}
			continue
		}
		if _, err := lagged(err); err != nil {
			return fmt.Errorf("engine: installation %s: record %s: %w", in.id, body.Kind(), err)
		}
		return nil
	}
	return fmt.Errorf("engine: installation %s: record %s: %w", in.id, body.Kind(), ErrTooManyConflicts)
}

// heldPSKs returns the external PSKs the installation holds, as the read
// model has them: cached, and read again whenever the read model applies
// an event of the installation aggregate (refreshPSKs).
func (in *Installation) heldPSKs(ctx context.Context) ([]mls.ExternalPSK, error) {
	in.pskMu.Lock()
	defer in.pskMu.Unlock()
	if in.psks == nil {
		if err := in.readPSKs(ctx); err != nil {
			return nil, err
		}
	}
	return *in.psks, nil
}

// refreshPSKs reads the held external PSKs from the read model again.
func (in *Installation) refreshPSKs(ctx context.Context) error {
	in.pskMu.Lock()
	defer in.pskMu.Unlock()
	return in.readPSKs(ctx)
}

// readPSKs reads the held external PSKs into the cache (pskMu held).
func (in *Installation) readPSKs(ctx context.Context) error {
	in.psks = nil
	ps, err := in.db.ExternalPSKs(ctx)
	if err != nil {
		return fmt.Errorf("engine: installation %s: external PSKs: %w", in.id, err)
	}
	out := make([]mls.ExternalPSK, len(ps))
	for i, p := range ps {
		out[i] = mls.ExternalPSK{ID: p.ID, Secret: ciphersuite.NewSecret(p.Secret.Bytes())}
	}
	in.psks = &out
	return nil
}

// lendPSKs returns g holding the installation's external PSKs, and the
// function that strips them from a group derived from it.
func (in *Installation) lendPSKs(ctx context.Context, g *mls.Group) (*mls.Group, func(*mls.Group) *mls.Group, error) {
	ps, err := in.heldPSKs(ctx)
	if err != nil {
		return nil, nil, err
	}
	for _, p := range ps {
		g = g.WithExternalPSK(p.ID, p.Secret.Bytes())
	}
	return g, func(ng *mls.Group) *mls.Group { return stripPSKs(ng, ps) }, nil
}

// stripPSKs removes the external PSKs ps from g (when there are any).
func stripPSKs(g *mls.Group, ps []mls.ExternalPSK) *mls.Group {
	for _, p := range ps {
		g = g.WithoutExternalPSK(p.ID)
	}
	return g
}

// CommitPreSharedKeys commits the PSKs inline (with a path update, and the
// proposals cached in the epoch that fit): each is injected into the next
// epoch's key schedule (RFC 9420 §8.4), so only members that hold them
// can follow. An external PSK this installation does not hold, or a
// resumption PSK of an epoch it no longer keeps, is refused before
// anything is recorded (mls.ErrUnknownPSK).
func (in *Installation) CommitPreSharedKeys(ctx context.Context, groupID []byte, psks ...PSK) (*CommitOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return committed(in.commit(ctx, groupID, func(g *mls.Group) (mls.CommitOptions, error) {
		var co mls.CommitOptions
		for _, p := range psks {
			id, err := pskID(g, p)
			if err != nil {
				return co, err
			}
			co.PSKs = append(co.PSKs, id)
		}
		return co, nil
	}))
}

// ProposePreSharedKey proposes injecting the PSK, for a commit of this
// epoch to carry by reference (a committer that does not hold it leaves
// it out).
func (in *Installation) ProposePreSharedKey(ctx context.Context, groupID []byte, psk PSK) (*ProposalOutput, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	return in.propose(ctx, groupID, "pre-shared key", func(g *mls.Group) (*mls.Group, *mls.MLSMessage, error) {
		id, err := pskID(g, psk)
		if err != nil {
			return nil, nil, err
		}
		return g.ProposePreSharedKey(id)
	})
}
