package main

import (
	"context"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/replay"
)

func runRekey(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "rekey", "--installation ID --db PATH --db-key-file OLD --new-db-key-file NEW [flags]",
		"Rebuilds the read model by replay under a new key (raw or passphrase), proves its\n"+
			"content equal to the old database's, and swaps it in atomically. Afterwards the\n"+
			"old key is refused and the new one opens the database. Write the new key file\n"+
			"before running it; keep the old one until the command has succeeded.")
	var r replayFlags
	r.register(fs)
	fromStart := fs.Bool("from-start", false, fromStartHelp)
	r.registerRebuilding(fs)
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
	return r.rebuildWith(ctx, env, "rekey", newK, func(log *eventlog.Log, inst events.InstallationID, opts *replay.Options) (*replay.RebuildResult, error) {
		opts.FromStart = *fromStart
		return replay.Rekey(ctx, log, inst, r.db, oldK, newK, opts)
	})
}
