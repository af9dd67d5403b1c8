package replay

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/telemetry"
)

// What replay tells an operator (docs/observability.md): events applied
// and refused, how far each followed read model stands behind its
// installation's events, and the life of rebuilds, rekeys, migrations and
// verifications, through the Metrics and Logger of the eventlog.Log it is
// given.

// unknownKind labels an apply error whose event could not be opened or
// failed the log's checks before its kind was known.
const unknownKind = "unknown"

// countApplied counts a committed batch by event kind.
func countApplied(m *telemetry.Metrics, recs []projections.Record) {
	if m == nil {
		return
	}
	for i := 0; i < len(recs); {
		k := recs[i].Event.Body.Kind()
		n := 1
		for i+n < len(recs) && recs[i+n].Event.Body.Kind() == k {
			n++
		}
		m.Applied(string(k), n)
		i += n
	}
}

// countApplyError counts err if it is an event that could not be applied:
// a read model's refusal (projections.ApplyError, by its kind) or a record
// the log could not open or check (kind "unknown"). Transport failures and
// cancellations are not events' failures.
func countApplyError(m *telemetry.Metrics, err error) {
	var ae *projections.ApplyError
	if errors.As(err, &ae) {
		k := ae.Kind
		if k == "" {
			k = unknownKind
		}
		m.ApplyError(k)
		return
	}
	var re *eventlog.RecordError
	if errors.As(err, &re) && re.Op != "handle" {
		m.ApplyError(unknownKind)
	}
}

// logFailure logs err at Error when it is a verification failure (the
// data did not check out: an operator must look), at Debug otherwise
// (the caller gets err and decides). Errors never carry key bytes.
func logFailure(log *slog.Logger, msg string, err error, attrs ...any) {
	if err == nil {
		return
	}
	attrs = append(attrs, "err", err)
	if IsVerificationFailure(err) {
		log.Error(msg, attrs...)
		return
	}
	log.Debug(msg, attrs...)
}

// lagProbeEvery is how often, at most, a projector asks the stream how far
// an installation's read model is behind (eventlog.Log.Pending) while it
// is behind; in between it estimates from what it applied.
const lagProbeEvery = time.Second

// lagTracker records where read models stand (telemetry.Metrics.
// ProjectorAt) as a replay advances: from the records' own pending counts
// when they say the read is at the stream's end (no round trip), else by
// asking the stream at most once per lagProbeEvery per installation. With
// no Metrics it does nothing at all.
type lagTracker struct {
	l *eventlog.Log
	m *telemetry.Metrics
	// exact: the read covers one installation, so a record's Pending
	// counts that installation's events alone.
	exact bool
	insts map[events.InstallationID]*lagState
}

type lagState struct {
	cp      uint64    // the read model's checkpoint, as last recorded
	probed  time.Time // when the stream was last asked
	pending uint64    // events behind, as last known
	oldest  time.Time // the oldest of them, as last known (zero: none)
}

func newLagTracker(l *eventlog.Log, exact bool) *lagTracker {
	return &lagTracker{l: l, m: l.Metrics(), exact: exact, insts: map[events.InstallationID]*lagState{}}
}

// probe asks the stream how far inst's read model at checkpoint cp is
// behind and records it. A failure is logged at Debug and leaves the
// previous figures: the projection itself does not depend on it.
func (t *lagTracker) probe(ctx context.Context, inst events.InstallationID, cp uint64) {
	if t.m == nil {
		return
	}
	st := t.state(inst)
	st.probed, st.cp = time.Now(), cp
	p, err := t.l.Pending(ctx, inst, cp)
	if err != nil {
		if ctx.Err() == nil {
			t.l.Logger().Debug("replay: projector lag unknown", "installation", string(inst), "stream", t.l.Stream(), "seq", cp, "err", err)
		}
		return
	}
	st.pending, st.oldest = p.Events, p.Oldest
	t.record(inst, cp, st)
}

// applied records inst's read model at cp after a batch of n events whose
// last record said pending (Record.Pending) events of the read followed.
func (t *lagTracker) applied(ctx context.Context, inst events.InstallationID, cp uint64, n int, pending uint64) {
	if t.m == nil {
		return
	}
	st := t.state(inst)
	st.cp = cp
	switch {
	case pending == 0:
		st.pending, st.oldest = 0, time.Time{}
	case time.Since(st.probed) >= lagProbeEvery:
		t.probe(ctx, inst, cp)
		return
	case t.exact:
		st.pending = pending
	default:
		st.pending -= min(st.pending, uint64(n))
	}
	t.record(inst, cp, st)
}

func (t *lagTracker) record(inst events.InstallationID, cp uint64, st *lagState) {
	var age time.Duration
	if st.pending > 0 && !st.oldest.IsZero() {
		age = max(time.Since(st.oldest), 0)
	}
	t.m.ProjectorAt(string(inst), cp, st.pending, age)
}

// atEnd records every installation's read model caught up: a merged read
// delivered a record with nothing pending after it, and everything
// delivered up to it is applied.
func (t *lagTracker) atEnd() {
	if t.m == nil {
		return
	}
	for inst, st := range t.insts {
		if st.pending > 0 {
			st.pending, st.oldest = 0, time.Time{}
			t.record(inst, st.cp, st)
		}
	}
}

// gone drops the series of every installation the tracker recorded.
func (t *lagTracker) gone() {
	if t.m == nil {
		return
	}
	for inst := range t.insts {
		t.m.ProjectorGone(string(inst))
	}
}

func (t *lagTracker) state(inst events.InstallationID) *lagState {
	st, ok := t.insts[inst]
	if !ok {
		st = &lagState{}
		t.insts[inst] = st
	}
	return st
}

// since is the duration attribute of a record: the time since start, in
// Go's notation ("1.234s").
func since(start time.Time) slog.Attr {
	return slog.String("duration", time.Since(start).Round(time.Millisecond).String())
}
