package main

import (
	"context"
	"encoding/json"
	"fmt"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/replay"
)

// inspectLine is one JSON line of inspect's output.
type inspectLine struct {
	Seq     uint64          `json:"seq"`
	Subject string          `json:"subject"`
	Event   json.RawMessage `json:"event"`
}

func runInspect(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "inspect", "--installation ID [flags]",
		"Prints an installation's events in stream order as JSON lines, each opened and\n"+
			"checked (a tampered, moved or out-of-order event stops the listing with exit code 3).\n"+
			"Secret fields (private keys, group state, message plaintext) are redacted unless\n"+
			"--reveal-secrets is given.")
	var conn connFlags
	conn.register(fs, ".epochlog/demo")
	var keys keyFlags
	keys.register(fs)
	inst := fs.String("installation", "", "installation id (required)")
	from := fs.Uint64("from", 0, "first stream sequence to print")
	follow := fs.Bool("follow", false, "keep printing new events until interrupted")
	reveal := fs.Bool("reveal-secrets", false, "print secret fields (base64) instead of redacting them")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	id := events.InstallationID(*inst)
	if err := id.Validate(); err != nil {
		return usageError{fmt.Sprintf("--installation: %v", err)}
	}
	cfg, err := conn.config(env)
	if err != nil {
		return err
	}
	ring, err := keys.keyring(env)
	if err != nil {
		return err
	}
	if *reveal {
		fmt.Fprintln(env.stderr, "replayer: warning: --reveal-secrets prints private keys and message plaintext")
	}
	cfg.ReadOnly = true // inspect only reads
	log, err := openEventLog(ctx, cfg, ring)
	if err != nil {
		return err
	}
	defer log.Close()
	warnIfNotActive(ctx, env, log)

	enc := json.NewEncoder(env.stdout)
	print := func(r eventlog.Record) error {
		var body []byte
		var err error
		if *reveal {
			body, err = events.MarshalJSONReveal(r.Event)
		} else {
			body, err = json.Marshal(r.Event)
		}
		if err != nil {
			return fmt.Errorf("encoding event at stream sequence %d: %w", r.Seq, err)
		}
		return enc.Encode(inspectLine{Seq: r.Seq, Subject: r.Subject, Event: body})
	}
	if !*follow {
		// An id the stream knows nothing of (a typo) printed nothing and
		// exited 0, as an installation without events would.
		last, lerr := log.LastSeq(ctx, id)
		if lerr != nil {
			return lerr
		}
		if last == 0 {
			return fmt.Errorf("%w: stream %s holds no event of installation %s (check the id, and --data / --nats)", replay.ErrNoHistory, log.Stream(), id)
		}
		// A listing that cannot print anything is refused as the id the
		// stream does not know is, rather than print nothing and exit 0.
		// --follow waits there for new events.
		if *from > last {
			return fmt.Errorf("--from %d is past the last event of installation %s on stream %s, at stream sequence %d: nothing to list (inspect --from %d or lower, or --follow to wait for new events)",
				*from, id, log.Stream(), last, last)
		}
	}
	// A listing from where a compaction deleted events is refused as a
	// replay from the start is: the events left link to deleted ones,
	// which the read reported as missing (exit 3, as for a stream that
	// lost events).
	if through, err := log.CompactedThrough(ctx, id); err != nil {
		return err
	} else if through > 0 && *from <= through {
		return fmt.Errorf("%w: %s's events up to stream sequence %d were deleted by a compaction (replayer retain, compact); inspect --from %d lists what follows",
			eventlog.ErrCompacted, id, through, through+1)
	}
	if *follow {
		err = log.Follow(ctx, id, *from, print)
	} else {
		err = log.Read(ctx, id, *from, print)
	}
	// Only an event that does not check out is a verification failure
	// (exit 3); a lost connection or a failed write is exit 1, and an
	// interruption exit 130 (report tells them apart).
	if err != nil && ctx.Err() == nil && replay.IsVerificationFailure(err) {
		return verifyError{err}
	}
	return err
}
