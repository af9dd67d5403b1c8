package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/replay"
)

// compactOut is what compact reports.
type compactOut struct {
	Through uint64 `json:"through"`
	Scanned int    `json:"scanned"`
	Deleted int    `json:"deleted"`
}

func printCompact(env *cliEnv, inst string, c *compactOut) {
	fmt.Fprintf(env.stdout, "compact %s through seq %d: %d events of shredded periods deleted of %d looked at\n", inst, c.Through, c.Deleted, c.Scanned)
}

func runCompact(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "compact", "--installation ID [flags]",
		"Deletes from the stream the installation's events whose data keys retention\n"+
			"shredded (replayer retain) and that its newest snapshot covers (at or below its\n"+
			"checkpoint); nothing else. A compaction mark is written first: from then on a\n"+
			"replay from the start (--from-start, or without a snapshot) fails with\n"+
			"\"compacted\" instead of building less. Interrupted, running it again finishes.")
	var r replayFlags
	r.register(fs)
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if r.db == "" {
		r.db = "-" // not used
	}
	if err := r.check(); err != nil {
		return err
	}
	log, err := openLogWritable(ctx, env, &r.conn, &r.keys)
	if err != nil {
		return err
	}
	defer log.Close()
	c, err := replay.Compact(ctx, log, events.InstallationID(r.inst), nil)
	if err != nil {
		return err
	}
	out := &compactOut{Through: c.Through, Scanned: c.Scanned, Deleted: c.Deleted}
	if r.asJSON {
		return json.NewEncoder(env.stdout).Encode(map[string]any{"command": "compact", "installation": r.inst, "compact": out})
	}
	printCompact(env, r.inst, out)
	return nil
}
