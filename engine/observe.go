package engine

import (
	"errors"
	"log/slog"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/telemetry"
)

// What the engine tells an operator (docs/observability.md), through the
// Metrics and Logger of the eventlog.Log it runs on: read models opened
// and closed, appends decided again after a lost answer or another
// writer, events applied, and (at Debug) each operation's append.

// aggAttrs are the attributes naming an append: its installation, the
// aggregate's type (a group's or key package's id is not logged) and the
// first event's kind.
func aggAttrs(l *eventlog.Log, evs []events.Event) []any {
	a := []any{slog.String("stream", l.Stream())}
	if len(evs) == 0 {
		return a
	}
	return append(a, slog.String("installation", string(evs[0].Aggregate.Installation)),
		slog.String("aggregate", string(evs[0].Aggregate.Type)), slog.String("kind", string(evs[0].Body.Kind())),
		slog.Int("events", len(evs)))
}

// decidedAgain records that an operation lost the race for agg to another
// writer, caught its read model up and decides again (attempt counts
// from 1): telemetry's conflict retry and an Info record. The conflict
// itself is counted by the Log.
func decidedAgain(l *eventlog.Log, agg events.Aggregate, attempt int, err error) {
	l.Metrics().Retry(telemetry.RetryConflict)
	l.Logger().Info("engine: another writer appended first; caught up, deciding again",
		"stream", l.Stream(), "installation", string(agg.Installation), "aggregate", string(agg.Type), "attempt", attempt, "err", err)
}

// countApplied counts the events an installation applied to its read
// model, by kind; countApplyError the event it could not apply.
func countApplied(m *telemetry.Metrics, recs []projections.Record) {
	if m == nil {
		return
	}
	for _, r := range recs {
		m.Applied(string(r.Event.Body.Kind()), 1)
	}
}

func countApplyError(m *telemetry.Metrics, err error) {
	var ae *projections.ApplyError
	if errors.As(err, &ae) {
		k := ae.Kind
		if k == "" {
			k = "unknown"
		}
		m.ApplyError(k)
		return
	}
	var re *eventlog.RecordError
	if errors.As(err, &re) && re.Op != "handle" {
		m.ApplyError("unknown")
	}
}
