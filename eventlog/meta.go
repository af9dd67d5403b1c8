package eventlog

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// The active-stream pointer (docs/forward-secrecy.md, Re-seal, step 3): a
// KV bucket, MetaBucket, holds for a base stream name (the name services
// are configured with) the stream and subject prefix that are active now,
// and the ones active before the last switch (kept until finalized, for a
// rollback). It is changed only with a compare-and-set on its revision,
// so two operators switching at once cannot both win. No entry means the
// base stream itself is active. It holds no secret.

// MetaBucket is the KV bucket of active-stream pointers.
const MetaBucket = "epochlog_meta"

// ErrSwitchConflict means the pointer changed since it was read: another
// switch, rollback or finalize came first. Read it again and decide.
var ErrSwitchConflict = errors.New("eventlog: the active-stream pointer changed meanwhile")

// StreamRef names one stream of the log and its subject prefix.
type StreamRef struct {
	Stream        string `json:"stream"`
	SubjectPrefix string `json:"subject_prefix"`
}

// Active is the pointer of one base name.
type Active struct {
	// Base is the name services are configured with.
	Base string `json:"base"`
	// Current is the stream active now.
	Current StreamRef `json:"current"`
	// Previous is the stream active before the last switch, until it is
	// finalized (purged); nil after.
	Previous *StreamRef `json:"previous,omitempty"`
	// PreviousLastSeq is Previous's last stream sequence when the switch
	// was made (0: not recorded, a switch by an older version): events
	// after it were appended to Previous after the switch, and the
	// current stream does not have them.
	PreviousLastSeq uint64 `json:"previous_last_seq,omitempty"`
	// CurrentStartSeq is Current's last stream sequence when the switch
	// was made (0: not recorded): events after it were appended to
	// Current since, and Previous does not have them.
	CurrentStartSeq uint64 `json:"current_start_seq,omitempty"`
	// SwitchedAt is when the pointer last changed.
	SwitchedAt time.Time `json:"switched_at"`
	// Revision is the KV revision read (0: no entry, the base is active).
	Revision uint64 `json:"-"`
}

// metaKV opens (creating when create is set) the metadata bucket; without
// create a missing bucket is nil.
func (l *Log) metaKV(ctx context.Context, create bool) (jetstream.KeyValue, error) {
	// The lookups are asked again while unanswered (askAgain): the
	// bucket's leader killed leaves the first without an answer.
	lookup := func(ctx context.Context) (jetstream.KeyValue, error) { return l.js.KeyValue(ctx, MetaBucket) }
	kv, err := askAgain(ctx, l, lookup)
	switch {
	case err == nil:
		// A pointer that expires sends every process back to the base
		// stream, silently, while others write to the one switched to.
		st, err := askAgain(ctx, l, kv.Status)
		if err != nil {
			return nil, fmt.Errorf("eventlog: metadata bucket %s: %w", MetaBucket, err)
		}
		if bs, ok := st.(*jetstream.KeyValueBucketStatus); ok && bs.StreamInfo() != nil {
			if err := l.keepsEntries("metadata bucket", MetaBucket, bs.StreamInfo().Config); err != nil {
				return nil, err
			}
		}
		return kv, nil
	case !errors.Is(err, jetstream.ErrBucketNotFound):
		return nil, fmt.Errorf("eventlog: metadata bucket %s: %w", MetaBucket, err)
	case !create:
		return nil, nil
	}
	storage := jetstream.FileStorage
	if l.cfg.Storage == MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	replicas := 1
	if l.stream != nil {
		replicas = max(l.stream.CachedInfo().Config.Replicas, 1)
	}
	kv, err = l.js.CreateKeyValue(ctx, jetstream.KeyValueConfig{
		Bucket: MetaBucket, Description: "epochlog active streams", History: 8, Storage: storage, Replicas: replicas,
	})
	if errors.Is(err, jetstream.ErrBucketExists) {
		kv, err = askAgain(ctx, l, lookup)
	}
	if err != nil {
		return nil, fmt.Errorf("eventlog: create metadata bucket %s: %w", MetaBucket, err)
	}
	return kv, nil
}

// ActiveStream reads the pointer of base. With no entry (or no bucket) the
// base stream is active: Current is base with the Log's subject prefix
// and Revision 0.
func (l *Log) ActiveStream(ctx context.Context, base string) (Active, error) {
	a := Active{Base: base, Current: StreamRef{Stream: base, SubjectPrefix: l.cfg.SubjectPrefix}}
	kv, err := l.metaKV(ctx, false)
	if err != nil || kv == nil {
		return a, err
	}
	e, err := askAgain(ctx, l, func(ctx context.Context) (jetstream.KeyValueEntry, error) { return kv.Get(ctx, base) })
	if errors.Is(err, jetstream.ErrKeyNotFound) {
		return a, nil
	}
	if err != nil {
		return a, fmt.Errorf("eventlog: metadata bucket %s: get %s: %w", MetaBucket, base, err)
	}
	got, err := decodeActive(e.Value())
	if err != nil {
		return a, fmt.Errorf("eventlog: metadata bucket %s: %s at revision %d: %w", MetaBucket, base, e.Revision(), err)
	}
	got.Base, got.Revision = base, e.Revision()
	return got, nil
}

// decodeActive reads a pointer's value. The streams it names are checked
// as a Config's are: a Log that resolves its stream through it (or a
// re-seal that switches, rolls back or deletes by it) never takes a
// stream or subject prefix that no Config could name, such as a prefix
// with a wildcard, which would read other subjects than the log's.
func decodeActive(value []byte) (Active, error) {
	var a Active
	if err := json.Unmarshal(value, &a); err != nil {
		return Active{}, err
	}
	if err := a.Current.validate(); err != nil {
		return Active{}, fmt.Errorf("current stream: %w", err)
	}
	if a.Previous != nil {
		if err := a.Previous.validate(); err != nil {
			return Active{}, fmt.Errorf("previous stream: %w", err)
		}
	}
	return a, nil
}

// validate checks r's stream name and subject prefix, by the rules a
// Config's are held to too (Config.validate).
func (r StreamRef) validate() error {
	if !validToken(r.Stream) {
		return fmt.Errorf("stream name %q: must be non-empty without '.', '*', '>', '/', '\\' or spaces", r.Stream)
	}
	for _, tok := range strings.Split(r.SubjectPrefix, ".") {
		if !validToken(tok) {
			return fmt.Errorf("subject prefix %q: tokens must be non-empty without '*', '>' or spaces", r.SubjectPrefix)
		}
	}
	return nil
}

// SetActive writes the pointer of base as next if it is still at revision
// prev.Revision (0: no entry yet), and returns it with its new revision.
// Another change first is ErrSwitchConflict.
func (l *Log) SetActive(ctx context.Context, prev Active, next Active) (Active, error) {
	if l.cfg.ReadOnly {
		return next, fmt.Errorf("%w: the active-stream pointer", ErrReadOnly)
	}
	if err := next.Current.validate(); err != nil {
		return next, fmt.Errorf("eventlog: set active stream: %w", err)
	}
	if next.Previous != nil {
		if err := next.Previous.validate(); err != nil {
			return next, fmt.Errorf("eventlog: set active stream: previous: %w", err)
		}
	}
	kv, err := l.metaKV(ctx, true)
	if err != nil {
		return next, err
	}
	next.Base = prev.Base
	next.SwitchedAt = time.Now().UTC()
	b, err := json.Marshal(next)
	if err != nil {
		return next, err
	}
	var rev uint64
	if prev.Revision == 0 {
		rev, err = kv.Create(ctx, prev.Base, b)
	} else {
		rev, err = kv.Update(ctx, prev.Base, b, prev.Revision)
	}
	if errors.Is(err, jetstream.ErrKeyExists) || errors.Is(err, jetstream.ErrKeyRevisionMismatch) {
		return next, fmt.Errorf("%w: base %s", ErrSwitchConflict, prev.Base)
	}
	if err != nil {
		return next, fmt.Errorf("eventlog: metadata bucket %s: set %s: %w", MetaBucket, prev.Base, err)
	}
	next.Revision = rev
	return next, nil
}

// resolveActive replaces l.cfg's stream and subject prefix with the ones
// the pointer of l.cfg.Stream names (Config.ResolveActive).
func (l *Log) resolveActive(ctx context.Context) error {
	a, err := l.ActiveStream(ctx, l.cfg.Stream)
	if err != nil {
		return err
	}
	if a.Revision != 0 {
		l.logger.Info("eventlog: active stream resolved", "base", l.cfg.Stream, "stream", a.Current.Stream)
		l.cfg.Stream, l.cfg.SubjectPrefix = a.Current.Stream, a.Current.SubjectPrefix
	}
	return nil
}

// DeleteStreamAndBuckets deletes ref's stream, its key bucket, its
// retention marks bucket and its snapshots bucket (each missing one is
// fine): a re-seal target that is
// rolled back, or the old stream when a re-seal is finalized. It refuses
// the Log's own stream. What the server frees is not overwritten on disk.
func (l *Log) DeleteStreamAndBuckets(ctx context.Context, ref StreamRef) error {
	if l.cfg.ReadOnly {
		return fmt.Errorf("%w: delete stream %s", ErrReadOnly, ref.Stream)
	}
	if ref.Stream == l.cfg.Stream {
		return fmt.Errorf("eventlog: delete stream %s: it is this Log's own", ref.Stream)
	}
	// Only a log's event stream goes with its buckets: not a bucket's own
	// stream (KV_..., OBJ_...), nor anything else the account holds.
	if _, err := l.logStreamMeta(ctx, ref.Stream); err != nil {
		return fmt.Errorf("eventlog: delete stream %s: %w", ref.Stream, err)
	}
	for _, name := range []string{ref.Stream, kvStreamName(keyBucket(ref.Stream)), kvStreamName(ref.Stream + RetentionBucketSuffix), "OBJ_" + ref.Stream + SnapshotBucketSuffix} {
		if err := l.js.DeleteStream(ctx, name); err != nil && !errors.Is(err, jetstream.ErrStreamNotFound) {
			return fmt.Errorf("eventlog: delete stream %s: %w", name, err)
		}
	}
	return nil
}

// metaResealOf is the stream metadata key a re-seal target carries: the
// stream it was re-sealed from (OpenBeside), so that only such a target
// is deleted as one (DeleteResealTarget).
const metaResealOf = "epochlog_reseal_of"

// logStreamMeta returns the metadata of stream name, an event stream of
// a Log (it carries the keyring check every Log's stream gets): a missing
// stream is ErrNoStream, another stream ErrIncompatibleStream.
func (l *Log) logStreamMeta(ctx context.Context, name string) (map[string]string, error) {
	s, err := l.js.Stream(ctx, name)
	if errors.Is(err, jetstream.ErrStreamNotFound) {
		return nil, fmt.Errorf("%w: no stream %s", ErrNoStream, name)
	}
	if err != nil {
		return nil, err
	}
	meta := s.CachedInfo().Config.Metadata
	if _, ok := meta[metaKeyringCheck]; !ok {
		return nil, fmt.Errorf("%w: stream %s is not a log's event stream (it has no %s)", ErrIncompatibleStream, name, metaKeyringCheck)
	}
	return meta, nil
}

// ResealedFrom returns the stream this Log's stream was re-sealed from
// (OpenBeside records it; for a target an older replayer made, which
// records none, the active-stream pointer that switched to it names it),
// or "" for a stream no re-seal made. Its sequences are not those of the
// source: a read model's checkpoint from the source compares with them by
// aggregate positions only, which a re-seal keeps.
func (l *Log) ResealedFrom() string {
	if src := l.stream.CachedInfo().Config.Metadata[metaResealOf]; src != "" {
		return src
	}
	return l.resealOfPointer
}

// resealOfByPointer finds the source of this Log's stream when it is a
// re-seal target an older replayer made and switched to (until
// 2026-12-06 a target recorded no source in its metadata): the previous
// stream of an active-stream pointer that names this stream as current,
// when that stream was created before this one (a rollback names the
// older stream current and the newer previous). It returns "" when no
// pointer does; a pointer that cannot be read is logged and taken as none.
func (l *Log) resealOfByPointer(ctx context.Context) string {
	src, err := l.pointerSource(ctx)
	if err != nil {
		l.logger.Warn("eventlog: cannot read the active-stream pointers; the stream is taken as no re-seal's target", "stream", l.cfg.Stream, "err", err)
	}
	return src
}

// pointerSource is resealOfByPointer's search; an error is the first
// pointer or stream it could not read.
func (l *Log) pointerSource(ctx context.Context) (string, error) {
	kv, err := l.metaKV(ctx, false)
	if err != nil || kv == nil {
		return "", err
	}
	keys, err := kv.ListKeys(ctx)
	if err != nil {
		return "", fmt.Errorf("eventlog: metadata bucket %s: list: %w", MetaBucket, err)
	}
	defer keys.Stop()
	var first error
	for base := range keys.Keys() {
		a, err := l.ActiveStream(ctx, base)
		if err != nil {
			first = cmp.Or(first, err)
			continue
		}
		if a.Current.Stream != l.cfg.Stream || a.Previous == nil || a.Previous.Stream == l.cfg.Stream {
			continue
		}
		prev, err := l.js.Stream(ctx, a.Previous.Stream)
		if errors.Is(err, jetstream.ErrStreamNotFound) {
			continue // deleted: which came first cannot be told
		}
		if err != nil {
			first = cmp.Or(first, fmt.Errorf("eventlog: stream %s, previous of %s: %w", a.Previous.Stream, base, err))
			continue
		}
		if prev.CachedInfo().Created.Before(l.stream.CachedInfo().Created) {
			return a.Previous.Stream, nil
		}
	}
	return "", first
}

// DeleteResealTarget deletes ref, an unswitched re-seal target of this
// Log's stream, with its buckets (DeleteStreamAndBuckets). It refuses a
// stream that OpenBeside did not create from this Log's stream (a target
// records its source), and one that is the active or previous stream of
// any base name in MetaBucket: whatever the name given, only a re-seal
// target nobody reads from goes.
func (l *Log) DeleteResealTarget(ctx context.Context, ref StreamRef) error {
	meta, err := l.logStreamMeta(ctx, ref.Stream)
	if err != nil {
		return fmt.Errorf("eventlog: delete re-seal target %s: %w", ref.Stream, err)
	}
	if src := meta[metaResealOf]; src != l.cfg.Stream {
		why := "it records no source"
		if src != "" {
			why = "its source is " + src
		}
		return fmt.Errorf("eventlog: delete re-seal target %s: not a re-seal target of %s (%s)", ref.Stream, l.cfg.Stream, why)
	}
	kv, err := l.metaKV(ctx, false)
	if err != nil {
		return err
	}
	if kv != nil {
		keys, err := kv.ListKeys(ctx)
		if err != nil {
			return fmt.Errorf("eventlog: metadata bucket %s: list: %w", MetaBucket, err)
		}
		for base := range keys.Keys() {
			a, err := l.ActiveStream(ctx, base)
			if err != nil {
				return err
			}
			if a.Current.Stream == ref.Stream || (a.Previous != nil && a.Previous.Stream == ref.Stream) {
				return fmt.Errorf("eventlog: delete re-seal target %s: it is a stream of base %s (active %s)", ref.Stream, base, a.Current.Stream)
			}
		}
	}
	return l.DeleteStreamAndBuckets(ctx, ref)
}

// StreamLast returns the last sequence of stream name on this Log's
// server and the time it was stored (0 and zero: an empty stream).
func (l *Log) StreamLast(ctx context.Context, name string) (uint64, time.Time, error) {
	st, err := l.StreamState(ctx, name)
	return st.LastSeq, st.LastTime, err
}

// StreamState returns the state of stream name on this Log's server: its
// first and last sequences, message count and last time. A purge (retention,
// compaction) moves the first sequence and the count; an append the last.
func (l *Log) StreamState(ctx context.Context, name string) (jetstream.StreamState, error) {
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	s, err := l.js.Stream(ctx, name)
	if err != nil {
		return jetstream.StreamState{}, fmt.Errorf("eventlog: stream %s: %w", name, err)
	}
	return s.CachedInfo().State, nil
}
