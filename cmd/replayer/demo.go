package main

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// demoSummary is what demo prints (as text, or one JSON object).
type demoSummary struct {
	Run            string              `json:"run"`
	Seed           uint64              `json:"seed"` // --seed repeats the run's random choices
	Stream         string              `json:"stream"`
	Server         string              `json:"server"`
	DataDir        string              `json:"data_dir"`
	DBDir          string              `json:"db_dir"`
	Installations  []string            `json:"installations"`
	Groups         []demoGroupSummary  `json:"groups"`
	Stats          demoStats           `json:"activity"`
	EventsAppended int                 `json:"events_appended"`
	ByKind         map[events.Kind]int `json:"by_kind"`
	FirstSeq       uint64              `json:"first_seq"`
	LastSeq        uint64              `json:"last_seq"`
	Rekeyed        string              `json:"rekeyed"`
	RekeyReplayed  int                 `json:"rekey_replayed"`
	OldKeyRefused  bool                `json:"old_key_refused"`
	Verified       bool                `json:"verified"`
	VerifiedDBs    int                 `json:"verified_read_models"`
	MLSRederived   int                 `json:"mls_transitions_rederived"`
	MLSOwnChecked  int                 `json:"mls_own_commits_checked"`
	Digest         string              `json:"rekeyed_digest"` // digestID of its content
	Seconds        demoTimings         `json:"seconds"`
	// Next are three replayer commands to try on what the run wrote,
	// ready to paste into a shell (see demoNextSteps).
	Next []string `json:"next"`
	// NextNote says what the Next commands leave out, if anything.
	NextNote string `json:"next_note,omitempty"`
}

type demoGroupSummary struct {
	ID      string `json:"id"`
	Members int    `json:"members"`
	Epoch   uint64 `json:"epoch"`
}

type demoTimings struct {
	Setup    float64 `json:"setup"`
	Messages float64 `json:"messages"`
	Rekey    float64 `json:"rekey"`
	Verify   float64 `json:"verify"`
}

const demoHelp = `Runs real MLS through the engine on the embedded JetStream server (or --nats):
creates N installations, each with its own SQLCipher read model; creates groups
with overlapping members (real commits and Welcomes, from published key
packages); exchanges M encrypted application messages through the delivery
queues (fan-out, fetch, receive, acknowledge; a few ephemeral ones expire);
removes and updates members; then rekeys one installation's database by replay,
checks the old key is refused, and verifies every read model against the
stream (digest) and every installation's MLS history (epoch authenticators).
It ends by printing three commands to try on what it wrote (status, verify,
inspect), with the run's real paths.

Files, under --data:
  event.keys                     event keyring (created on first use, 0600)
  jetstream/                     the embedded server's JetStream store
  runs/<run>/db/<inst>.db        an installation's read model (SQLCipher 4)
  runs/<run>/db/<inst>.key       its raw key: 64 hex digits (0600); use it with
                                 replayer rebuild|rekey|verify --db-key-file`

func runDemo(ctx context.Context, env *cliEnv, args []string) error {
	fs := newFlagSet(env, "demo", "[flags]", demoHelp)
	var conn connFlags
	conn.register(fs, ".epochlog/demo")
	conn.registerStreamSettings(fs)
	var keys keyFlags
	keys.register(fs)
	n := fs.Int("installations", 10, "number of installations (2 or more)")
	groups := fs.Int("groups", 0, "number of groups (default: one per five installations, at least 3)")
	messages := fs.Int("messages", 2000, "number of application messages")
	seed := fs.Uint64("seed", 0, "seed for the random choices (0: draw one); the summary names the seed, so that --seed repeats a run")
	asJSON := fs.Bool("json", false, "print the summary as one JSON object")
	metricsAddr := registerMetricsFlag(fs)
	if err := parseFlags(env, fs, args); err != nil {
		return err
	}
	switch {
	case *n < 2:
		return usageError{"--installations must be at least 2"}
	case *groups < 0:
		return usageError{"--groups must not be negative"}
	case *messages < 0:
		return usageError{"--messages must not be negative"}
	case conn.data == "":
		return usageError{"--data is required: the demo keeps its read models there"}
	}
	cfg, err := conn.config(env)
	if err != nil {
		return err
	}
	if keys.file == "" && env.getenv(envRootKeys) == "" && !keys.inline.given() {
		keys.file = filepath.Join(conn.data, "event.keys")
		created, err := ensureKeyringFile(keys.file)
		if err != nil {
			return err
		}
		if created {
			fmt.Fprintf(env.stderr, "replayer: created event keyring %s (keep it: the events cannot be read without it)\n", keys.file)
		}
	}
	ring, err := keys.keyring(env)
	if err != nil {
		return err
	}
	ops, err := startOpsServer(env, *metricsAddr)
	if err != nil {
		return err
	}
	defer ops.Close()
	cfg.Metrics = ops.Metrics()
	log, err := openEventLog(ctx, cfg, ring)
	if err != nil {
		return err
	}
	defer log.Close()
	warnIfNotActive(ctx, env, log)
	ops.SetLog(log)
	if *groups == 0 {
		*groups = max(3, (*n+4)/5)
	}
	if *seed == 0 {
		*seed = mrand.Uint64()
	}

	run := randomHex(4)
	w := &world{
		log: log, queue: engine.NewDeliveries(log, nil),
		dbDir: filepath.Join(conn.data, "runs", run, "db"),
		inst:  map[events.InstallationID]*engine.Installation{},
		keys:  map[events.InstallationID]projections.Key{},
		rng:   mrand.New(mrand.NewPCG(*seed, *seed^0x9e3779b97f4a7c15)),
	}
	defer w.close()
	sum := demoSummary{Run: run, Seed: *seed, Stream: log.Stream(), Server: demoServer(log, cfg.NATSURL), DataDir: conn.data, DBDir: w.dbDir}

	t0 := time.Now()
	if err := w.createInstallations(ctx, run, *n, nil); err != nil {
		return err
	}
	gs, err := w.createGroups(ctx, *groups)
	if err != nil {
		return err
	}
	sum.Seconds.Setup = time.Since(t0).Seconds()

	t0 = time.Now()
	if err := w.converse(ctx, env, gs, *messages); err != nil {
		return err
	}
	sum.Seconds.Messages = time.Since(t0).Seconds()

	// Rekey one installation's database by replay.
	t0 = time.Now()
	target := w.ids[1]
	res, err := w.rekey(ctx, target)
	if err != nil {
		return err
	}
	sum.Rekeyed, sum.RekeyReplayed, sum.OldKeyRefused = string(target), res.Replayed+res.CaughtUp, true
	sum.Seconds.Rekey = time.Since(t0).Seconds()

	// Verify every read model against the stream, and every installation's
	// MLS history against the epochs recorded when it was written. The
	// queue acknowledges a delivery after its installation received it,
	// so each read model's last events (those acknowledgements) would be
	// projected at the installation's next operation, which the demo does
	// not make: each catches up first, so that what is verified, and what
	// status shows next, is the whole stream.
	t0 = time.Now()
	for _, id := range w.ids {
		if err := w.inst[id].CatchUp(ctx); err != nil {
			return fmt.Errorf("catch up the read model of %s: %w", id, err)
		}
	}
	for _, id := range w.ids {
		vr, err := replay.Verify(ctx, log, id, w.dbPath(id), w.keys[id], nil)
		if err != nil {
			return verifyError{fmt.Errorf("read model of %s: %w", id, err)}
		}
		if id == target {
			sum.Digest = digestID(vr.Digest)
		}
		rep, err := replay.VerifyMLS(ctx, log, id)
		if err != nil {
			return verifyError{fmt.Errorf("MLS history of %s: %w", id, err)}
		}
		sum.VerifiedDBs++
		sum.MLSRederived += rep.Rederived
		sum.MLSOwnChecked += rep.Own
	}
	sum.Verified = true
	sum.Seconds.Verify = time.Since(t0).Seconds()

	if err := w.census(ctx, &sum, gs); err != nil {
		return err
	}
	sum.Next, sum.NextNote = demoNextSteps(cfg, &conn, &keys, w, target)
	if *asJSON {
		enc := json.NewEncoder(env.stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(sum)
	}
	printDemoSummary(env, sum)
	return nil
}

// createGroups creates g groups of overlapping members: installation i
// belongs to group i mod g (so everyone is in a group), and each group
// also takes a few random others, up to three to eight members in all.
func (w *world) createGroups(ctx context.Context, g int) ([]*demoGroup, error) {
	gs := make([]*demoGroup, 0, g)
	for i := range g {
		var members []events.InstallationID
		in := map[events.InstallationID]bool{}
		for j := i; j < len(w.ids); j += g {
			members = append(members, w.ids[j])
			in[w.ids[j]] = true
		}
		size := min(len(w.ids), max(len(members), 3+w.rng.IntN(6)))
		for _, id := range w.pick(len(w.ids)) {
			if len(members) >= size {
				break
			}
			if !in[id] {
				members, in[id] = append(members, id), true
			}
		}
		if len(members) < 2 {
			continue // more groups than installations
		}
		grp, err := w.createGroup(ctx, members[0], members[1:])
		if err != nil {
			return nil, err
		}
		gs = append(gs, grp)
	}
	return gs, nil
}

// converse sends the messages from random members of random groups. Half
// way through, every group of three or more loses its newest member and
// gets a path update from another member; one in twenty messages is
// ephemeral and expires undelivered.
func (w *world) converse(ctx context.Context, env *cliEnv, gs []*demoGroup, messages int) error {
	var m *meter
	if messages > 0 {
		m = newMeter(env, "demo", "messages", int64(messages))
	}
	ok := false
	defer func() {
		if m != nil {
			m.finish(ok)
		}
	}()
	for i := range messages {
		if err := ctx.Err(); err != nil {
			return err
		}
		if i == messages/2 {
			if err := w.churn(ctx, gs); err != nil {
				return err
			}
		}
		g := gs[w.rng.IntN(len(gs))]
		from := g.members[w.rng.IntN(len(g.members))]
		if err := w.send(ctx, g, from, fmt.Sprintf("message %d from %s", i, from), i%20 == 19); err != nil {
			return err
		}
		if m != nil {
			m.set(int64(i + 1)) // drawn a few times a second at most
		}
	}
	ok = true
	if messages == 0 {
		return w.churn(ctx, gs)
	}
	return nil
}

func (w *world) churn(ctx context.Context, gs []*demoGroup) error {
	for _, g := range gs {
		if len(g.members) < 3 {
			continue
		}
		if err := w.remove(ctx, g, g.members[0], g.members[len(g.members)-1]); err != nil {
			return err
		}
		if err := w.update(ctx, g, g.members[len(g.members)-1]); err != nil {
			return err
		}
	}
	return nil
}

// census fills the summary from the stream and the read models.
func (w *world) census(ctx context.Context, sum *demoSummary, gs []*demoGroup) error {
	sum.Stats = w.stats
	sum.ByKind = map[events.Kind]int{}
	err := w.log.ReadInstallations(ctx, w.ids, 0, func(r eventlog.Record) error {
		if sum.FirstSeq == 0 {
			sum.FirstSeq = r.Seq
		}
		sum.LastSeq = r.Seq
		sum.EventsAppended++
		sum.ByKind[r.Event.Body.Kind()]++
		return nil
	})
	if err != nil {
		return verifyError{err}
	}
	for _, id := range w.ids {
		sum.Installations = append(sum.Installations, string(id))
	}
	for _, g := range gs {
		epoch, err := w.inst[g.members[0]].Epoch(ctx, g.id)
		if err != nil {
			return err
		}
		sum.Groups = append(sum.Groups, demoGroupSummary{ID: hex.EncodeToString(g.id), Members: len(g.members), Epoch: epoch})
	}
	return nil
}

func printDemoSummary(env *cliEnv, s demoSummary) {
	w := env.stdout
	st := s.Stats
	fmt.Fprintf(w, "epochlog demo, run %s (seed %d): stream %s on %s\n", s.Run, s.Seed, s.Stream, s.Server)
	fmt.Fprintf(w, "  %d installations, each with its own SQLCipher read model in %s\n", len(s.Installations), s.DBDir)
	for _, g := range s.Groups {
		fmt.Fprintf(w, "  group %.16s…  %2d members, epoch %d\n", g.ID, g.Members, g.Epoch)
	}
	fmt.Fprintf(w, "  MLS: %d commits (%d members added through %d Welcomes, %d removed, %d path updates)\n",
		st.Commits, st.Adds, st.Welcomes, st.Removes, st.Updates)
	// The rate is of one message at a time (sent, fanned out, fetched,
	// received and acknowledged before the next), each step durable: a
	// latency, not the engine's throughput (docs/benchmarks.md, "End to end").
	fmt.Fprintf(w, "  messages: %d sent, %d received and decrypted, in %.1fs (%.0f messages/s, one at a time: each sent, fanned out, received and acknowledged before the next)\n",
		st.MessagesSent, st.MessagesReceived, s.Seconds.Messages, rate(st.MessagesSent, s.Seconds.Messages))
	fmt.Fprintf(w, "  deliveries: %d enqueued, %d acknowledged, %d expired\n", st.Enqueued, st.Acked, st.Expired)
	fmt.Fprintf(w, "  events: %d sealed events on the stream (seq %d..%d)\n", s.EventsAppended, s.FirstSeq, s.LastSeq)
	kinds := make([]string, 0, len(s.ByKind))
	for k := range s.ByKind {
		kinds = append(kinds, string(k))
	}
	slices.Sort(kinds)
	for _, k := range kinds {
		fmt.Fprintf(w, "    %-30s %7d\n", k, s.ByKind[events.Kind(k)])
	}
	fmt.Fprintf(w, "  rekeyed %s by replaying %d events in %.2fs; the old key is refused\n", s.Rekeyed, s.RekeyReplayed, s.Seconds.Rekey)
	fmt.Fprintf(w, "  verified %d read models against the stream: each equals a fresh replay (rekeyed one: digest %s)\n", s.VerifiedDBs, s.Digest)
	fmt.Fprintf(w, "  verified MLS histories: %d received transitions re-derived, %d own commits checked (%.2fs)\n",
		s.MLSRederived, s.MLSOwnChecked, s.Seconds.Verify)
	fmt.Fprintln(w, "  every read model matches its history")
	if len(s.Next) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(w, "next, try:")
		for _, c := range s.Next {
			fmt.Fprintf(w, "  %s\n", termSafe(c))
		}
		if s.NextNote != "" {
			fmt.Fprintf(w, "  (%s)\n", s.NextNote)
		}
	}
}

// demoServer names the server the demo ran on for its summary: the
// embedded server's URL, or the external server's URLs (natsURL, as the
// connection flags resolved them) without their user information (a user
// name, password or token never prints).
func demoServer(log *eventlog.Log, natsURL string) string {
	if u := log.ClientURL(); u != "" {
		return u
	}
	if natsURL == "" {
		return "the embedded server (in process)"
	}
	return withoutUserinfo(natsURL)
}

// withoutUserinfo returns a comma-separated list of server URLs with the user
// information (user:password@ or token@) of each removed.
func withoutUserinfo(list string) string {
	urls := strings.Split(list, ",")
	for i, raw := range urls {
		raw = strings.TrimSpace(raw)
		if u, err := url.Parse(raw); err == nil && u.Host != "" {
			u.User = nil
			urls[i] = u.String()
			continue
		}
		// Not a URL url.Parse understands (e.g. host:port): drop
		// anything up to an @ all the same.
		if at := strings.LastIndex(raw, "@"); at >= 0 {
			raw = raw[at+1:]
		}
		urls[i] = raw
	}
	return strings.Join(urls, ",")
}

// demoNextSteps returns three commands to try on what the demo just wrote:
// status of every read model of the run, verify (with MLS) of the rekeyed
// one under its new key, and inspect of the first installation's events.
// They name the run's real paths and ids and the connection (cfg, as the
// flags resolved it, and the connection flags given) and keyring the demo
// used, and start with the way the demo was invoked (replayerCommand). No
// secret is printed: a keyring given inline with --keys, and user
// information in a server URL, are left out, and note says so.
func demoNextSteps(cfg eventlog.Config, conn *connFlags, keys *keyFlags, w *world, rekeyed events.InstallationID) (cmds []string, note string) {
	var common []string
	if cfg.NATSURL != "" {
		urls := withoutUserinfo(cfg.NATSURL)
		if strings.Contains(cfg.NATSURL, "@") {
			note += "; the server URLs are shown without their user information: give it with --nats-user and $" + envNATSPassword + ", or the URLs as you gave them"
		}
		common = append(common, "--nats", urls)
		if conn.context != "" {
			common = append(common, "--context", conn.context)
		}
		for _, f := range []struct{ flag, value string }{
			{"--nats-ca", conn.ca}, {"--nats-cert", conn.cert}, {"--nats-key", conn.key},
			{"--nats-creds", conn.creds}, {"--nats-nkey", conn.nkey}, {"--nats-user", conn.user},
			{"--nats-inbox-prefix", conn.inboxPrefix},
		} {
			if f.value != "" {
				common = append(common, f.flag, f.value)
			}
		}
		if conn.tlsFirst {
			common = append(common, "--nats-tls-first")
		}
	} else {
		common = append(common, "--data", cfg.DataDir)
	}
	if conn.stream != eventlog.DefaultStream {
		common = append(common, "--stream", conn.stream)
	}
	if conn.prefix != eventlog.DefaultSubjectPrefix {
		common = append(common, "--subject-prefix", conn.prefix)
	}
	switch {
	case keys.file != "":
		common = append(common, "--keys-file", keys.file)
	case keys.inline.given():
		note += "; give the keyring the demo ran with: --keys-file FILE or $" + envRootKeys
	}
	// Otherwise the keyring came from $EPOCHLOG_ROOT_KEYS, which the
	// commands read too.
	bin := replayerCommand(os.Args[0])
	cmd := func(name string, args ...string) string {
		words := append(append(append([]string{}, bin...), name), common...)
		words = append(words, args...)
		for i, word := range words {
			words[i] = shellQuote(word)
		}
		return strings.Join(words, " ")
	}
	first := w.ids[0]
	return []string{
		cmd("status", "--db-dir", w.dbDir, "--db-keys-beside"),
		cmd("verify", "--installation", string(rekeyed), "--db", w.dbPath(rekeyed), "--db-key-file", w.keyPath(rekeyed), "--mls"),
		cmd("inspect", "--installation", string(first)),
	}, strings.TrimPrefix(note, "; ")
}

// replayerCommand returns the words that run this replayer again, for a
// command to paste: argv0 itself when it is a built replayer (found on the
// PATH, or a path ending in bin/replayer, as make build writes it), else
// "go run ./cmd/replayer" (go run's binary is gone once it exits).
func replayerCommand(argv0 string) []string {
	switch {
	case argv0 == "replayer":
		return []string{argv0}
	case filepath.Base(argv0) == "replayer" && filepath.Base(filepath.Dir(argv0)) == "bin":
		return []string{argv0}
	}
	return []string{"go", "run", "./cmd/replayer"}
}

// shellQuote returns s as one word for a POSIX shell: as it is when it
// holds only characters no shell treats specially, else single-quoted.
func shellQuote(s string) string {
	if s != "" && strings.IndexFunc(s, func(r rune) bool {
		return !(r >= 'a' && r <= 'z' || r >= 'A' && r <= 'Z' || r >= '0' && r <= '9' || strings.ContainsRune("-_./:,=@%+", r))
	}) < 0 {
		return s
	}
	return "'" + strings.ReplaceAll(s, "'", `'\''`) + "'"
}

// digestID condenses a read model's logical digest into one short hex
// string, enough to compare two runs by eye.
func digestID(d projections.Digest) string {
	sum := sha256.Sum256([]byte(d.String()))
	return hex.EncodeToString(sum[:8])
}

func rate(n int, secs float64) float64 {
	if secs <= 0 {
		return 0
	}
	return float64(n) / secs
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
