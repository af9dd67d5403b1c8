package eventlog

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// Snapshots live in a JetStream object store beside the stream,
// "<stream>_SNAPSHOTS" (a read model can exceed the 1 MiB maximum payload;
// the object store chunks), with the stream's replicas and storage. An
// object's name is a keyed pseudonym of the installation and the
// checkpoint ("<pseudonym>.<checkpoint, 20 digits>"): no installation id
// in clear, and names sort by checkpoint. Its content is the snapshot
// sealed with events.SealSnapshot, bound to the stream, the installation
// and the checkpoint. See docs/forward-secrecy.md, Snapshots.

// SnapshotBucketSuffix is appended to the stream's name to name the
// snapshots' object store.
const SnapshotBucketSuffix = "_SNAPSHOTS"

// ErrNoSnapshot means no snapshot of that installation and checkpoint is
// stored.
var ErrNoSnapshot = errors.New("eventlog: no such snapshot")

// SnapshotRef names one stored snapshot of an installation.
type SnapshotRef struct {
	// Name is the object's name in the bucket.
	Name string
	// Checkpoint is the stream sequence of the last event the snapshot
	// holds.
	Checkpoint uint64
	// Size is the sealed snapshot's size in bytes.
	Size uint64
	// Modified is when the object was stored.
	Modified time.Time
}

// SnapshotBucket returns the name of the snapshots' object store.
func (l *Log) SnapshotBucket() string { return l.cfg.Stream + SnapshotBucketSuffix }

// snapshotPrefix is the start of every object name of inst's snapshots.
func (l *Log) snapshotPrefix(inst events.InstallationID) (string, error) {
	if err := inst.Validate(); err != nil {
		return "", fmt.Errorf("eventlog: %w", err)
	}
	return l.keys.Pseudonym("snapshot", string(inst)) + ".", nil
}

func snapshotName(prefix string, checkpoint uint64) string {
	return fmt.Sprintf("%s%020d", prefix, checkpoint)
}

// snapshotTimeout bounds one transfer of size bytes: the request timeout,
// plus a second per MiB.
func (l *Log) snapshotTimeout(size uint64) time.Duration {
	return l.cfg.RequestTimeout + time.Duration(size>>20)*time.Second
}

// snapshotStore binds to the bucket; with create it creates it when
// missing (never on a ReadOnly Log). Without create a missing bucket is
// (nil, nil).
func (l *Log) snapshotStore(ctx context.Context, create bool) (jetstream.ObjectStore, error) {
	if l.closed.Load() {
		return nil, ErrClosed
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	os, err := l.js.ObjectStore(ctx, l.SnapshotBucket())
	switch {
	case err == nil:
		if l.snapshotsChecked.Load() {
			return os, nil // its settings are checked once per Log: a status is one more request
		}
		st, err := os.Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("eventlog: snapshots bucket %s: %w", l.SnapshotBucket(), err)
		}
		if bs, ok := st.(*jetstream.ObjectBucketStatus); ok && bs.StreamInfo() != nil {
			if err := l.keepsEntries("snapshots bucket", l.SnapshotBucket(), bs.StreamInfo().Config); err != nil {
				return nil, err
			}
		}
		l.snapshotsChecked.Store(true)
		return os, nil
	case !errors.Is(err, jetstream.ErrBucketNotFound) && !errors.Is(err, jetstream.ErrStreamNotFound):
		return nil, fmt.Errorf("eventlog: snapshots bucket %s: %w", l.SnapshotBucket(), err)
	case !create:
		return nil, nil
	case l.cfg.ReadOnly:
		return nil, fmt.Errorf("%w: the snapshots bucket %s would have to be created", ErrReadOnly, l.SnapshotBucket())
	}
	storage := jetstream.FileStorage
	if l.cfg.Storage == MemoryStorage {
		storage = jetstream.MemoryStorage
	}
	replicas := 1
	if info := l.stream.CachedInfo(); info != nil {
		replicas = max(info.Config.Replicas, 1)
	}
	os, err = l.js.CreateOrUpdateObjectStore(ctx, jetstream.ObjectStoreConfig{
		Bucket:      l.SnapshotBucket(),
		Description: "epochlog sealed read-model snapshots of stream " + l.cfg.Stream,
		Storage:     storage,
		Replicas:    replicas,
	})
	if err != nil {
		return nil, fmt.Errorf("eventlog: create snapshots bucket %s: %w", l.SnapshotBucket(), err)
	}
	return os, nil
}

// PutSnapshot seals plain (a read-model snapshot, see projections.Export)
// with the Log's keyring, bound to the stream, inst and checkpoint, and
// stores it, creating the bucket if needed. A snapshot of the same
// installation and checkpoint is replaced. A ReadOnly Log refuses
// (ErrReadOnly).
func (l *Log) PutSnapshot(ctx context.Context, inst events.InstallationID, checkpoint uint64, plain []byte) (SnapshotRef, error) {
	if l.cfg.ReadOnly {
		return SnapshotRef{}, fmt.Errorf("%w: put snapshot", ErrReadOnly)
	}
	sealed, err := events.SealSnapshot(l.keys, events.SnapshotBinding{Stream: l.cfg.Stream, Installation: inst, Checkpoint: checkpoint}, plain)
	if err != nil {
		return SnapshotRef{}, fmt.Errorf("eventlog: put snapshot of %s at %d: %w", inst, checkpoint, err)
	}
	return l.PutSealedSnapshot(ctx, inst, checkpoint, sealed)
}

// PutSealedSnapshot stores an already sealed snapshot as is (a copy
// between stores, a restore from a backup). It does not check the seal:
// OpenSnapshot does, when the snapshot is used.
func (l *Log) PutSealedSnapshot(ctx context.Context, inst events.InstallationID, checkpoint uint64, sealed []byte) (SnapshotRef, error) {
	if l.cfg.ReadOnly {
		return SnapshotRef{}, fmt.Errorf("%w: put snapshot", ErrReadOnly)
	}
	prefix, err := l.snapshotPrefix(inst)
	if err != nil {
		return SnapshotRef{}, err
	}
	if checkpoint == 0 {
		return SnapshotRef{}, errors.New("eventlog: put snapshot: checkpoint 0")
	}
	// An erased installation gets no snapshot: Erase deletes its
	// snapshots after writing its tombstone, so one stored while it ran
	// is deleted by it (stored before its listing) or found here
	// (stored after its tombstone): a snapshot made while an erase runs
	// (a follower's) must not outlive it.
	if err := l.CheckNotErased(ctx, inst); err != nil {
		return SnapshotRef{}, fmt.Errorf("eventlog: put snapshot of %s at %d: %w", inst, checkpoint, err)
	}
	os, err := l.snapshotStore(ctx, true)
	if err != nil {
		return SnapshotRef{}, err
	}
	name := snapshotName(prefix, checkpoint)
	pctx, cancel := context.WithTimeout(ctx, l.snapshotTimeout(uint64(len(sealed))))
	defer cancel()
	info, err := os.PutBytes(pctx, name, sealed)
	if err != nil {
		return SnapshotRef{}, fmt.Errorf("eventlog: put snapshot of %s at %d (%d bytes) into %s: %w", inst, checkpoint, len(sealed), l.SnapshotBucket(), err)
	}
	if eerr := l.CheckNotErased(ctx, inst); errors.Is(eerr, ErrErased) {
		if err := l.DeleteSnapshot(ctx, inst, checkpoint); err != nil {
			return SnapshotRef{}, fmt.Errorf("eventlog: put snapshot of %s at %d: %w, and the snapshot stored meanwhile was not deleted (erase again to delete it): %w", inst, checkpoint, eerr, err)
		}
		return SnapshotRef{}, fmt.Errorf("eventlog: put snapshot of %s at %d: %w (the snapshot stored meanwhile was deleted)", inst, checkpoint, eerr)
	}
	return SnapshotRef{Name: name, Checkpoint: checkpoint, Size: info.Size, Modified: info.ModTime}, nil
}

// Snapshots lists inst's stored snapshots, newest (highest checkpoint)
// first. No bucket, or none of inst's, is an empty list.
func (l *Log) Snapshots(ctx context.Context, inst events.InstallationID) ([]SnapshotRef, error) {
	prefix, err := l.snapshotPrefix(inst)
	if err != nil {
		return nil, err
	}
	os, err := l.snapshotStore(ctx, false)
	if err != nil || os == nil {
		return nil, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	infos, err := os.List(ctx)
	if errors.Is(err, jetstream.ErrNoObjectsFound) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("eventlog: list snapshots in %s: %w", l.SnapshotBucket(), err)
	}
	var out []SnapshotRef
	for _, info := range infos {
		rest, ok := strings.CutPrefix(info.Name, prefix)
		if !ok || info.Deleted {
			continue
		}
		cp, err := strconv.ParseUint(rest, 10, 64)
		if err != nil || cp == 0 {
			continue
		}
		out = append(out, SnapshotRef{Name: info.Name, Checkpoint: cp, Size: info.Size, Modified: info.ModTime})
	}
	slices.SortFunc(out, func(a, b SnapshotRef) int {
		switch {
		case a.Checkpoint > b.Checkpoint:
			return -1
		case a.Checkpoint < b.Checkpoint:
			return 1
		}
		return 0
	})
	return out, nil
}

// SealedSnapshot fetches inst's snapshot at checkpoint as stored (sealed).
// A missing one is ErrNoSnapshot. An object that cannot be a sealed
// snapshot is an error wrapping events.ErrMalformed (a link: a snapshot
// is never one, and following it (to another bucket, or to an object of
// another name) is not reading the installation's object) or
// events.ErrTampered (content that does not match its digest): anyone
// who may write to the bucket can put such an object under the
// installation's names, and callers pass over objects that are not
// snapshots by these errors: with the client's error instead, every
// snapshot, prune and retain of the installation would fail on one for
// good.
func (l *Log) SealedSnapshot(ctx context.Context, inst events.InstallationID, checkpoint uint64) ([]byte, error) {
	return l.sealedSnapshot(ctx, inst, checkpoint, nil)
}

// sealedSnapshot is SealedSnapshot; header, when set, is given the
// object's first events.SnapshotHeaderSize bytes and its size before
// the rest is read, and an error from it ends the read (returned
// wrapped).
func (l *Log) sealedSnapshot(ctx context.Context, inst events.InstallationID, checkpoint uint64, header func([]byte, uint64) error) ([]byte, error) {
	prefix, err := l.snapshotPrefix(inst)
	if err != nil {
		return nil, err
	}
	os, err := l.snapshotStore(ctx, false)
	if err != nil {
		return nil, err
	}
	if os == nil {
		return nil, fmt.Errorf("%w: %s at checkpoint %d (no bucket %s)", ErrNoSnapshot, inst, checkpoint, l.SnapshotBucket())
	}
	name := snapshotName(prefix, checkpoint)
	info := func() (*jetstream.ObjectInfo, error) {
		ictx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
		defer cancel()
		info, err := os.GetInfo(ictx, name)
		if errors.Is(err, jetstream.ErrObjectNotFound) {
			return nil, fmt.Errorf("%w: %s at checkpoint %d", ErrNoSnapshot, inst, checkpoint)
		}
		if err != nil {
			return nil, fmt.Errorf("eventlog: snapshot of %s at %d: %w", inst, checkpoint, err)
		}
		return info, nil
	}
	notSealed := func(why string, cause error) error {
		return fmt.Errorf("eventlog: snapshot of %s at %d: object %s in %s %s: %w", inst, checkpoint, name, l.SnapshotBucket(), why, cause)
	}
	// A snapshot put again at the same checkpoint (another process of the
	// installation, a retention storing its own) replaces the object's
	// chunks while they are read: the read fails, and is made again from
	// the new object, a few times.
	const reads = 3
	for try := 1; ; try++ {
		was, err := info()
		if err != nil {
			return nil, err
		}
		if was.Opts != nil && was.Opts.Link != nil {
			return nil, notSealed("is a link, not a sealed snapshot", events.ErrMalformed)
		}
		gctx, cancel := context.WithTimeout(ctx, l.snapshotTimeout(was.Size))
		b, err := readObject(gctx, os, name, header)
		cancel()
		var herr *headerError
		switch {
		case err == nil:
			return b, nil
		case errors.As(err, &herr):
			return nil, fmt.Errorf("eventlog: snapshot of %s at %d: %w", inst, checkpoint, herr.err)
		case errors.Is(err, jetstream.ErrObjectNotFound):
			return nil, fmt.Errorf("%w: %s at checkpoint %d", ErrNoSnapshot, inst, checkpoint)
		case errors.Is(err, jetstream.ErrCantGetBucket), errors.Is(err, errFollowedLink):
			return nil, notSealed("is a link, not a sealed snapshot", events.ErrMalformed) // made one since info
		case errors.Is(err, errLongerThanMeta):
			return nil, notSealed(err.Error(), events.ErrTampered)
		}
		now, ierr := info()
		if ierr != nil || now.NUID == was.NUID || try == reads || ctx.Err() != nil {
			switch {
			case ctx.Err() != nil:
			case errors.Is(err, jetstream.ErrDigestMismatch):
				return nil, notSealed("does not match its digest", fmt.Errorf("%w (%w)", events.ErrTampered, err))
			case errors.Is(err, jetstream.ErrBadObjectMeta):
				return nil, notSealed("has no content", fmt.Errorf("%w (%w)", events.ErrMalformed, err))
			}
			return nil, fmt.Errorf("eventlog: get snapshot of %s at %d from %s: %w", inst, checkpoint, l.SnapshotBucket(), err)
		}
	}
}

// headerError is a sealedSnapshot's header check that failed.
type headerError struct{ err error }

func (e *headerError) Error() string { return e.err.Error() }

// errFollowedLink is readObject's answer for an object that turned out
// to be a link when read.
var errFollowedLink = errors.New("the object is a link")

// errLongerThanMeta is readObject's answer for an object whose content
// goes on past the size its metadata gives.
var errLongerThanMeta = errors.New("holds more than its metadata says")

// readObject reads object name of os. With header set, it first hands
// header the object's first events.SnapshotHeaderSize bytes (all of it
// when shorter) and its size, and reads no further when header fails
// (a *headerError): a whole object is not fetched to learn what its
// first bytes say. No more than the size the object's metadata gives is
// read, and one byte: content past it (errLongerThanMeta) is not what
// was stored as the object, which the object store's reader does not
// check: such content, put there by whoever may write to the bucket,
// would otherwise be held in memory whole, under a deadline computed
// from the size the metadata gives.
func readObject(ctx context.Context, os jetstream.ObjectStore, name string, header func([]byte, uint64) error) ([]byte, error) {
	res, err := os.Get(ctx, name)
	if err != nil {
		return nil, err
	}
	defer res.Close()
	info, err := res.Info()
	if err != nil {
		return nil, err
	}
	if info.Name != name {
		return nil, errFollowedLink // Get followed a link made since the caller's look
	}
	r := io.LimitReader(res, int64(min(info.Size, math.MaxInt64-1))+1)
	var buf bytes.Buffer
	if header != nil {
		h := make([]byte, events.SnapshotHeaderSize)
		n, err := io.ReadFull(r, h)
		size := info.Size
		switch {
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			size = uint64(n) // the whole object
		case err != nil:
			return nil, err
		}
		if err := header(h[:n], size); err != nil {
			return nil, &headerError{err: err}
		}
		buf.Write(h[:n])
	}
	if _, err := buf.ReadFrom(r); err != nil {
		return nil, err
	}
	if uint64(buf.Len()) > info.Size {
		return nil, fmt.Errorf("%w: more than the %d bytes it gives", errLongerThanMeta, info.Size)
	}
	return buf.Bytes(), nil
}

// OpenSnapshot fetches inst's snapshot at checkpoint and opens it with
// the Log's keyring (events.OpenSnapshot: a snapshot altered in the
// bucket, or moved to another installation or checkpoint, fails with
// events.ErrTampered; one sealed under a root key the ring lacks with
// events.ErrUnknownKey). An object whose clear header already says it
// does not open (events.CheckSnapshotHeader) is not fetched past it:
// garbage put under the installation's names costs its first chunk, not
// its whole size. One whose header passes (any snapshot's header copied
// onto it) is fetched whole, as a snapshot is.
func (l *Log) OpenSnapshot(ctx context.Context, inst events.InstallationID, checkpoint uint64) ([]byte, error) {
	sealed, err := l.sealedSnapshot(ctx, inst, checkpoint, func(h []byte, size uint64) error {
		return events.CheckSnapshotHeader(l.keys, inst, h, size)
	})
	if err != nil {
		return nil, err
	}
	plain, err := events.OpenSnapshot(l.keys, events.SnapshotBinding{Stream: l.cfg.Stream, Installation: inst, Checkpoint: checkpoint}, sealed)
	if err != nil {
		return nil, fmt.Errorf("eventlog: snapshot of %s at %d: %w", inst, checkpoint, err)
	}
	return plain, nil
}

// DeleteSnapshot deletes inst's snapshot at checkpoint (every chunk is
// purged). A missing one is not an error.
func (l *Log) DeleteSnapshot(ctx context.Context, inst events.InstallationID, checkpoint uint64) error {
	if l.cfg.ReadOnly {
		return fmt.Errorf("%w: delete snapshot", ErrReadOnly)
	}
	prefix, err := l.snapshotPrefix(inst)
	if err != nil {
		return err
	}
	os, err := l.snapshotStore(ctx, false)
	if err != nil || os == nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	if err := os.Delete(ctx, snapshotName(prefix, checkpoint)); err != nil && !errors.Is(err, jetstream.ErrObjectNotFound) {
		return fmt.Errorf("eventlog: delete snapshot of %s at %d: %w", inst, checkpoint, err)
	}
	return nil
}

// ChainLink returns the installation chain's link to inst's event at
// stream sequence seq (events.LinkTo of the stored envelope): the head a
// snapshot at checkpoint seq records. The event must be inst's.
func (l *Log) ChainLink(ctx context.Context, inst events.InstallationID, seq uint64) (events.Link, error) {
	filter, err := l.InstallationFilter(inst)
	if err != nil {
		return events.Link{}, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	m, err := l.getMsg(ctx, seq)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		// An erased installation's events are purged on purpose: what
		// is left of it is its read model, not a history that lost an
		// event: ErrMissingEvent (exit 3) would send the operator after
		// lost events.
		if eerr := l.CheckNotErased(ctx, inst); eerr != nil {
			return events.Link{}, eerr
		}
		// The event a read model's checkpoint names is gone from the
		// stream: the history lost it, not a server error.
		return events.Link{}, fmt.Errorf("%w: stream %s holds no event at sequence %d, the last one applied to the read model of %s", ErrMissingEvent, l.cfg.Stream, seq, inst)
	}
	if err != nil {
		return events.Link{}, fmt.Errorf("eventlog: stream %s: get seq %d for the chain head of %s: %w", l.cfg.Stream, seq, inst, err)
	}
	if !strings.HasPrefix(m.Subject, strings.TrimSuffix(filter, ">")) {
		return events.Link{}, fmt.Errorf("%w: stream sequence %d is not an event of installation %s", ErrMissingEvent, seq, inst)
	}
	return events.LinkTo(m.Sequence, m.Data), nil
}
