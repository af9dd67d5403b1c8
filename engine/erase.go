package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// EraseOptions tune Erase.
type EraseOptions struct {
	// By is recorded in the tombstone: who asked (free text, no secret).
	By string
	// ReadModel, if set, is the installation's read model: Erase deletes
	// it (with its -wal, -shm, -journal and .salt sidecars, and the copies
	// rebuilds keep beside it: projections.RemoveCopies) after the log's
	// erase, holding its writer lock, so no plaintext of the installation
	// is left in it either. Before anything is erased it
	// must be a regular file (not a link or a directory) that ReadModelKey
	// opens as this installation's read model (else
	// replay.ErrWrongInstallation, projections.ErrWrongKey, ...), or be
	// missing (an erase run again after it was deleted).
	ReadModel string
	// ReadModelKey is ReadModel's key, required with it.
	ReadModelKey projections.Key
	// ReadModelSaltPath is ReadModel's salt sidecar when it is not the
	// default projections.SaltPath(ReadModel) (the read model was opened
	// with InstallationOptions.DB.SaltPath): a passphrase key needs it to
	// open the file, and Erase deletes it with the read model.
	ReadModelSaltPath string
	// BeforeRemove, if set, is called when ReadModel was there and
	// ReadModelKey opened it as this installation's read model, after the
	// log's erase and before the read model is deleted: a caller that
	// removes more with it (the file its key came from) records there,
	// durably, that the key was proven its key, for a run that finds the
	// read model gone (erase again after a kill). An error stops Erase
	// before the deletion (erase again to finish).
	BeforeRemove func() error
}

// Erase erases installation id: the log's erase (eventlog.Log.Erase: a
// sealed tombstone, its data keys shredded, its events purged, in that
// order, resumable), then its read model if opts names one. The
// installation must not be open (its read model's writer lock is taken).
// Rebuilding, reading the log of or appending to it afterwards fails
// with eventlog.ErrErased, and OpenInstallation refuses it; other
// installations are not touched. An Installation another process still
// holds open (its read model elsewhere) fails at its next append, but
// its queries (Epoch, Members, ...) and a CatchUp that finds nothing new
// serve what its read model held until it is closed: asking the stream
// on every CatchUp would cost each a round trip.
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
	var present bool // the read model is there, proven this installation's
	salt := cmp.Or(o.ReadModelSaltPath, projections.SaltPath(o.ReadModel))
	if o.ReadModel != "" {
		var err error
		if lk, err = projections.Lock(o.ReadModel); err != nil {
			return nil, fmt.Errorf("engine: erase %s: %w", id, err)
		}
		defer lk.Unlock()
		// Checked before the log's erase, which cannot be undone: a
		// typo or another installation's file must stop it, not be
		// deleted after it.
		if present, err = checkErasable(ctx, id, o.ReadModel, o.ReadModelKey, salt); err != nil {
			return nil, fmt.Errorf("engine: erase %s: read model %s: %w (nothing was erased)", id, o.ReadModel, err)
		}
	}
	res, err := l.Erase(ctx, id, &eventlog.EraseOptions{By: o.By})
	if err != nil {
		return res, fmt.Errorf("engine: erase %s: %w", id, err)
	}
	if o.ReadModel != "" {
		if present && o.BeforeRemove != nil {
			if err := o.BeforeRemove(); err != nil {
				return res, fmt.Errorf("engine: erase %s: before removing its read model (erase again to finish): %w", id, err)
			}
		}
		p := o.ReadModel
		for _, f := range []string{p, p + "-wal", p + "-shm", p + "-journal", salt} {
			if err := os.Remove(f); err != nil && !errors.Is(err, fs.ErrNotExist) {
				return res, fmt.Errorf("engine: erase %s: remove its read model (erase again to finish): %w", id, err)
			}
		}
		// The copies rebuilds keep beside it hold the same history, and
		// the key given here still opens them.
		if _, err := projections.RemoveCopies(p); err != nil {
			return res, fmt.Errorf("engine: erase %s: remove the copies of its read model (erase again to finish): %w", id, err)
		}
	}
	return res, nil
}

// checkErasable checks that path, if it exists, is a regular file that
// key (with the salt sidecar at salt) opens as installation id's read
// model; present says it exists (and passed).
func checkErasable(ctx context.Context, id events.InstallationID, path string, key projections.Key, salt string) (present bool, err error) {
	fi, err := os.Lstat(path)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil // deleted by an earlier run: its sidecars still go
	}
	if err != nil {
		return false, err
	}
	return true, openErasable(ctx, id, path, fi, key, salt)
}

// openErasable is checkErasable of a path that exists (fi).
func openErasable(ctx context.Context, id events.InstallationID, path string, fi os.FileInfo, key projections.Key, salt string) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("not a regular file (%s): give the read model's own path", fi.Mode().Type())
	}
	if !key.Valid() {
		return errors.New("no key given for it: it is opened first, to check it is this installation's read model")
	}
	db, err := projections.OpenExisting(path, key, &projections.Options{NoMigrate: true, SaltPath: salt})
	if err != nil {
		return err
	}
	defer db.Close()
	ident, found, err := db.Installation(ctx)
	if err != nil {
		return err
	}
	if !found {
		return fmt.Errorf("%w: it holds no installation", replay.ErrWrongInstallation)
	}
	if ident.ID != id {
		return fmt.Errorf("%w: it is installation %s's", replay.ErrWrongInstallation, ident.ID)
	}
	return nil
}
