package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"sync"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
	"github.com/schollz/progressbar/v3"
)

// replayFlags are what every replay command shares: where the stream is,
// the event keyring, the installation and its read model.
type replayFlags struct {
	conn   connFlags
	keys   keyFlags
	inst   string
	db     string
	dbKey  *dbKeyFlags
	asJSON bool
	// noMLSCheck is --no-mls-check, registered by the rebuilding commands.
	noMLSCheck bool
}

// registerRebuilding registers the flags of the commands that swap in a
// rebuilt database (rebuild, rekey, migrate).
func (r *replayFlags) registerRebuilding(fs *flag.FlagSet) {
	fs.BoolVar(&r.noMLSCheck, "no-mls-check", false, "skip re-deriving every MLS transition while replaying (faster; the default checks each against what was recorded)")
}

func (r *replayFlags) register(fs *flag.FlagSet) {
	r.conn.register(fs, "")
	r.keys.register(fs)
	fs.StringVar(&r.inst, "installation", "", "installation id (required)")
	fs.StringVar(&r.db, "db", "", "path of the installation's read model (required)")
	r.dbKey = newDBKeyFlags(fs, "")
	fs.BoolVar(&r.asJSON, "json", false, "print the result as one JSON object")
}

// check validates the flags every replay command needs.
func (r *replayFlags) check() error {
	if r.inst == "" {
		return usageError{"--installation is required"}
	}
	if err := events.InstallationID(r.inst).Validate(); err != nil {
		return usageError{fmt.Sprintf("--installation: %v", err)}
	}
	if r.db == "" {
		return usageError{"--db is required"}
	}
	return nil
}

// parse parses args, checks the flags every replay command needs and reads
// the database key: the preamble of rebuild, rekey and verify.
func (r *replayFlags) parse(fs *flag.FlagSet, args []string, env *cliEnv) (projections.Key, error) {
	if err := parseFlags(env, fs, args); err != nil {
		return projections.Key{}, err
	}
	if err := r.check(); err != nil {
		return projections.Key{}, err
	}
	return r.dbKey.key(env)
}

// open connects to the event log.
func (r *replayFlags) open(ctx context.Context, env *cliEnv) (*eventlog.Log, error) {
	return openLog(ctx, env, &r.conn, &r.keys)
}

// rebuildWith connects, runs one rebuilding operation with a progress bar
// and prints its result; key opens the database afterwards.
func (r *replayFlags) rebuildWith(ctx context.Context, env *cliEnv, cmd string, key projections.Key,
	op func(*eventlog.Log, events.InstallationID, *replay.Options) (*replay.RebuildResult, error)) error {
	return replayWith(ctx, env, r, op, func(_ *eventlog.Log, res *replay.RebuildResult) error {
		return r.finish(ctx, env, cmd, res, key)
	})
}

// replayWith connects, runs op on the installation with a progress bar,
// and once the bar is done hands op's result to then, on the same log.
func replayWith[T any](ctx context.Context, env *cliEnv, r *replayFlags,
	op func(*eventlog.Log, events.InstallationID, *replay.Options) (T, error), then func(*eventlog.Log, T) error) error {
	log, err := r.open(ctx, env)
	if err != nil {
		return err
	}
	defer log.Close()
	inst := events.InstallationID(r.inst)
	opts, done := progress(env, log, inst)
	if opts == nil {
		opts = &replay.Options{}
	}
	opts.SkipMLSCheck = r.noMLSCheck
	res, err := op(log, inst, opts)
	done()
	if err != nil {
		return err
	}
	return then(log, res)
}

// replayResult is what rebuild, rekey and migrate print.
type replayResult struct {
	Command            string `json:"command"`
	Installation       string `json:"installation"`
	DB                 string `json:"db"`
	Existed            bool   `json:"existed"`
	Recovered          bool   `json:"recovered"`
	KeptDamaged        string `json:"kept_damaged,omitempty"`
	PreviousSchema     int    `json:"previous_schema"`
	PreviousCheckpoint uint64 `json:"previous_checkpoint"`
	Schema             int    `json:"schema"`
	Replayed           int    `json:"replayed"`
	CaughtUp           int    `json:"caught_up"`
	Checkpoint         uint64 `json:"checkpoint"`
	Digest             string `json:"digest"`
}

// finish digests the database now at live and prints the result.
func (r *replayFlags) finish(ctx context.Context, env *cliEnv, cmd string, res *replay.RebuildResult, key projections.Key) error {
	out := replayResult{
		Command: cmd, Installation: string(res.Installation), DB: res.Path, KeptDamaged: res.KeptDamaged,
		Existed: res.Existed, Recovered: res.Recovered,
		PreviousSchema: res.PreviousSchema, PreviousCheckpoint: res.PreviousCheckpoint,
		Schema: res.Schema, Replayed: res.Replayed, CaughtUp: res.CaughtUp, Checkpoint: res.Checkpoint,
	}
	d, err := digestFile(ctx, res.Path, key)
	if err != nil {
		return err
	}
	out.Digest = digestID(d)
	if r.asJSON {
		return json.NewEncoder(env.stdout).Encode(out)
	}
	w := env.stdout
	switch {
	case res.Recovered:
		fmt.Fprintf(w, "%s: the old database was damaged and has been replaced\n", cmd)
	case !res.Existed:
		fmt.Fprintf(w, "%s: there was no database; it has been recovered from the stream\n", cmd)
	}
	fmt.Fprintf(w, "%s %s: %d events replayed, %d caught up after the swap; schema %d, checkpoint %d, digest %s\n",
		cmd, res.Path, res.Replayed, res.CaughtUp, res.Schema, res.Checkpoint, out.Digest)
	return nil
}

// digestFile opens the read model at path just long enough to digest it.
func digestFile(ctx context.Context, path string, key projections.Key) (projections.Digest, error) {
	db, err := projections.OpenExisting(path, key, nil)
	if err != nil {
		return projections.Digest{}, err
	}
	defer db.Close()
	return db.Digest(ctx)
}

// progress returns replay options that draw a progress bar on stderr when
// it is a terminal (nil options otherwise), and a function to finish it.
func progress(env *cliEnv, log *eventlog.Log, inst events.InstallationID) (*replay.Options, func()) {
	if !env.isTerminal {
		return nil, func() {}
	}
	var (
		mu  sync.Mutex
		bar *progressbar.ProgressBar
	)
	opts := &replay.Options{Progress: func(p replay.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if bar == nil {
			max := int64(-1)
			if p.To >= p.From && p.To > 0 {
				max = int64(p.To - p.From + 1)
			}
			bar = progressbar.NewOptions64(max,
				progressbar.OptionSetWriter(env.stderr),
				progressbar.OptionSetDescription(string(inst)+" "+p.Phase),
				progressbar.OptionShowCount(),
				progressbar.OptionShowIts(),
				progressbar.OptionSetItsString("events"),
				progressbar.OptionSetPredictTime(true),
				progressbar.OptionClearOnFinish(),
			)
		}
		_ = bar.Set(p.Applied)
	}}
	return opts, func() {
		mu.Lock()
		defer mu.Unlock()
		if bar != nil {
			_ = bar.Finish()
		}
	}
}
