package main

import (
	"context"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

func runRebuild(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "rebuild", "--installation ID --db PATH [flags]",
		"Replays the installation's events from the stream into a fresh read model beside\n"+
			"the live one, checks it, fsyncs it and atomically renames it over the live one,\n"+
			"then applies what was appended meanwhile. The live database is never written:\n"+
			"a crash or Ctrl-C leaves it intact, or the new one complete. A missing database\n"+
			"is recovered from the stream; a damaged one is replaced and kept beside it as\n"+
			"<db>.damaged-<time>. It refuses (exit 3, the live database untouched) when the\n"+
			"stream holds less than the live database (--force swaps in the stream's history\n"+
			"anyway), and always when the database is another installation's or the stream\n"+
			"holds no history of the installation. Every MLS transition is re-derived as it\n"+
			"replays (--no-mls-check skips that). Use it after losing a device database or to\n"+
			"repair a drifted one (see replayer verify).")
	var r replayFlags
	r.register(fs)
	fromStart := fs.Bool("from-start", false, fromStartHelp)
	r.registerRebuilding(fs)
	force := fs.Bool("force", false, "swap in the rebuilt database even when it holds less than the live one: the events only the live database holds are dropped")
	schema := fs.Int("schema", projections.LatestSchema, "schema version to build: the newest, or an older one for an older reader (a downgrade by replay)")
	key, err := r.parse(fs, args, env)
	if err != nil {
		return err
	}
	if *schema < 1 || *schema > projections.LatestSchema {
		return usageError{fmt.Sprintf("--schema must be between 1 and %d", projections.LatestSchema)}
	}
	return r.rebuildWith(ctx, env, "rebuild", key, func(log *eventlog.Log, inst events.InstallationID, opts *replay.Options) (*replay.RebuildResult, error) {
		opts.FromStart = *fromStart
		ro := &replay.RebuildOptions{SchemaVersion: *schema, Force: *force}
		if opts != nil {
			ro.Options = *opts
		}
		return replay.Rebuild(ctx, log, inst, r.db, key, ro)
	})
}
