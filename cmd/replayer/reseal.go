package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// instList is a repeatable --installation flag.
type instList []events.InstallationID

func (l *instList) String() string { return fmt.Sprint([]events.InstallationID(*l)) }

func (l *instList) Set(s string) error {
	id := events.InstallationID(s)
	if err := id.Validate(); err != nil {
		return err
	}
	*l = append(*l, id)
	return nil
}

// resealConfirm asks the operator to type "yes". A variable for tests.
var resealConfirm = func(env *cliEnv, what string) bool {
	fmt.Fprintf(env.stderr, "replayer: %s? type yes to confirm: ", what)
	line, err := bufio.NewReader(os.Stdin).ReadString('\n')
	return err == nil && strings.TrimSpace(line) == "yes"
}

func runReseal(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "reseal", "(--rewrap | --to NAME [--switch] | --rollback [--to NAME] | --finalize) --installation ID... [flags]",
		"Retires a leaked or old root key (docs/operations.md, \"Re-seal\"). --stream names the\n"+
			"base stream; the one active for it (the pointer in the epochlog_meta bucket) is the source.\n"+
			"  --rewrap     re-wrap every data key under the keyring's current (highest) root key,\n"+
			"               then report what still needs each older root key.\n"+
			"  --to NAME    copy the history into stream NAME under fresh data keys (keyring from\n"+
			"               --new-keys-file, default the same), verify every event and every\n"+
			"               installation's read-model digest; resumable. With --switch, then make\n"+
			"               NAME active (compare-and-set).\n"+
			"  --rollback   after a switch: make the previous stream active again; before one:\n"+
			"               delete the target NAME (given with --to) and its key bucket.\n"+
			"  --finalize   delete the previous stream and its buckets after a switch.\n"+
			"--rollback and --finalize open the active stream: give its keyring.\n"+
			"Every installation of the stream must be named (--installation, repeated, or\n"+
			"--installations-file); the destructive steps need --yes when stdin is not a terminal.")
	var conn connFlags
	conn.register(fs, "")
	var keys, newKeys keyFlags
	keys.register(fs)
	fs.StringVar(&newKeys.file, "new-keys-file", "", "keyring of the re-sealed stream (default: the --keys-file/$"+envRootKeys+" ring)")
	var insts instList
	fs.Var(&insts, "installation", "an installation of the stream (repeat for each; erased ones too)")
	instFile := fs.String("installations-file", "", "file of installation ids, one a line")
	rewrap := fs.Bool("rewrap", false, "re-wrap the data keys under the current root key")
	to := fs.String("to", "", "the new stream to re-seal into")
	toPrefix := fs.String("to-subject-prefix", "", "subject prefix of the new stream (default: the source's prefix + \"_\" + NAME lowercased)")
	doSwitch := fs.Bool("switch", false, "after a verified re-seal, make --to the active stream")
	rollback := fs.Bool("rollback", false, "undo: point back to the previous stream, or delete an unswitched target")
	finalize := fs.Bool("finalize", false, "delete the previous stream, its key bucket and snapshots after a switch")
	yes := fs.Bool("yes", false, "do destructive steps without asking (needed when stdin is not a terminal)")
	asJSON := fs.Bool("json", false, "print the result as one JSON object")
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	modes := 0
	for _, m := range []bool{*rewrap, *to != "" && !*rollback, *rollback, *finalize} {
		if m {
			modes++
		}
	}
	if modes != 1 {
		return usageError{"give one of --rewrap, --to NAME, --rollback, --finalize"}
	}
	if *doSwitch && *to == "" {
		return usageError{"--switch goes with --to NAME"}
	}
	if *instFile != "" {
		b, err := os.ReadFile(*instFile)
		if err != nil {
			return fmt.Errorf("reading installations: %w", err)
		}
		for i, line := range strings.Split(string(b), "\n") {
			if line = strings.TrimSpace(line); line == "" || strings.HasPrefix(line, "#") {
				continue
			}
			if err := insts.Set(line); err != nil {
				return usageError{fmt.Sprintf("--installations-file line %d: %v", i+1, err)}
			}
		}
	}
	confirm := func(what string) error {
		if *yes {
			return nil
		}
		if !stdinIsTerminal() {
			return usageError{what + " needs --yes when stdin is not a terminal"}
		}
		if !resealConfirm(env, what) {
			return fmt.Errorf("%s not confirmed; nothing was changed", what)
		}
		return nil
	}
	cfg, err := conn.config(env)
	if err != nil {
		return err
	}
	ring, err := keys.keyring(env)
	if err != nil {
		return err
	}
	base := cfg.Stream
	cfg.ResolveActive = true
	cfg.NoCreate = true                      // a mistyped --stream or --data is refused, not created
	log, err := openEventLog(ctx, cfg, ring) // writable: the key bucket and the pointer
	if err != nil {
		return err
	}
	defer log.Close()
	out := map[string]any{"command": "reseal", "base": base, "source": log.Stream()}
	say := func(format string, a ...any) {
		if !*asJSON {
			fmt.Fprintf(env.stdout, format, a...)
		}
	}
	done := func() error {
		if *asJSON {
			return json.NewEncoder(env.stdout).Encode(out)
		}
		return nil
	}
	switch {
	case *rewrap:
		if len(insts) == 0 {
			return usageError{"--rewrap needs every installation of the stream (--installation or --installations-file)"}
		}
		res, err := log.Rewrap(ctx, &eventlog.RewrapOptions{Installations: insts})
		if err != nil {
			return err
		}
		out["rewrap"] = res
		say("re-wrapped %d of %d data keys under root key %d (%d were already under it, %d shredded meanwhile)\n",
			res.Rewrapped, res.Entries, res.Current, res.AlreadyCurrent, res.Vanished)
		return reportUses(ctx, env, log, out, say, done)
	case *rollback:
		a, err := log.ActiveStream(ctx, base)
		if err != nil {
			return err
		}
		if a.Previous != nil && (*to == "" || *to == a.Current.Stream) {
			if err := confirm(fmt.Sprintf("make %s active again instead of %s", a.Previous.Stream, a.Current.Stream)); err != nil {
				return err
			}
			// Writers on the current stream since the switch appended
			// events the previous one does not have: rolling back would
			// hide them, and a finalize then delete them.
			if err := movedSince(ctx, log, a.Current.Stream, a.CurrentStartSeq, a.SwitchedAt,
				fmt.Sprintf("rolling back would hide them from readers of %s (and reseal --finalize would then delete them): nothing changed; to go back, re-seal %s into a new stream instead", a.Previous.Stream, a.Current.Stream),
				a.Previous.Stream); err != nil {
				return err
			}
			prevLast, _, err := log.StreamLast(ctx, a.Current.Stream)
			if err != nil {
				return err
			}
			curStart, _, err := log.StreamLast(ctx, a.Previous.Stream)
			if err != nil {
				return err
			}
			b, err := log.SetActive(ctx, a, eventlog.Active{Current: *a.Previous, Previous: &a.Current, PreviousLastSeq: prevLast, CurrentStartSeq: curStart})
			if err != nil {
				return err
			}
			out["active"] = b
			say("%s is active again (was %s; %s is kept until reseal --finalize)\n", b.Current.Stream, a.Current.Stream, a.Current.Stream)
			return done()
		}
		if *to == "" {
			return usageError{fmt.Sprintf("no switch to roll back for %s; to delete an unswitched re-seal target, give it with --to", base)}
		}
		if *to == a.Current.Stream || *to == base {
			return fmt.Errorf("stream %s is active for %s: it is not deleted", *to, base)
		}
		if err := confirm(fmt.Sprintf("delete stream %s and its key bucket (an unswitched re-seal target)", *to)); err != nil {
			return err
		}
		if err := log.DeleteResealTarget(ctx, eventlog.StreamRef{Stream: *to}); err != nil {
			return err
		}
		out["deleted"] = *to
		say("deleted stream %s and its buckets; %s stays active\n", *to, a.Current.Stream)
		return done()
	case *finalize:
		a, err := log.ActiveStream(ctx, base)
		if err != nil {
			return err
		}
		if a.Previous == nil {
			return fmt.Errorf("nothing to finalize for %s: no previous stream is recorded", base)
		}
		// A writer still on the previous stream after the switch appended
		// events the current stream does not have: deleting it would lose
		// them.
		if err := movedSince(ctx, log, a.Previous.Stream, a.PreviousLastSeq, a.SwitchedAt,
			fmt.Sprintf("nothing deleted; roll back (reseal --rollback), stop every writer, and re-seal again (reseal --to %s --switch)", a.Current.Stream),
			a.Current.Stream); err != nil {
			return err
		}
		if err := confirm(fmt.Sprintf("delete the previous stream %s, its key bucket and snapshots for good", a.Previous.Stream)); err != nil {
			return err
		}
		if err := log.DeleteStreamAndBuckets(ctx, *a.Previous); err != nil {
			return err
		}
		b, err := log.SetActive(ctx, a, eventlog.Active{Current: a.Current})
		if err != nil {
			return err
		}
		out["active"], out["deleted"] = b, a.Previous.Stream
		say("deleted %s and its buckets; %s is active\n", a.Previous.Stream, b.Current.Stream)
		return reportUses(ctx, env, log, out, say, done)
	}
	// --to NAME [--switch]
	if len(insts) == 0 {
		return usageError{"--to needs every installation of the stream (--installation or --installations-file)"}
	}
	if *to == log.Stream() {
		return usageError{fmt.Sprintf("--to %s is the source stream", *to)}
	}
	prefix := *toPrefix
	if prefix == "" {
		prefix = cfg.SubjectPrefix + "_" + strings.ToLower(*to)
	}
	dstRing := ring
	if newKeys.file != "" {
		if dstRing, err = newKeys.keyring(env); err != nil {
			return err
		}
	}
	dst, err := eventlog.OpenBeside(ctx, log, *to, prefix, dstRing)
	if err != nil {
		return err
	}
	defer dst.Close()
	before, err := sourceState(ctx, log)
	if err != nil {
		return err
	}
	res, err := replay.Reseal(ctx, log, dst, &eventlog.ResealOptions{Installations: insts})
	if err != nil {
		if errors.Is(err, eventlog.ErrResealMismatch) {
			return verifyError{err}
		}
		return err
	}
	out["reseal"] = res
	say("re-sealed %s into %s: %d events copied, %d already there, %d verified event by event, %d tombstones\n",
		res.Source, res.Target, res.Copied, res.Skipped, res.Verified, res.Tombstones)
	digests, err := compareDigests(ctx, log, dst, insts, res.Anchors)
	if err != nil {
		return err
	}
	out["digests"] = digests
	say("read models replayed from both streams are equal for %d installations\n", len(digests))
	if *doSwitch {
		a, err := log.ActiveStream(ctx, base)
		if err != nil {
			return err
		}
		if err := confirm(fmt.Sprintf("make %s active for %s instead of %s", *to, base, a.Current.Stream)); err != nil {
			return err
		}
		// What was re-sealed and compared is the source as it was when
		// the run started: an event appended since may not be in the
		// target, and a purge or key shred since would be undone.
		after, err := unchangedSince(ctx, log, before, *to)
		if err != nil {
			return err
		}
		now := after.last
		cur := a.Current
		dstLast, _, err := dst.StreamLast(ctx, *to)
		if err != nil {
			return err
		}
		b, err := log.SetActive(ctx, a, eventlog.Active{Current: eventlog.StreamRef{Stream: *to, SubjectPrefix: prefix}, Previous: &cur, PreviousLastSeq: now, CurrentStartSeq: dstLast})
		if err != nil {
			return err
		}
		out["active"] = b
		say("%s is now active for %s (rollback: reseal --rollback; restart services and rebuild read models on it)\n", *to, base)
	}
	return done()
}

// resealSource is what a re-seal copied and compared: the source stream's
// first and last sequences and count (appends move the last, retention
// and compaction the first and the count) and its key bucket's last
// sequence (a data key shredded, or created).
type resealSource struct {
	first, last, msgs, keys uint64
}

func (r resealSource) String() string {
	return fmt.Sprintf("sequences %d-%d, %d messages, key bucket at %d", r.first, r.last, r.msgs, r.keys)
}

func sourceState(ctx context.Context, log *eventlog.Log) (resealSource, error) {
	st, err := log.StreamState(ctx, log.Stream())
	if err != nil {
		return resealSource{}, err
	}
	kst, err := log.StreamState(ctx, "KV_"+log.KeyBucket())
	if err != nil {
		return resealSource{}, err
	}
	return resealSource{first: st.FirstSeq, last: st.LastSeq, msgs: st.Msgs, keys: kst.LastSeq}, nil
}

// unchangedSince returns the source's state now, refusing (exit 3) when it
// is not before's: what was re-sealed would not be all of it, or would
// undo a purge.
func unchangedSince(ctx context.Context, log *eventlog.Log, before resealSource, to string) (resealSource, error) {
	after, err := sourceState(ctx, log)
	if err != nil {
		return after, err
	}
	if after != before {
		return after, verifyError{fmt.Errorf("stream %s or its key bucket changed while it was re-sealed (%s when the re-seal started, %s now): a writer still appends, or retention ran; nothing switched: stop every writer and retention, then run reseal --to %s --switch again (it resumes)",
			log.Stream(), before, after, to)}
	}
	return after, nil
}

// movedSince refuses a pointer step when stream has events appended since
// the switch (after sequence since, or when since was not recorded, by a
// switch of an older version, stored after switchedAt) that other lacks.
func movedSince(ctx context.Context, log *eventlog.Log, stream string, since uint64, switchedAt time.Time, then, other string) error {
	last, lastAt, err := log.StreamLast(ctx, stream)
	if err != nil {
		return err
	}
	switch {
	case since != 0 && last > since:
		return verifyError{fmt.Errorf("stream %s holds %d events appended since the switch (sequences %d to %d) that %s does not: %s",
			stream, last-since, since+1, last, other, then)}
	case since == 0 && lastAt.After(switchedAt):
		return verifyError{fmt.Errorf("stream %s stored its last event (sequence %d) at %s, after the switch at %s, so it may hold events %s does not: %s",
			stream, last, lastAt.UTC().Format(time.RFC3339Nano), switchedAt.Format(time.RFC3339Nano), other, then)}
	}
	return nil
}

// reportUses prints what still needs each root key of the ring.
func reportUses(ctx context.Context, env *cliEnv, log *eventlog.Log, out map[string]any, say func(string, ...any), done func() error) error {
	uses, err := log.RootKeyUses(ctx)
	if err != nil {
		return err
	}
	list := make([]*eventlog.RootKeyUse, 0, len(uses))
	for _, u := range uses {
		list = append(list, u)
	}
	slices.SortFunc(list, func(a, b *eventlog.RootKeyUse) int { return int(a.ID) - int(b.ID) })
	out["root_keys"] = list
	for _, u := range list {
		if u.Retired() {
			say("root key %d: nothing on stream %s needs it any more: it can be removed from every keyring\n", u.ID, log.Stream())
		} else {
			say("root key %d: still needed by %s\n", u.ID, u.Needs())
		}
	}
	for _, u := range list {
		if !u.Retired() && u.ID != log.CurrentKey() && (u.Events > 0 || u.Tombstones > 0 || u.Snapshots > 0 || u.PseudonymAnchor) {
			say("to retire root key %d, re-seal into a new stream: replayer reseal --to NAME (docs/operations.md, Re-seal)\n", u.ID)
		}
	}
	return done()
}

// compareDigests replays each live installation from both streams into
// fresh read models in a temporary directory and compares their digests,
// but for the checkpoint (each stream's own sequence). A history carried
// by a snapshot (carried) is replayed from that snapshot on both sides;
// the others from the start.
func compareDigests(ctx context.Context, src, dst *eventlog.Log, insts []events.InstallationID, carried map[events.InstallationID]events.Link) (map[string]string, error) {
	dir, err := os.MkdirTemp("", "epochlog-reseal-")
	if err != nil {
		return nil, err
	}
	defer os.RemoveAll(dir)
	key, err := projections.GenerateRawKey()
	if err != nil {
		return nil, err
	}
	out := map[string]string{}
	for i, inst := range insts {
		if _, _, erased, err := src.Tombstone(ctx, inst); err != nil {
			return nil, err
		} else if erased {
			continue
		}
		var ds [2]projections.Digest
		for j, l := range []*eventlog.Log{src, dst} {
			path := filepath.Join(dir, fmt.Sprintf("%d-%d.db", i, j))
			_, fromSnapshot := carried[inst]
			if _, err := replay.Rebuild(ctx, l, inst, path, key, &replay.RebuildOptions{Options: replay.Options{FromStart: !fromSnapshot}}); err != nil {
				return nil, fmt.Errorf("replay of %s from %s: %w", inst, l.Stream(), err)
			}
			if ds[j], err = digestFile(ctx, path, key); err != nil {
				return nil, err
			}
		}
		content := func(d projections.Digest) projections.Digest {
			d.Tables = slices.DeleteFunc(slices.Clone(d.Tables), func(t projections.TableDigest) bool { return t.Name == "checkpoint" })
			return d
		}
		if d := projections.Compare(content(ds[0]), content(ds[1])); d != nil {
			return nil, verifyError{fmt.Errorf("%w: installation %s: the read model replayed from %s differs from the one from %s: %v",
				eventlog.ErrResealMismatch, inst, dst.Stream(), src.Stream(), d)}
		}
		out[string(inst)] = digestID(ds[0])
	}
	return out, nil
}
