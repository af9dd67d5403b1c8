package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/replay"
)

func runVerify(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "verify", "--installation ID --db PATH [flags]",
		"Replays the installation's events into a temporary database up to the live one's\n"+
			"checkpoint and compares both table by table through a logical digest. On drift\n"+
			"it names the first differing table and row and exits 3. With --mls it also\n"+
			"re-derives the installation's MLS history and checks every recorded epoch.\n"+
			"The live database is only read.")
	var r replayFlags
	r.register(fs)
	fromStart := fs.Bool("from-start", false, fromStartHelp)
	withMLS := fs.Bool("mls", false, "also verify the MLS history (epoch authenticators) of the installation")
	key, err := r.parse(fs, args, env)
	if err != nil {
		return err
	}
	verify := func(log *eventlog.Log, inst events.InstallationID, opts *replay.Options) (*replay.VerifyResult, error) {
		opts.FromStart = *fromStart
		return replay.Verify(ctx, log, inst, r.db, key, opts)
	}
	return replayWith(ctx, env, &r, verify, func(log *eventlog.Log, res *replay.VerifyResult) error {
		out := map[string]any{"command": "verify", "installation": r.inst, "db": r.db, "schema": res.Schema,
			"checkpoint": res.Checkpoint, "replayed": res.Replayed, "from_snapshot": res.FromSnapshot, "digest": digestID(res.Digest), "verified": true}
		var rep *replay.MLSReport
		if *withMLS {
			var err error
			if rep, err = replay.VerifyMLS(ctx, log, events.InstallationID(r.inst)); err != nil {
				return err
			}
			out["mls_rederived"], out["mls_own_commits"] = rep.Rederived, rep.Own
		}
		if r.asJSON {
			return json.NewEncoder(env.stdout).Encode(out)
		}
		from := ""
		if res.FromSnapshot > 0 {
			from = fmt.Sprintf(" after the snapshot at %d", res.FromSnapshot)
		}
		fmt.Fprintf(env.stdout, "verified %s: %d events replayed%s up to checkpoint %d, digest %s equal\n",
			r.db, res.Replayed, from, res.Checkpoint, digestID(res.Digest))
		if rep != nil {
			fmt.Fprintf(env.stdout, "verified MLS history of %s: %d received transitions re-derived, %d own commits checked\n",
				r.inst, rep.Rederived, rep.Own)
		}
		return nil
	})
}
