package eventlog

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// Re-seal (docs/forward-secrecy.md, Re-seal, step 2): the retained history
// of a stream is copied into a new stream, each event opened (formats 1
// and 2 under the source's root keys, 3 under its data key) and appended
// through a Log on the new stream, which seals it as format 3 under FRESH
// data keys (a new key bucket, wrapped under that Log's keyring), with the
// same aggregate, position, time and body, in the same order, and links
// and message ids derived anew by Append. Then both streams are read again
// through the verifying read path and compared event by event. Tombstones
// of erased installations are re-sealed under the new keyring.
//
// An installation whose history retention trimmed (HistoryTrimmed: days
// or epochs shredded, events compacted) cannot be copied from its start:
// the caller names, in ResealOptions.From, the source sequence of its
// newest snapshot's checkpoint, and only the events from there on are
// copied, the first of each aggregate at its own position on an empty
// subject. Carrying the snapshot itself (re-sealed at the target copy of
// that first event, Resealed.Anchors) is replay.Reseal's part: snapshots
// are read models, which this package does not read.
//
// Interrupted, Reseal run again resumes: an aggregate's events already in
// the new stream (by position) are skipped, the rest appended. The source
// is only read.

// ErrResealMismatch means the new stream does not read back as the old
// one: an event differs, is missing or is extra.
var ErrResealMismatch = errors.New("eventlog: re-sealed stream differs from its source")

// ResealOptions tune Reseal.
type ResealOptions struct {
	// Installations names every installation of the source (erased ones
	// included, for their tombstones). Subjects of any other installation
	// make Reseal refuse with ErrUnknownInstallations before it copies.
	Installations []events.InstallationID
	// From names the installations whose history is copied from a source
	// sequence on (the checkpoint of a snapshot that carries what came
	// before) instead of from the start: replay.Reseal sets it for the
	// installations whose history retention trimmed.
	From map[events.InstallationID]uint64
	// step, when set (tests), is called after each event copied.
	step func()
}

// Resealed reports what Reseal did.
type Resealed struct {
	// Source and Target are the two streams.
	Source, Target string
	// Copied counts events appended to the target by this call, Skipped
	// those already there (an earlier, interrupted call).
	Copied, Skipped int
	// Verified counts events read back from the target and found equal to
	// the source's.
	Verified int
	// Tombstones counts erased installations whose tombstone is in the
	// target.
	Tombstones int
	// Installations counts the installations with events.
	Installations int
	// Anchors are, for each installation of ResealOptions.From, the link
	// to its first event in the target: the copy of the event at the
	// From sequence, where the snapshot that carries its earlier history
	// belongs in the target.
	Anchors map[events.InstallationID]events.Link
}

// OpenBeside opens a Log on another stream of the server (or cluster) src
// is connected to: the same connection settings, the same storage and
// replicas as src's stream, with keys as its keyring. A src on an
// in-process embedded server has no address to connect to.
func OpenBeside(ctx context.Context, src *Log, stream, subjectPrefix string, keys *events.Keyring) (*Log, error) {
	cfg := src.config()
	cfg.ReadOnly = false
	cfg.NoCreate = false // the target is created
	cfg.ResolveActive = false
	cfg.Stream, cfg.SubjectPrefix = stream, subjectPrefix
	cfg.Replicas = max(src.stream.CachedInfo().Config.Replicas, 1)
	cfg.MaxAge, cfg.MaxBytes = 0, 0
	if src.srv != nil {
		if src.cfg.EmbeddedInProcess {
			return nil, errors.New("eventlog: open beside an in-process embedded server: it has no address")
		}
		cfg.NATSURL = src.ClientURL()
		cfg.NoSync = false
	}
	if cfg.Stream == src.cfg.Stream {
		return nil, fmt.Errorf("eventlog: open beside stream %s: the same stream", stream)
	}
	if cfg.SubjectPrefix == src.cfg.SubjectPrefix {
		return nil, fmt.Errorf("eventlog: open beside stream %s: subject prefix %q is the source's (two streams cannot hold the same subjects)", stream, subjectPrefix)
	}
	// Open records the source in the stream's metadata, so that only
	// this target is ever deleted as one (DeleteResealTarget).
	cfg.resealOf = src.cfg.Stream
	return Open(ctx, cfg, keys)
}

// copyTombstone writes t, inst's tombstone in the source, on inst's
// tombstone subject in l, the target, unless one is there: after the
// subject's last message (anyone who may publish on the target's
// subjects can put one there that is not a tombstone; reads pass over
// it), not only at subject sequence 0, where one such message would fail
// every reseal for good.
func (l *Log) copyTombstone(ctx context.Context, inst events.InstallationID, t events.Tombstone) error {
	subj, err := l.TombstoneSubject(inst)
	if err != nil {
		return err
	}
	tomb, others, last, err := l.scanTombstoneSubject(ctx, inst, subj, 1)
	if err != nil || tomb != nil {
		return err // or an earlier or racing reseal's is there
	}
	if _, _, err := l.placeTombstone(ctx, inst, subj, t, others, last); err != nil {
		return fmt.Errorf("eventlog: reseal: tombstone of %s: %w; reseal again", inst, err)
	}
	return nil
}

// Reseal copies src's retained history into dst (see the comment at the
// top of this file) and verifies it event by event. dst must be a
// writable Log on another stream; its keyring may differ from src's
// entirely (a new pseudonym anchor gives new subjects).
func Reseal(ctx context.Context, src, dst *Log, opts *ResealOptions) (*Resealed, error) {
	if src.closed.Load() || dst.closed.Load() {
		return nil, ErrClosed
	}
	if dst.cfg.ReadOnly {
		return nil, fmt.Errorf("%w: the re-seal target %s", ErrReadOnly, dst.cfg.Stream)
	}
	if src.cfg.Stream == dst.cfg.Stream {
		return nil, fmt.Errorf("eventlog: reseal: source and target are both stream %s", src.cfg.Stream)
	}
	var o ResealOptions
	if opts != nil {
		o = *opts
	}
	res := &Resealed{Source: src.cfg.Stream, Target: dst.cfg.Stream}
	if err := src.checkNamed(ctx, o.Installations); err != nil {
		return res, err
	}
	var live []events.InstallationID
	for _, inst := range o.Installations {
		t, _, found, err := src.Tombstone(ctx, inst)
		if err != nil {
			return res, err
		}
		if !found {
			live = append(live, inst)
			continue
		}
		if err := dst.copyTombstone(ctx, inst, t); err != nil {
			return res, err
		}
		res.Tombstones++
	}
	res.Installations = len(live)
	if len(live) == 0 {
		return res, nil
	}
	// Copy: the whole histories together, in the source's stream order;
	// then each history carried from a snapshot, from its sequence.
	var whole []events.InstallationID
	for _, inst := range live {
		if _, ok := o.From[inst]; !ok {
			whole = append(whole, inst)
		}
	}
	dstPos := map[string]uint64{} // by target subject: its last position
	copyRec := func(r Record, fromSnapshot bool) error {
		ev := r.Event
		as, err := dst.aggSubject(ev.Aggregate)
		if err != nil {
			return err
		}
		have, ok := dstPos[as.subject]
		if !ok {
			t, err := dst.lookup(ctx, as.subject, ev.Aggregate.Installation)
			if err != nil {
				return err
			}
			have = t.pos
		}
		switch {
		case ev.Position <= have:
			res.Skipped++
		case ev.Position == have+1 || fromSnapshot && have == 0:
			ev.Prev = events.Link{}
			if have == 0 && ev.Position > 1 {
				err = dst.appendFirstAt(ctx, ev)
			} else {
				_, err = dst.Append(ctx, have, ev)
			}
			if err != nil {
				return fmt.Errorf("re-seal into %s: %w", dst.cfg.Stream, err)
			}
			have = ev.Position
			res.Copied++
			if o.step != nil {
				o.step()
			}
		default:
			return fmt.Errorf("%w: %s %s of %s is at position %d in %s, the next event is %d", ErrResealMismatch,
				ev.Aggregate.Type, ev.Aggregate.ID, ev.Aggregate.Installation, have, dst.cfg.Stream, ev.Position)
		}
		dstPos[as.subject] = have
		return nil
	}
	if len(whole) > 0 {
		if err := src.ReadInstallations(ctx, whole, 0, func(r Record) error { return copyRec(r, false) }); err != nil {
			return res, err
		}
	}
	for _, inst := range live {
		from, ok := o.From[inst]
		if !ok {
			continue
		}
		if err := src.readCarried(ctx, inst, from, func(r Record) error { return copyRec(r, true) }); err != nil {
			return res, err
		}
		first, err := dst.firstOf(ctx, inst)
		if err != nil {
			return res, err
		}
		if res.Anchors == nil {
			res.Anchors = map[events.InstallationID]events.Link{}
		}
		res.Anchors[inst] = first
	}
	n, err := VerifyResealed(ctx, src, dst, live, o.From)
	res.Verified = n
	return res, err
}

// readCarried reads inst's history from the event at seq on: that event
// opened on its own (a carried history starts at it, and the read from
// the next sequence does not check what comes before), then a verifying
// read from seq+1.
func (l *Log) readCarried(ctx context.Context, inst events.InstallationID, seq uint64, fn func(Record) error) error {
	r, err := l.EventAt(ctx, inst, seq)
	if err != nil {
		return err
	}
	if err := fn(r); err != nil {
		return err
	}
	return l.Read(ctx, inst, seq+1, fn)
}

// EventAt returns inst's event at stream sequence seq, opened (on its
// own: no order or chain check, which need the events before it). An
// event of another installation there is ErrMissingEvent.
func (l *Log) EventAt(ctx context.Context, inst events.InstallationID, seq uint64) (Record, error) {
	filter, err := l.InstallationFilter(inst)
	if err != nil {
		return Record{}, err
	}
	m, err := l.getMsg(ctx, seq)
	if err == nil && !strings.HasPrefix(m.Subject, strings.TrimSuffix(filter, ">")) {
		err = fmt.Errorf("%w: stream sequence %d is not an event of installation %s", ErrMissingEvent, seq, inst)
	} else if err != nil {
		err = fmt.Errorf("eventlog: stream %s: get seq %d of %s: %w", l.cfg.Stream, seq, inst, err)
	}
	if err != nil {
		// Not there: an erased installation's events are purged.
		if eerr := l.CheckNotErased(ctx, inst); errors.Is(eerr, ErrErased) {
			return Record{}, eerr
		}
		return Record{}, err
	}
	ev, err := l.open(ctx, inst, m.Subject, m.Data)
	if err != nil {
		return Record{}, l.recordError(m.Subject, seq, "open", err)
	}
	return Record{Seq: seq, Subject: m.Subject, Event: ev, Size: len(m.Data), Stored: m.Time}, nil
}

// firstOf returns the link to inst's first event on the stream.
func (l *Log) firstOf(ctx context.Context, inst events.InstallationID) (events.Link, error) {
	filter, err := l.InstallationFilter(inst)
	if err != nil {
		return events.Link{}, err
	}
	m, err := l.getMsg(ctx, 1, jetstream.WithGetMsgSubject(filter))
	if err != nil {
		return events.Link{}, fmt.Errorf("eventlog: stream %s: first event of %s: %w", l.cfg.Stream, inst, err)
	}
	return events.LinkTo(m.Sequence, m.Data), nil
}

// appendFirstAt appends ev, the first event of its aggregate on this
// stream, at its own position (a history carried from a snapshot starts
// in the middle of its aggregates): published for an empty subject, so
// that the server refuses it if anything is there already; then the
// stream says whether that was an earlier attempt of this copy.
func (l *Log) appendFirstAt(ctx context.Context, ev events.Event) error {
	p, err := l.prepare(ctx, ev.Position-1, []events.Event{ev})
	if err != nil {
		return err
	}
	res, err := l.publishOne(ctx, p, 0)
	if err != nil {
		t, lerr := l.lookup(ctx, p.subject, ev.Aggregate.Installation)
		if lerr == nil && t.pos >= ev.Position {
			return nil // landed before (the verification compares it)
		}
		return fmt.Errorf("eventlog: append the first event of %s at position %d: %w", p.subject, ev.Position, err)
	}
	l.setTail(p.subject, tail{seq: res[0].Seq, pos: ev.Position})
	l.noteAppended(p, res)
	return nil
}

// VerifyResealed reads insts' histories from src and from dst through the
// verifying read (opened, positions and links checked) and compares them
// event by event: the same events (aggregate, position, time, kind and
// body; links and message ids are each stream's own) in the same order
// per installation. dst must hold no event sealed under a root key
// (formats 1 and 2). An installation in from is compared from that
// source sequence on, and from its first event in dst (a history carried
// from a snapshot). It returns the number of events compared; a
// difference is ErrResealMismatch naming the installation and position.
func VerifyResealed(ctx context.Context, src, dst *Log, insts []events.InstallationID, from map[events.InstallationID]uint64) (int, error) {
	want, err := fingerprints(ctx, src, insts, from)
	if err != nil {
		return 0, err
	}
	dstFrom := map[events.InstallationID]uint64{}
	for inst := range from {
		first, err := dst.firstOf(ctx, inst)
		if err != nil {
			return 0, err
		}
		dstFrom[inst] = first.Seq
	}
	got, err := fingerprints(ctx, dst, insts, dstFrom)
	if err != nil {
		return 0, err
	}
	n := 0
	for _, inst := range insts {
		w, g := want[inst], got[inst]
		for i := range max(len(w), len(g)) {
			switch {
			case i >= len(g):
				return n, fmt.Errorf("%w: installation %s: %s lacks event %d of %d (%s)", ErrResealMismatch, inst, dst.cfg.Stream, i+1, len(w), w[i].what)
			case i >= len(w):
				return n, fmt.Errorf("%w: installation %s: %s has %d events, %s %d", ErrResealMismatch, inst, dst.cfg.Stream, len(g), src.cfg.Stream, len(w))
			case !bytes.Equal(w[i].sum[:], g[i].sum[:]):
				return n, fmt.Errorf("%w: installation %s: event %d differs: %s in %s, %s in %s", ErrResealMismatch, inst, i+1, w[i].what, src.cfg.Stream, g[i].what, dst.cfg.Stream)
			}
			n++
		}
	}
	uses, err := dst.RootKeyUses(ctx)
	if err != nil {
		return n, err
	}
	for id, u := range uses {
		if u.Events > 0 {
			return n, fmt.Errorf("%w: %s holds %d events sealed under root key %d", ErrResealMismatch, dst.cfg.Stream, u.Events, id)
		}
	}
	return n, nil
}

// fingerprint is one event's identity for comparison: SHA-256 of its
// encoding without the link, and a description without secrets.
type fingerprint struct {
	sum  [32]byte
	what string
}

func fingerprints(ctx context.Context, l *Log, insts []events.InstallationID, from map[events.InstallationID]uint64) (map[events.InstallationID][]fingerprint, error) {
	out := map[events.InstallationID][]fingerprint{}
	add := func(r Record) error {
		ev := r.Event
		ev.Prev = events.Link{}
		b, err := events.MarshalEvent(ev)
		if err != nil {
			return err
		}
		f := fingerprint{sum: sha256.Sum256(b), what: fmt.Sprintf("%s at %s %s position %d", ev.Body.Kind(), ev.Aggregate.Type, ev.Aggregate.ID, ev.Position)}
		clear(b)
		inst := ev.Aggregate.Installation
		out[inst] = append(out[inst], f)
		return nil
	}
	var whole []events.InstallationID
	for _, inst := range insts {
		if _, ok := from[inst]; !ok {
			whole = append(whole, inst)
		}
	}
	if len(whole) > 0 {
		if err := l.ReadInstallations(ctx, whole, 0, add); err != nil {
			return out, err
		}
	}
	for _, inst := range insts {
		if seq, ok := from[inst]; ok {
			if err := l.readCarried(ctx, inst, seq, add); err != nil {
				return out, err
			}
		}
	}
	return out, nil
}

// checkNamed refuses a stream whose subjects hold installations (events
// or tombstones) not among insts.
func (l *Log) checkNamed(ctx context.Context, insts []events.InstallationID) error {
	named := map[string]bool{}
	for _, inst := range insts {
		if err := inst.Validate(); err != nil {
			return fmt.Errorf("eventlog: %w", err)
		}
		named[l.instPseudonym(inst)] = true
	}
	info, err := l.streamInfo(ctx, jetstream.WithSubjectFilter(l.cfg.SubjectPrefix+".>"))
	if err != nil {
		return fmt.Errorf("eventlog: stream %s: list subjects: %w", l.cfg.Stream, err)
	}
	unknown := map[string]bool{}
	pre := l.cfg.SubjectPrefix + "."
	for subj := range info.State.Subjects {
		rest, ok := strings.CutPrefix(subj, pre)
		if !ok {
			continue
		}
		tok, after, _ := strings.Cut(rest, ".")
		if tok == tombstoneToken {
			tok = after
		}
		if !named[tok] {
			unknown[tok] = true
		}
	}
	if len(unknown) > 0 {
		return fmt.Errorf("%w: stream %s holds the subjects of %d installations not named (give every installation, erased ones included)",
			ErrUnknownInstallations, l.cfg.Stream, len(unknown))
	}
	return nil
}
