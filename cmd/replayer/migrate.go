package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

func runMigrate(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "migrate", "--installation ID --db PATH [flags]  |  --db PATH --in-place [flags]",
		fmt.Sprintf("Brings the read model to the newest schema (v%d). By default by replay: a fresh\n"+
			"database at the new schema, swapped in atomically; this works from any older\n"+
			"schema and from an unencrypted database (--plaintext with a --new-db-key-file).\n"+
			"With --in-place the database is upgraded step by step in place (one transaction\n"+
			"per version; no stream needed, no rekey).", projections.LatestSchema))
	var r replayFlags
	r.register(fs)
	fromStart := fs.Bool("from-start", false, fromStartHelp)
	r.registerRebuilding(fs)
	newKey := newDBKeyFlags(fs, "new-")
	inPlace := fs.Bool("in-place", false, "upgrade in place with the schema's migrations instead of replaying")
	if err := parseFlags(env, fs, args); err != nil {
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
		from, to, err := projections.MigrateInPlace(ctx, r.db, key, nil)
		if err != nil {
			return err
		}
		if from < 3 && to >= 3 {
			// Not an error: the file held nothing more. But a file built
			// by rebuild --schema 1 or 2 from a newer history now differs
			// from a fresh build, and verify says so: say it first.
			fmt.Fprintf(env.stderr, "replayer: note: schema %d records no committer of its epochs (schema 3 does): in place they stay unknown; "+
				"if the stream records them (events written by a newer replayer), migrate by replay instead to have them\n", from)
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
	return r.rebuildWith(ctx, env, "migrate", after, func(log *eventlog.Log, inst events.InstallationID, opts *replay.Options) (*replay.RebuildResult, error) {
		opts.FromStart = *fromStart
		return replay.Migrate(ctx, log, inst, r.db, key, newK, opts)
	})
}
