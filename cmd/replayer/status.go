package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

const statusHelp = `Prints, for one read model (--db PATH) or every DIR/*.db (--db-dir DIR), its
schema version, checkpoint (the stream sequence of the last applied event), head
(events held, in how many aggregates), installation, the kind of key that opens
it (never the key), and its lag against the stream: the installation's events
not applied yet and the age of the oldest of them. The read models are only
read (no lock: a follower or the installation may keep writing) and the stream
is opened read-only.

A read model that cannot be read (a wrong key, not a read model, a missing file)
is reported on its row with the reason (with --db-keys-beside, a missing key
file says "key file missing" in the KEY column), and so is one whose checkpoint is past
the installation's last event on the stream (the stream holds less than it);
the others are still shown. The exit status is then 3 if one of those is a
verification failure (a wrong key, a damaged file, the stream behind), else 1.
Only what is printed is read: "ok" is no check of every page (verify is).`

// statusRow is what status reports about one read model (one JSON object
// per read model with --json). Head is there once the read model was
// read, Lag once the stream was asked.
type statusRow struct {
	DB string `json:"db"`
	// Installation is the installation whose history the read model holds
	// ("" before its installation.created is applied).
	Installation string `json:"installation,omitempty"`
	// KeyKind is "raw key", "passphrase" or "plaintext": how it is opened,
	// never the key; with --db-keys-beside, "key file missing" or "key
	// file unreadable" when its key file is missing or holds no key (Error
	// says which file, and why).
	KeyKind string      `json:"key_kind"`
	Schema  int         `json:"schema,omitempty"`
	Head    *statusHead `json:"head,omitempty"`
	Lag     *statusLag  `json:"lag,omitempty"`
	// Error says why the read model could not be read, or what is wrong
	// with it; Exit is the exit status it alone would give (1 or 3).
	Error string `json:"error,omitempty"`
	Exit  int    `json:"exit,omitempty"`

	err error // Error's source
}

// statusHead is how far a read model got (projections.Head).
type statusHead struct {
	// Checkpoint is the stream sequence of the last applied event.
	Checkpoint uint64 `json:"checkpoint"`
	// Events is how many events the read model holds (each aggregate's
	// last position, summed), in Aggregates aggregates.
	Events     uint64 `json:"events"`
	Aggregates int    `json:"aggregates"`
}

// statusLag is how far the stream is ahead of a read model
// (eventlog.Log.Pending).
type statusLag struct {
	// StreamLast is the stream sequence of the installation's last event
	// (0: none).
	StreamLast uint64 `json:"stream_last"`
	// Pending counts the installation's events after the checkpoint, not
	// applied yet; Oldest is when the first of them was stored, and
	// AgeSeconds how long before status asked.
	Pending    uint64     `json:"pending"`
	Oldest     *time.Time `json:"oldest_pending,omitempty"`
	AgeSeconds float64    `json:"oldest_pending_age_seconds,omitempty"`
}

func runStatus(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "status", "--db PATH | --db-dir DIR [flags]", statusHelp)
	var conn connFlags
	conn.register(fs, "")
	var keys keyFlags
	keys.register(fs)
	db := fs.String("db", "", "path of one read model")
	dir := fs.String("db-dir", "", "directory of read models: every DIR/*.db")
	beside := fs.Bool("db-keys-beside", false, "read each database's raw key from <db without .db>.key beside it (ignores $"+envDBKey+" and $"+envDBPassphrase+")")
	dbKey := newDBKeyFlags(fs, "")
	asJSON := fs.Bool("json", false, "print one JSON object per read model")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	var paths []string
	switch {
	case (*db == "") == (*dir == ""):
		return usageError{"give one of --db PATH or --db-dir DIR"}
	case *db != "":
		paths = []string{*db}
	default:
		// A path that is not a directory is named so, not said to hold
		// "no read models (*.db) in PATH" as an empty directory does.
		if fi, err := os.Stat(*dir); err != nil {
			var pe *os.PathError
			if errors.As(err, &pe) {
				err = pe.Err
			}
			return usageError{fmt.Sprintf("--db-dir %s: %v", termSafe(*dir), err)}
		} else if !fi.IsDir() {
			return usageError{fmt.Sprintf("--db-dir %s: not a directory (--db PATH names one read model)", termSafe(*dir))}
		}
		m, err := filepath.Glob(filepath.Join(*dir, "*.db"))
		if err != nil {
			return usageError{fmt.Sprintf("--db-dir %s: %v", termSafe(*dir), err)}
		}
		if len(m) == 0 {
			return usageError{fmt.Sprintf("no read models (*.db) in %s", termSafe(*dir))}
		}
		paths = m
	}
	var (
		shared projections.Key
		kind   = "raw key"
	)
	if !*beside {
		k, err := dbKey.key(env)
		if err != nil {
			return err
		}
		shared, kind = k, dbKey.kind(env)
	} else if dbKey.onCommandLine() {
		return usageError{"give either --db-keys-beside or one read-model key flag"}
	}
	log, err := openLog(ctx, env, &conn, &keys)
	if err != nil {
		return err
	}
	defer log.Close()

	rows := make([]statusRow, 0, len(paths))
	for _, path := range paths {
		key := shared
		var keyErr error
		if *beside {
			key, keyErr = readDBKeyFile(strings.TrimSuffix(path, ".db") + ".key")
		}
		row := statusRow{DB: path, KeyKind: kind}
		if keyErr != nil {
			// Not a raw key that failed: no key at all, which the column
			// says rather than "raw key".
			row.KeyKind = "key file unreadable"
			if errors.Is(keyErr, os.ErrNotExist) {
				row.KeyKind = "key file missing"
			}
			row.fail(keyErr)
		} else {
			readStatus(ctx, log, key, &row, *dir != "", time.Now())
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		rows = append(rows, row)
	}

	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		for _, r := range rows {
			if err := enc.Encode(r); err != nil {
				return err
			}
		}
	} else {
		printStatus(env.stdout, rows)
	}
	var failing []string
	verification := false
	for _, r := range rows {
		if r.err != nil {
			failing = append(failing, termSafe(r.DB))
			verification = verification || r.Exit == exitVerify
		}
	}
	if len(failing) > 0 {
		err := fmt.Errorf("%d of %d read models could not be read or are wrong: %s", len(failing), len(rows), strings.Join(failing, ", "))
		if verification {
			return verifyError{err}
		}
		return err
	}
	return nil
}

// fail records why the row's read model could not be read or is wrong.
func (r *statusRow) fail(err error) {
	r.err, r.Error, r.Exit = err, err.Error(), exitFailure
	if replay.IsVerificationFailure(err) {
		r.Exit = exitVerify
	}
}

// readStatus fills row from the read model at row.DB and the stream (the
// age of the oldest pending event as of now). With byName set (--db-dir),
// the file is named after its installation, as follow expects it.
func readStatus(ctx context.Context, log *eventlog.Log, key projections.Key, row *statusRow, byName bool, now time.Time) {
	db, err := projections.OpenExisting(row.DB, key, nil)
	if err != nil {
		row.fail(err)
		return
	}
	defer db.Close()
	row.Schema = db.SchemaVersion()
	head, err := db.Head(ctx)
	if err != nil {
		row.fail(fmt.Errorf("reading the head of %s: %w", row.DB, err))
		return
	}
	row.Installation = string(head.Installation)
	row.Head = &statusHead{Checkpoint: head.Checkpoint, Aggregates: len(head.Positions)}
	for _, p := range head.Positions {
		row.Head.Events += p
	}
	inst := head.Installation
	if name := events.InstallationID(strings.TrimSuffix(filepath.Base(row.DB), ".db")); byName {
		if inst != "" && inst != name {
			row.fail(fmt.Errorf("%s holds the read model of installation %s, not of %s (its file name): follow would refuse it: %w",
				row.DB, inst, name, replay.ErrWrongInstallation))
			return
		}
		if inst == "" && name.Validate() == nil {
			inst = name
		}
	}
	if inst == "" {
		return // no installation to ask the stream about
	}
	p, err := log.Pending(ctx, inst, head.Checkpoint)
	if err != nil {
		row.fail(fmt.Errorf("lag of %s: %w", row.DB, err))
		return
	}
	row.Lag = &statusLag{StreamLast: p.StreamLast, Pending: p.Events}
	if !p.Oldest.IsZero() {
		t := p.Oldest.UTC()
		row.Lag.Oldest = &t
		row.Lag.AgeSeconds = max(0, now.Sub(t).Seconds())
	}
	if head.Checkpoint > p.StreamLast {
		// An erased installation's events are purged: say that, not that
		// the stream lost them.
		if t, seq, found, err := log.Tombstone(ctx, inst); err == nil && found {
			row.fail(fmt.Errorf("installation %s was erased at %s (tombstone at stream sequence %d): this read model is what is left of it; delete it: %w",
				inst, t.ErasedAt.Format(time.RFC3339), seq, eventlog.ErrErased))
			return
		}
		row.fail(fmt.Errorf("checkpoint %d is past the installation's last event on the stream (%d): the stream holds less than the read model; keep the database (%w)",
			head.Checkpoint, p.StreamLast, replay.ErrBehind))
		return
	}
	if err := log.StillHolds(ctx, inst, head.Checkpoint); err != nil {
		row.fail(fmt.Errorf("%w; keep the database (replayer verify compares it with the stream)", err))
	}
}

// printStatus prints rows as an aligned table; a failed row shows its
// reason in the last column.
func printStatus(w io.Writer, rows []statusRow) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "DB\tINSTALLATION\tSCHEMA\tKEY\tCHECKPOINT\tHEAD\tSTREAM LAST\tPENDING\tOLDEST PENDING\tSTATUS")
	for _, r := range rows {
		c := []string{termSafe(r.DB), "-", "-", r.KeyKind, "-", "-", "-", "-", "-", "ok"}
		if r.Installation != "" {
			c[1] = termSafe(r.Installation)
		}
		if r.Schema != 0 {
			c[2] = fmt.Sprint(r.Schema)
		}
		if h := r.Head; h != nil {
			c[4], c[5] = fmt.Sprint(h.Checkpoint), fmt.Sprintf("%d events in %d aggregates", h.Events, h.Aggregates)
		}
		if l := r.Lag; l != nil {
			c[6], c[7] = fmt.Sprint(l.StreamLast), fmt.Sprint(l.Pending)
			if l.Oldest != nil {
				c[8] = (time.Duration(l.AgeSeconds) * time.Second).String() + " ago"
			}
		}
		switch {
		case r.Error != "":
			c[9] = "ERROR: " + termSafe(r.Error)
		case r.Installation == "":
			c[9] = "no installation yet"
		case r.Lag != nil && r.Lag.Pending > 0:
			c[9] = "lagging"
		}
		fmt.Fprintln(tw, strings.Join(c, "\t"))
	}
	tw.Flush()
}
