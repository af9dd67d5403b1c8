package engine

import (
	"context"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// maxGetsCatchUp bounds how many events project fetches one by one
// before it hands over to CatchUp's consumer.
const maxGetsCatchUp = 256

// project brings the read model up to the end of the installation's
// events. After an operation only a few events are new (its own, and
// deliveries or other writers' events appended meanwhile), so it fetches
// them with direct reads instead of creating a consumer for each
// operation; a longer backlog goes through Log.CatchUp. The read model
// refuses gaps and repeats per aggregate.
func (in *Installation) project(ctx context.Context) error {
	cp, err := in.db.Checkpoint(ctx)
	if err != nil {
		return err
	}
	filter, err := in.log.InstallationFilter(in.id)
	if err != nil {
		return err
	}
	var recs []projections.Record
	n, _, err := in.log.ReadN(ctx, in.id, filter, cp+1, maxGetsCatchUp, func(r eventlog.Record) error {
		recs = append(recs, projections.Record{Seq: r.Seq, Event: r.Event})
		return nil
	})
	if err != nil {
		countApplyError(in.log.Metrics(), err)
		return fmt.Errorf("engine: installation %s: catch up read model: %w", in.id, err)
	}
	if len(recs) > 0 {
		if err := in.db.Apply(ctx, recs); err != nil {
			countApplyError(in.log.Metrics(), err)
			return fmt.Errorf("engine: installation %s: project: %w", in.id, err)
		}
		countApplied(in.log.Metrics(), recs)
		for _, r := range recs {
			if r.Event.Aggregate.Type == events.AggInstallation {
				// External PSKs may have changed: read them now, while the
				// read model is at hand (nil on failure: read when needed).
				_ = in.refreshPSKs(ctx)
				break
			}
		}
		in.log.Logger().Debug("engine: projected", "installation", string(in.id), "stream", in.log.Stream(), "events", len(recs), "seq", recs[len(recs)-1].Seq)
	}
	if n == maxGetsCatchUp {
		return in.catchUpAll(ctx)
	}
	return nil
}
