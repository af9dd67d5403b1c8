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

// Retention (docs/forward-secrecy.md, Retention, shredding and
// compaction). The Log's part:
//
//   - shredding a period: its data key is destroyed (every revision of
//     its entry purged from the key bucket, the Log's cached copy wiped),
//     after a shred mark is written in the retention bucket
//     "<stream>_RETAINED" (the key bucket holds wrapped keys only:
//     re-wrap reads every entry as one), named
//     "<installation pseudonym>.shredded.<class>.<period token>". The
//     mark is what tells a period the retention policy destroyed from a
//     key that went missing: an event whose key is gone and marked is
//     ErrRetainedOut, one whose key is gone unmarked stays ErrNoDataKey
//     (a loss). A mark's value is a keyed tag (the pseudonym key), so the
//     bus operator cannot mark a period it deleted the key of. The mark
//     names a period token the envelopes already carry in clear: it
//     leaks nothing new. A new key is never created for a marked period,
//     so an append into a shredded period (a message dated in a shredded
//     day) fails with ErrRetainedOut instead of sealing under a second
//     key of the same name.
//   - compacting: the events of shredded periods below a checkpoint (the
//     newest snapshot's) are deleted from the stream one by one (their
//     subjects also carry events that are kept: a group's messages and
//     state share its subject), after a compaction mark in the retention
//     bucket, "<installation pseudonym>.compacted", records the
//     checkpoint. From then on a whole-history replay is refused with
//     ErrCompacted: the history before the snapshot is no longer
//     complete.

var (
	// ErrRetainedOut means an event belongs to a period its
	// installation's retention policy shredded: its data key was destroyed
	// on purpose and nothing opens it any more. A replay that meets one
	// must start from a snapshot that covers it.
	ErrRetainedOut = errors.New("eventlog: the event's period was shredded by the retention policy")

	// ErrCompacted means a replay from the start of an installation's
	// history was asked after compaction deleted the shredded events from
	// the stream: only a replay from a snapshot at or after the compaction
	// point gives the read model.
	ErrCompacted = errors.New("eventlog: the installation's history was compacted")
)

// shredToken and compactedToken are name tokens of the marks in the
// retention bucket.
const (
	shredToken     = "shredded"
	compactedToken = "compacted"
)

// RetentionBucketSuffix is appended to the stream name to name the
// retention bucket, the KV bucket of shred and compaction marks.
const RetentionBucketSuffix = "_RETAINED"

// RetentionBucket returns the name of the Log's retention bucket,
// "<stream>_RETAINED".
func (l *Log) RetentionBucket() string { return l.cfg.Stream + RetentionBucketSuffix }

// marks opens the retention bucket; nil when it does not exist and
// create is false (no retention was ever applied on this stream). It is
// opened per call: it is needed only when a data key is missing from the
// key bucket (a period's first event, or an event of a shredded period)
// and by the retention tools.
func (l *Log) marks(ctx context.Context, create bool) (jetstream.KeyValue, error) {
	kv, _, err := l.openBucket(ctx, l.RetentionBucket(), "retention bucket", "epochlog shred and compaction marks of stream "+l.cfg.Stream, create)
	return kv, err
}

func (l *Log) shredMarkName(pseudo string, id events.DataKeyID) string {
	return pseudo + "." + shredToken + "." + id.Class.String() + "." + id.Token()
}

// shredMarkValue is the keyed tag a shred mark holds.
func (l *Log) shredMarkValue(inst events.InstallationID, id events.DataKeyID) []byte {
	return []byte(l.keys.Pseudonym(shredToken, l.cfg.Stream, string(inst), id.Class.String(), id.Token()))
}

// checkRetainedOut returns an error wrapping ErrRetainedOut when inst's
// period id carries a valid shred mark; nil when it has none (or the
// Log has no bucket). A mark whose tag does not check out is ignored,
// with a warning.
func (l *Log) checkRetainedOut(ctx context.Context, inst events.InstallationID, id events.DataKeyID) error {
	if id.Class != events.ClassMessages && id.Class != events.ClassDelivery {
		return nil // retention shreds only these; a state key costs no lookup
	}
	marks, err := l.marks(ctx, false)
	if err != nil || marks == nil {
		return err
	}
	name := l.shredMarkName(l.instPseudonym(inst), id)
	e, err := marks.Get(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return nil
	case err != nil:
		return fmt.Errorf("eventlog: retention bucket %s: get %s: %w", l.RetentionBucket(), name, err)
	}
	if subtle.ConstantTimeCompare(e.Value(), l.shredMarkValue(inst, id)) != 1 {
		l.logger.Warn("eventlog: a shred mark in the retention bucket does not check out; ignored", "stream", l.cfg.Stream, "name", name)
		return nil
	}
	return fmt.Errorf("%w: data key %s of installation %s was destroyed at %s",
		ErrRetainedOut, id, inst, e.Created().UTC().Format(time.RFC3339))
}

// PeriodOfDay is one day period: a group's UTC day of the messages
// class, or a queue's of the delivery class.
type PeriodOfDay struct {
	// Class is events.ClassMessages or events.ClassDelivery.
	Class events.DataKeyClass
	// Aggregate is the group's or the queue's aggregate id
	// (events.Aggregate.ID).
	Aggregate string
	// Day is the start of the UTC day.
	Day time.Time
	// ID is the period's data key id.
	ID events.DataKeyID
}

// maxRetentionDays bounds the days OldDayPeriods looks at per aggregate
// (about 100 years).
const maxRetentionDays = 36600

// dayKeyNames lists inst's key names of class (messages or delivery),
// with the scope its periods name aggregates by and inst's pseudonym.
func (l *Log) dayKeyNames(ctx context.Context, inst events.InstallationID, class events.DataKeyClass) (scope, pseudo string, names map[string]bool, err error) {
	if err := inst.Validate(); err != nil {
		return "", "", nil, fmt.Errorf("eventlog: %w", err)
	}
	switch class {
	case events.ClassMessages:
		scope = "group"
	case events.ClassDelivery:
		scope = "queue"
	default:
		return "", "", nil, fmt.Errorf("eventlog: day periods of class %s: only messages and delivery keys have day periods", class)
	}
	if l.kv == nil {
		return "", "", nil, fmt.Errorf("%w: stream %s: bucket %s", ErrNoKeyBucket, l.cfg.Stream, keyBucket(l.cfg.Stream))
	}
	pseudo = l.instPseudonym(inst)
	names, err = l.keyNames(ctx, pseudo+"."+class.String()+".*")
	return scope, pseudo, names, err
}

// keptAheadDays is how many days after now's OldDayPeriods matches keys
// as kept: days writers whose clocks are a little ahead have keyed.
const keptAheadDays = 2

// OldDayPeriods returns every period of class (events.ClassMessages:
// aggs are group aggregate ids; events.ClassDelivery: queue aggregate
// ids) of inst whose data key is still in the key bucket and whose UTC
// day is before before's day, however old, newest day first. The bucket
// names keys by period pseudonyms, which hide the aggregate and the day:
// the candidates are computed (one keyed hash per aggregate and day, as
// events.PeriodOf and Keyring.DataKeyID name them) and matched against
// one listing of the installation's keys of that class: every key of the
// installation of that class in the bucket is accounted for, not only
// those of the days an age implies. Days are
// matched from keptAheadDays after now's back to maxRetentionDays before
// before's, and the search stops once every key listed is matched (to an
// old day or a kept one), so it costs the days the installation actually
// has keys of. unknown counts the keys matched to no aggregate of aggs on
// any of those days (an aggregate the caller does not know, a day dated
// further ahead): they are not returned, so they are kept.
func (l *Log) OldDayPeriods(ctx context.Context, inst events.InstallationID, class events.DataKeyClass, aggs []string, before, now time.Time) (old []PeriodOfDay, unknown int, err error) {
	scope, pseudo, names, err := l.dayKeyNames(ctx, inst, class)
	if err != nil || len(names) == 0 {
		return nil, 0, err
	}
	end := before.UTC().Truncate(24 * time.Hour)
	first := end.Add(-maxRetentionDays * 24 * time.Hour)
	last := now.UTC().Truncate(24 * time.Hour)
	if last.Before(end) {
		last = end
	}
	last = last.Add(keptAheadDays * 24 * time.Hour)
	matched := 0
	for d := last; !d.Before(first) && matched < len(names); d = d.Add(-24 * time.Hour) {
		day := d.Format(time.DateOnly)
		for _, a := range aggs {
			id, err := l.keys.DataKeyID(inst, class, scope, a, day)
			if err != nil {
				return nil, 0, err
			}
			if !names[id.Name(pseudo)] {
				continue
			}
			matched++
			if d.Before(end) {
				old = append(old, PeriodOfDay{Class: class, Aggregate: a, Day: d, ID: id})
			}
		}
	}
	return old, len(names) - matched, nil
}

// keyNames lists the key bucket's names matching filter. Each wait for
// the next name is bounded by RequestTimeout: a listing cut short is an
// error, never a shorter list (a key left out would be a key kept).
func (l *Log) keyNames(ctx context.Context, filter string) (map[string]bool, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	w, err := l.kv.WatchFiltered(ctx, []string{filter}, jetstream.IgnoreDeletes(), jetstream.MetaOnly())
	if err != nil {
		return nil, fmt.Errorf("eventlog: key bucket %s: list %s: %w", keyBucket(l.cfg.Stream), filter, err)
	}
	defer func() { _ = w.Stop() }()
	names := map[string]bool{}
	idle := time.NewTimer(l.cfg.RequestTimeout)
	defer idle.Stop()
	for {
		select {
		case e, ok := <-w.Updates():
			if !ok {
				return nil, fmt.Errorf("eventlog: key bucket %s: list %s: the listing ended after %d names, before the bucket said it was complete", keyBucket(l.cfg.Stream), filter, len(names))
			}
			if e == nil { // every name there was has been sent
				return names, nil
			}
			names[e.Key()] = true
			idle.Reset(l.cfg.RequestTimeout)
		case <-idle.C:
			return nil, fmt.Errorf("eventlog: key bucket %s: list %s: no answer for %s after %d names: %w", keyBucket(l.cfg.Stream), filter, l.cfg.RequestTimeout, len(names), context.DeadlineExceeded)
		case <-ctx.Done():
			return nil, fmt.Errorf("eventlog: key bucket %s: list %s after %d names: %w", keyBucket(l.cfg.Stream), filter, len(names), ctx.Err())
		}
	}
}

// HasDataKey reports whether inst's data key id is in the key bucket (for
// a group's epoch, whether its chain there still derives it).
func (l *Log) HasDataKey(ctx context.Context, inst events.InstallationID, id events.DataKeyID) (bool, error) {
	if l.kv == nil {
		return false, fmt.Errorf("%w: stream %s: bucket %s", ErrNoKeyBucket, l.cfg.Stream, keyBucket(l.cfg.Stream))
	}
	if id.Class == events.ClassEpoch { // derivable from the group's chain
		start, ok, err := l.EpochChainStart(ctx, inst, id)
		n, _ := id.Epoch()
		return ok && n >= start, err
	}
	name := id.Name(l.instPseudonym(inst))
	_, err := l.kv.Get(ctx, name)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return false, nil
	}
	return false, fmt.Errorf("eventlog: key bucket %s: get %s: %w", keyBucket(l.cfg.Stream), name, err)
}

// ShredDataKeys destroys inst's data keys ids: for each, the shred mark
// is written, then every revision of the key's entry is purged from the
// key bucket and this Log's cached copy is wiped. It returns how many
// entries it purged (0 for keys an earlier call destroyed: shredding
// again is a no-op). Only messages and delivery keys are shredded by
// retention; a state key is refused (its events are the installation's
// state: Erase is the way to destroy them).
//
// Other processes that cache one of these keys can still open the events
// they hold until their cache drops it or they restart, and seal with it
// for up to dayKeyRecheck (10 min), when they look it up again; a Log
// that does not cache it refuses both at once.
func (l *Log) ShredDataKeys(ctx context.Context, inst events.InstallationID, ids []events.DataKeyID) (int, error) {
	if l.closed.Load() {
		return 0, ErrClosed
	}
	if l.cfg.ReadOnly {
		return 0, ErrReadOnly
	}
	if err := inst.Validate(); err != nil {
		return 0, fmt.Errorf("eventlog: %w", err)
	}
	if l.kv == nil {
		return 0, fmt.Errorf("%w: stream %s: bucket %s", ErrNoKeyBucket, l.cfg.Stream, keyBucket(l.cfg.Stream))
	}
	pseudo := l.instPseudonym(inst)
	for _, id := range ids {
		if id.Class != events.ClassMessages && id.Class != events.ClassDelivery {
			return 0, fmt.Errorf("eventlog: shred %s of %s: only messages and delivery keys are shredded by retention", id, inst)
		}
	}
	if len(ids) == 0 {
		return 0, nil
	}
	marks, err := l.marks(ctx, true)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, id := range ids {
		if _, err := marks.Put(ctx, l.shredMarkName(pseudo, id), l.shredMarkValue(inst, id)); err != nil {
			return n, fmt.Errorf("eventlog: shred %s of %s: write its mark in bucket %s (shred again to finish): %w", id, inst, l.RetentionBucket(), err)
		}
		ck := dkCacheKey{inst: inst, id: id}
		l.dkCache.drop(ck)
		subj := "$KV." + keyBucket(l.cfg.Stream) + "." + id.Name(pseudo)
		c, err := countUnder(ctx, l.kvStream, subj)
		if err != nil {
			return n, fmt.Errorf("eventlog: shred %s of %s: count its entry in bucket %s (shred again to finish): %w", id, inst, keyBucket(l.cfg.Stream), err)
		}
		if err := l.kvStream.Purge(ctx, jetstream.WithPurgeSubject(subj)); err != nil {
			return n, fmt.Errorf("eventlog: shred %s of %s: purge it from bucket %s (shred again to finish): %w", id, inst, keyBucket(l.cfg.Stream), err)
		}
		l.dkCache.drop(ck) // what a read racing the purge cached
		if c > 0 {
			n++
		}
	}
	if n > 0 {
		l.logger.Info("eventlog: data keys shredded", "stream", l.cfg.Stream, "installation", string(inst), "keys", n)
	}
	return n, nil
}

// drop wipes and forgets one cached key.
func (c *dataKeyCache) drop(k dkCacheKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		c.removeLocked(e)
	}
}

func (l *Log) compactedName(inst events.InstallationID) string {
	return l.instPseudonym(inst) + "." + compactedToken
}

func (l *Log) compactedTag(inst events.InstallationID, seq uint64) string {
	return l.keys.Pseudonym(compactedToken, l.cfg.Stream, string(inst), strconv.FormatUint(seq, 10))
}

// CompactedThrough returns the stream sequence up to which inst's
// history was compacted (0: never). A mark whose tag does not check out
// is an error: someone else wrote it.
func (l *Log) CompactedThrough(ctx context.Context, inst events.InstallationID) (uint64, error) {
	if err := inst.Validate(); err != nil {
		return 0, fmt.Errorf("eventlog: %w", err)
	}
	marks, err := l.marks(ctx, false)
	if err != nil || marks == nil {
		return 0, err
	}
	name := l.compactedName(inst)
	e, err := marks.Get(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, nil
	case err != nil:
		return 0, fmt.Errorf("eventlog: retention bucket %s: get %s: %w", l.RetentionBucket(), name, err)
	}
	s, tag, _ := strings.Cut(string(e.Value()), ".")
	seq, err := strconv.ParseUint(s, 10, 64)
	if err != nil || subtle.ConstantTimeCompare([]byte(tag), []byte(l.compactedTag(inst, seq))) != 1 {
		return 0, fmt.Errorf("eventlog: retention bucket %s: the compaction mark of %s does not check out: %w", l.RetentionBucket(), inst, events.ErrTampered)
	}
	return seq, nil
}

// CheckNotCompacted returns an error wrapping ErrCompacted when inst's
// history was compacted, for a replay that would start from the
// beginning of the history.
func (l *Log) CheckNotCompacted(ctx context.Context, inst events.InstallationID) error {
	seq, err := l.CompactedThrough(ctx, inst)
	if err != nil {
		return err
	}
	if seq > 0 {
		return fmt.Errorf("%w: %s's events of shredded periods up to stream sequence %d were deleted; replay from a snapshot at or after %d (not from the start)",
			ErrCompacted, inst, seq, seq)
	}
	return nil
}

// Compacted says what CompactRetainedOut did.
type Compacted struct {
	// Through is the stream sequence compacted up to.
	Through uint64
	// Scanned counts the events of the installation looked at; Deleted
	// those deleted (shredded periods); Kept the others.
	Scanned, Deleted, Kept int
	// RootSealed counts the kept events sealed under a root key
	// (envelope formats 1 and 2): written before data keys, or by a
	// writer built before them still appending. No shredding reaches
	// them; they stay readable under the root keys until a re-seal.
	RootSealed int
}

// CompactOptions tune CompactRetainedOut.
type CompactOptions struct {
	// StoredBefore, when set, also deletes every event the stream stored
	// before it (its JetStream timestamp), whatever its key: the
	// full-history retention (replay.RetentionPolicy.History).
	StoredBefore time.Time
	// Step, when set (tests), is called after each step: "mark", then
	// "delete" after each deleted event.
	Step func(string)
}

// deleteCompacted deletes the event at seq from the stream. One already
// gone counts as deleted: another process compacting the installation
// at the same time (two replicas retaining on one schedule) deleted it
// first. The server then answers "no message found" or "sequence not
// found" (JetStream errors 10057, 10043), which nats.go wraps in
// jetstream.ErrMsgDeleteUnsuccessful as text only, so whether it is gone
// is asked again.
func (l *Log) deleteCompacted(ctx context.Context, seq uint64) error {
	err := l.stream.DeleteMsg(ctx, seq)
	if err == nil || errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil
	}
	if _, gerr := l.getMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return err
}

// CompactRetainedOut deletes from the stream inst's events at or below
// through whose data key was shredded by retention (a shred mark, no
// key; for a group's epochs, an epoch before its chain's start). The caller passes the checkpoint of a verified snapshot (what
// replay.Compact does): everything at or below it is replaced by the
// snapshot, so no event that must be kept is lost, and only events that
// nothing opens any more are deleted. The compaction mark is written
// first, so an interrupted compaction already refuses whole-history
// replays; compacting again finishes it. Events of formats 1 and 2 (no
// data key), of periods still keyed, and the event at through itself
// (the snapshot's anchor: the installation's last sequence must not fall
// below a snapshot's checkpoint) are kept.
func (l *Log) CompactRetainedOut(ctx context.Context, inst events.InstallationID, through uint64, opts *CompactOptions) (*Compacted, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	if l.cfg.ReadOnly {
		return nil, ErrReadOnly
	}
	var o CompactOptions
	if opts != nil {
		o = *opts
	}
	step := func(s string) {
		if o.Step != nil {
			o.Step(s)
		}
	}
	filter, err := l.InstallationFilter(inst)
	if err != nil {
		return nil, err
	}
	if l.kv == nil {
		return nil, fmt.Errorf("%w: stream %s: bucket %s", ErrNoKeyBucket, l.cfg.Stream, keyBucket(l.cfg.Stream))
	}
	prev, err := l.CompactedThrough(ctx, inst)
	if err != nil {
		return nil, err
	}
	res := &Compacted{Through: max(prev, through)}
	if res.Through > prev {
		marks, err := l.marks(ctx, true)
		if err != nil {
			return nil, err
		}
		v := strconv.FormatUint(res.Through, 10) + "." + l.compactedTag(inst, res.Through)
		if _, err := marks.Put(ctx, l.compactedName(inst), []byte(v)); err != nil {
			return nil, fmt.Errorf("eventlog: compact %s: write the compaction mark: %w", inst, err)
		}
	}
	step("mark")
	gone := map[events.DataKeyID]bool{} // per period: shredded (marked, no key)
	// Each subject's last event stays, like the anchor: the log finds an
	// aggregate's position from it for the next append (lookup), and an
	// emptied subject would take the next event as the first.
	lastOn := map[string]uint64{}
	isLast := func(m *jetstream.RawStreamMsg) (bool, error) {
		last, ok := lastOn[m.Subject]
		if !ok {
			lm, err := l.getLastMsg(ctx, m.Subject)
			if err != nil {
				return false, fmt.Errorf("eventlog: compact %s: the last event of its subject (compact again to finish): %w", inst, err)
			}
			last = lm.Sequence
			lastOn[m.Subject] = last
		}
		return m.Sequence == last, nil
	}
	for seq := uint64(1); seq <= through; {
		m, err := l.getMsg(ctx, seq, jetstream.WithGetMsgSubject(filter))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			break
		}
		if err != nil {
			return res, fmt.Errorf("eventlog: compact %s: get the next event from seq %d (compact again to finish): %w", inst, seq, err)
		}
		if m.Sequence > through {
			break
		}
		seq = m.Sequence + 1
		res.Scanned++
		last, err := isLast(m)
		if err != nil {
			return res, err
		}
		if last {
			res.Kept++
			continue
		}
		if !o.StoredBefore.IsZero() && m.Time.Before(o.StoredBefore) && m.Sequence != through {
			if err := l.deleteCompacted(ctx, m.Sequence); err != nil {
				return res, fmt.Errorf("eventlog: compact %s: delete seq %d (compact again to finish): %w", inst, m.Sequence, err)
			}
			res.Deleted++
			step("delete")
			continue
		}
		id, ok, err := events.EnvelopeDataKeyID(m.Data)
		if err == nil && !ok {
			res.RootSealed++
		}
		if err != nil || !ok || id.Class == events.ClassState || !id.Class.Valid() {
			res.Kept++
			continue
		}
		g, known := gone[id]
		if !known && id.Class == events.ClassEpoch {
			if g, err = l.epochShredded(ctx, inst, id); err != nil {
				return res, err
			}
			gone[id] = g
		} else if !known {
			has, err := l.HasDataKey(ctx, inst, id)
			if err != nil {
				return res, err
			}
			if !has {
				if err := l.checkRetainedOut(ctx, inst, id); errors.Is(err, ErrRetainedOut) {
					g = true
				} else if err != nil {
					return res, err
				}
			}
			gone[id] = g
		}
		if !g || m.Sequence == through {
			// The event at through is kept even when shredded: it is the
			// snapshot's checkpoint, which the installation's last
			// sequence must not fall below (a rebuild takes the newest
			// snapshot at or below it) and whose link the snapshot
			// records.
			res.Kept++
			continue
		}
		if err := l.deleteCompacted(ctx, m.Sequence); err != nil {
			return res, fmt.Errorf("eventlog: compact %s: delete seq %d (compact again to finish): %w", inst, m.Sequence, err)
		}
		res.Deleted++
		step("delete")
	}
	l.logger.Info("eventlog: installation compacted", "stream", l.cfg.Stream, "installation", string(inst),
		"through", res.Through, "scanned", res.Scanned, "deleted", res.Deleted)
	if res.RootSealed > 0 {
		l.logger.Warn("eventlog: compaction kept events sealed under a root key, which no shredding reaches (written before data keys, or by a writer built before them); a re-seal retires them",
			"stream", l.cfg.Stream, "installation", string(inst), "root_sealed", res.RootSealed)
	}
	return res, nil
}

// HistoryTrimmed reports whether retention trimmed inst's history on this
// stream, so that it no longer reads from its start: events compacted
// (CompactedThrough), a day of messages or delivery shredded (a shred
// mark), or a group's earliest epochs shredded (an epoch chain moved past
// epoch 0). A snapshot then carries what came before (replay.Reseal).
func (l *Log) HistoryTrimmed(ctx context.Context, inst events.InstallationID) (bool, error) {
	if seq, err := l.CompactedThrough(ctx, inst); err != nil || seq > 0 {
		return seq > 0, err
	}
	pseudo := l.instPseudonym(inst)
	marks, err := l.marks(ctx, false)
	if err != nil {
		return false, err
	}
	if marks != nil {
		lister, err := marks.ListKeysFiltered(ctx, pseudo+"."+shredToken+".>")
		if err != nil && !errors.Is(err, jetstream.ErrNoKeysFound) {
			return false, fmt.Errorf("eventlog: retention bucket %s: list the shred marks of %s: %w", l.RetentionBucket(), inst, err)
		}
		if err == nil {
			found := false
			for range lister.Keys() {
				found = true
			}
			if found {
				return true, nil
			}
		}
	}
	if l.kv == nil {
		return false, nil
	}
	names, err := l.keyNames(ctx, pseudo+"."+events.ClassEpoch.String()+".*")
	if err != nil {
		return false, err
	}
	for name := range names {
		e, err := l.kv.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return false, fmt.Errorf("eventlog: key bucket %s: get %s: %w", keyBucket(l.cfg.Stream), name, err)
		}
		if n, err := events.WrappedChainEpoch(e.Value()); err != nil || n > 0 {
			return err == nil, err
		}
	}
	return false, nil
}

// MarkCompacted records that inst's history on this stream starts after
// seq, carried by a snapshot there (the compaction mark that
// CompactRetainedOut writes first): replays from the start then fail
// with ErrCompacted, and an aggregate with no event left on the stream
// takes its next event at the position its writer expects. replay.Reseal
// marks the histories it carries from snapshots into a new stream.
func (l *Log) MarkCompacted(ctx context.Context, inst events.InstallationID, seq uint64) error {
	if l.cfg.ReadOnly {
		return ErrReadOnly
	}
	prev, err := l.CompactedThrough(ctx, inst)
	if err != nil || prev >= seq {
		return err
	}
	marks, err := l.marks(ctx, true)
	if err != nil {
		return err
	}
	v := strconv.FormatUint(seq, 10) + "." + l.compactedTag(inst, seq)
	if _, err := marks.Put(ctx, l.compactedName(inst), []byte(v)); err != nil {
		return fmt.Errorf("eventlog: mark %s compacted through %d: %w", inst, seq, err)
	}
	return nil
}
