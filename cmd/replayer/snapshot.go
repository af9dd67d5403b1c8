package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/replay"
)

func runSnapshot(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "snapshot", "--installation ID --db PATH [flags]  |  --installation ID --list [flags]",
		"Takes a snapshot of the read model at its checkpoint (every row of every table),\n"+
			"checks it (a fresh read model built from the installation's previous snapshot, or\n"+
			"the start, plus the events up to the checkpoint must have the same digest), seals\n"+
			"it under the current root key and stores it in the object store <stream>_SNAPSHOTS.\n"+
			"One that does not check out is never stored (exit 3, naming both digests). Then\n"+
			"only the newest --keep snapshots of the installation are kept. rebuild, rekey,\n"+
			"migrate and verify start from the newest snapshot and replay the events after it\n"+
			"(--from-start on them replays the whole history). The read model is only read.\n"+
			"--list prints the installation's stored snapshots instead.")
	var r replayFlags
	r.register(fs)
	keep := fs.Int("keep", replay.DefaultSnapshotKeep, "how many of the installation's snapshots to keep (the newest)")
	fromStart := fs.Bool("from-start", false, "check against the whole history instead of the previous snapshot plus the events after it")
	list := fs.Bool("list", false, "list the installation's stored snapshots (newest first) and exit")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	if *list {
		if err := r.checkInstallation(); err != nil {
			return err
		}
		if bad := snapshotOnlyFlags(fs); len(bad) > 0 {
			return usageError{fmt.Sprintf("--list lists every stored snapshot of the installation: %s take or select no snapshot there (leave them out)", strings.Join(bad, ", "))}
		}
		return listSnapshots(ctx, env, &r)
	}
	if err := r.check(); err != nil {
		return err
	}
	if *keep < 1 {
		return usageError{fmt.Sprintf("--keep %d: keep at least 1", *keep)}
	}
	key, err := r.dbKey.key(env)
	if err != nil {
		return err
	}
	log, err := openLogWritable(ctx, env, &r.conn, &r.keys)
	if err != nil {
		return err
	}
	defer log.Close()
	inst := events.InstallationID(r.inst)
	opts, done := progress(ctx, env, log, "snapshot", inst)
	opts.FromStart = *fromStart
	res, err := replay.Snapshot(ctx, log, inst, r.db, key, &replay.SnapshotOptions{Options: *opts, Keep: *keep})
	done(err == nil)
	if err != nil {
		return err
	}
	if r.asJSON {
		return json.NewEncoder(env.stdout).Encode(map[string]any{
			"command": "snapshot", "installation": r.inst, "db": r.db, "checkpoint": res.Checkpoint, "object": res.Name,
			"bytes": res.Size, "rows": res.Rows, "schema": res.Schema, "digest": digestID(res.Digest),
			"base": res.Base, "checked": res.Checked, "pruned": res.Pruned, "bucket": log.SnapshotBucket(), "unchanged": res.Unchanged})
	}
	if res.Unchanged {
		fmt.Fprintf(env.stdout, "snapshot of %s at checkpoint %d: unchanged since the one stored there (%s), which it equals (digest %s); nothing new stored\n",
			r.db, res.Checkpoint, res.Name, digestID(res.Digest))
		return nil
	}
	from := "the start"
	if res.Base > 0 {
		from = fmt.Sprintf("the snapshot at %d", res.Base)
	}
	fmt.Fprintf(env.stdout, "snapshot of %s at checkpoint %d: %d rows, %d bytes sealed, digest %s; checked from %s plus %d events; stored in %s",
		r.db, res.Checkpoint, res.Rows, res.Size, digestID(res.Digest), from, res.Checked, log.SnapshotBucket())
	if len(res.Pruned) > 0 {
		fmt.Fprintf(env.stdout, "; deleted older snapshots at %v", res.Pruned)
	}
	fmt.Fprintln(env.stdout)
	return nil
}

// snapshotOnlyFlags returns the flags set on fs (as --name) that only
// taking a snapshot uses: the read model and its key, --keep and
// --from-start. --list refuses them rather than ignore them: a --db would
// not narrow the listing to that read model's snapshots, nor a --keep
// prune anything.
func snapshotOnlyFlags(fs *flag.FlagSet) []string {
	only := map[string]bool{"db": true, "keep": true, "from-start": true}
	scratch := flag.NewFlagSet("", flag.ContinueOnError)
	newDBKeyFlags(scratch, "")
	scratch.VisitAll(func(f *flag.Flag) { only[f.Name] = true })
	var set []string
	fs.Visit(func(f *flag.Flag) {
		if only[f.Name] {
			set = append(set, "--"+f.Name)
		}
	})
	return set
}

// listSnapshots prints inst's stored snapshots.
func listSnapshots(ctx context.Context, env *cliEnv, r *replayFlags) error {
	log, err := r.open(ctx, env)
	if err != nil {
		return err
	}
	defer log.Close()
	refs, err := log.Snapshots(ctx, events.InstallationID(r.inst))
	if err != nil {
		return err
	}
	type item struct {
		Checkpoint uint64    `json:"checkpoint"`
		Object     string    `json:"object"`
		Bytes      uint64    `json:"bytes"`
		Stored     time.Time `json:"stored"`
		// NotASnapshot says why the object is not a snapshot of the
		// installation this keyring opens (put under its names by
		// whoever may write to the bucket, say): every command passes
		// over it. Empty for a snapshot.
		NotASnapshot string `json:"not_a_snapshot,omitempty"`
	}
	inst := events.InstallationID(r.inst)
	out := make([]item, 0, len(refs))
	for _, ref := range refs {
		it := item{ref.Checkpoint, ref.Name, ref.Size, ref.Modified.UTC(), ""}
		if err := replay.CheckSnapshotObject(ctx, log, inst, ref); errors.Is(err, replay.ErrNotASnapshot) {
			it.NotASnapshot = strings.TrimPrefix(err.Error(), replay.ErrNotASnapshot.Error()+": ")
		} else if err != nil {
			return fmt.Errorf("snapshot object %s in %s: %w", ref.Name, log.SnapshotBucket(), err)
		}
		out = append(out, it)
	}
	if r.asJSON {
		return json.NewEncoder(env.stdout).Encode(map[string]any{"command": "snapshot", "installation": r.inst, "bucket": log.SnapshotBucket(), "snapshots": out})
	}
	if len(out) == 0 {
		fmt.Fprintf(env.stdout, "no snapshots of %s in %s\n", termSafe(r.inst), log.SnapshotBucket())
		return nil
	}
	for _, it := range out {
		fmt.Fprintf(env.stdout, "checkpoint %d: %d bytes, stored %s (%s)", it.Checkpoint, it.Bytes, it.Stored.Format(time.RFC3339), it.Object)
		if it.NotASnapshot != "" {
			fmt.Fprintf(env.stdout, ": NOT A SNAPSHOT this keyring opens, passed over by every command (%s)", termSafe(it.NotASnapshot))
		}
		fmt.Fprintln(env.stdout)
	}
	return nil
}
