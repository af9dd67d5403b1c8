package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

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

	ps := make([]replay.Projection, 0, len(ids))
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
		db, err := projections.OpenExisting(path, key, nil)
		if err != nil {
			return fmt.Errorf("read model of %s: %w", id, err)
		}
		ps = append(ps, replay.Projection{Installation: id, DB: db})
		if start[id], err = db.Checkpoint(ctx); err != nil {
			return err
		}
		fmt.Fprintf(env.stderr, "replayer: following %s from checkpoint %d\n", id, start[id])
	}
	var mu sync.Mutex
	applied := map[events.InstallationID]int{}
	last := map[events.InstallationID]uint64{}
	err = replay.Project(ctx, log, ps, &replay.ProjectOptions{OnApply: func(id events.InstallationID, n int, cp uint64) {
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
