package engine

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// EraseOptions tune Erase.
type EraseOptions struct {
	// By is recorded in the tombstone: who asked (free text, no secret).
	By string
	// ReadModel, if set, is the installation's read model: Erase deletes
	// it (with its -wal, -shm, -journal and .salt sidecars) after the
	// log's erase, holding its writer lock, so no plaintext of the
	// installation is left in it either.
	ReadModel string
}

// Erase erases installation id: the log's erase (eventlog.Log.Erase: a
// sealed tombstone, its data keys shredded, its events purged, in that
// order, resumable), then its read model if opts names one. The
// installation must not be open (its read model's writer lock is taken).
// Rebuilding, reading or appending to it afterwards fails with
// eventlog.ErrErased; other installations are not touched.
//
// It lives on the Log (eventlog) because it needs what only the Log holds
// (the key bucket, the data-key cache, the stream purge); this function
// adds the read model, which is the engine's.
func Erase(ctx context.Context, l *eventlog.Log, id events.InstallationID, opts *EraseOptions) (*eventlog.Erased, error) {
	var o EraseOptions
	if opts != nil {
		o = *opts
	}
	if err := id.Validate(); err != nil {
		return nil, fmt.Errorf("engine: erase: %w", err)
	}
	var lk *projections.WriterLock
	if o.ReadModel != "" {
		var err error
		if lk, err = projections.Lock(o.ReadModel); err != nil {
			return nil, fmt.Errorf("engine: erase %s: %w", id, err)
		}
		defer lk.Unlock()
	}
	res, err := l.Erase(ctx, id, &eventlog.EraseOptions{By: o.By})
	if err != nil {
		return res, fmt.Errorf("engine: erase %s: %w", id, err)
	}
	if o.ReadModel != "" {
		p := o.ReadModel
		for _, f := range []string{p, p + "-wal", p + "-shm", p + "-journal", projections.SaltPath(p)} {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return res, fmt.Errorf("engine: erase %s: remove its read model (erase again to finish): %w", id, err)
			}
		}
	}
	return res, nil
}
