package eventlog

import (
	"context"
	"errors"
	"fmt"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// Epoch keys (docs/forward-secrecy.md, "Epoch chains"): a group's events
// that carry its MLS state are sealed under the key of their epoch
// (events.ClassEpoch), derived along the group's epoch chain, whose entry
// in the key bucket holds the chain key at the oldest epoch the
// installation keeps. A new epoch costs no round trip; ShredEpochsBefore
// advances the entry and the epochs before it die.

// maxChainWalk bounds the chain steps one key derivation takes: an
// envelope's epoch is unauthenticated until it opens, and a forged one
// far ahead must not stall the reader.
const maxChainWalk = 1 << 22

// chainKey is the cache key of the chain of the ClassEpoch id.
func chainKey(inst events.InstallationID, id events.DataKeyID) dkCacheKey {
	return dkCacheKey{inst: inst, id: id.WithEpoch(0), chain: true}
}

// epochKey is fetchDataKey of a ClassEpoch id: the epoch's key, derived
// from the group's chain (cached, else read from the bucket, else, with
// create, started). A chain starts at epoch 0 whatever epoch needs it
// first: writers racing at different epochs (a bulk append seals
// concurrently) then agree on it, and a group joined at epoch n pays n
// derivation steps once per process.
func (l *Log) epochKey(ctx context.Context, inst events.InstallationID, id events.DataKeyID, create, notErased bool) (*dkEntry, error) {
	ck := dkCacheKey{inst: inst, id: id}
	if ent, ok := l.dkCache.get(ck); ok {
		return ent, nil
	}
	n, _ := id.Epoch()
	chain, err := l.fetchEntry(ctx, chainKey(inst, id), id.WithEpoch(0), create, notErased)
	if err != nil {
		return nil, err
	}
	defer chain.release()
	cs := chain.chain
	if n < cs.base {
		return nil, fmt.Errorf("%w: epoch %d of group chain %s of installation %s: its key was destroyed (the installation keeps the group's epochs from %d on)",
			ErrRetainedOut, n, id.Token(), inst, cs.base)
	}
	cs.mu.Lock()
	from, start := chain.dk, cs.base
	if cs.cursor.Valid() && cs.cursorEpo <= n {
		from, start = cs.cursor, cs.cursorEpo
	}
	if n-start > maxChainWalk {
		cs.mu.Unlock()
		return nil, fmt.Errorf("eventlog: epoch %d of group chain %s of installation %s is %d epochs past the nearest chain position %d, more than %d: %w",
			n, id.Token(), inst, n-start, start, maxChainWalk, events.ErrMalformed)
	}
	at, err := events.EpochChainKey(from, n-start)
	if err == nil {
		cs.cursor.Wipe()
		cs.cursor, cs.cursorEpo = at.Clone(), n
	}
	cs.mu.Unlock()
	if err != nil {
		return nil, fmt.Errorf("eventlog: epoch key %s of %s: %w", id, inst, err)
	}
	ek, err := events.EpochDataKey(at)
	at.Wipe()
	if err != nil {
		return nil, fmt.Errorf("eventlog: epoch key %s of %s: %w", id, inst, err)
	}
	return l.dkCache.put(ck, ek), nil
}

// EpochChainStart returns the oldest epoch of the group chain of the
// ClassEpoch id whose key can still be derived (the epoch the key bucket
// holds the chain at), and false when the bucket has no such chain.
func (l *Log) EpochChainStart(ctx context.Context, inst events.InstallationID, id events.DataKeyID) (uint64, bool, error) {
	if id.Class != events.ClassEpoch {
		return 0, false, fmt.Errorf("eventlog: epoch chain of %s: not an epoch key id", id)
	}
	if l.kv == nil {
		return 0, false, fmt.Errorf("%w: stream %s: bucket %s", ErrNoKeyBucket, l.cfg.Stream, keyBucket(l.cfg.Stream))
	}
	name := id.Name(l.instPseudonym(inst))
	entry, err := l.kv.Get(ctx, name)
	switch {
	case errors.Is(err, jetstream.ErrKeyNotFound):
		return 0, false, nil
	case err != nil:
		return 0, false, fmt.Errorf("eventlog: key bucket %s: get %s: %w", keyBucket(l.cfg.Stream), name, err)
	}
	n, err := events.WrappedChainEpoch(entry.Value())
	if err != nil {
		return 0, false, fmt.Errorf("eventlog: key bucket %s: %s: %w", keyBucket(l.cfg.Stream), name, err)
	}
	return n, true, nil
}

// GroupEpochID returns the ClassEpoch key id of inst's group aggregate
// groupID at epoch n: what names the group's chain in the key bucket.
func (l *Log) GroupEpochID(inst events.InstallationID, groupID string, n uint64) (events.DataKeyID, error) {
	return l.keys.PeriodID(inst, events.Period{Class: events.ClassEpoch, Scope: "group", ID: groupID, Epoch: n})
}

// ShredEpochsBefore destroys the keys of inst's group groupID (its
// aggregate id) for every epoch before keep: the chain's entry is
// replaced, compare-and-set on its revision, by the chain key at keep
// (history 1: the old value leaves the bucket's stream), and this Log's
// cached chain and epoch keys before keep are wiped. It reports whether
// the chain moved (false: already at keep or later, or no chain).
//
// The caller has made and verified a snapshot that no longer needs those
// epochs' events (replay.Retain does): they are unreadable after this,
// for every process that does not cache them.
func (l *Log) ShredEpochsBefore(ctx context.Context, inst events.InstallationID, groupID string, keep uint64) (bool, error) {
	if l.closed.Load() {
		return false, ErrClosed
	}
	if l.cfg.ReadOnly {
		return false, ErrReadOnly
	}
	if l.kv == nil {
		return false, fmt.Errorf("%w: stream %s: bucket %s", ErrNoKeyBucket, l.cfg.Stream, keyBucket(l.cfg.Stream))
	}
	id, err := l.GroupEpochID(inst, groupID, 0)
	if err != nil {
		return false, err
	}
	name := id.Name(l.instPseudonym(inst))
	bucket := keyBucket(l.cfg.Stream)
	for range rewrapAttempts {
		entry, err := l.kv.Get(ctx, name)
		if errors.Is(err, jetstream.ErrKeyNotFound) {
			return false, nil
		}
		if err != nil {
			return false, fmt.Errorf("eventlog: shred epochs of %s: key bucket %s: get %s: %w", inst, bucket, name, err)
		}
		base, err := events.WrappedChainEpoch(entry.Value())
		if err != nil {
			return false, fmt.Errorf("eventlog: shred epochs of %s: key bucket %s: %s: %w", inst, bucket, name, err)
		}
		if base >= keep {
			l.dropEpochsBefore(inst, id, keep)
			return false, nil
		}
		if keep-base > maxChainWalk {
			return false, fmt.Errorf("eventlog: shred epochs of %s before %d: the chain is at %d, more than %d steps behind", inst, keep, base, maxChainWalk)
		}
		old, err := l.keys.UnwrapDataKey(l.cfg.Stream, inst, id, entry.Value())
		if err != nil {
			return false, fmt.Errorf("eventlog: shred epochs of %s: key bucket %s: %s: %w", inst, bucket, name, err)
		}
		next, err := events.EpochChainKey(old, keep-base)
		old.Wipe()
		if err != nil {
			return false, err
		}
		wrapped, err := l.wrapChecked(inst, id.WithEpoch(keep), next)
		next.Wipe()
		if err != nil {
			return false, fmt.Errorf("eventlog: shred epochs of %s: %s: %w", inst, name, err)
		}
		_, err = l.kv.Update(ctx, name, wrapped, entry.Revision())
		if errors.Is(err, jetstream.ErrKeyRevisionMismatch) || errors.Is(err, jetstream.ErrKeyExists) {
			continue // another writer moved it meanwhile: look again
		}
		if err != nil {
			return false, fmt.Errorf("eventlog: shred epochs of %s: key bucket %s: update %s (shred again to finish): %w", inst, bucket, name, err)
		}
		l.dropEpochsBefore(inst, id, keep)
		l.logger.Info("eventlog: epoch keys shredded", "stream", l.cfg.Stream, "installation", string(inst),
			"chain", id.Token(), "from", base, "to", keep)
		return true, nil
	}
	return false, fmt.Errorf("eventlog: shred epochs of %s: %s changed under %d attempts in a row; run again", inst, name, rewrapAttempts)
}

// dropEpochsBefore wipes this Log's cached chain of the ClassEpoch id and
// its cached epoch keys before keep.
func (l *Log) dropEpochsBefore(inst events.InstallationID, id events.DataKeyID, keep uint64) {
	c := l.dkCache
	c.mu.Lock()
	defer c.mu.Unlock()
	token := id.Token()
	for e := c.ll.Front(); e != nil; {
		next := e.Next()
		k := e.Value.(*dkEntry).key
		if k.inst == inst && k.id.Class == events.ClassEpoch && k.id.Token() == token {
			if n, _ := k.id.Epoch(); k.chain || n < keep {
				c.removeLocked(e)
			}
		}
		e = next
	}
}

// epochShredded reports whether the ClassEpoch id's epoch is before its
// chain's start in the bucket (false when there is no chain).
func (l *Log) epochShredded(ctx context.Context, inst events.InstallationID, id events.DataKeyID) (bool, error) {
	start, ok, err := l.EpochChainStart(ctx, inst, id)
	if err != nil || !ok {
		return false, err
	}
	n, _ := id.Epoch()
	return n < start, nil
}
