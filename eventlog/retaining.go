package eventlog

import (
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// retainingToken names an installation's retention mark in the
// retention bucket, "<installation pseudonym>.retaining".
const retainingToken = "retaining"

// RetentionMark records the latest retention that deleted rows from an
// installation's read model (replay.Retain writes it before it deletes
// them): the read model's checkpoint, which the retention's snapshot is
// taken at, and the cutoffs it deleted before. A snapshot checked
// against one older than Checkpoint (or against the start) may hold
// those rows, whose keys the retention shreds: replay refuses to store
// it (docs/forward-secrecy.md, Snapshots racing a retention).
type RetentionMark struct {
	Checkpoint uint64
	// Messages and Delivery are the cutoffs: the messages sent, and the
	// deliveries enqueued, before them were deleted (zero: none by age).
	Messages, Delivery time.Time
}

func (l *Log) retainingName(inst events.InstallationID) string {
	return l.instPseudonym(inst) + "." + retainingToken
}

// retainingTag is the keyed tag a mark's value v carries.
func (l *Log) retainingTag(inst events.InstallationID, v string) string {
	return l.keys.Pseudonym(retainingToken, l.cfg.Stream, string(inst), v)
}

func unixNanos(t time.Time) int64 {
	if t.IsZero() {
		return 0
	}
	return t.UnixNano()
}

func fromUnixNanos(n int64) time.Time {
	if n == 0 {
		return time.Time{}
	}
	return time.Unix(0, n).UTC()
}

// RetentionMarkOf returns inst's retention mark; false when none was
// written (no retention deleted rows, or the Log has no retention
// bucket). A mark whose tag does not check out is an error wrapping
// events.ErrTampered: someone else wrote it.
func (l *Log) RetentionMarkOf(ctx context.Context, inst events.InstallationID) (RetentionMark, bool, error) {
	if err := inst.Validate(); err != nil {
		return RetentionMark{}, false, fmt.Errorf("eventlog: %w", err)
	}
	marks, err := l.marks(ctx, false)
	if err != nil || marks == nil {
		return RetentionMark{}, false, err
	}
	m, _, ok, err := l.retentionMark(ctx, marks, inst)
	return m, ok, err
}

func (l *Log) retentionMark(ctx context.Context, marks jetstream.KeyValue, inst events.InstallationID) (RetentionMark, uint64, bool, error) {
	name := l.retainingName(inst)
	gctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	// Asked again while unanswered: a bucket another process has just
	// created may not answer a get yet ("no responders").
	e, err := askAgain(gctx, l, func(ctx context.Context) (jetstream.KeyValueEntry, error) {
		e, err := marks.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return nil, nil // an answer: no mark
		}
		return e, err
	})
	switch {
	case err != nil:
		return RetentionMark{}, 0, false, fmt.Errorf("eventlog: retention bucket %s: get the retention mark of %s: %w", l.RetentionBucket(), inst, err)
	case e == nil:
		return RetentionMark{}, 0, false, nil
	}
	// A mark that does not check out comes with its revision: a
	// retention replaces it (MarkRetention).
	bad := fmt.Errorf("eventlog: retention bucket %s: the retention mark of %s (key %s) does not check out: %w", l.RetentionBucket(), inst, name, events.ErrTampered)
	i := strings.LastIndexByte(string(e.Value()), '.')
	if i < 0 {
		return RetentionMark{}, e.Revision(), false, bad
	}
	v, tag := string(e.Value()[:i]), string(e.Value()[i+1:])
	if subtle.ConstantTimeCompare([]byte(tag), []byte(l.retainingTag(inst, v))) != 1 {
		return RetentionMark{}, e.Revision(), false, bad
	}
	parts := strings.Split(v, ".")
	if len(parts) != 3 {
		return RetentionMark{}, e.Revision(), false, bad
	}
	cp, err1 := strconv.ParseUint(parts[0], 10, 64)
	msgs, err2 := strconv.ParseInt(parts[1], 10, 64)
	dels, err3 := strconv.ParseInt(parts[2], 10, 64)
	if err1 != nil || err2 != nil || err3 != nil {
		return RetentionMark{}, e.Revision(), false, bad
	}
	return RetentionMark{Checkpoint: cp, Messages: fromUnixNanos(msgs), Delivery: fromUnixNanos(dels)}, e.Revision(), true, nil
}

// MarkRetention records m as inst's retention mark, unless the mark
// recorded is at a later checkpoint (compare-and-set: two retentions at
// once leave the later one's; two at one checkpoint, the later cutoff
// of each kind). A recorded mark that does not check out
// (someone without the keyring wrote it) is replaced, with a Warn log:
// it tells nothing a deleted mark would not, and refusing it would stop
// every retention, and every snapshot, for good. A ReadOnly Log refuses
// (ErrReadOnly).
func (l *Log) MarkRetention(ctx context.Context, inst events.InstallationID, m RetentionMark) error {
	_, err := l.markRetention(ctx, inst, m, false)
	return err
}

// ReplaceForgedRetentionMark records m as inst's retention mark only
// over one that does not check out, and reports whether it did: a mark
// that checks out, or none, is left as it is, also one written between
// the caller's read that found the forged one and this write (compare-
// and-set on the forged mark's revision). Through MarkRetention a
// genuine mark written meanwhile at m's checkpoint would be replaced,
// its cutoffs lost.
func (l *Log) ReplaceForgedRetentionMark(ctx context.Context, inst events.InstallationID, m RetentionMark) (bool, error) {
	return l.markRetention(ctx, inst, m, true)
}

// markRetention is MarkRetention, or with forgedOnly
// ReplaceForgedRetentionMark; it reports whether it wrote m.
func (l *Log) markRetention(ctx context.Context, inst events.InstallationID, m RetentionMark, forgedOnly bool) (bool, error) {
	if l.cfg.ReadOnly {
		return false, fmt.Errorf("%w: mark a retention", ErrReadOnly)
	}
	if err := inst.Validate(); err != nil {
		return false, fmt.Errorf("eventlog: %w", err)
	}
	// An erased installation gets no mark: Erase purges its marks after
	// writing its tombstone, so one written while it ran is purged by it
	// or found below, rather than outliving the erase.
	if err := l.CheckNotErased(ctx, inst); err != nil {
		return false, fmt.Errorf("eventlog: mark %s retained at %d: %w", inst, m.Checkpoint, err)
	}
	if _, err := l.marks(ctx, true); err != nil {
		return false, err
	}
	// Bound anew: a handle from a create that raced another (two
	// retentions at once) could leave its gets unanswered ("no
	// responders") for seconds.
	marks, err := l.marks(ctx, false)
	if err != nil {
		return false, err
	}
	if marks == nil {
		return false, fmt.Errorf("eventlog: retention bucket %s: not found right after its creation", l.RetentionBucket())
	}
	name := l.retainingName(inst)
	for range 10 {
		prev, rev, found, err := l.retentionMark(ctx, marks, inst)
		forged := errors.Is(err, events.ErrTampered)
		if err != nil && !forged {
			return false, err
		}
		if forgedOnly && !forged {
			return false, nil
		}
		if found && prev.Checkpoint > m.Checkpoint {
			return false, nil
		}
		w := m
		if found && prev.Checkpoint == m.Checkpoint {
			// Another retention at this checkpoint (another copy of the
			// read model): the later cutoff of each kind stays, what
			// either deleted; the last writer's alone could understate it.
			w.Messages, w.Delivery = laterOf(w.Messages, prev.Messages), laterOf(w.Delivery, prev.Delivery)
		}
		v := fmt.Sprintf("%d.%d.%d", w.Checkpoint, unixNanos(w.Messages), unixNanos(w.Delivery))
		val := []byte(v + "." + l.retainingTag(inst, v))
		if forged {
			l.logger.Warn("eventlog: retention replaces a retention mark that does not check out (written by someone without the keyring)",
				"stream", l.cfg.Stream, "installation", string(inst), "bucket", l.RetentionBucket(), "revision", rev)
		}
		pctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
		if found || forged {
			_, err = marks.Update(pctx, name, val, rev)
		} else {
			_, err = marks.Create(pctx, name, val)
		}
		cancel()
		if err == nil {
			return true, l.unmarkErased(ctx, inst, m)
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			return false, fmt.Errorf("eventlog: retention bucket %s: mark %s retained at %d: %w", l.RetentionBucket(), inst, m.Checkpoint, err)
		}
		// Another retention wrote it meanwhile: compare again.
	}
	return false, fmt.Errorf("eventlog: retention bucket %s: mark %s retained at %d: the mark kept changing", l.RetentionBucket(), inst, m.Checkpoint)
}

// unmarkErased purges inst's marks again if inst was erased while its
// retention mark m was being written, and returns its *ErasedError; nil
// when inst is not erased.
func (l *Log) unmarkErased(ctx context.Context, inst events.InstallationID, m RetentionMark) error {
	eerr := l.CheckNotErased(ctx, inst)
	if !errors.Is(eerr, ErrErased) {
		return nil
	}
	if err := l.purgeMarks(ctx, l.instPseudonym(inst)); err != nil {
		return fmt.Errorf("eventlog: mark %s retained at %d: %w, and the mark written meanwhile was not purged (erase again to purge it): %w", inst, m.Checkpoint, eerr, err)
	}
	return fmt.Errorf("eventlog: mark %s retained at %d: %w (the mark written meanwhile was purged)", inst, m.Checkpoint, eerr)
}

// laterOf is the later of two cutoffs (the zero time: none).
func laterOf(a, b time.Time) time.Time {
	if b.After(a) {
		return b
	}
	return a
}
