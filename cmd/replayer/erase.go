package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/user"
	"strings"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// eraseConfirm asks the operator to type the installation id, and reports
// whether they did. It is a variable for tests.
var eraseConfirm = func(env *cliEnv, inst string) bool {
	fmt.Fprintf(env.stderr, "replayer: erase installation %s for good (its data keys are shredded, its events purged)? type its id to confirm: ", inst)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == inst
}

// stdinIsTerminal reports whether standard input is a character device
// other than /dev/null, as main's stderrIsTerminal does: someone who may
// answer the confirmation. It is a variable for tests.
var stdinIsTerminal = func() bool {
	fi, err := os.Stdin.Stat()
	if err != nil || fi.Mode()&os.ModeCharDevice == 0 {
		return false
	}
	// /dev/null is a character device too, but nobody can answer there:
	// it is refused like a pipe (exit 2), not asked and read as "no".
	null, err := os.Stat(os.DevNull)
	return err != nil || !os.SameFile(fi, null)
}

func runErase(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "erase", "--installation ID [--yes] [--db PATH] [flags]",
		"Erases an installation for good: writes a sealed tombstone (it existed and was\n"+
			"erased), shreds its data keys from the key bucket, then purges its events from\n"+
			"the stream, in that order. Interrupted, running it again finishes the erase.\n"+
			"Rebuilds of it then fail with \"erased\"; other installations are not touched.\n"+
			"With --db it also deletes the installation's read model, after opening it with\n"+
			"its key (--db-key-file, ...) to check whose it is. Without --yes it asks\n"+
			"you to type the installation id, and refuses when stdin is not a terminal.")
	var conn connFlags
	conn.register(fs, "") // no default: an erase names its store
	var keys keyFlags
	keys.register(fs)
	inst := fs.String("installation", "", "installation id to erase (required)")
	yes := fs.Bool("yes", false, "erase without asking (needed when stdin is not a terminal)")
	db := fs.String("db", "", "the installation's read model, deleted too (opened with its key first, to check it is this installation's)")
	dbKey := newDBKeyFlags(fs, "")
	by := fs.String("by", "", "who asks, recorded in the tombstone (default: $USER, else the user running the command)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	id := events.InstallationID(*inst)
	if *inst == "" {
		return usageError{"--installation is required"}
	}
	if err := id.Validate(); err != nil {
		return usageError{fmt.Sprintf("--installation: %v", err)}
	}
	if !*yes {
		if !stdinIsTerminal() {
			return usageError{fmt.Sprintf("erase of installation %s needs --yes when stdin is not a terminal: it cannot be undone", id)}
		}
		if !eraseConfirm(env, *inst) {
			return fmt.Errorf("erase of installation %s not confirmed; nothing was changed", id)
		}
	}
	var key projections.Key
	existed := false
	if *db != "" {
		var err error
		if key, err = dbKey.key(env); err != nil {
			return err
		}
		_, err = os.Lstat(*db)
		existed = err == nil
	} else if dbKey.onCommandLine() {
		return usageError{"a read-model key is for --db: give the read model too"}
	}
	who := *by
	if who == "" {
		who = env.getenv("USER")
	}
	if who == "" {
		// A service manager, cron or a container often sets no $USER:
		// the tombstone then named nobody (until 2026-12-07).
		if u, err := user.Current(); err == nil {
			who = u.Username
		}
	}
	cfg, err := conn.config(env)
	if err != nil {
		return err
	}
	ring, err := keys.keyring(env)
	if err != nil {
		return err
	}
	cfg.NoCreate = true                      // a mistyped --stream or --data is refused, not created
	log, err := openEventLog(ctx, cfg, ring) // writable: erase writes and purges
	if err != nil {
		return err
	}
	defer log.Close()
	warnIfNotActive(ctx, env, log)
	res, err := engine.Erase(ctx, log, id, &engine.EraseOptions{By: who, ReadModel: *db, ReadModelKey: key})
	if err != nil {
		return err
	}
	if *asJSON {
		return json.NewEncoder(env.stdout).Encode(map[string]any{"command": "erase", "installation": *inst,
			"erased_at": res.Tombstone.ErasedAt.Format(time.RFC3339Nano), "by": res.Tombstone.By, "tombstone_seq": res.TombstoneSeq,
			"resumed": res.Resumed, "keys_purged": res.KeysPurged, "events_purged": res.EventsPurged, "db_removed": existed})
	}
	verb := "erased"
	if res.Resumed {
		verb = "finished erasing"
	}
	fmt.Fprintf(env.stdout, "%s installation %s (tombstone at seq %d, erased at %s): %d data keys shredded, %d events purged\n",
		verb, id, res.TombstoneSeq, res.Tombstone.ErasedAt.Format(time.RFC3339), res.KeysPurged, res.EventsPurged)
	switch {
	case existed:
		fmt.Fprintf(env.stdout, "removed read model %s\n", *db)
	case *db != "":
		fmt.Fprintf(env.stdout, "no read model at %s: nothing removed there\n", *db)
	}
	return nil
}
