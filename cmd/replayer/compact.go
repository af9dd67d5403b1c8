package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/replay"
)

// compactOut is what compact reports.
type compactOut struct {
	Through    uint64 `json:"through"`
	Scanned    int    `json:"scanned"`
	Deleted    int    `json:"deleted"`
	RootSealed int    `json:"root_sealed,omitempty"`
}

// newCompactOut is what compact reports of c.
func newCompactOut(c *eventlog.Compacted) *compactOut {
	return &compactOut{Through: c.Through, Scanned: c.Scanned, Deleted: c.Deleted, RootSealed: c.RootSealed}
}

func printCompact(env *cliEnv, inst string, c *compactOut) {
	fmt.Fprintf(env.stdout, "compact %s through seq %d: %d events deleted (shredded periods, or older than --history) of %d looked at\n", inst, c.Through, c.Deleted, c.Scanned)
	if c.RootSealed > 0 {
		// Retention's promise does not hold for them: say so.
		fmt.Fprintf(env.stdout, "compact %s: %d events kept are sealed under a root key (written before data keys, or by a writer built before them): no shredding reaches them; stop such writers, and re-seal (replayer reseal) to retire them\n", inst, c.RootSealed)
	}
}

func runCompact(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "compact", "--installation ID [flags]",
		"Deletes from the stream the installation's events whose data keys retention\n"+
			"shredded (replayer retain) and that its newest snapshot covers (at or below its\n"+
			"checkpoint), and with --history AGE every covered event the stream stored\n"+
			"longer ago than AGE (none: all it covers); nothing else. A compaction mark is\n"+
			"written first: from then on a replay from the start (--from-start, or without\n"+
			"a snapshot) fails with \"compacted\" instead of building less. Interrupted,\n"+
			"running it again finishes.")
	// The stream alone: no --db nor read-model key, which it would not read.
	var r replayFlags
	r.registerStream(fs)
	history := fs.String("history", "forever", "also delete covered events stored longer ago than this: forever (none), none (all covered), 720h, 90d")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	hist, err := parseRetention(*history)
	if err != nil {
		return usageError{"--history " + err.Error()}
	}
	if err := r.checkInstallation(); err != nil {
		return err
	}
	log, err := openLogWritable(ctx, env, &r.conn, &r.keys)
	if err != nil {
		return err
	}
	defer log.Close()
	c, err := replay.Compact(ctx, log, events.InstallationID(r.inst), &replay.CompactOptions{History: hist})
	if err != nil {
		return err
	}
	out := newCompactOut(c)
	if r.asJSON {
		return json.NewEncoder(env.stdout).Encode(map[string]any{"command": "compact", "installation": r.inst, "compact": out})
	}
	printCompact(env, r.inst, out)
	return nil
}
