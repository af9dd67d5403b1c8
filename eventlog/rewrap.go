package eventlog

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// Re-wrap (docs/forward-secrecy.md, Re-seal, step 1): every data key in
// the key bucket is unwrapped with whichever root key wrapped it (the
// wrap's clear header names it) and wrapped again under the keyring's
// current root key. No event is touched and no data key changes, so it is
// fast, and the right answer when only a root key leaked (not the data
// keys). Each entry is rewritten with a compare-and-set on its KV
// revision, so a concurrent creator or shredder is never overwritten: on
// a conflict the entry is read again and the work redone (a shredded
// entry stays shredded). At every moment each entry holds one wrap that a
// root key of the ring opens, so a crash anywhere loses nothing, and
// running Rewrap again finishes the job.
//
// Re-wrap cannot retire a root key that still seals something directly:
// events of envelope formats 1 and 2 (written before data keys),
// tombstones, snapshots, and the key with the lowest id, which derives
// every pseudonym (subjects, key names, message ids). RootKeyUses finds
// them; a key with any use left needs Reseal into a new stream.

// ErrUnknownInstallations means the stream or the key bucket holds data of
// installations the caller did not name: the operation needs each
// installation's id (data keys and events are bound to it, and only its
// pseudonym is in the clear), so it cannot cover them and refuses to act
// as if it had.
var ErrUnknownInstallations = errors.New("eventlog: the stream or key bucket holds installations that were not named")

// rewrapAttempts bounds how often Rewrap redoes one entry that keeps
// changing under it.
const rewrapAttempts = 16

// RewrapOptions tune Rewrap.
type RewrapOptions struct {
	// Installations are the installations whose data keys the bucket may
	// hold: a key is bound to its installation's id, and the bucket names
	// it by pseudonym only. Entries of other installations are left as
	// they are and listed in Rewrapped.Unknown.
	Installations []events.InstallationID
	// step, when set (tests), is called after each entry is settled, with
	// its name.
	step func(string)
}

// Rewrapped reports what Rewrap did.
type Rewrapped struct {
	// Current is the root key id every entry is now wrapped under.
	Current events.KeyID
	// Entries is the number of entries found in the bucket.
	Entries int
	// Rewrapped counts the entries this call re-wrapped; AlreadyCurrent
	// those already under the current root key (checked to unwrap).
	Rewrapped, AlreadyCurrent int
	// Vanished counts entries shredded (erase, retention) while Rewrap
	// ran; Conflicts the compare-and-set conflicts it redid.
	Vanished, Conflicts int
	// From counts the re-wrapped entries by the root key id they were
	// wrapped under before.
	From map[events.KeyID]int
	// Unknown lists the entries (bucket names, pseudonymous) of
	// installations not in RewrapOptions.Installations: not re-wrapped.
	Unknown []string
}

// Rewrap re-wraps every data key in the key bucket under the keyring's
// current root key (see the comment at the top of this file). It verifies
// that each new wrap unwraps to the same key before writing it. Entries of
// installations not named in opts are left alone and listed in
// Rewrapped.Unknown, and the result then wraps ErrUnknownInstallations:
// nothing was lost, but the old root keys are still needed.
func (l *Log) Rewrap(ctx context.Context, opts *RewrapOptions) (*Rewrapped, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	if l.cfg.ReadOnly {
		return nil, fmt.Errorf("%w: rewrap writes the key bucket", ErrReadOnly)
	}
	if l.kv == nil {
		return nil, fmt.Errorf("%w: stream %s", ErrNoKeyBucket, l.cfg.Stream)
	}
	var o RewrapOptions
	if opts != nil {
		o = *opts
	}
	byPseudo := map[string]events.InstallationID{}
	for _, inst := range o.Installations {
		if err := inst.Validate(); err != nil {
			return nil, fmt.Errorf("eventlog: rewrap: %w", err)
		}
		byPseudo[l.instPseudonym(inst)] = inst
	}
	res := &Rewrapped{Current: l.keys.Current(), From: map[events.KeyID]int{}}
	names, err := l.bucketNames(ctx)
	if err != nil {
		return nil, err
	}
	res.Entries = len(names)
	for _, name := range names {
		pseudo, id, err := events.ParseDataKeyName(name)
		if err != nil {
			return res, fmt.Errorf("eventlog: key bucket %s: entry %q: %w", l.KeyBucket(), name, err)
		}
		inst, ok := byPseudo[pseudo]
		if !ok {
			res.Unknown = append(res.Unknown, name)
			continue
		}
		if err := l.rewrapOne(ctx, name, inst, id, res); err != nil {
			return res, err
		}
		if o.step != nil {
			o.step(name)
		}
	}
	if len(res.Unknown) > 0 {
		return res, fmt.Errorf("%w: %d entries of key bucket %s belong to installations not named (e.g. %s); they were left wrapped as they were",
			ErrUnknownInstallations, len(res.Unknown), l.KeyBucket(), res.Unknown[0])
	}
	return res, nil
}

// rewrapOne settles one entry: re-wrapped under the current root key,
// already so, or gone.
func (l *Log) rewrapOne(ctx context.Context, name string, inst events.InstallationID, id events.DataKeyID, res *Rewrapped) error {
	bucket := l.KeyBucket()
	cur := l.keys.Current()
	for range rewrapAttempts {
		entry, err := l.kv.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			res.Vanished++
			return nil
		}
		if err != nil {
			return fmt.Errorf("eventlog: key bucket %s: get %s: %w", bucket, name, err)
		}
		old := entry.Value()
		from, err := events.WrappedKeyID(old)
		if err != nil {
			return fmt.Errorf("eventlog: key bucket %s: %s: %w", bucket, name, err)
		}
		dk, err := l.keys.UnwrapDataKey(l.cfg.Stream, inst, id, old)
		if err != nil {
			return fmt.Errorf("eventlog: key bucket %s: %s: %w", bucket, name, err)
		}
		if from == cur {
			dk.Wipe()
			res.AlreadyCurrent++
			return nil
		}
		wid := id
		if id.Class == events.ClassEpoch { // a group's epoch chain keeps its epoch
			n, err := events.WrappedChainEpoch(old)
			if err != nil {
				dk.Wipe()
				return fmt.Errorf("eventlog: key bucket %s: %s: %w", bucket, name, err)
			}
			wid = id.WithEpoch(n)
		}
		wrapped, err := l.wrapChecked(inst, wid, dk)
		dk.Wipe()
		if err != nil {
			return fmt.Errorf("eventlog: key bucket %s: %s: %w", bucket, name, err)
		}
		_, err = l.kv.Update(ctx, name, wrapped, entry.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			res.Conflicts++
			continue
		}
		if err != nil {
			return fmt.Errorf("eventlog: key bucket %s: update %s: %w", bucket, name, err)
		}
		res.Rewrapped++
		res.From[from]++
		return nil
	}
	return fmt.Errorf("eventlog: key bucket %s: %s changed under %d re-wraps in a row; run again", bucket, name, rewrapAttempts)
}

// wrapChecked wraps dk under the current root key and checks that the
// wrap opens to dk again.
func (l *Log) wrapChecked(inst events.InstallationID, id events.DataKeyID, dk events.DataKey) ([]byte, error) {
	wrapped, err := l.keys.WrapDataKey(l.cfg.Stream, inst, id, dk)
	if err != nil {
		return nil, err
	}
	back, err := l.keys.UnwrapDataKey(l.cfg.Stream, inst, id, wrapped)
	if err != nil {
		return nil, fmt.Errorf("new wrap does not open: %w", err)
	}
	defer back.Wipe()
	if !back.Equal(dk) {
		return nil, errors.New("new wrap opens to another key") // unreachable unless memory is corrupted
	}
	return wrapped, nil
}

// bucketNames lists the key bucket's entries, sorted.
func (l *Log) bucketNames(ctx context.Context) ([]string, error) {
	lister, err := l.kv.ListKeys(ctx)
	if err != nil {
		return nil, fmt.Errorf("eventlog: key bucket %s: list: %w", l.KeyBucket(), err)
	}
	defer func() { _ = lister.Stop() }()
	var names []string
	for k := range lister.Keys() {
		names = append(names, k)
	}
	slices.Sort(names)
	return names, nil
}

// RootKeyUse is what still needs one root key on a stream.
type RootKeyUse struct {
	// ID is the root key id.
	ID events.KeyID `json:"id"`
	// Wraps counts data keys in the key bucket wrapped under it.
	Wraps int `json:"wraps"`
	// Events counts events of envelope formats 1 and 2 sealed under it.
	Events uint64 `json:"events"`
	// Tombstones counts tombstones sealed under it.
	Tombstones uint64 `json:"tombstones"`
	// Snapshots counts stored snapshots sealed under it.
	Snapshots int `json:"snapshots"`
	// PseudonymAnchor is set for the ring's lowest key id: it derives
	// every subject, key name and message id of the stream.
	PseudonymAnchor bool `json:"pseudonym_anchor"`
}

// Retired reports whether nothing on the stream needs the key any more.
func (u RootKeyUse) Retired() bool {
	return u.Wraps == 0 && u.Events == 0 && u.Tombstones == 0 && u.Snapshots == 0 && !u.PseudonymAnchor
}

// Needs says what still needs the key, e.g. "3 wraps, 12 events of format
// 1/2", or "" when nothing does.
func (u RootKeyUse) Needs() string {
	var parts []string
	if u.Wraps > 0 {
		parts = append(parts, fmt.Sprintf("%d data key wraps", u.Wraps))
	}
	if u.Events > 0 {
		parts = append(parts, fmt.Sprintf("%d events of envelope format 1/2", u.Events))
	}
	if u.Tombstones > 0 {
		parts = append(parts, fmt.Sprintf("%d tombstones", u.Tombstones))
	}
	if u.Snapshots > 0 {
		parts = append(parts, fmt.Sprintf("%d snapshots", u.Snapshots))
	}
	if u.PseudonymAnchor {
		parts = append(parts, "the pseudonyms (lowest key id of the ring)")
	}
	return strings.Join(parts, ", ")
}

// RootKeyUses scans the whole stream (every message's clear header), the
// key bucket and the snapshots bucket, and returns what needs each root
// key, by id, for every id found and every id of the ring. It opens
// nothing and needs no installation id. The ids come from clear headers,
// so they are unauthenticated: enough to decide what a key is still
// needed for, not to prove anything about a message.
func (l *Log) RootKeyUses(ctx context.Context) (map[events.KeyID]*RootKeyUse, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	uses := map[events.KeyID]*RootKeyUse{}
	use := func(id events.KeyID) *RootKeyUse {
		u, ok := uses[id]
		if !ok {
			u = &RootKeyUse{ID: id}
			uses[id] = u
		}
		return u
	}
	ids := l.keys.IDs()
	for _, id := range ids {
		use(id)
	}
	if len(ids) > 0 {
		use(ids[0]).PseudonymAnchor = true
	}
	if l.kv != nil {
		names, err := l.bucketNames(ctx)
		if err != nil {
			return nil, err
		}
		for _, name := range names {
			entry, err := l.kv.Get(ctx, name)
			if errors.Is(err, jetstream.ErrKeyNotFound) {
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("eventlog: key bucket %s: get %s: %w", l.KeyBucket(), name, err)
			}
			id, err := events.WrappedKeyID(entry.Value())
			if err != nil {
				return nil, fmt.Errorf("eventlog: key bucket %s: %s: %w", l.KeyBucket(), name, err)
			}
			use(id).Wraps++
		}
	}
	tombPrefix := l.cfg.SubjectPrefix + "." + tombstoneToken + "."
	err := l.scanRaw(ctx, l.cfg.SubjectPrefix+".>", 1, 0, func(seq uint64, subject string, data []byte) error {
		if strings.HasPrefix(subject, tombPrefix) {
			id, err := tombstoneKeyID(data)
			if err != nil {
				// Not a tombstone (anyone who may publish on the
				// stream's subjects can put one there): it needs no
				// key, and reads pass over it too (Tombstone); failing
				// on it would fail every scan, a reseal's check of its
				// target included.
				l.logger.Warn("eventlog: a message on the tombstone subject is not the installation's tombstone; ignored (the installation is not erased)",
					"stream", l.cfg.Stream, "subject", subject, "seq", seq, "why", notTombstoneWhy(err),
					"remedy", fmt.Sprintf("nats stream rmm %s %d", l.cfg.Stream, seq))
				return nil
			}
			use(id).Tombstones++
			return nil
		}
		_, ok, err := events.EnvelopeDataKeyID(data)
		if err != nil {
			return l.recordError(subject, seq, "scan", err)
		}
		if ok {
			return nil
		}
		id, err := events.EnvelopeKeyID(data)
		if err != nil {
			return l.recordError(subject, seq, "scan", err)
		}
		use(id).Events++
		return nil
	})
	if err != nil {
		return nil, err
	}
	if err := l.snapshotKeyIDs(ctx, func(id events.KeyID) { use(id).Snapshots++ }); err != nil {
		return nil, err
	}
	return uses, nil
}

// tombstoneKeyID reads the root key id in a sealed tombstone's clear
// header (events/tombstone.go: "ELT", format 1, key id at offset 4).
func tombstoneKeyID(sealed []byte) (events.KeyID, error) {
	if len(sealed) < 8 || string(sealed[:3]) != "ELT" {
		return 0, fmt.Errorf("tombstone of %d bytes: %w", len(sealed), events.ErrMalformed)
	}
	return events.KeyID(binary.BigEndian.Uint32(sealed[4:8])), nil
}

// snapshotKeyIDs calls fn with the root key id of every stored snapshot
// (the first bytes of each object, events.SnapshotKeyID).
func (l *Log) snapshotKeyIDs(ctx context.Context, fn func(events.KeyID)) error {
	os, err := l.snapshotStore(ctx, false)
	if err != nil || os == nil {
		return err
	}
	lctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	infos, err := os.List(lctx)
	cancel()
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("eventlog: list snapshots in %s: %w", l.SnapshotBucket(), err)
	}
	for _, info := range infos {
		if info.Deleted {
			continue
		}
		gctx, cancel := context.WithTimeout(ctx, l.snapshotTimeout(info.Size))
		r, err := os.Get(gctx, info.Name)
		if err != nil {
			cancel()
			return fmt.Errorf("eventlog: snapshot %s in %s: %w", info.Name, l.SnapshotBucket(), err)
		}
		head := make([]byte, 64)
		n, err := io.ReadFull(r, head)
		_ = r.Close()
		cancel()
		if err != nil && !errors.Is(err, io.ErrUnexpectedEOF) {
			return fmt.Errorf("eventlog: snapshot %s in %s: %w", info.Name, l.SnapshotBucket(), err)
		}
		id, err := events.SnapshotKeyID(head[:n])
		if err != nil {
			return fmt.Errorf("eventlog: snapshot %s in %s: %w", info.Name, l.SnapshotBucket(), err)
		}
		fn(id)
	}
	return nil
}

// scanRaw calls fn with every message on filter from stream sequence
// from through last (0: the filter's last message when the scan began),
// in stream order, unopened, through one ordered consumer, 256 messages
// a request. Each fetch waits at most ProgressTimeout; one that gets
// nothing asks for the next message on filter, and ends the scan when
// none is left through last (deleted meanwhile), else with ErrStalled.
func (l *Log) scanRaw(ctx context.Context, filter string, from, last uint64, fn func(seq uint64, subject string, data []byte) error) error {
	if last == 0 {
		var err error
		if last, err = l.lastSeq(ctx, []string{filter}); err != nil {
			return err
		}
	}
	from = max(from, 1)
	if last < from {
		return nil
	}
	cons, err := l.orderedConsumer(ctx, jetstream.OrderedConsumerConfig{
		FilterSubjects:    []string{filter},
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       from,
		InactiveThreshold: consumerInactiveThreshold,
	})
	if err != nil {
		return fmt.Errorf("eventlog: stream %s: scan %s from seq %d: %w", l.cfg.Stream, filter, from, err)
	}
	next := from
	for {
		batch, err := cons.Fetch(256, jetstream.FetchMaxWait(l.cfg.ProgressTimeout), jetstream.FetchMaxBytes(l.readRequestBytes()))
		if err != nil {
			return fmt.Errorf("eventlog: stream %s: scan %s from seq %d: %w", l.cfg.Stream, filter, next, err)
		}
		got := 0
		for m := range batch.Messages() {
			got++
			md, err := m.Metadata()
			if err != nil {
				return fmt.Errorf("eventlog: stream %s: scan %s from seq %d: %w", l.cfg.Stream, filter, next, err)
			}
			seq := md.Sequence.Stream
			if seq > last {
				return nil
			}
			if err := fn(seq, m.Subject(), m.Data()); err != nil {
				return err
			}
			if seq == last {
				return nil
			}
			next = seq + 1
		}
		if err := batch.Error(); err != nil && !errors.Is(err, jetstream.ErrNoMessages) {
			return fmt.Errorf("eventlog: stream %s: scan %s from seq %d: %w", l.cfg.Stream, filter, next, err)
		}
		if err := ctx.Err(); err != nil {
			return err
		}
		if got == 0 {
			m, err := l.getMsg(ctx, next, jetstream.WithGetMsgSubject(filter))
			if errors.Is(err, jetstream.ErrMsgNotFound) || err == nil && m.Sequence > last {
				return nil // what was left through last is gone
			}
			return fmt.Errorf("%w: stream %s: scan %s got nothing for %v from seq %d (through %d)", ErrStalled, l.cfg.Stream, filter, l.cfg.ProgressTimeout, next, last)
		}
	}
}

// CurrentKey is the id of the keyring's current root key: the one new
// data keys are wrapped under and Rewrap wraps under.
func (l *Log) CurrentKey() events.KeyID { return l.keys.Current() }
