package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/lease"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
	"github.com/epochlog/epochlog/telemetry"
)

// The pause before a failed read model is tried again doubles from
// followRetryMin up to followRetryMax, and starts again from
// followRetryMin once the read model applies events. Variables, so tests
// can shorten them.
var (
	followRetryMin = time.Second
	followRetryMax = time.Minute
)

// followHelp is follow's -h text.
const followHelp = "Keeps read models current from the bus until interrupted: each resumes from its own\n" +
	"checkpoint, so a restart loses and repeats nothing. The read model of installation\n" +
	"ID is DIR/ID.db; without --installation every *.db in DIR is followed. One key\n" +
	"opens them all (--db-key-file ...), or give --db-keys-beside to read each key\n" +
	"from DIR/ID.key (the layout replayer demo writes). --config FILE reads all of this\n" +
	"(and read models elsewhere, each with its own key) from a YAML file; flags given\n" +
	"on the command line win over it (docs/operations.md, \"The follow config file\").\n\n" +
	"Each read model is followed on its own: one that fails (a wrong key, an event it\n" +
	"cannot read or apply) is logged and tried again after a pause (1s, doubling up to\n" +
	"1m) while the others carry on. When interrupted, the exit status is 130 if every\n" +
	"read model is healthy, else 3 if one of those still failing failed verification,\n" +
	"else 1; a summary names each one.\n\n" +
	"--metrics ADDR serves /metrics (Prometheus), /healthz (200 while connected to NATS)\n" +
	"and /readyz (200 when every read model is healthy and its oldest unapplied event is\n" +
	"younger than --ready-lag) over HTTP.\n\n" +
	"--share NAME joins the share group NAME: followers of one group (on any host)\n" +
	"share out the read models they know, each followed by exactly one of them at a\n" +
	"time under a lease in a JetStream key-value bucket, and take over those of a\n" +
	"follower that stops or dies within the lease TTL and a third (--lease-ttl, 15s for\n" +
	"a new group). A read model missing here is built from the stream when this\n" +
	"follower takes it (docs/operations.md, \"Running several followers\")."

// followOpts are follow's flags.
type followOpts struct {
	conn              connFlags
	keys              keyFlags
	dbKey             *dbKeyFlags
	dir, list, config string
	metrics           string
	beside, verbose   bool
	readyLag          time.Duration
	share             string        // --share: the share group, "" alone
	leaseTTL          time.Duration // --lease-ttl
	snapEvery         int           // --snapshot-every
	snapInterval      time.Duration // --snapshot-interval
}

// snapshotPolicy is the policy --snapshot-every and --snapshot-interval
// ask for, nil for none.
func (o *followOpts) snapshotPolicy(env *cliEnv) *replay.SnapshotPolicy {
	if o.snapEvery <= 0 && o.snapInterval <= 0 {
		return nil
	}
	return &replay.SnapshotPolicy{EveryEvents: o.snapEvery, Every: o.snapInterval,
		OnSnapshot: func(inst events.InstallationID, res *replay.SnapshotResult, err error) {
			if err == nil {
				env.logger().Info("snapshot stored", "installation", string(inst), "checkpoint", res.Checkpoint, "bytes", res.Size)
			}
		}}
}

// newFollowFlags returns follow's flag set and the options it fills.
func newFollowFlags(env *cliEnv) (*flag.FlagSet, *followOpts) {
	o := &followOpts{}
	fs := newFlagSet(env, "follow", "--db-dir DIR [--installation ID,...] [flags] | --config FILE [flags]", followHelp)
	o.conn.register(fs, "")
	o.keys.register(fs)
	fs.StringVar(&o.dir, "db-dir", "", "directory of the read models (required unless --config lists each read model's db)")
	fs.StringVar(&o.list, "installation", "", "comma-separated installation ids (default: every DIR/*.db)")
	fs.BoolVar(&o.beside, "db-keys-beside", false, "read each database's raw key from DIR/<installation>.key (ignores $"+envDBKey+" and $"+envDBPassphrase+")")
	o.dbKey = newDBKeyFlags(fs, "")
	fs.BoolVar(&o.verbose, "v", false, "log each applied batch at level info (else at debug)")
	fs.StringVar(&o.config, "config", "", "YAML `FILE` of settings: connection, keyring, read models, metrics, ready lag, logging (docs/operations.md); flags given on the command line win over it")
	fs.StringVar(&o.metrics, "metrics", "", metricsFlagHelp)
	fs.DurationVar(&o.readyLag, "ready-lag", 30*time.Second, "/readyz: a read model is ready when it is healthy and its oldest unapplied event is younger than this (or there is none)")
	fs.StringVar(&o.share, "share", "", "join share group `NAME` (letters, digits, - and _): the group's followers share out the read models, one follower each at a time, and take over a lost follower's")
	fs.IntVar(&o.snapEvery, "snapshot-every", 0, "store a checked snapshot of a read model after this many events applied since its last one (0: off; see replayer snapshot)")
	fs.DurationVar(&o.snapInterval, "snapshot-interval", 0, "store a checked snapshot of a read model when this long has passed since its last one and events were applied (0: off)")
	fs.DurationVar(&o.leaseTTL, "lease-ttl", 0, "with --share: the lease lifetime when this follower creates the group's bucket (default "+lease.DefaultTTL.String()+"); a lost follower's read models are followed again within about 4/3 of it. An existing group keeps its own (another value is an error)")
	return fs, o
}

func runFollow(ctx context.Context, env *cliEnv, args []string) error {
	fs, o := newFollowFlags(env)
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	var listed []readModelConfig
	if o.config != "" {
		cf, err := loadFollowConfig(o.config)
		if err != nil {
			return err
		}
		if listed, err = cf.apply(fs, o.config); err != nil {
			return err
		}
		env.setLogger()
	}
	if o.readyLag <= 0 {
		return usageError{fmt.Sprintf("--ready-lag %v: must be positive", o.readyLag)}
	}
	if err := o.checkShare(); err != nil {
		return err
	}
	if o.snapEvery < 0 || o.snapInterval < 0 {
		return usageError{"--snapshot-every and --snapshot-interval cannot be negative"}
	}
	snapshots := o.snapshotPolicy(env)
	if o.beside && o.dbKey.onCommandLine() {
		// $EPOCHLOG_DB_KEY is not a conflict: --db-keys-beside says where
		// the keys are, and the environment is only a default.
		return usageError{"give either --db-keys-beside or one read-model key flag"}
	}
	// A share group's member following every *.db of --db-dir skips a
	// file that is no read model ("alice.old.db", left by hand), named
	// once, at start as at each listing again: failing the listing would
	// keep the member from starting, and from following every read model
	// that appears later.
	var stray func(p string, err error)
	if o.share != "" && o.list == "" && len(listed) == 0 {
		warned := map[string]bool{}
		stray = func(p string, err error) {
			if !warned[p] {
				warned[p] = true
				env.logger().Warn("skipping a file of --db-dir that is not a read model", "file", termSafe(p), "err", err)
			}
		}
	}
	targets, err := followTargets(o.dir, o.list, listed, o.beside, stray)
	if err != nil {
		return err
	}
	if o.share == "" {
		// A share group's member holds no more than it can keep open
		// (openShare); alone, follow must keep every one open.
		if err := checkCapacity(len(targets)); err != nil {
			return err
		}
	}
	var shared projections.Key
	for _, t := range targets {
		if t.keyPath == "" {
			if shared, err = o.dbKey.key(env); err != nil {
				return err
			}
			break
		}
	}

	newFollower := func(t followTarget) *follower {
		return &follower{env: env, lg: env.logger().With("installation", string(t.id), "db", t.path),
			id: t.id, path: t.path, key: shared, keyPath: t.keyPath, verbose: o.verbose, holding: o.share == "", snapshots: snapshots}
	}
	set := &followSet{}
	if o.share == "" {
		for _, t := range targets {
			set.add(newFollower(t))
		}
	}
	ops, err := startOpsServer(env, o.metrics, followCollectors(set)...)
	if err != nil {
		return err
	}
	defer ops.Close()
	o.conn.metrics = ops.Metrics()
	open := openLog
	if snapshots != nil {
		open = openLogWritable // the snapshots bucket is written
	}
	log, err := open(ctx, env, &o.conn, &o.keys)
	if err != nil {
		return err
	}
	defer log.Close()
	set.log = log
	for _, f := range set.all() {
		f.log = log
	}
	lag := o.readyLag
	var sh *shareRun
	if o.share != "" {
		var rescan func() ([]followTarget, error)
		if stray != nil {
			rescan = func() ([]followTarget, error) { return followTargets(o.dir, "", nil, o.beside, stray) }
		}
		if sh, err = openShare(ctx, env, o, log, set, targets, rescan, newFollower); err != nil {
			return err
		}
	}
	ops.SetReadiness(func(ctx context.Context) (bool, any) { return followReadiness(ctx, log, set, sh, lag) })
	ops.SetLog(log)

	if sh != nil {
		sh.run(ctx)
	} else {
		var wg sync.WaitGroup
		for _, f := range set.all() {
			wg.Go(func() { f.run(ctx) })
		}
		wg.Wait()
	}
	ops.Close()

	// Every follower has returned: ctx is done.
	fws := set.all()
	if sh != nil {
		fmt.Fprintf(env.stderr, "replayer: share group %s: left; %d read models followed by this member, %d held when it stopped (released to the others)\n",
			termSafe(o.share), len(fws), sh.heldAtStop.Load())
	}
	var failing []string
	verification := false
	for _, f := range fws {
		f.summarize()
		if f.err != nil && !f.released {
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

// followTarget is one read model to follow: its installation, database and
// key file (empty: the shared key).
type followTarget struct {
	id            events.InstallationID
	path, keyPath string
}

// followTargets lists the read models to follow: those of --installation
// in dir, else those of the config file's list (each database by default
// in dir), else every *.db in dir. With beside, a read model without a key
// file of its own has its key beside its database (DIR/ID.key). A *.db
// whose name is no installation id is a usage error, unless stray is
// set: it is then told of it, and the file skipped (a share group's
// member listing dir again while it runs).
func followTargets(dir, list string, listed []readModelConfig, beside bool, stray func(path string, err error)) ([]followTarget, error) {
	var ts []followTarget
	inDir := func(id events.InstallationID) (string, error) {
		if dir == "" {
			return "", usageError{"--db-dir is required (or a config file whose read-models.list gives each db)"}
		}
		return filepath.Join(dir, string(id)+".db"), nil
	}
	switch {
	case list != "":
		for _, s := range strings.Split(list, ",") {
			id := events.InstallationID(strings.TrimSpace(s))
			if err := id.Validate(); err != nil {
				return nil, usageError{fmt.Sprintf("--installation %q: %v", id, err)}
			}
			p, err := inDir(id)
			if err != nil {
				return nil, err
			}
			ts = append(ts, followTarget{id: id, path: p})
		}
	case len(listed) > 0:
		for _, rm := range listed {
			t := followTarget{id: events.InstallationID(rm.Installation.value), path: rm.DB.value, keyPath: rm.DBKeyFile.value}
			if t.path == "" {
				var err error
				if t.path, err = inDir(t.id); err != nil {
					return nil, err
				}
			}
			ts = append(ts, t)
		}
	default:
		if dir == "" {
			return nil, usageError{"--db-dir is required (or --config with read models)"}
		}
		paths, err := filepath.Glob(filepath.Join(dir, "*.db"))
		if err != nil {
			return nil, err
		}
		for _, p := range paths {
			id := events.InstallationID(strings.TrimSuffix(filepath.Base(p), ".db"))
			if err := id.Validate(); err != nil {
				if stray != nil {
					stray(p, err)
					continue
				}
				return nil, usageError{fmt.Sprintf("installation %q (from %s): %v", id, termSafe(p), err)}
			}
			ts = append(ts, followTarget{id: id, path: p})
		}
		if len(ts) == 0 {
			if st, err := os.Stat(dir); err != nil {
				return nil, usageError{fmt.Sprintf("read-model directory %s: %v", termSafe(dir), err)}
			} else if !st.IsDir() {
				return nil, usageError{fmt.Sprintf("read-model directory %s is not a directory", termSafe(dir))}
			}
			return nil, usageError{fmt.Sprintf("no read models to follow in %s (give --installation)", termSafe(dir))}
		}
	}
	seen := map[events.InstallationID]bool{}
	for i, t := range ts {
		if seen[t.id] {
			return nil, usageError{fmt.Sprintf("installation %s given twice", t.id)}
		}
		seen[t.id] = true
		if beside && t.keyPath == "" {
			ts[i].keyPath = strings.TrimSuffix(t.path, ".db") + ".key"
		}
	}
	return ts, nil
}

// follower keeps one read model current: it opens it, follows its
// installation with replay.Project until ctx ends, and when that fails
// logs the failure, closes the database and tries again after a pause.
// A failure of one read model never stops the others.
type follower struct {
	env     *cliEnv
	lg      *slog.Logger // env's, with the installation and database
	log     *eventlog.Log
	id      events.InstallationID
	path    string
	key     projections.Key // the shared key, when keyPath is ""
	keyPath string          // read before every attempt
	verbose bool
	// snapshots is the snapshot policy (--snapshot-every,
	// --snapshot-interval), nil for none.
	snapshots *replay.SnapshotPolicy

	mu sync.Mutex
	// holding: this process follows the read model now (always, outside
	// a share group); lease is the share group's lease while it does, and
	// released says the read model went to another member of the group
	// before follow stopped.
	holding  bool
	lease    *lease.Lease
	released bool
	opened   bool   // an attempt opened the database
	start    uint64 // its checkpoint when first opened
	last     uint64 // its latest checkpoint
	applied  int    // events applied by this process
	failures int    // failed attempts
	// err is the latest failure while it stands: set when an attempt
	// fails, cleared when a later attempt applies events or finds the
	// read model already at the installation's last event.
	err error
	// held is what the follower knows of how far the read model is
	// behind without asking the stream: from its batches
	// (replay.ProjectOptions.OnHeldUntil) and from readiness checks that
	// asked. Zero until known; reset by each attempt's open.
	held heldUntil
}

// heldUntil says a read model at checkpoint cp held every event its
// installation had stored on the stream before until.
type heldUntil struct {
	cp    uint64
	until time.Time
}

// noteHeld records that the read model at checkpoint cp holds every event
// stored before until, unless a later until is known.
func (f *follower) noteHeld(cp uint64, until time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.opened && cp <= f.last && until.After(f.held.until) {
		f.held = heldUntil{cp: cp, until: until}
	}
}

// everyMembers reports whether a follower's failure is the stream's or
// the connection's (the server gone or stalled, no answer in time), which
// every member of a share group meets alike: giving the read model back
// for it would only leave it unfollowed for shareRest once the outage
// ends. What may be this member's own (its key, its file, its directory,
// an event its keyring does not open) still counts towards giving back.
func everyMembers(err error) bool {
	return eventlog.Unanswered(err) || errors.Is(err, eventlog.ErrStalled) ||
		errors.Is(err, eventlog.ErrConnect) || errors.Is(err, nats.ErrNoResponders)
}

// run follows until ctx ends.
func (f *follower) run(ctx context.Context) {
	wait := followRetryMin
	streak := 0        // failures in a row without an event applied
	wasLocked := false // the last failure was a lock held by another writer
	for {
		applied, err := f.attempt(ctx)
		if ctx.Err() != nil {
			// Stopped (an error now is the stop's); a failure of an
			// earlier attempt that still stands is kept in f.err.
			return
		}
		if errors.Is(err, lease.ErrLeaseLost) {
			// The share group's lease ended under a batch: not a failure
			// of the read model. The member cancels ctx at once.
			f.lg.Info("lease lost; stopped following (another follower of the share group takes the read model)", "err", err)
			<-ctx.Done()
			return
		}
		if err == nil {
			err = errors.New("following stopped without an error")
		}
		if applied > 0 {
			wait, streak = followRetryMin, 0
		}
		f.mu.Lock()
		f.err = err
		f.failures++
		failures := f.failures
		shared := f.lease != nil
		f.mu.Unlock()
		if errors.Is(err, eventlog.ErrErased) {
			// Erased while followed (the follow read its tombstone) or
			// before: nothing of it is left to follow, now or later. It
			// stays reported as failing (readiness, the failing gauge,
			// the summary); the others carry on. A share group's member
			// gives it back and never takes it again (shareRun.serve).
			// Otherwise one erased while followed would be followed,
			// healthy, until follow restarted, and one erased before
			// tried again for good (in a share group, by each member in
			// turn, every shareRest).
			msg := "installation erased; stopped following its read model (delete it)"
			if shared {
				msg = "installation erased; this member gives its read model back to the share group and will not take it again (delete it)"
			}
			f.lg.Error(msg, "failures", failures, "err", err)
			return
		}
		// Under a lease, another writer holding the file's lock is one
		// that outlived its own lease (a member stopped or hung past it):
		// no other member could open the file either, so the read model
		// is kept, not given back, and tried again often enough to follow
		// it within the takeover bound once that writer lets go.
		locked := shared && errors.Is(err, projections.ErrLocked)
		if !locked && !everyMembers(err) {
			streak++
		}
		if shared && streak >= shareGiveUpAfter {
			// A member of a share group that cannot follow the read model
			// (a key it lacks, a file it cannot open) hands it back, so
			// that another member that can takes it (shareRun.serve).
			f.lg.Error("read model failed; giving it back to the share group for another member to take",
				"failures", failures, "err", err)
			return
		}
		attrs := []any{"failures", failures}
		if seq, ok := streamSeq(err); ok {
			attrs = append(attrs, "stream_sequence", seq)
		}
		level := slog.LevelError
		if locked {
			wait = min(wait, shareLockedRetry)
			if wasLocked {
				// Said once: tried every few seconds, it would flood the
				// log (a whole directory another share group follows).
				level = slog.LevelDebug
			}
		}
		wasLocked = locked
		attrs = append(attrs, "err", err, "retry_in", wait.String())
		f.lg.Log(ctx, level, "read model failed; trying again, the others carry on", attrs...)
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
		wait = min(2*wait, followRetryMax)
		if locked {
			wait = min(wait, shareLockedRetry)
		}
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
	f.mu.Lock()
	ls := f.lease
	f.mu.Unlock()
	if _, err := os.Stat(f.path); err != nil {
		if ls == nil || !errors.Is(err, fs.ErrNotExist) {
			return 0, fmt.Errorf("read model: %w (create it with replayer rebuild)", err)
		}
		if err := f.build(ctx, key, ls); err != nil {
			return 0, err
		}
	}
	db, err := projections.OpenExisting(f.path, key, nil)
	if err != nil {
		return 0, err
	}
	m := f.log.Metrics()
	m.ReadModelOpened()
	defer func() {
		db.Close()
		m.ReadModelClosed()
	}()
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
	f.held = heldUntil{} // the file may not be the one it was
	failures := f.failures
	f.mu.Unlock()
	if first {
		f.lg.Info("following read model", "checkpoint", cp)
	} else {
		f.lg.Info("following read model again", "checkpoint", cp, "failures", failures)
	}
	if failures > 0 {
		// A read model already at its installation's last event is
		// healthy again; one behind it is once it applies events.
		if lastSeq, err := f.log.LastSeq(ctx, f.id); err == nil && lastSeq <= cp {
			f.recovered()
		}
	}
	batchLevel := slog.LevelDebug
	if f.verbose {
		batchLevel = slog.LevelInfo
	}
	applied := 0
	var fence func(events.InstallationID) error
	if ls != nil {
		fence = func(events.InstallationID) error { return ls.Check() }
	}
	err = replay.Project(ctx, f.log, []replay.Projection{{Installation: f.id, DB: db}}, &replay.ProjectOptions{
		Fence:     fence,
		Snapshots: f.snapshots,
		OnApply: func(_ events.InstallationID, n int, cp uint64) {
			applied += n
			f.mu.Lock()
			f.applied += n
			f.last = cp
			f.mu.Unlock()
			f.recovered()
			f.lg.Log(ctx, batchLevel, "applied events", "events", n, "checkpoint", cp)
		},
		OnHeldUntil: func(_ events.InstallationID, cp uint64, until time.Time) { f.noteHeld(cp, until) },
	})
	return applied, err
}

// recovered clears a standing failure.
func (f *follower) recovered() {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		f.err = nil
		f.lg.Info("read model recovered: followed again", "failures", f.failures)
	}
}

// summarize prints the follower's line of the final summary: human text,
// whatever the log format.
func (f *follower) summarize() {
	f.mu.Lock()
	defer f.mu.Unlock()
	id := termSafe(string(f.id))
	if f.released {
		id += " (given to another follower of the share group)"
	}
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

// readModelStatus is one read model in /readyz's body.
type readModelStatus struct {
	Installation string `json:"installation"`
	DB           string `json:"db"`
	Ready        bool   `json:"ready"`
	// Reason says why it is not ready.
	Reason     string `json:"reason,omitempty"`
	Checkpoint uint64 `json:"checkpoint"`
	// PendingEvents are the installation's events it has not applied;
	// OldestPendingSeconds the age of the oldest of them.
	PendingEvents        uint64  `json:"pending_events"`
	OldestPendingSeconds float64 `json:"oldest_pending_seconds,omitempty"`
	// HeldUntilSecondsAgo is set when the answer comes from what the
	// follower knows, without asking the stream: the read model holds
	// every event of its installation stored until this many seconds
	// ago, so any it lacks is younger. PendingEvents then counts none.
	HeldUntilSecondsAgo float64 `json:"held_until_seconds_ago,omitempty"`
}

// followReady is /readyz's body for follow.
type followReady struct {
	Ready    bool   `json:"ready"`
	ReadyLag string `json:"ready_lag"`
	// NotReady names the read models that are not ready.
	NotReady   []string          `json:"not_ready,omitempty"`
	ReadModels []readModelStatus `json:"read_models"`
	// Share is the share group (--share), if any: a member that has not
	// joined it is not ready.
	Share *shareStatus `json:"share,omitempty"`
}

// followReadiness checks every read model followed now (see
// follower.readiness), a few at a time, and the share group's membership.
func followReadiness(ctx context.Context, l *eventlog.Log, set *followSet, sh *shareRun, lag time.Duration) (bool, any) {
	fws := set.holding()
	r := followReady{Ready: true, ReadyLag: lag.String(), ReadModels: make([]readModelStatus, len(fws))}
	if sh != nil {
		r.Share = sh.status()
		r.Ready = r.Share.Joined
	}
	connected := l.Connected()
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, f := range fws {
		sem <- struct{}{}
		wg.Go(func() {
			defer func() { <-sem }()
			r.ReadModels[i] = f.readiness(ctx, connected, lag)
		})
	}
	wg.Wait()
	for _, st := range r.ReadModels {
		if !st.Ready {
			r.Ready = false
			r.NotReady = append(r.NotReady, st.Installation)
		}
	}
	return r.Ready, r
}

// readiness reports whether the read model is ready: healthy (opened, not
// failing) and caught up within lag, i.e. its installation's oldest event
// it has not applied is younger than lag, or there is none.
//
// It asks the stream (Log.Pending: one to four requests) only when the
// follower does not know the answer: a read model that holds every event
// stored until less than lag ago is ready whatever came since. So a
// follower of thousands of read models, probed every few seconds, asks
// for none that applied an event stored within lag, and for an idle one
// about once per lag.
func (f *follower) readiness(ctx context.Context, connected bool, lag time.Duration) readModelStatus {
	f.mu.Lock()
	opened, cp, ferr, held := f.opened, f.last, f.err, f.held
	f.mu.Unlock()
	st := readModelStatus{Installation: string(f.id), DB: f.path, Checkpoint: cp}
	switch {
	case ferr != nil:
		st.Reason = "failing: " + ferr.Error()
		return st
	case !opened:
		st.Reason = "not opened yet"
		return st
	case !connected:
		st.Reason = "not connected to NATS"
		return st
	}
	if !held.until.IsZero() && held.cp <= cp {
		if ago := time.Since(held.until); ago < lag {
			st.Ready, st.HeldUntilSecondsAgo = true, max(ago.Seconds(), 1e-6)
			return st
		}
	}
	asked := time.Now()
	p, err := f.log.Pending(ctx, f.id, cp)
	if err != nil {
		st.Reason = "how far it is behind is unknown: " + err.Error()
		return st
	}
	switch {
	case p.Events > 0:
		f.noteHeld(cp, p.Oldest)
	case p.StreamLast <= cp:
		// Nothing after cp when the stream answered, which was after
		// asked.
		f.noteHeld(cp, asked)
	}
	st.PendingEvents = p.Events
	var age time.Duration
	if p.Events > 0 && !p.Oldest.IsZero() {
		age = max(time.Since(p.Oldest), 0)
		st.OldestPendingSeconds = age.Seconds()
	}
	switch {
	case p.StreamLast < cp:
		st.Reason = fmt.Sprintf("its checkpoint %d is past its installation's last event on the stream (%d): another stream, or events lost", cp, p.StreamLast)
	case p.Events > 0 && age >= lag:
		st.Reason = fmt.Sprintf("%d events behind, the oldest %s old (--ready-lag %s)", p.Events, age.Round(time.Millisecond), lag)
	default:
		st.Ready = true
	}
	return st
}

// followCollectors are follow's own series, read from the followers at
// each scrape (the library's, events applied, projector lag and a share
// group's leases among them, are in telemetry.Metrics). In a share group
// the read models are those this member follows now; failures count
// every read model it ever followed.
func followCollectors(set *followSet) []prometheus.Collector {
	count := func(pick func(f *follower) float64) func() float64 {
		return func() float64 {
			var n float64
			for _, f := range set.all() {
				f.mu.Lock()
				n += pick(f)
				f.mu.Unlock()
			}
			return n
		}
	}
	return []prometheus.Collector{
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: "follow", Name: "read_models",
			Help: "Read models this follow process keeps current (in a share group: those it holds now).",
		}, func() float64 { return float64(len(set.holding())) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Namespace: telemetry.Namespace, Subsystem: "follow", Name: "read_models_failing",
			Help: "Read models whose latest attempt failed and that have not recovered (they are tried again).",
		}, count(func(f *follower) float64 {
			if f.err != nil && f.holding {
				return 1
			}
			return 0
		})),
		prometheus.NewCounterFunc(prometheus.CounterOpts{
			Namespace: telemetry.Namespace, Subsystem: "follow", Name: "failures_total",
			Help: "Failed attempts to follow a read model (each is logged, then tried again after a pause).",
		}, count(func(f *follower) float64 { return float64(f.failures) })),
	}
}
