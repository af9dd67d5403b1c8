package main

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// parseRetention parses --messages: "forever", "none", a Go duration
// ("720h") or a number of days ("30d").
func parseRetention(s string) (time.Duration, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "forever", "":
		return replay.KeepForever, nil
	case "none":
		return replay.KeepNone, nil
	}
	if d, ok := strings.CutSuffix(s, "d"); ok {
		n, err := strconv.Atoi(d)
		if err != nil || n < 1 {
			return 0, fmt.Errorf("%q: want a positive number of days", s)
		}
		return time.Duration(n) * 24 * time.Hour, nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("%q: want forever, none, a positive duration (720h) or days (30d)", s)
	}
	return d, nil
}

// parsePastEpochs parses --past-epochs: "all" (every epoch keeps its
// key), "none" or 0 (the current epoch only), or a count.
func parsePastEpochs(s string) (int, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "all", "":
		return replay.KeepAllEpochs, nil
	case "none", "0":
		return replay.KeepNoPastEpochs, nil
	}
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 {
		return 0, fmt.Errorf("%q: want all, none or a number of past epochs", s)
	}
	return n, nil
}

func runRetain(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "retain", "--installation ID --db PATH --messages AGE [--delivery AGE] [--past-epochs N] [--history AGE] [--compact] [flags]",
		"Applies a retention policy to an installation: the application messages of every\n"+
			"UTC day wholly older than --messages (and the acknowledged or expired deliveries\n"+
			"of every day older than --delivery) are deleted from the read model at --db, a\n"+
			"snapshot of it is made and checked (the history with the same rows deleted must\n"+
			"give the same digest), other snapshots are deleted, then the data keys of those\n"+
			"days are shredded from the key bucket: their events are unreadable from then\n"+
			"on. The installation is opened through the engine, at the schema the read model\n"+
			"has (nothing is migrated), which first records the state of each group whose\n"+
			"messages to delete a reload of the group still needs (group.state_recorded).\n"+
			"Interrupted, running it again finishes. --compact then deletes those events\n"+
			"from the stream (as the compact command). An age is forever (nothing is\n"+
			"shredded), none (each day is shredded an hour after it ended), a duration (720h)\n"+
			"or days (30d); a day is kept an hour past its age, for writers whose clocks lag.\n"+
			"Refused when this machine's clock is ahead of the NATS server's. --past-epochs N\n"+
			"destroys, for each group, the keys of the recorded states of epochs older than\n"+
			"its current one minus N (never of an epoch whose secrets the read model still\n"+
			"holds): all (the default), none, or a count.\n"+
			"--history AGE then deletes from the stream every event stored longer ago than\n"+
			"AGE that the snapshot covers, whatever its kind (implies --compact).\n"+
			"Rebuilds then start from the snapshot; --from-start fails naming the retention.")
	var r replayFlags
	r.register(fs)
	messages := fs.String("messages", "", "how long application messages are kept: forever, none, a duration (720h) or days (30d) (required unless --past-epochs or --history is given)")
	pastEpochs := fs.String("past-epochs", "all", "how many past epochs of each group keep the keys of their recorded states: all, none, or a count")
	delivery := fs.String("delivery", "forever", "how long delivery queue events are kept (pending deliveries stay in the read model): forever, none, 720h, 30d")
	compact := fs.Bool("compact", false, "then delete the shredded events the new snapshot covers from the stream")
	history := fs.String("history", "forever", "then delete every covered event stored longer ago than this: forever, none, 720h, 90d (implies --compact)")
	key, err := r.parse(fs, args, env)
	if err != nil {
		return err
	}
	epochs, err := parsePastEpochs(*pastEpochs)
	if err != nil {
		return usageError{"--past-epochs " + err.Error()}
	}
	hist, err := parseRetention(*history)
	if err != nil {
		return usageError{"--history " + err.Error()}
	}
	if *messages == "" && epochs == replay.KeepAllEpochs && hist == replay.KeepForever {
		return usageError{"--messages is required (forever, none, 720h, 30d), unless --past-epochs or --history is given"}
	}
	age, err := parseRetention(*messages)
	if err != nil {
		return usageError{"--messages " + err.Error()}
	}
	delAge, err := parseRetention(*delivery)
	if err != nil {
		return usageError{"--delivery " + err.Error()}
	}
	log, err := openLogWritable(ctx, env, &r.conn, &r.keys)
	if err != nil {
		return err
	}
	defer log.Close()
	inst := events.InstallationID(r.inst)
	opts, done := progress(ctx, env, log, "retain", inst)
	out, err := retainThroughEngine(ctx, log, inst, r.db, key,
		replay.RetentionPolicy{Messages: age, Delivery: delAge, PastEpochs: epochs, History: hist}, *compact, opts)
	done(err == nil)
	if err != nil {
		return err
	}
	res := out.RetainResult
	var comp *compactOut
	if out.Compacted != nil {
		comp = newCompactOut(out.Compacted)
	}
	// Copies a rebuild kept beside the read model still hold what was
	// just deleted, under the same key; they may hold what nothing else
	// does, so they are named, not deleted.
	kept, err := projections.KeptCopies(r.db)
	if err != nil {
		return err
	}
	for _, k := range kept {
		fmt.Fprintf(env.stderr, "replayer: warning: %s, a copy a rebuild kept, still holds the history this retention deleted, under the same key: delete it when it is no longer needed\n", k)
	}
	if res.GroupsKept > 0 {
		fmt.Fprintf(env.stderr, "replayer: warning: %d groups keep messages older than the cutoff that were recorded since the group's state (a reload of the group needs them to refuse a replayed message) and whose state could not be recorded: they go once the group's state moves past them\n", res.GroupsKept)
	}
	if res.UnknownKeys > 0 {
		fmt.Fprintf(env.stderr, "replayer: warning: %d data keys of %s match no group or queue that %s holds, on any day: kept, and the events they seal still open\n", res.UnknownKeys, r.inst, r.db)
	}
	snapAt := uint64(0)
	if res.Snapshot != nil {
		snapAt = res.Snapshot.Checkpoint
	}
	if r.asJSON {
		out := map[string]any{"command": "retain", "installation": r.inst, "db": r.db, "messages": *messages, "delivery": *delivery,
			"periods_shredded": len(res.Periods), "keys_shredded": res.KeysShredded, "messages_deleted": res.RowsDeleted,
			"deliveries_deleted": res.DeliveriesDeleted, "snapshot": snapAt, "snapshots_deleted": res.SnapshotsDeleted,
			"past_epochs": *pastEpochs, "epoch_chains_advanced": res.Epochs, "history": *history}
		if !res.Cutoff.IsZero() {
			out["cutoff"] = res.Cutoff.Format(time.DateOnly)
		}
		if !res.DeliveryCutoff.IsZero() {
			out["delivery_cutoff"] = res.DeliveryCutoff.Format(time.DateOnly)
		}
		if comp != nil {
			out["compact"] = comp
		}
		if len(kept) > 0 {
			out["kept_copies"] = kept
		}
		if res.UnknownKeys > 0 {
			out["keys_of_unknown_day"] = res.UnknownKeys
		}
		if res.GroupsKept > 0 {
			out["groups_keeping_messages"] = res.GroupsKept
		}
		return json.NewEncoder(env.stdout).Encode(out)
	}
	switch {
	case res.Cutoff.IsZero() && res.DeliveryCutoff.IsZero() && epochs == replay.KeepAllEpochs && hist == replay.KeepForever:
		fmt.Fprintf(env.stdout, "retain %s: history is kept forever; nothing to do\n", r.inst)
	case len(res.Periods) == 0 && res.RowsDeleted+res.DeliveriesDeleted == 0 && len(res.Epochs) == 0 && res.Snapshot == nil:
		fmt.Fprintf(env.stdout, "retain %s: nothing left to shred\n", r.inst)
	default:
		fmt.Fprintf(env.stdout, "retain %s: %d messages and %d deliveries deleted from %s, %d days of groups and queues shredded (%d keys destroyed)",
			r.inst, res.RowsDeleted, res.DeliveriesDeleted, r.db, len(res.Periods), res.KeysShredded)
		for _, c := range res.Epochs {
			fmt.Fprintf(env.stdout, "; group %s: epochs %d-%d shredded", c.Group, c.From, c.Keep-1)
		}
		if snapAt > 0 {
			fmt.Fprintf(env.stdout, "; snapshot at %d", snapAt)
		}
		if len(res.SnapshotsDeleted) > 0 {
			fmt.Fprintf(env.stdout, "; deleted other snapshots at %v", res.SnapshotsDeleted)
		}
		fmt.Fprintln(env.stdout)
	}
	if comp != nil {
		printCompact(env, r.inst, comp)
	}
	return nil
}

// retainThroughEngine applies p to inst's read model at path through the
// engine (engine.Installation.Retain), which records the state of each
// group whose messages to delete a reload of the group still needs
// (group.state_recorded) and so deletes them too; replay.RetainFile,
// which cannot record a state, keeps them. The installation is opened at
// the schema the file has (NoMigrate): an operator's retain must not
// migrate the read model under a service that may not know the newer
// schema. The engine takes the file's writer lock before it opens it:
// a read model a service holds is refused untouched (a handle opened
// first, to learn its schema, would checkpoint the holder's WAL on close).
func retainThroughEngine(ctx context.Context, l *eventlog.Log, inst events.InstallationID, path string, key projections.Key,
	p replay.RetentionPolicy, compact bool, check *replay.Options) (*engine.Retained, error) {
	if err := projections.MustExist(path); err != nil { // OpenInstallation would create it
		return nil, err
	}
	// An erased installation is refused with retain's hint before the
	// open, whose catch-up fails on it too.
	if err := replay.RefuseErased(ctx, l, inst, path); err != nil {
		return nil, err
	}
	io := &engine.InstallationOptions{DB: check.DB}
	io.DB.NoMigrate = true
	in, err := engine.OpenInstallation(ctx, l, inst, path, key, io)
	if err != nil {
		return nil, err
	}
	out, err := in.Retain(ctx, p, &engine.RetainOptions{Compact: compact, Check: check})
	if cerr := in.Close(); err == nil {
		err = cerr
	}
	return out, err
}
