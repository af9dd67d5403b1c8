package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// Erasing an installation (docs/forward-secrecy.md, Erase an
// installation), in an order that a crash at any point leaves either
// nothing erased or a state that erasing again finishes:
//
//  1. a tombstone on "<prefix>.tombstone.<installation pseudonym>",
//     sealed under a key derived from the current root key (it stays
//     readable: it records that the installation existed and was erased);
//     from here on every read, rebuild and append of the installation
//     fails with ErrErased;
//  2. its data keys are shredded: a purge of its names in the key bucket
//     (every revision), and the Log's cache of them wiped;
//  3. its subjects are purged from the stream.
//
// Erasing again finds the tombstone, keeps it, and does steps 2 and 3
// again; both are no-ops when done.
//
// The tombstone subject is meant to hold the installation's tombstone
// and nothing else, but anyone who may publish on the stream's subjects
// can put a message there. Erase reads every message on it: the first
// that opens as the installation's tombstone is its tombstone (found:
// the erase resumes); every other (not a tombstone, another
// installation's, a copy) is named in Erased.Removed and deleted, after
// the tombstone is written at the subject's last sequence Erase saw
// (not only at sequence 0, where one such message would block the erase
// for good). Reads pass over such a message (Tombstone reads the whole
// subject, a Warn log names it): the installation is erased only if a
// message there opens as its tombstone.

// tombstoneToken is the second subject token of tombstones. Installation
// pseudonyms are 26 characters, so it never names an installation.
const tombstoneToken = "tombstone"

// Erased describes an installation's erasure: its tombstone and what the
// erase removed.
type Erased struct {
	// Tombstone is the installation's tombstone (written now, or found
	// from an earlier, possibly interrupted, erase).
	Tombstone events.Tombstone
	// TombstoneSeq is the tombstone's stream sequence.
	TombstoneSeq uint64
	// Resumed is set when the tombstone was already there.
	Resumed bool
	// KeysPurged and EventsPurged count the key bucket entries and the
	// events this call removed (0 when an earlier call had).
	KeysPurged, EventsPurged uint64
	// SnapshotsPurged counts the read-model snapshots this call deleted
	// from the snapshots bucket.
	SnapshotsPurged int
	// Removed names the messages this call deleted from the tombstone
	// subject: none of them was the installation's tombstone.
	Removed []Removed
}

// Removed is a message Erase deleted from an installation's tombstone
// subject, and why it was not the installation's tombstone.
type Removed struct {
	Seq uint64 // its stream sequence
	Why string // e.g. "not a tombstone (malformed)"
}

// maxTombstoneTries bounds how often Erase writes its tombstone again
// after a publisher put another message on the subject meanwhile.
const maxTombstoneTries = 5

// ErasedError is returned for an erased installation (any operation but
// Erase). It unwraps to ErrErased.
type ErasedError struct {
	Stream       string
	Installation events.InstallationID
	// ErasedAt and By are the tombstone's; Seq its stream sequence.
	ErasedAt time.Time
	By       string
	Seq      uint64
}

// Error names the installation and when it was erased.
func (e *ErasedError) Error() string {
	s := fmt.Sprintf("eventlog: installation %s was erased at %s (tombstone at stream %s seq %d", e.Installation, e.ErasedAt.Format(time.RFC3339), e.Stream, e.Seq)
	if e.By != "" {
		s += ", by " + e.By
	}
	return s + "): its keys are shredded and its events purged"
}

// Unwrap returns ErrErased.
func (e *ErasedError) Unwrap() error { return ErrErased }

// TombstoneSubject returns the subject of inst's tombstone:
// <prefix>.tombstone.<installation pseudonym>.
func (l *Log) TombstoneSubject(inst events.InstallationID) (string, error) {
	if err := inst.Validate(); err != nil {
		return "", fmt.Errorf("eventlog: %w", err)
	}
	return l.cfg.SubjectPrefix + "." + tombstoneToken + "." + l.instPseudonym(inst), nil
}

// Tombstone returns inst's tombstone and its stream sequence, with found
// false when the installation was not erased.
func (l *Log) Tombstone(ctx context.Context, inst events.InstallationID) (t events.Tombstone, seq uint64, found bool, err error) {
	l.mu.Lock()
	e, ok := l.erased[inst]
	l.mu.Unlock()
	if ok {
		return e.t, e.seq, true, nil
	}
	subj, err := l.TombstoneSubject(inst)
	if err != nil {
		return t, 0, false, err
	}
	m, err := l.getLastMsg(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return t, 0, false, nil
	}
	if err != nil {
		return t, 0, false, fmt.Errorf("eventlog: stream %s: tombstone of %s: %w", l.cfg.Stream, inst, err)
	}
	if t, err = events.OpenTombstone(l.keys, inst, l.binding(subj), m.Data); err != nil {
		return l.tombstoneBehind(ctx, inst, subj, m.Sequence)
	}
	l.noteErased(inst, t, m.Sequence)
	return t, m.Sequence, true, nil
}

// tombstoneBehind is Tombstone when the last message on inst's tombstone
// subject subj, at seq last, is not inst's tombstone (anyone who may
// publish on the stream's subjects can put one there): the subject is
// read (what this Log has not read of it yet), and the first message
// that opens as inst's tombstone is its tombstone (one published after
// it does not hide it). None: inst is not erased, and each such message
// is logged (Warn, once per Log) with how to delete it; reads of the installation go
// on rather than fail: a failed read would block a live installation
// for good, and erase, the obvious remedy, would erase it.
func (l *Log) tombstoneBehind(ctx context.Context, inst events.InstallationID, subj string, last uint64) (events.Tombstone, uint64, bool, error) {
	l.mu.Lock()
	through, ok := l.notTombs[inst]
	l.mu.Unlock()
	if ok && through >= last {
		return events.Tombstone{}, 0, false, nil
	}
	// What was read is not read again: a tombstone is written after what
	// its eraser saw, so one there now is past through. Otherwise each
	// message published there would make the next read read the whole
	// subject again, a request a message.
	from := uint64(1)
	if ok {
		from = through + 1
	}
	tomb, others, end, err := l.scanTombstoneSubject(ctx, inst, subj, from)
	if err != nil {
		return events.Tombstone{}, 0, false, err
	}
	if tomb != nil {
		return tomb.t, tomb.seq, true, nil
	}
	for _, o := range others {
		l.logger.Warn("eventlog: a message on the tombstone subject is not the installation's tombstone; ignored (the installation is not erased)",
			"stream", l.cfg.Stream, "installation", string(inst), "subject", subj, "seq", o.Seq, "why", o.Why,
			"remedy", fmt.Sprintf("nats stream rmm %s %d", l.cfg.Stream, o.Seq))
	}
	l.mu.Lock()
	if len(l.notTombs) >= cacheMax {
		clear(l.notTombs)
	}
	l.notTombs[inst] = max(end, last)
	l.mu.Unlock()
	return events.Tombstone{}, 0, false, nil
}

func (l *Log) noteErased(inst events.InstallationID, t events.Tombstone, seq uint64) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.erased) >= cacheMax {
		clear(l.erased)
	}
	l.erased[inst] = tombEntry{t: t, seq: seq}
}

// tombEntry is a tombstone this Log has seen, and its stream sequence.
type tombEntry struct {
	t   events.Tombstone
	seq uint64
}

// erasedKnown returns the *ErasedError of inst if this Log knows it was
// erased, without asking the stream.
func (l *Log) erasedKnown(inst events.InstallationID) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if e, ok := l.erased[inst]; ok {
		return &ErasedError{Stream: l.cfg.Stream, Installation: inst, ErasedAt: e.t.ErasedAt, By: e.t.By, Seq: e.seq}
	}
	return nil
}

// CheckNotErased returns inst's *ErasedError (ErrErased) if inst has a
// tombstone, nil if it has none, or why the stream could not tell. A
// tombstone this Log has seen is not asked for again.
func (l *Log) CheckNotErased(ctx context.Context, inst events.InstallationID) error {
	if err := l.erasedKnown(inst); err != nil {
		return err
	}
	_, _, found, err := l.Tombstone(ctx, inst)
	if err != nil {
		return err
	}
	if found {
		return l.erasedKnown(inst)
	}
	return nil
}

// EraseOptions tune Erase.
type EraseOptions struct {
	// By is recorded in the tombstone: who asked (free text, no secret).
	By string
	// step, when set (tests), is called after each step: "tombstone",
	// "keys", "events".
	step func(string)
}

// Erase erases inst: writes its tombstone, shreds its data keys (purges
// them from the key bucket and wipes them from this Log's cache) and
// purges its events from the stream, in that order. Calling it again on
// a partly erased installation finishes the erase; on a fully erased one
// it changes nothing. Other installations are untouched (their own keys
// and subjects).
//
// Other processes holding the installation's keys in their caches can
// still open events they already hold, and may append (their data keys
// are cached) until they restart; Logs that did not know the installation
// refuse it at once with ErrErased. Events of formats 1 and 2 are sealed
// under keys derived from the root keys and cannot be shredded; Erase
// purges them like the others (docs/forward-secrecy.md).
func (l *Log) Erase(ctx context.Context, inst events.InstallationID, opts *EraseOptions) (*Erased, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	if l.cfg.ReadOnly {
		return nil, ErrReadOnly
	}
	var o EraseOptions
	if opts != nil {
		o = *opts
	}
	step := func(s string) {
		if o.step != nil {
			o.step(s)
		}
	}
	subj, err := l.TombstoneSubject(inst)
	if err != nil {
		return nil, err
	}
	if l.kv == nil {
		return nil, fmt.Errorf("%w: stream %s: bucket %s", ErrNoKeyBucket, l.cfg.Stream, keyBucket(l.cfg.Stream))
	}
	res := &Erased{}
	// What the stream holds of inst is asked before its tombstone
	// subject: an erase racing this one writes its tombstone before it
	// shreds and purges, so finding nothing left here means its
	// tombstone is found below (asked the other way round, a racing
	// erase that finished in between made this one "nothing to erase").
	lastEvent, err := l.lastSeq(ctx, []string{l.cfg.SubjectPrefix + "." + l.instPseudonym(inst) + ".>"})
	if err != nil {
		return nil, err
	}
	noKeys := false // counted only when inst has no event left
	if lastEvent == 0 {
		var keys uint64
		if keys, err = countUnder(ctx, l.kvStream, "$KV."+keyBucket(l.cfg.Stream)+"."+l.instPseudonym(inst)+".>"); err != nil {
			return nil, err
		}
		noKeys = keys == 0
	}
	tomb, others, last, err := l.scanTombstoneSubject(ctx, inst, subj, 1)
	if err != nil {
		return nil, err
	}
	if tomb != nil {
		res.Resumed = true
		l.logger.Info("eventlog: erase resumes after an earlier one", "stream", l.cfg.Stream, "installation", string(inst), "erased_at", tomb.t.ErasedAt, "seq", tomb.seq)
	} else {
		if noKeys {
			// A tombstone cannot be taken back: for an id the stream
			// knows nothing of (a typo), write none.
			return nil, fmt.Errorf("%w: stream %s holds no event and no data key of installation %s: nothing to erase, and no tombstone written (check the id)", ErrUnknownInstallation, l.cfg.Stream, inst)
		}
		t := events.Tombstone{Installation: inst, ErasedAt: time.Now().UTC().Truncate(time.Millisecond), LastSeq: lastEvent, By: o.By}
		if tomb, others, err = l.placeTombstone(ctx, inst, subj, t, others, last); err != nil {
			return nil, fmt.Errorf("eventlog: erase %s: %w; nothing was erased, erase again", inst, err)
		}
		// Another eraser's tombstone may have come first: it is the one.
		res.Resumed = !(tomb.t.ErasedAt.Equal(t.ErasedAt) && tomb.t.By == t.By && tomb.t.LastSeq == t.LastSeq)
	}
	res.Tombstone, res.TombstoneSeq = tomb.t, tomb.seq
	// What else is on the subject goes: the tombstone, written after it
	// (or found before it), already decides every read. Those before the
	// tombstone go in one purge: none of them opens as a tombstone (it is
	// the first there that does), and none can be stored below it since,
	// so a flood put there does not cost the erase a request a message.
	// Those after it, a delete each.
	below := 0
	for _, m := range others {
		if m.Seq < res.TombstoneSeq {
			below++
		}
	}
	if below > 0 {
		if err := l.stream.Purge(ctx, jetstream.WithPurgeSubject(subj), jetstream.WithPurgeSequence(res.TombstoneSeq)); err != nil {
			return res, fmt.Errorf("eventlog: erase %s: purge the %d messages before the tombstone (seq %d) from tombstone subject %s (erase again to finish): %w", inst, below, res.TombstoneSeq, subj, err)
		}
	}
	for _, m := range others {
		if m.Seq > res.TombstoneSeq {
			if err := l.deleteMsg(ctx, m.Seq); err != nil {
				return res, fmt.Errorf("eventlog: erase %s: delete the message at seq %d of tombstone subject %s (%s; erase again to finish): %w", inst, m.Seq, subj, m.Why, err)
			}
		}
		res.Removed = append(res.Removed, m)
		l.logger.Warn("eventlog: erase removed a message from the tombstone subject that is not the installation's tombstone",
			"stream", l.cfg.Stream, "installation", string(inst), "seq", m.Seq, "why", m.Why)
	}
	l.noteErased(inst, res.Tombstone, res.TombstoneSeq)
	step("tombstone")

	// Shred: every revision of every key of the installation, then the
	// cache. After this no copy of a data key of inst is left in this
	// process or on the bus.
	l.dkCache.dropInstallation(inst)
	pseudo := l.instPseudonym(inst)
	kvFilter := "$KV." + keyBucket(l.cfg.Stream) + "." + pseudo + ".>"
	if res.KeysPurged, err = countUnder(ctx, l.kvStream, kvFilter); err != nil {
		return res, fmt.Errorf("eventlog: erase %s: count its data keys in bucket %s (erase again to finish): %w", inst, keyBucket(l.cfg.Stream), err)
	}
	if err := l.kvStream.Purge(ctx, jetstream.WithPurgeSubject(kvFilter)); err != nil {
		return res, fmt.Errorf("eventlog: erase %s: purge its data keys from bucket %s (erase again to finish): %w", inst, keyBucket(l.cfg.Stream), err)
	}
	l.dkCache.dropInstallation(inst) // what an append racing the purge cached
	step("keys")

	filter := l.cfg.SubjectPrefix + "." + pseudo + ".>"
	if res.EventsPurged, err = countUnder(ctx, l.stream, filter); err != nil {
		return res, fmt.Errorf("eventlog: erase %s: count its events (erase again to finish): %w", inst, err)
	}
	if err := l.stream.Purge(ctx, jetstream.WithPurgeSubject(filter)); err != nil {
		return res, fmt.Errorf("eventlog: erase %s: purge its events from stream %s (erase again to finish): %w", inst, l.cfg.Stream, err)
	}
	l.mu.Lock()
	delete(l.heads, inst)
	prefix := l.cfg.SubjectPrefix + "." + pseudo + "."
	for s := range l.tails {
		if strings.HasPrefix(s, prefix) {
			delete(l.tails, s)
		}
	}
	l.mu.Unlock()
	step("events")

	// Its read-model snapshots: sealed under a key derived from the root
	// key, which stays, they would open its whole read model.
	if res.SnapshotsPurged, err = l.purgeSnapshots(ctx, inst); err != nil {
		return res, fmt.Errorf("eventlog: erase %s: delete its snapshots from bucket %s (erase again to finish): %w", inst, l.SnapshotBucket(), err)
	}
	step("snapshots")

	// Its retention marks (shredded periods, compaction): they name only
	// pseudonyms, but nothing of the installation is left behind.
	if err := l.purgeMarks(ctx, pseudo); err != nil {
		return res, fmt.Errorf("eventlog: erase %s: purge its marks from bucket %s (erase again to finish): %w", inst, l.RetentionBucket(), err)
	}
	l.logger.Info("eventlog: installation erased", "stream", l.cfg.Stream, "installation", string(inst),
		"tombstone_seq", res.TombstoneSeq, "resumed", res.Resumed, "keys_purged", res.KeysPurged, "events_purged", res.EventsPurged,
		"snapshots_purged", res.SnapshotsPurged)
	return res, nil
}

// placeTombstone writes t, inst's tombstone, on its tombstone subject
// subj, where a scan found no tombstone, others and last (the subject's
// last sequence then), and returns the tombstone that counts, the first
// on the subject (t, or one a racing writer put there first), and the
// other messages below it and up to the subject's end as last read. A try
// is written at the expected last subject sequence last, so it lands
// right after what was read; one that another message beat reads the
// subject again. The last try writes after whatever is there by then (no
// expected sequence) and reads the subject again for the first
// tombstone: were every try to expect the last sequence read, a
// publisher putting messages there without pause would make every erase
// and re-seal fail for as long as it went on.
func (l *Log) placeTombstone(ctx context.Context, inst events.InstallationID, subj string, t events.Tombstone, others []Removed, last uint64) (*tombEntry, []Removed, error) {
	var tomb *tombEntry
	for try := 1; tomb == nil; try++ {
		if try > maxTombstoneTries {
			return nil, nil, fmt.Errorf("write tombstone on %s: another message was published there before it %d times, and the last write's answer was lost (subject read through seq %d)", subj, maxTombstoneTries-1, last)
		}
		final := try == maxTombstoneTries
		seq, won, err := l.writeTombstone(ctx, subj, t, last, !final)
		if err != nil {
			return nil, nil, err
		}
		if won && !final {
			return &tombEntry{t: t, seq: seq}, others, nil
		}
		if tomb, others, last, err = l.scanTombstoneSubject(ctx, inst, subj, 1); err != nil {
			return nil, nil, err
		}
	}
	return tomb, others, nil
}

// writeTombstone publishes t on subj at expected last subject sequence
// last (without expect, after whatever is there), and reports whether
// it was stored and at which stream sequence; false means another
// message was there first (or the answer was lost): read the subject
// again.
func (l *Log) writeTombstone(ctx context.Context, subj string, t events.Tombstone, last uint64, expect bool) (uint64, bool, error) {
	env, err := events.SealTombstone(l.keys, l.binding(subj), t)
	if err != nil {
		return 0, false, err
	}
	msg := &nats.Msg{Subject: subj, Data: env, Header: nats.Header{
		// The expected last subject sequence alone makes the publish
		// happen once: a retry, or a racing eraser, that saw the same
		// subject fails it once one is stored, and reads the subject
		// again. No message id: one anyone can compute (such as
		// "tombstone-<pseudonym>-<seq>") can be taken first, on any
		// subject of the stream, and the server then answers every try
		// as that message's duplicate for its whole duplicate window.
		hdrExpectedSeq: []string{strconv.FormatUint(last, 10)},
	}}
	if !expect {
		msg.Header.Del(hdrExpectedSeq)
	}
	ack, err := l.js.PublishMsg(ctx, msg)
	if err == nil && !ack.Duplicate {
		return ack.Sequence, true, nil
	}
	if err != nil && !isRace(err) && !Unanswered(err) {
		return 0, false, fmt.Errorf("write tombstone on %s: %w", subj, err)
	}
	return 0, false, nil
}

// scanTombstoneSubject reads every message on inst's tombstone subject
// subj from stream sequence from up to its last one when it began (last:
// its sequence, 0 when none): the first that opens as inst's tombstone is tomb; every other
// is in others, with why it is not.
//
// The first tombScanGets messages are read with a message get each (a
// subject holds one message, or none, but where someone published on
// it); what is left past them is read through a consumer on the subject,
// 256 messages a request (scanRaw), so that a publisher who put 10,000
// messages there does not make every fresh process's first check of the
// installation 10,000 round trips.
// The Log's reads come from the stream's leader (direct gets stay off:
// stream.go), and both paths do.
func (l *Log) scanTombstoneSubject(ctx context.Context, inst events.InstallationID, subj string, from uint64) (tomb *tombEntry, others []Removed, last uint64, err error) {
	m, err := l.getLastMsg(ctx, subj)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return nil, nil, 0, nil
	}
	if err != nil {
		return nil, nil, 0, fmt.Errorf("eventlog: stream %s: tombstone subject of %s: %w", l.cfg.Stream, inst, err)
	}
	s := &tombScan{l: l, inst: inst, subj: subj, last: m.Sequence, next: max(from, 1)}
	if err := s.gets(ctx, tombScanGets); err != nil {
		return nil, nil, 0, err
	}
	if s.next <= s.last {
		if err := s.batched(ctx); err != nil {
			return nil, nil, 0, err
		}
	}
	if s.tomb != nil {
		l.noteErased(inst, s.tomb.t, s.tomb.seq)
	}
	return s.tomb, s.others, s.last, nil
}

// gets reads up to n messages of the subject from s.next through s.last
// with a message get each (n < 0: all of them).
func (s *tombScan) gets(ctx context.Context, n int) error {
	l := s.l
	for i := 0; (n < 0 || i < n) && s.next <= s.last; i++ {
		m, err := l.getMsg(ctx, s.next, jetstream.WithGetMsgSubject(s.subj))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			s.next = s.last + 1 // deleted meanwhile (a racing erase)
			return nil
		}
		if err != nil {
			return fmt.Errorf("eventlog: stream %s: tombstone subject %s of %s from seq %d: %w", l.cfg.Stream, s.subj, s.inst, s.next, err)
		}
		s.note(m.Sequence, m.Data)
	}
	return nil
}

// tombScanGets is how many messages of a tombstone subject a scan reads
// with a message get each before it reads the rest through a consumer
// (which costs its creation besides its requests).
const tombScanGets = 4

// tombScan is one scanTombstoneSubject: what it found and where it is.
type tombScan struct {
	l      *Log
	inst   events.InstallationID
	subj   string
	last   uint64 // the subject's last sequence when the scan began
	next   uint64 // the next stream sequence to read
	tomb   *tombEntry
	others []Removed
}

// note sorts the message at seq (at most last) into tomb or others.
func (s *tombScan) note(seq uint64, data []byte) {
	if seq > s.last {
		s.next = seq
		return
	}
	s.next = seq + 1
	t, err := events.OpenTombstone(s.l.keys, s.inst, s.l.binding(s.subj), data)
	switch {
	case err == nil && s.tomb == nil:
		s.tomb = &tombEntry{t: t, seq: seq}
	case err == nil:
		s.others = append(s.others, Removed{Seq: seq, Why: fmt.Sprintf("a copy of the installation's tombstone at seq %d", s.tomb.seq)})
	default:
		s.others = append(s.others, Removed{Seq: seq, Why: notTombstoneWhy(err)})
	}
}

// batched reads the subject from s.next through s.last through a
// consumer on it (scanRaw). A consumer the server refuses (the
// stream's or the account's consumer limit reached, no right to create
// one) leaves the rest to a get a message rather than every read,
// erased check and erase of the installation failing while the refusal
// lasts.
func (s *tombScan) batched(ctx context.Context) error {
	l := s.l
	err := l.scanRaw(ctx, s.subj, s.next, s.last, func(seq uint64, _ string, data []byte) error {
		s.note(seq, data)
		return nil
	})
	var ae *jetstream.APIError
	if err != nil && s.next <= s.last && errors.As(err, &ae) && !unanswered(err) && ctx.Err() == nil {
		l.logger.Warn("eventlog: tombstone subject scan: no consumer; reading the rest a message get each",
			"stream", l.cfg.Stream, "subject", s.subj, "seq", s.next, "left_through", s.last, "err", err)
		return s.gets(ctx, -1)
	}
	if err != nil {
		return fmt.Errorf("eventlog: tombstone subject of %s: %w", s.inst, err)
	}
	return nil
}

// notTombstoneWhy says why a message on a tombstone subject is not the
// installation's tombstone (err from events.OpenTombstone).
func notTombstoneWhy(err error) string {
	switch {
	case errors.Is(err, events.ErrMalformed):
		return "not a tombstone (malformed)"
	case errors.Is(err, events.ErrTampered), errors.Is(err, events.ErrMoved):
		return "not this installation's tombstone (another installation's, or altered)"
	case errors.Is(err, events.ErrUnknownKey), errors.Is(err, events.ErrWrongKey):
		return "not a tombstone this keyring opens (" + strings.TrimPrefix(err.Error(), "events: open tombstone: ") + ")"
	}
	return "not this installation's tombstone (" + err.Error() + ")"
}

// deleteMsg deletes the message at seq; one already gone is no error.
func (l *Log) deleteMsg(ctx context.Context, seq uint64) error {
	err := l.stream.DeleteMsg(ctx, seq)
	if err == nil {
		return nil
	}
	if _, gerr := l.getMsg(ctx, seq); errors.Is(gerr, jetstream.ErrMsgNotFound) {
		return nil
	}
	return err
}

// purgeSnapshots deletes every snapshot of inst (every chunk purged)
// and returns how many; no bucket is none.
func (l *Log) purgeSnapshots(ctx context.Context, inst events.InstallationID) (int, error) {
	refs, err := l.Snapshots(ctx, inst)
	if err != nil {
		return 0, err
	}
	for i, r := range refs {
		if err := l.DeleteSnapshot(ctx, inst, r.Checkpoint); err != nil {
			return i, err
		}
	}
	return len(refs), nil
}

// purgeMarks removes every retention mark of the installation whose
// pseudonym is pseudo (nothing when the stream has no retention bucket).
func (l *Log) purgeMarks(ctx context.Context, pseudo string) error {
	kv, s, err := l.openBucket(ctx, l.RetentionBucket(), "retention bucket", "", false)
	if err != nil || kv == nil {
		return err
	}
	return s.Purge(ctx, jetstream.WithPurgeSubject("$KV."+l.RetentionBucket()+"."+pseudo+".>"))
}

// countUnder is the number of messages of s on subjects matching filter.
func countUnder(ctx context.Context, s jetstream.Stream, filter string) (uint64, error) {
	info, err := s.Info(ctx, jetstream.WithSubjectFilter(filter))
	if err != nil {
		return 0, err
	}
	var n uint64
	for _, c := range info.State.Subjects {
		n += c
	}
	return n, nil
}
