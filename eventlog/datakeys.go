package eventlog

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// Data keys (docs/forward-secrecy.md): every event the Log appends is
// sealed (envelope format 3) under a random data key of its installation,
// class and period (events.PeriodOf). The data keys live wrapped under the
// keyring's root keys in a JetStream KV bucket, "<stream>_KEYS", one entry
// per key named "<installation pseudonym>.<class>.<period token>", history
// 1, as many replicas as the stream; unwrapped, they live only in the
// Log's bounded cache, wiped on eviction. Destroying a key's entry (erase,
// and retention later) makes its events unreadable for good.

// KeyBucketSuffix is appended to the stream name to name the key bucket.
const KeyBucketSuffix = "_KEYS"

// dataKeyCacheMax bounds the Log's cache of unwrapped data keys. A miss
// costs one message get and an unwrap.
const dataKeyCacheMax = 4096

// keyBucket is the name of the stream's key bucket.
func keyBucket(stream string) string { return stream + KeyBucketSuffix }

// kvStreamName is the JetStream stream that backs a KV bucket.
func kvStreamName(bucket string) string { return "KV_" + bucket }

// ensureKeyBucket opens the key bucket, creating it unless the Log is
// read-only. A read-only Log on a stream without one gets nil: it reads
// events of formats 1 and 2, and a format-3 event fails with
// ErrNoKeyBucket naming the bucket.
func (l *Log) ensureKeyBucket(ctx context.Context) error {
	kv, s, err := l.openBucket(ctx, keyBucket(l.cfg.Stream), "key bucket", "epochlog wrapped data keys of stream "+l.cfg.Stream, !l.cfg.ReadOnly)
	if err != nil || kv == nil {
		return err
	}
	l.kv, l.kvStream = kv, s
	return nil
}

// openBucket opens one of the Log's KV buckets (what names it in errors)
// and the stream behind it. With create it makes a missing bucket (same
// storage and replicas as the event stream, history 1) and switches
// direct gets off, as for the event stream: a replica answering a direct
// get may lag and miss an entry another writer just made. Without
// create, a missing bucket is nil and no error.
func (l *Log) openBucket(ctx context.Context, bucket, what, description string, create bool) (jetstream.KeyValue, jetstream.Stream, error) {
	// The lookups are asked again while unanswered (askAgain): the
	// bucket's leader killed leaves the first without an answer.
	lookup := func(ctx context.Context) (jetstream.KeyValue, error) { return l.js.KeyValue(ctx, bucket) }
	kv, err := askAgain(ctx, l, lookup)
	switch {
	case errors.Is(err, jetstream.ErrBucketNotFound) && !create:
		return nil, nil, nil
	case errors.Is(err, jetstream.ErrBucketNotFound):
		storage := jetstream.FileStorage
		if l.cfg.Storage == MemoryStorage {
			storage = jetstream.MemoryStorage
		}
		kv, err = l.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
			Bucket:      bucket,
			Description: description,
			History:     1,
			Storage:     storage,
			Replicas:    max(l.stream.CachedInfo().Config.Replicas, 1),
		})
		if errors.Is(err, jetstream.ErrBucketExists) {
			kv, err = askAgain(ctx, l, lookup) // another process created it meanwhile
		}
		if err != nil {
			return nil, nil, fmt.Errorf("eventlog: create %s %s: %w", what, bucket, err)
		}
	case err != nil:
		return nil, nil, fmt.Errorf("eventlog: open %s %s: %w", what, bucket, err)
	}
	s, err := askAgain(ctx, l, func(ctx context.Context) (jetstream.Stream, error) { return l.js.Stream(ctx, kvStreamName(bucket)) })
	if err != nil {
		return nil, nil, fmt.Errorf("eventlog: %s %s: %w", what, bucket, err)
	}
	if err := l.keepsEntries(what, bucket, s.CachedInfo().Config); err != nil {
		return nil, nil, err
	}
	if c := s.CachedInfo().Config; c.AllowDirect && create {
		c.AllowDirect = false
		if s, err = l.js.UpdateStream(ctx, c); err != nil {
			return nil, nil, fmt.Errorf("eventlog: %s %s: switch direct gets off: %w", what, bucket, err)
		}
		if kv, err = askAgain(ctx, l, lookup); err != nil {
			return nil, nil, fmt.Errorf("eventlog: open %s %s: %w", what, bucket, err)
		}
	}
	return kv, s, nil
}

// keepsEntries refuses a bucket (what, named bucket; c is the stream
// behind it) that an operator created or edited to drop entries the log
// never deleted: a TTL, discard old with a limit, or memory storage under
// a file-stored log. The key bucket losing a data key makes every event
// sealed under it unreadable for good, as an erasure would; the retention
// bucket losing a mark, or the snapshots bucket a snapshot, loses what
// compaction already purged from the stream.
func (l *Log) keepsEntries(what, bucket string, c jetstream.StreamConfig) error {
	bad := func(setting string) error {
		err := fmt.Errorf("%w: %s %s (stream %s) has %s: it would drop entries the log needs (remove the setting with nats stream edit; do not delete the bucket: its entries are needed)",
			ErrIncompatibleStream, what, bucket, c.Name, setting)
		if l.cfg.ReadOnly {
			// A reader changes nothing, and may be what rescues the
			// history (a rebuild, a verify) before the entries go.
			l.logger.Error("eventlog: a bucket the log needs would drop entries; reading all the same", "stream", l.cfg.Stream, "err", err)
			return nil
		}
		return err
	}
	switch {
	case c.MaxAge > 0:
		return bad(fmt.Sprintf("a TTL (max age %v)", c.MaxAge))
	case c.Discard == jetstream.DiscardOld && (c.MaxMsgs > 0 || c.MaxBytes > 0):
		return bad(fmt.Sprintf("discard policy old with a limit (max messages %d, max bytes %d)", c.MaxMsgs, c.MaxBytes))
	case c.Storage == jetstream.MemoryStorage && l.cfg.Storage == FileStorage:
		return bad("memory storage (lost when the server restarts) under a file-stored log")
	}
	return nil
}

// KeyBucket returns the name of the Log's key bucket, "<stream>_KEYS".
func (l *Log) KeyBucket() string { return keyBucket(l.cfg.Stream) }

// dkCacheKey names one cached data key, or with chain set a group's
// epoch chain (id is then the chain's id at epoch 0).
type dkCacheKey struct {
	inst  events.InstallationID
	id    events.DataKeyID
	chain bool
}

type dkEntry struct {
	key dkCacheKey
	dk  events.DataKey
	// refs counts the cache's own reference and one per user of the key
	// (a seal or an open in progress); the last release wipes it, so
	// evicting never pulls a key from under its user and no user needs
	// a copy of its own.
	refs atomic.Int32
	// chain is set for an epoch chain entry: dk is the chain key at the
	// epoch the key bucket holds it at.
	chain *chainState
	// checked is when (the Log's clock, Unix ns) the key was last found
	// in the bucket: a day key sealed with longer than dayKeyRecheck
	// after is looked up again (sealable).
	checked atomic.Int64
}

// dayKeyRecheck is how long a cached messages or delivery key seals
// before the Log looks it up in the bucket again: retention in another
// process may have shredded its day, and an event sealed under it then
// opens for no one else. One lookup per key and dayKeyRecheck, not per
// append; it bounds how long a process seals with a shredded key.
const dayKeyRecheck = 10 * time.Minute

// sealable takes a reference to ck's cached entry for a seal: nil when
// it is not cached, or is a day key last found in the bucket more than
// dayKeyRecheck ago (then dropped, for the seal to look it up).
func (l *Log) sealable(ck dkCacheKey) *dkEntry {
	ent, ok := l.dkCache.get(ck)
	if !ok {
		return nil
	}
	c := ent.key.id.Class
	if (c != events.ClassMessages && c != events.ClassDelivery) || l.now().UnixNano()-ent.checked.Load() <= int64(dayKeyRecheck) {
		return ent
	}
	ent.release()
	l.dkCache.drop(ck)
	return nil
}

// found marks ent as just found in (or created in) the bucket.
func (l *Log) found(ent *dkEntry) *dkEntry {
	ent.checked.Store(l.now().UnixNano())
	return ent
}

// chainState is what a cached epoch chain knows: the bucket's position,
// and the furthest position derived from it (memory only), from which a
// later epoch is one step away.
type chainState struct {
	mu        sync.Mutex
	base      uint64 // the epoch of the entry's dk, the oldest derivable
	cursor    events.DataKey
	cursorEpo uint64
}

// release drops one reference to e's key, wiping it with the last.
func (e *dkEntry) release() {
	if e.refs.Add(-1) == 0 {
		e.dk.Wipe()
		if e.chain != nil {
			e.chain.mu.Lock()
			e.chain.cursor.Wipe()
			e.chain.mu.Unlock()
		}
	}
}

// dataKeyCache is a bounded LRU of unwrapped data keys, wiped when evicted
// and no longer in use.
type dataKeyCache struct {
	mu  sync.Mutex
	max int
	ll  *list.List // of *dkEntry, most recent first
	m   map[dkCacheKey]*list.Element
}

func newDataKeyCache(n int) *dataKeyCache {
	return &dataKeyCache{max: n, ll: list.New(), m: map[dkCacheKey]*list.Element{}}
}

// get returns the cached entry of k, referenced: the caller releases it.
func (c *dataKeyCache) get(k dkCacheKey) (*dkEntry, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.m[k]
	if !ok {
		return nil, false
	}
	c.ll.MoveToFront(e)
	ent := e.Value.(*dkEntry)
	ent.refs.Add(1)
	return ent, true
}

// put caches dk, which it takes over, and returns its entry referenced
// for the caller to release. When k is cached already, dk is wiped and
// the cached entry returned.
func (c *dataKeyCache) put(k dkCacheKey, dk events.DataKey) *dkEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		dk.Wipe()
		c.ll.MoveToFront(e)
		ent := e.Value.(*dkEntry)
		ent.refs.Add(1)
		return ent
	}
	return c.insertLocked(k, dk, nil)
}

// putChain is put for an epoch chain at epoch base. A chain cached
// already is kept when it is at base or later; one at an earlier epoch is
// replaced: the bucket has moved on.
func (c *dataKeyCache) putChain(k dkCacheKey, dk events.DataKey, base uint64) *dkEntry {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.m[k]; ok {
		ent := e.Value.(*dkEntry)
		if ent.chain != nil && ent.chain.base >= base {
			dk.Wipe()
			c.ll.MoveToFront(e)
			ent.refs.Add(1)
			return ent
		}
		c.removeLocked(e)
	}
	return c.insertLocked(k, dk, &chainState{base: base})
}

// insertLocked caches dk under k, which is not cached, and returns its
// entry referenced for the caller.
func (c *dataKeyCache) insertLocked(k dkCacheKey, dk events.DataKey, chain *chainState) *dkEntry {
	ent := &dkEntry{key: k, dk: dk, chain: chain}
	ent.refs.Store(2) // the cache's and the caller's
	c.m[k] = c.ll.PushFront(ent)
	for c.ll.Len() > c.max {
		c.removeLocked(c.ll.Back())
	}
	return ent
}

func (c *dataKeyCache) removeLocked(e *list.Element) {
	ent := e.Value.(*dkEntry)
	delete(c.m, ent.key)
	c.ll.Remove(e)
	ent.release()
}

// dropInstallation wipes and forgets every cached key of inst.
func (c *dataKeyCache) dropInstallation(inst events.InstallationID) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.ll.Front(); e != nil; {
		next := e.Next()
		if e.Value.(*dkEntry).key.inst == inst {
			c.removeLocked(e)
		}
		e = next
	}
}

// wipe wipes and forgets every cached key.
func (c *dataKeyCache) wipe() {
	c.mu.Lock()
	defer c.mu.Unlock()
	for e := c.ll.Front(); e != nil; {
		next := e.Next()
		c.removeLocked(e)
		e = next
	}
}

// len is the number of cached keys.
func (c *dataKeyCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.ll.Len()
}

// instPseudonym is inst's subject pseudonym.
func (l *Log) instPseudonym(inst events.InstallationID) string {
	return l.keys.Pseudonym("installation", string(inst))
}

// dataKey returns inst's data key id, referenced (the caller releases
// it): from the cache, else unwrapped from the bucket, else, when create is
// set, a new random key created in the bucket (KV create: of two writers
// racing, the loser reads and uses the winner's key). A key missing from
// the bucket is ErrErased when the installation has a tombstone,
// ErrRetainedOut when retention shredded it (retention.go), else
// ErrNoDataKey; creating one for an erased installation is ErrErased, for
// a shredded period ErrRetainedOut.
func (l *Log) dataKey(ctx context.Context, inst events.InstallationID, id events.DataKeyID, create bool) (*dkEntry, error) {
	return l.fetchDataKey(ctx, inst, id, create, false)
}

// fetchDataKey is dataKey; notErased says the caller has just checked
// that inst has no tombstone.
func (l *Log) fetchDataKey(ctx context.Context, inst events.InstallationID, id events.DataKeyID, create, notErased bool) (*dkEntry, error) {
	if id.Class == events.ClassEpoch {
		return l.epochKey(ctx, inst, id, create, notErased)
	}
	return l.fetchEntry(ctx, dkCacheKey{inst: inst, id: id}, id, create, notErased)
}

// fetchEntry is fetchDataKey of the bucket entry ck names: a data key,
// or with ck.chain an epoch chain, created (when create is set) at the
// epoch of wrapID.
func (l *Log) fetchEntry(ctx context.Context, ck dkCacheKey, wrapID events.DataKeyID, create, notErased bool) (*dkEntry, error) {
	inst, id := ck.inst, ck.id
	if create {
		if ent := l.sealable(ck); ent != nil {
			return ent, nil
		}
	} else if ent, ok := l.dkCache.get(ck); ok {
		return ent, nil
	}
	if l.kv == nil {
		return nil, fmt.Errorf("%w: stream %s: data key %s of %s is needed, but the key bucket %s does not exist (open the log writable once to create it, or point at the store that holds it)",
			ErrNoKeyBucket, l.cfg.Stream, id, inst, keyBucket(l.cfg.Stream))
	}
	name := id.Name(l.instPseudonym(inst))
	// Asked again while unanswered (askAgain): the bucket's leader lost
	// leaves it without one for an election.
	get := func(ctx context.Context) (jetstream.KeyValueEntry, error) { return l.kv.Get(ctx, name) }
	entry, err := askAgain(ctx, l, get)
	switch {
	case err == nil:
		return l.unwrapAndCache(ck, name, entry.Value())
	case !errors.Is(err, jetstream.ErrKeyNotFound):
		return nil, fmt.Errorf("eventlog: key bucket %s: get %s: %w", keyBucket(l.cfg.Stream), name, err)
	}
	if !notErased {
		if err := l.CheckNotErased(ctx, inst); err != nil {
			return nil, err
		}
	}
	if err := l.checkRetainedOut(ctx, inst, id); err != nil { // retention.go
		return nil, err
	}
	if !create {
		return nil, fmt.Errorf("%w: data key %s of installation %s (%s in bucket %s): %w",
			ErrNoDataKey, id, inst, name, keyBucket(l.cfg.Stream), events.ErrUnknownKey)
	}
	dk, err := events.GenerateDataKey()
	if err != nil {
		return nil, err
	}
	wrapped, err := l.keys.WrapDataKey(l.cfg.Stream, inst, wrapID, dk)
	if err != nil {
		dk.Wipe()
		return nil, fmt.Errorf("eventlog: data key %s of %s: %w", id, inst, err)
	}
	// Create it; if another writer's create is first (or still in flight
	// on a cluster, where the server refuses ours before it shows theirs),
	// read theirs, asking again for up to RequestTimeout. The create is
	// asked again while unanswered (askAgain: no leader to store it, on a
	// cluster without a quorum): one whose answer was lost was stored, and
	// the next is refused as existing, which reads it back.
	giveUp := time.Now().Add(l.cfg.RequestTimeout)
	put := func(ctx context.Context) (uint64, error) { return l.kv.Create(ctx, name, wrapped) }
	for attempt := 0; ; attempt++ {
		_, err := askAgain(ctx, l, put)
		if err == nil {
			break
		}
		if !errors.Is(err, jetstream.ErrKeyExists) {
			dk.Wipe()
			return nil, fmt.Errorf("eventlog: key bucket %s: create %s: %w", keyBucket(l.cfg.Stream), name, err)
		}
		entry, gerr := askAgain(ctx, l, get)
		if gerr == nil {
			dk.Wipe()
			return l.unwrapAndCache(ck, name, entry.Value())
		}
		if !errors.Is(gerr, jetstream.ErrKeyNotFound) || time.Now().After(giveUp) {
			dk.Wipe()
			return nil, fmt.Errorf("eventlog: key bucket %s: get %s after another writer created it (%v): %w", keyBucket(l.cfg.Stream), name, err, gerr)
		}
		select {
		case <-time.After(refusedBackoff(attempt)):
		case <-ctx.Done():
			dk.Wipe()
			return nil, ctx.Err()
		}
	}
	if ck.chain {
		n, _ := wrapID.Epoch()
		return l.dkCache.putChain(ck, dk, n), nil
	}
	return l.found(l.dkCache.put(ck, dk)), nil
}

func (l *Log) unwrapAndCache(ck dkCacheKey, name string, wrapped []byte) (*dkEntry, error) {
	dk, err := l.keys.UnwrapDataKey(l.cfg.Stream, ck.inst, ck.id, wrapped)
	if err != nil {
		return nil, fmt.Errorf("eventlog: key bucket %s: %s: %w", keyBucket(l.cfg.Stream), name, err)
	}
	if !ck.chain {
		return l.found(l.dkCache.put(ck, dk)), nil
	}
	base, err := events.WrappedChainEpoch(wrapped)
	if err != nil {
		dk.Wipe()
		return nil, fmt.Errorf("eventlog: key bucket %s: %s: %w", keyBucket(l.cfg.Stream), name, err)
	}
	return l.dkCache.putChain(ck, dk, base), nil
}

// open opens one envelope of inst read at subject: format 3 under its
// data key (cache or bucket), formats 1 and 2 under the root keys.
func (l *Log) open(ctx context.Context, inst events.InstallationID, subject string, data []byte) (events.Event, error) {
	id, ok, err := events.EnvelopeDataKeyID(data)
	if err != nil || !ok {
		return events.Open(l.keys, inst, l.binding(subject), data)
	}
	if err := inst.Validate(); err != nil {
		return events.Event{}, fmt.Errorf("eventlog: %w", err)
	}
	ent, err := l.dataKey(ctx, inst, id, false)
	if err != nil {
		return events.Event{}, err
	}
	defer ent.release()
	return events.OpenData(ent.dk, inst, l.binding(subject), data)
}

// OpenEnvelope opens one stored envelope of inst as read at subject, the
// way Read does (a format-3 envelope under its data key, from the Log's
// cache or the key bucket; older formats under the root keys), without
// the order and chain checks of a read. For tools that hold raw stream
// messages.
func (l *Log) OpenEnvelope(ctx context.Context, inst events.InstallationID, subject string, envelope []byte) (events.Event, error) {
	return l.open(ctx, inst, subject, envelope)
}

// sealEvent seals e for p's subject: under its period's data key
// (created on first use), or under the root keys when the Log is set to
// seal as before format 3 (benchmarks).
// key, when set, is e's data key as prefetchKeys found it for now (held
// by the caller's window): the seal takes it instead of looking it up.
func (l *Log) sealEvent(ctx context.Context, subject, aggPseudo string, e events.Event, now time.Time, key windowKey) (string, []byte, error) {
	if l.sealRoot {
		return l.msgIDs.Seal(l.binding(subject), aggPseudo, e, now)
	}
	if key.ent != nil {
		return l.msgIDs.SealData(key.ent.dk, key.id, l.binding(subject), aggPseudo, e, now)
	}
	id, err := l.dkIDs.get(l.keys, e.Aggregate.Installation, events.PeriodKeyOf(e, now))
	if err != nil {
		return "", nil, err
	}
	ent, err := l.dataKey(ctx, e.Aggregate.Installation, id, true)
	if err != nil {
		return "", nil, err
	}
	defer ent.release()
	return l.msgIDs.SealData(ent.dk, id, l.binding(subject), aggPseudo, e, now)
}

// prefetchParallel bounds the key fetches prefetchKeys has in flight.
const prefetchParallel = 32

// windowKey is the data key of one event of a window, as prefetchKeys
// found it in the cache: its id and a reference the window holds. A zero
// windowKey (a key not cached then, or an epoch's, derived from its
// chain) leaves the seal to look the key up itself.
type windowKey struct {
	id  events.DataKeyID
	ent *dkEntry
}

// windowKeys are a window's keys, one per event of its transitions in
// order (nil when the Log seals under the root keys), and the references
// behind them.
type windowKeys struct {
	keys []windowKey
	held []*dkEntry
}

// release gives back the window's references, once its seals are done.
func (w *windowKeys) release() {
	for _, ent := range w.held {
		ent.release()
	}
	w.held = nil
}

// prefetchKeys finds the data keys that sealing ts at now will need, and
// hands the seals those in the cache (one lookup per key and window
// instead of one per event). It fetches or creates the missing ones
// concurrently, for the seals to find in the cache: a bulk append that
// starts many periods (a new day, a fresh stream) otherwise pays their
// round trips one after another, the publish pipeline empty meanwhile.
// Each installation's tombstone is looked up once, not once per key. A
// key it could not get is asked for again, and its error reported, by
// the seal that needs it. The caller releases the result.
func (l *Log) prefetchKeys(ctx context.Context, ts []Transition, now time.Time) windowKeys {
	var w windowKeys
	if l.sealRoot || l.kv == nil {
		return w
	}
	n := 0
	for _, t := range ts {
		n += len(t.Events)
	}
	w.keys = make([]windowKey, n)
	type want struct {
		inst events.InstallationID
		id   events.DataKeyID
	}
	var wants []want
	found := map[dkCacheKey]*dkEntry{} // held, or nil: not cached
	insts := map[events.InstallationID]error{}
	i := -1
	for _, t := range ts {
		for _, e := range t.Events {
			i++
			inst := e.Aggregate.Installation
			if inst.Validate() != nil {
				continue // prepare refuses it
			}
			id, err := l.dkIDs.get(l.keys, inst, events.PeriodKeyOf(e, now))
			if err != nil {
				continue
			}
			ck := dkCacheKey{inst: inst, id: id}
			epoch := id.Class == events.ClassEpoch
			if epoch {
				ck = chainKey(inst, id) // one fetch per chain; its epochs derive locally
			}
			ent, seen := found[ck]
			if !seen {
				if cached := l.sealable(ck); cached != nil {
					ent = cached
					w.held = append(w.held, cached)
				} else {
					wants = append(wants, want{inst, id})
					insts[inst] = nil
				}
				found[ck] = ent
			}
			if ent != nil && !epoch {
				w.keys[i] = windowKey{id: id, ent: ent}
			}
		}
	}
	if len(wants) < 2 {
		return w // one key costs the seal no more than here
	}
	for inst := range insts {
		insts[inst] = l.CheckNotErased(ctx, inst)
	}
	sem := make(chan struct{}, prefetchParallel)
	var wg sync.WaitGroup
	for _, want := range wants {
		if insts[want.inst] != nil {
			continue
		}
		sem <- struct{}{}
		wg.Add(1)
		go func() {
			defer func() { <-sem; wg.Done() }()
			if ent, err := l.fetchDataKey(ctx, want.inst, want.id, true, true); err == nil {
				ent.release()
			}
		}()
	}
	wg.Wait()
	return w
}

// dataKeyIDs caches the data key id of each period sealed to: the id is
// a keyed hash of the installation and period (Keyring.DataKeyID), the
// same for every event of the period, and computing it per event was a
// fifth of a bulk append's sealing. It holds no secret (ids are in clear
// envelope headers). Bounded: when full it starts over, which costs only
// hashes.
type dataKeyIDs struct {
	mu sync.Mutex
	m  map[periodOf]events.DataKeyID
}

type periodOf struct {
	inst events.InstallationID
	p    events.Period
}

// dataKeyIDsMax bounds dataKeyIDs.
const dataKeyIDsMax = 1 << 14

func (c *dataKeyIDs) get(r *events.Keyring, inst events.InstallationID, p events.Period) (events.DataKeyID, error) {
	k := periodOf{inst, p}
	c.mu.Lock()
	id, ok := c.m[k]
	c.mu.Unlock()
	if ok {
		return id, nil
	}
	id, err := r.PeriodID(inst, p)
	if err != nil {
		return id, err
	}
	c.mu.Lock()
	if c.m == nil || len(c.m) >= dataKeyIDsMax {
		c.m = make(map[periodOf]events.DataKeyID)
	}
	c.m[k] = id
	c.mu.Unlock()
	return id, nil
}
