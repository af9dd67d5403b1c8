package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// The pause before a failed read model is tried again doubles from
// followRetryMin up to followRetryMax, and starts again from
// followRetryMin once the read model applies events. Variables, so tests
// can shorten them.
var (
	followRetryMin = time.Second
	followRetryMax = time.Minute
)

func runFollow(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "follow", "--db-dir DIR [--installation ID,...] [flags]",
		"Keeps read models current from the bus until interrupted: each resumes from its own\n"+
			"checkpoint, so a restart loses and repeats nothing. The read model of installation\n"+
			"ID is DIR/ID.db; without --installation every *.db in DIR is followed. One key\n"+
			"opens them all (--db-key-file ...), or give --db-keys-beside to read each key\n"+
			"from DIR/ID.key (the layout replayer demo writes).\n\n"+
			"Each read model is followed on its own: one that fails (a wrong key, an event it\n"+
			"cannot read or apply) is reported on stderr and tried again after a pause (1s,\n"+
			"doubling up to 1m) while the others carry on. When interrupted, the exit status\n"+
			"is 130 if every read model is healthy, else 3 if one of those still failing failed\n"+
			"verification, else 1; a summary names each one.")
	var conn connFlags
	conn.register(fs, "")
	var keys keyFlags
	keys.register(fs)
	dir := fs.String("db-dir", "", "directory of the read models (required)")
	list := fs.String("installation", "", "comma-separated installation ids (default: every DIR/*.db)")
	beside := fs.Bool("db-keys-beside", false, "read each database's raw key from DIR/<installation>.key (ignores $"+envDBKey+" and $"+envDBPassphrase+")")
	dbKey := newDBKeyFlags(fs, "")
	verbose := fs.Bool("v", false, "print a line per applied batch")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if *dir == "" {
		return usageError{"--db-dir is required"}
	}
	var ids []events.InstallationID
	if *list != "" {
		for _, s := range strings.Split(*list, ",") {
			ids = append(ids, events.InstallationID(strings.TrimSpace(s)))
		}
	} else {
		paths, err := filepath.Glob(filepath.Join(*dir, "*.db"))
		if err != nil {
			return err
		}
		for _, p := range paths {
			ids = append(ids, events.InstallationID(strings.TrimSuffix(filepath.Base(p), ".db")))
		}
	}
	if len(ids) == 0 {
		return usageError{fmt.Sprintf("no read models to follow in %s (give --installation)", termSafe(*dir))}
	}
	seen := map[events.InstallationID]bool{}
	for _, id := range ids {
		if err := id.Validate(); err != nil {
			return usageError{fmt.Sprintf("installation %q: %v", id, err)}
		}
		if seen[id] {
			return usageError{fmt.Sprintf("installation %s given twice", id)}
		}
		seen[id] = true
	}
	var shared projections.Key
	if !*beside {
		k, err := dbKey.key(env)
		if err != nil {
			return err
		}
		shared = k
	} else if dbKey.onCommandLine() {
		// $EPOCHLOG_DB_KEY is not a conflict: --db-keys-beside says where
		// the keys are, and the environment is only a default.
		return usageError{"give either --db-keys-beside or one read-model key flag"}
	}
	log, err := openLog(ctx, env, &conn, &keys)
	if err != nil {
		return err
	}
	defer log.Close()

	fws := make([]*follower, len(ids))
	var wg sync.WaitGroup
	for i, id := range ids {
		f := &follower{env: env, log: log, id: id, path: filepath.Join(*dir, string(id)+".db"), key: shared, verbose: *verbose}
		if *beside {
			f.keyPath = filepath.Join(*dir, string(id)+".key")
		}
		fws[i] = f
		wg.Go(func() { f.run(ctx) })
	}
	wg.Wait()

	// Every follower has returned: ctx is done.
	var failing []string
	verification := false
	for _, f := range fws {
		f.summarize()
		if f.err != nil {
			failing = append(failing, fmt.Sprintf("%s (%s)", termSafe(string(f.id)), termSafe(f.path)))
			verification = verification || replay.IsVerificationFailure(f.err)
		}
	}
	if len(failing) > 0 {
		err := fmt.Errorf("%d of %d read models failing when follow stopped: %s", len(failing), len(fws), strings.Join(failing, ", "))
		if verification {
			return verifyError{err}
		}
		return err
	}
	fmt.Fprintln(env.stderr, "replayer: follow stopped; every read model is at its checkpoint and resumes from it")
	return ctx.Err()
}

// follower keeps one read model current: it opens it, follows its
// installation with replay.Project until ctx ends, and when that fails
// reports the failure, closes the database and tries again after a pause.
// A failure of one read model never stops the others.
type follower struct {
	env     *cliEnv
	log     *eventlog.Log
	id      events.InstallationID
	path    string
	key     projections.Key // the shared key, when keyPath is ""
	keyPath string          // --db-keys-beside: read before every attempt
	verbose bool

	mu       sync.Mutex
	opened   bool   // an attempt opened the database
	start    uint64 // its checkpoint when first opened
	last     uint64 // its latest checkpoint
	applied  int    // events applied by this process
	failures int    // failed attempts
	// err is the latest failure while it stands: set when an attempt
	// fails, cleared when a later attempt applies events or finds the
	// read model already at the installation's last event.
	err error
}

// run follows until ctx ends.
func (f *follower) run(ctx context.Context) {
	wait := followRetryMin
	for {
		applied, err := f.attempt(ctx)
		if ctx.Err() != nil {
			// Stopped (an error now is the stop's); a failure of an
			// earlier attempt that still stands is kept in f.err.
			return
		}
		if err == nil {
			err = errors.New("following stopped without an error")
		}
		if applied > 0 {
			wait = followRetryMin
		}
		f.mu.Lock()
		f.err = err
		f.failures++
		f.mu.Unlock()
		at := ""
		if seq, ok := streamSeq(err); ok {
			at = fmt.Sprintf(" at stream sequence %d", seq)
		}
		fmt.Fprintf(f.env.stderr, "replayer follow: installation %s, database %s: failed%s: %s; trying again in %v, the others carry on\n",
			termSafe(string(f.id)), termSafe(f.path), at, termSafe(err.Error()), wait)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, followRetryMax)
	}
}

// attempt opens the read model and follows it until ctx ends or something
// fails, and returns how many events it applied and why it stopped.
func (f *follower) attempt(ctx context.Context) (int, error) {
	key := f.key
	if f.keyPath != "" {
		var err error
		if key, err = readDBKeyFile(f.keyPath); err != nil {
			return 0, err
		}
	}
	if _, err := os.Stat(f.path); err != nil {
		return 0, fmt.Errorf("read model: %w (create it with replayer rebuild)", err)
	}
	db, err := projections.OpenExisting(f.path, key, nil)
	if err != nil {
		return 0, err
	}
	defer db.Close()
	cp, err := db.Checkpoint(ctx)
	if err != nil {
		return 0, err
	}
	f.mu.Lock()
	first := !f.opened
	if first {
		f.opened, f.start = true, cp
	}
	f.last = cp
	failures := f.failures
	f.mu.Unlock()
	if first {
		fmt.Fprintf(f.env.stderr, "replayer: following %s from checkpoint %d\n", termSafe(string(f.id)), cp)
	} else {
		fmt.Fprintf(f.env.stderr, "replayer: following %s again from checkpoint %d, after %d failed attempts\n", termSafe(string(f.id)), cp, failures)
	}
	if failures > 0 {
		// A read model already at its installation's last event is
		// healthy again; one behind it is once it applies events.
		if lastSeq, err := f.log.LastSeq(ctx, f.id); err == nil && lastSeq <= cp {
			f.recovered()
		}
	}
	applied := 0
	err = replay.Project(ctx, f.log, []replay.Projection{{Installation: f.id, DB: db}}, &replay.ProjectOptions{
		OnApply: func(_ events.InstallationID, n int, cp uint64) {
			applied += n
			f.mu.Lock()
			f.applied += n
			f.last = cp
			f.mu.Unlock()
			f.recovered()
			if f.verbose {
				fmt.Fprintf(f.env.stdout, "%s: applied %d events, checkpoint %d\n", termSafe(string(f.id)), n, cp)
			}
		}})
	return applied, err
}

// recovered clears a standing failure.
func (f *follower) recovered() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		f.err = nil
		fmt.Fprintf(f.env.stderr, "replayer: %s is being followed again\n", termSafe(string(f.id)))
	}
}

// summarize prints the follower's line of the final summary.
func (f *follower) summarize() {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := termSafe(string(f.id))
	switch {
	case f.err != nil:
		fmt.Fprintf(f.env.stderr, "replayer: %s: FAILING (database %s, %d failed attempts): %s; %d events applied",
			id, termSafe(f.path), f.failures, termSafe(f.err.Error()), f.applied)
		if f.opened {
			fmt.Fprintf(f.env.stderr, ", checkpoint %d", f.last)
		}
		fmt.Fprintln(f.env.stderr)
	case f.failures > 0:
		fmt.Fprintf(f.env.stderr, "replayer: %s: %d events applied, checkpoint %d (recovered after %d failed attempts)\n",
			id, f.applied, f.last, f.failures)
	case !f.opened:
		fmt.Fprintf(f.env.stderr, "replayer: %s: stopped before its database was opened\n", id)
	default:
		fmt.Fprintf(f.env.stderr, "replayer: %s: %d events applied, checkpoint %d\n", id, f.applied, f.last)
	}
}
