package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
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
	if err := parseFlags(fs, args); err != nil {
		return projections.Key{}, err
	}
	if err := r.check(); err != nil {
		return projections.Key{}, err
	}
	return r.dbKey.key(env)
}

// open connects to the event log.
func (r *replayFlags) open(ctx context.Context, env *cliEnv) (*engine.Log, error) {
	return openLog(ctx, env, &r.conn, &r.keys)
}

// rebuildWith connects, runs one rebuilding operation with a progress bar
// and prints its result; key opens the database afterwards.
func (r *replayFlags) rebuildWith(ctx context.Context, env *cliEnv, cmd string, key projections.Key,
	op func(*engine.Log, events.InstallationID, *engine.ReplayOptions) (*engine.RebuildResult, error)) error {
	return replayWith(ctx, env, r, op, func(_ *engine.Log, res *engine.RebuildResult) error {
		return r.finish(ctx, env, cmd, res, key)
	})
}

// replayWith connects, runs op on the installation with a progress bar,
// and once the bar is done hands op's result to then, on the same log.
func replayWith[T any](ctx context.Context, env *cliEnv, r *replayFlags,
	op func(*engine.Log, events.InstallationID, *engine.ReplayOptions) (T, error), then func(*engine.Log, T) error) error {
	log, err := r.open(ctx, env)
	if err != nil {
		return err
	}
	defer log.Close()
	inst := events.InstallationID(r.inst)
	opts, done := progress(env, log, inst)
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
	PreviousSchema     int    `json:"previous_schema"`
	PreviousCheckpoint uint64 `json:"previous_checkpoint"`
	Schema             int    `json:"schema"`
	Replayed           int    `json:"replayed"`
	CaughtUp           int    `json:"caught_up"`
	Checkpoint         uint64 `json:"checkpoint"`
	Digest             string `json:"digest"`
}

// finish digests the database now at live and prints the result.
func (r *replayFlags) finish(ctx context.Context, env *cliEnv, cmd string, res *engine.RebuildResult, key projections.Key) error {
	out := replayResult{
		Command: cmd, Installation: string(res.Installation), DB: res.Path,
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
	db, err := engine.OpenExisting(path, key, nil)
	if err != nil {
		return projections.Digest{}, err
	}
	defer db.Close()
	return db.Digest(ctx)
}

// progress returns replay options that draw a progress bar on stderr when
// it is a terminal (nil options otherwise), and a function to finish it.
func progress(env *cliEnv, log *engine.Log, inst events.InstallationID) (*engine.ReplayOptions, func()) {
	if !env.isTerminal {
		return nil, func() {}
	}
	var (
		mu  sync.Mutex
		bar *progressbar.ProgressBar
	)
	opts := &engine.ReplayOptions{Progress: func(p engine.Progress) {
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

func runRebuild(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "rebuild", "--installation ID --db PATH [flags]",
		"Replays the installation's events from the stream into a fresh read model beside\n"+
			"the live one, checks it, fsyncs it and atomically renames it over the live one,\n"+
			"then applies what was appended meanwhile. The live database is never written:\n"+
			"a crash or Ctrl-C leaves it intact, or the new one complete. A missing database\n"+
			"is recovered from the stream; a damaged one is replaced. Use it after losing a\n"+
			"device database or to repair a drifted one (see replayer verify).")
	var r replayFlags
	r.register(fs)
	schema := fs.Int("schema", projections.LatestSchema, "schema version to build: the newest, or an older one for an older reader (a downgrade by replay)")
	key, err := r.parse(fs, args, env)
	if err != nil {
		return err
	}
	if *schema < 1 || *schema > projections.LatestSchema {
		return usageError{fmt.Sprintf("--schema must be between 1 and %d", projections.LatestSchema)}
	}
	return r.rebuildWith(ctx, env, "rebuild", key, func(log *engine.Log, inst events.InstallationID, opts *engine.ReplayOptions) (*engine.RebuildResult, error) {
		ro := &engine.RebuildOptions{SchemaVersion: *schema}
		if opts != nil {
			ro.ReplayOptions = *opts
		}
		return log.Rebuild(ctx, inst, r.db, key, ro)
	})
}

func runRekey(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "rekey", "--installation ID --db PATH <old key> <new key> [flags]",
		"Rebuilds the read model by replay under a new key (raw or passphrase), proves its\n"+
			"content equal to the old database's, and swaps it in atomically. Afterwards the\n"+
			"old key is refused and the new one opens the database. Write the new key file\n"+
			"before running it; keep the old one until the command has succeeded.")
	var r replayFlags
	r.register(fs)
	newKey := newDBKeyFlags(fs, "new-")
	oldK, err := r.parse(fs, args, env)
	if err != nil {
		return err
	}
	if !newKey.given(env) {
		return usageError{"the new key is required: --new-db-key-file, --new-db-passphrase-file or $" + envNewDBKey}
	}
	newK, err := newKey.key(env)
	if err != nil {
		return err
	}
	return r.rebuildWith(ctx, env, "rekey", newK, func(log *engine.Log, inst events.InstallationID, opts *engine.ReplayOptions) (*engine.RebuildResult, error) {
		return log.Rekey(ctx, inst, r.db, oldK, newK, opts)
	})
}

func runMigrate(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "migrate", "--installation ID --db PATH [flags]  |  --db PATH --in-place [flags]",
		fmt.Sprintf("Brings the read model to the newest schema (v%d). By default by replay: a fresh\n"+
			"database at the new schema, swapped in atomically; this works from any older\n"+
			"schema and from an unencrypted database (--plaintext with a --new-db-key-file).\n"+
			"With --in-place the database is upgraded step by step in place (one transaction\n"+
			"per version; no stream needed, no rekey).", projections.LatestSchema))
	var r replayFlags
	r.register(fs)
	newKey := newDBKeyFlags(fs, "new-")
	inPlace := fs.Bool("in-place", false, "upgrade in place with the schema's migrations instead of replaying")
	if err := parseFlags(fs, args); err != nil {
		return err
	}
	if r.db == "" {
		return usageError{"--db is required"}
	}
	key, err := r.dbKey.key(env)
	if err != nil {
		return err
	}
	if *inPlace {
		if newKey.onCommandLine() {
			return usageError{"--in-place keeps the key: drop the --new-* key or migrate by replay"}
		}
		if newKey.given(env) {
			fmt.Fprintf(env.stderr, "replayer: note: --in-place keeps the database's key; $%s / $%s are not used\n", envNewDBKey, envNewDBPassphrase)
		}
		from, to, err := engine.MigrateInPlace(ctx, r.db, key, nil)
		if err != nil {
			return err
		}
		d, err := digestFile(ctx, r.db, key)
		if err != nil {
			return err
		}
		if r.asJSON {
			return json.NewEncoder(env.stdout).Encode(map[string]any{
				"command": "migrate", "in_place": true, "db": r.db, "previous_schema": from, "schema": to, "digest": digestID(d)})
		}
		fmt.Fprintf(env.stdout, "migrate %s in place: schema %d -> %d, digest %s\n", r.db, from, to, digestID(d))
		return nil
	}
	if err := r.check(); err != nil {
		return err
	}
	var newK projections.Key
	if newKey.given(env) {
		if newK, err = newKey.key(env); err != nil {
			return err
		}
	}
	if key.IsPlaintext() && !newK.Valid() {
		return usageError{"an unencrypted database is migrated into an encrypted one: give --new-db-key-file or --new-db-passphrase-file"}
	}
	after := key
	if newK.Valid() {
		after = newK
	}
	return r.rebuildWith(ctx, env, "migrate", after, func(log *engine.Log, inst events.InstallationID, opts *engine.ReplayOptions) (*engine.RebuildResult, error) {
		return log.Migrate(ctx, inst, r.db, key, newK, opts)
	})
}

func runVerify(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "verify", "--installation ID --db PATH [flags]",
		"Replays the installation's events into a temporary database up to the live one's\n"+
			"checkpoint and compares both table by table through a logical digest. On drift\n"+
			"it names the first differing table and row and exits 3. With --mls it also\n"+
			"re-derives the installation's MLS history and checks every recorded epoch.\n"+
			"The live database is only read.")
	var r replayFlags
	r.register(fs)
	withMLS := fs.Bool("mls", false, "also verify the MLS history (epoch authenticators) of the installation")
	key, err := r.parse(fs, args, env)
	if err != nil {
		return err
	}
	verify := func(log *engine.Log, inst events.InstallationID, opts *engine.ReplayOptions) (*engine.VerifyResult, error) {
		return log.Verify(ctx, inst, r.db, key, opts)
	}
	return replayWith(ctx, env, &r, verify, func(log *engine.Log, res *engine.VerifyResult) error {
		out := map[string]any{"command": "verify", "installation": r.inst, "db": r.db, "schema": res.Schema,
			"checkpoint": res.Checkpoint, "replayed": res.Replayed, "digest": digestID(res.Digest), "verified": true}
		var rep *engine.MLSReport
		if *withMLS {
			var err error
			if rep, err = log.VerifyMLS(ctx, events.InstallationID(r.inst)); err != nil {
				return err
			}
			out["mls_rederived"], out["mls_own_commits"] = rep.Rederived, rep.Own
		}
		if r.asJSON {
			return json.NewEncoder(env.stdout).Encode(out)
		}
		fmt.Fprintf(env.stdout, "verified %s: %d events replayed up to checkpoint %d, digest %s equal\n",
			r.db, res.Replayed, res.Checkpoint, digestID(res.Digest))
		if rep != nil {
			fmt.Fprintf(env.stdout, "verified MLS history of %s: %d received transitions re-derived, %d own commits checked\n",
				r.inst, rep.Rederived, rep.Own)
		}
		return nil
	})
}

func runFollow(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "follow", "--db-dir DIR [--installation ID,...] [flags]",
		"Keeps read models current from the bus until interrupted: each resumes from its own\n"+
			"checkpoint, so a restart loses and repeats nothing. The read model of installation\n"+
			"ID is DIR/ID.db; without --installation every *.db in DIR is followed. One key\n"+
			"opens them all (--db-key-file ...), or give --db-keys-beside to read each key\n"+
			"from DIR/ID.key (the layout replayer demo writes).")
	var conn connFlags
	conn.register(fs, "")
	var keys keyFlags
	keys.register(fs)
	dir := fs.String("db-dir", "", "directory of the read models (required)")
	list := fs.String("installation", "", "comma-separated installation ids (default: every DIR/*.db)")
	beside := fs.Bool("db-keys-beside", false, "read each database's raw key from DIR/<installation>.key (ignores $"+envDBKey+" and $"+envDBPassphrase+")")
	dbKey := newDBKeyFlags(fs, "")
	verbose := fs.Bool("v", false, "print a line per applied batch")
	if err := parseFlags(fs, args); err != nil {
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
		return usageError{fmt.Sprintf("no read models to follow in %s (give --installation)", *dir)}
	}
	for _, id := range ids {
		if err := id.Validate(); err != nil {
			return usageError{fmt.Sprintf("installation %q: %v", id, err)}
		}
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

	ps := make([]engine.Projection, 0, len(ids))
	defer func() {
		for _, p := range ps {
			_ = p.DB.Close()
		}
	}()
	start := map[events.InstallationID]uint64{}
	for _, id := range ids {
		path := filepath.Join(*dir, string(id)+".db")
		key := shared
		if *beside {
			if key, err = readDBKeyFile(filepath.Join(*dir, string(id)+".key")); err != nil {
				return err
			}
		}
		if _, err := os.Stat(path); err != nil {
			return fmt.Errorf("read model of %s: %w (create it with replayer rebuild)", id, err)
		}
		db, err := engine.OpenExisting(path, key, nil)
		if err != nil {
			return fmt.Errorf("read model of %s: %w", id, err)
		}
		ps = append(ps, engine.Projection{Installation: id, DB: db})
		if start[id], err = db.Checkpoint(ctx); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "replayer: following %s from checkpoint %d\n", id, start[id])
	}
	var mu sync.Mutex
	applied := map[events.InstallationID]int{}
	last := map[events.InstallationID]uint64{}
	err = log.Project(ctx, ps, &engine.ProjectOptions{OnApply: func(id events.InstallationID, n int, cp uint64) {
		mu.Lock()
		applied[id] += n
		last[id] = cp
		mu.Unlock()
		if *verbose {
			fmt.Fprintf(env.stdout, "%s: applied %d events, checkpoint %d\n", id, n, cp)
		}
	}})
	mu.Lock()
	defer mu.Unlock()
	for _, id := range ids {
		cp, ok := last[id]
		if !ok {
			cp = start[id]
		}
		fmt.Fprintf(env.stderr, "replayer: %s: %d events applied, checkpoint %d\n", id, applied[id], cp)
	}
	if errors.Is(err, context.Canceled) && ctx.Err() != nil {
		fmt.Fprintln(env.stderr, "replayer: follow stopped; every read model is at its checkpoint and resumes from it")
	}
	return err
}
