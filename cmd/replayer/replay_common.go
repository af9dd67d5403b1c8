package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"strings"
	"sync"
	"time"
	"unicode/utf8"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// replayFlags are what every replay command shares: where the stream is,
// the event keyring, the installation and its read model.
type replayFlags struct {
	conn   connFlags
	keys   keyFlags
	inst   string
	db     string
	dbKey  *dbKeyFlags
	asJSON bool
	// noMLSCheck is --no-mls-check, registered by the rebuilding commands.
	noMLSCheck bool
	// cmd is the command's name (its flag set's), for the progress report.
	cmd string
}

// registerRebuilding registers the flags of the commands that swap in a
// rebuilt database (rebuild, rekey, migrate).
func (r *replayFlags) registerRebuilding(fs *flag.FlagSet) {
	fs.BoolVar(&r.noMLSCheck, "no-mls-check", false, "skip re-deriving every MLS transition while replaying (faster; the default checks each against what was recorded)")
}

func (r *replayFlags) register(fs *flag.FlagSet) {
	r.registerStream(fs)
	fs.StringVar(&r.db, "db", "", "path of the installation's read model (required)")
	r.dbKey = newDBKeyFlags(fs, "")
}

// registerStream registers the flags of a command that works on the
// stream alone (compact): no read model, no read-model key.
func (r *replayFlags) registerStream(fs *flag.FlagSet) {
	r.cmd = fs.Name()
	r.conn.register(fs, "")
	r.keys.register(fs)
	fs.StringVar(&r.inst, "installation", "", "installation id (required)")
	fs.BoolVar(&r.asJSON, "json", false, "print the result as one JSON object")
}

// checkInstallation validates --installation, which every replay
// command needs.
func (r *replayFlags) checkInstallation() error {
	if r.inst == "" {
		return usageError{"--installation is required"}
	}
	if err := events.InstallationID(r.inst).Validate(); err != nil {
		return usageError{fmt.Sprintf("--installation: %v", err)}
	}
	return nil
}

// check validates the flags every replay command with a read model needs.
func (r *replayFlags) check() error {
	if err := r.checkInstallation(); err != nil {
		return err
	}
	if r.db == "" {
		return usageError{"--db is required"}
	}
	return nil
}

// parse parses args, checks the flags every replay command needs and reads
// the database key: the preamble of rebuild, rekey and verify.
func (r *replayFlags) parse(fs *flag.FlagSet, args []string, env *cliEnv) (projections.Key, error) {
	if err := parseFlags(env, fs, args); err != nil {
		return projections.Key{}, err
	}
	if err := r.check(); err != nil {
		return projections.Key{}, err
	}
	return r.dbKey.key(env)
}

// open connects to the event log.
func (r *replayFlags) open(ctx context.Context, env *cliEnv) (*eventlog.Log, error) {
	return openLog(ctx, env, &r.conn, &r.keys)
}

// rebuildWith connects, runs one rebuilding operation reporting its
// progress and prints its result; key opens the database afterwards.
func (r *replayFlags) rebuildWith(ctx context.Context, env *cliEnv, cmd string, key projections.Key,
	op func(*eventlog.Log, events.InstallationID, *replay.Options) (*replay.RebuildResult, error)) error {
	return replayWith(ctx, env, r, op, func(_ *eventlog.Log, res *replay.RebuildResult) error {
		return r.finish(ctx, env, cmd, res, key)
	})
}

// replayWith connects, runs op on the installation reporting its progress
// (see progress), and once that is done hands op's result to then, on the
// same log.
func replayWith[T any](ctx context.Context, env *cliEnv, r *replayFlags,
	op func(*eventlog.Log, events.InstallationID, *replay.Options) (T, error), then func(*eventlog.Log, T) error) error {
	log, err := r.open(ctx, env)
	if err != nil {
		return err
	}
	defer log.Close()
	inst := events.InstallationID(r.inst)
	opts, done := progress(ctx, env, log, r.cmd, inst)
	opts.SkipMLSCheck = r.noMLSCheck
	res, err := op(log, inst, opts)
	done(err == nil)
	if err != nil {
		return err
	}
	return then(log, res)
}

// replayResult is what rebuild, rekey and migrate print.
type replayResult struct {
	Command            string `json:"command"`
	Installation       string `json:"installation"`
	DB                 string `json:"db"`
	Existed            bool   `json:"existed"`
	Recovered          bool   `json:"recovered"`
	KeptDamaged        string `json:"kept_damaged,omitempty"`
	KeptReplaced       string `json:"kept_replaced,omitempty"`
	Dropped            string `json:"dropped,omitempty"`
	PreviousSchema     int    `json:"previous_schema"`
	PreviousCheckpoint uint64 `json:"previous_checkpoint"`
	Schema             int    `json:"schema"`
	Replayed           int    `json:"replayed"`
	CaughtUp           int    `json:"caught_up"`
	Checkpoint         uint64 `json:"checkpoint"`
	Digest             string `json:"digest"`
}

// finish digests the database now at live and prints the result.
func (r *replayFlags) finish(ctx context.Context, env *cliEnv, cmd string, res *replay.RebuildResult, key projections.Key) error {
	out := replayResult{
		Command: cmd, Installation: string(res.Installation), DB: res.Path, KeptDamaged: res.KeptDamaged,
		KeptReplaced: res.KeptReplaced, Dropped: res.Dropped,
		Existed: res.Existed, Recovered: res.Recovered,
		PreviousSchema: res.PreviousSchema, PreviousCheckpoint: res.PreviousCheckpoint,
		Schema: res.Schema, Replayed: res.Replayed, CaughtUp: res.CaughtUp, Checkpoint: res.Checkpoint,
	}
	d, err := digestFile(ctx, res.Path, key)
	if err != nil {
		return err
	}
	out.Digest = digestID(d)
	if res.Schema < projections.LatestSchema {
		noteOutputsNotKept(ctx, env, cmd, res.Path, key)
	}
	if r.asJSON {
		return json.NewEncoder(env.stdout).Encode(out)
	}
	w := env.stdout
	switch {
	case res.Recovered:
		fmt.Fprintf(w, "%s: the old database was damaged and has been replaced\n", cmd)
	case !res.Existed:
		fmt.Fprintf(w, "%s: there was no database; it has been recovered from the stream\n", cmd)
	}
	if res.KeptReplaced != "" {
		fmt.Fprintf(w, "%s: forced: the old database held more than the stream gives (%s); it is kept at %s\n", cmd, res.Dropped, res.KeptReplaced)
	}
	fmt.Fprintf(w, "%s %s: %d events replayed, %d caught up after the swap; schema %d, checkpoint %d, digest %s\n",
		cmd, res.Path, res.Replayed, res.CaughtUp, res.Schema, res.Checkpoint, out.Digest)
	return nil
}

// noteOutputsNotKept says on stderr when the read model at path, built
// below the latest schema (rebuild --schema N for an older reader), could
// not keep own commit or message outputs its events record: not an error
// (the stream holds them), but the file is not what a newer build gives,
// and what happens to it next is worth knowing before it happens.
func noteOutputsNotKept(ctx context.Context, env *cliEnv, cmd, path string, key projections.Key) {
	db, err := projections.OpenExisting(path, key, nil)
	if err == nil {
		err = db.OutputsKept(ctx, projections.LatestSchema)
		db.Close()
	}
	if errors.Is(err, projections.ErrOutputsNotKept) {
		fmt.Fprintf(env.stderr, "replayer %s: note: %s: %s; migrate --in-place refuses it, an engine of schema %d opening it migrates it by replay, "+
			"and rebuild or migrate at the latest schema keeps them\n", cmd, path, termSafe(err.Error()), projections.LatestSchema)
	}
}

// digestFile opens the read model at path just long enough to digest it.
func digestFile(ctx context.Context, path string, key projections.Key) (projections.Digest, error) {
	db, err := projections.OpenExisting(path, key, nil)
	if err != nil {
		return projections.Digest{}, err
	}
	defer db.Close()
	return db.Digest(ctx)
}

// Progress on stderr. Variables, so tests can change them.
var (
	// progressDrawEvery is how often a bar on a terminal is redrawn at
	// most.
	progressDrawEvery = 250 * time.Millisecond
	// progressLineEvery is how often, without a terminal, a progress line
	// is logged at most.
	progressLineEvery = 5 * time.Second
	// progressClock is the meters' clock.
	progressClock = time.Now
)

// meter reports the progress of one counted task on stderr: on a terminal
// one line (a bar, the count, rate and ETA) redrawn in place at most every
// progressDrawEvery and cleared when the task ends; otherwise a log line
// (the command's logger: timestamped, --log-format) at most every
// progressLineEvery, and, when it logged any, one more when the task ends.
// Its rate counts from the first update (the first applied batch), so
// what came before it (opening, connecting, the first batch itself) does
// not inflate or deflate it; it shows no rate and no ETA until a second
// update gives one. A meter is not safe for concurrent use.
type meter struct {
	env         *cliEnv
	label, unit string
	total       int64 // 0 or less: not known
	now         func() time.Time
	terminal    bool
	drawn       int // width of the line on the terminal, to clear

	created time.Time
	started bool
	t0      time.Time // the first update
	n0, n   int64     // count at the first update, and now
	shown   time.Time // the last draw or line
	lines   int
}

// newMeter starts a meter of total units (0 or less when not known).
func newMeter(env *cliEnv, label, unit string, total int64) *meter {
	m := &meter{env: env, label: label, unit: unit, total: total, now: progressClock, terminal: env.isTerminal}
	m.created = m.now()
	return m
}

// set records that n units are done, and draws or logs when it is time.
func (m *meter) set(n int64) {
	t := m.now()
	if !m.started {
		m.started, m.t0, m.n0 = true, t, n
	}
	m.n = n
	if m.total > 0 && n > m.total {
		m.total = n // appended after the total was counted
	}
	if m.terminal {
		if m.shown.IsZero() || t.Sub(m.shown) >= progressDrawEvery {
			m.shown = t
			m.draw(t)
		}
		return
	}
	since := m.shown
	if since.IsZero() {
		since = m.created
	}
	if t.Sub(since) >= progressLineEvery {
		m.shown = t
		m.lines++
		m.log(m.status(t))
	}
}

// finish ends the meter: the bar is cleared; a meter that logged lines
// logs how the task ended (ok: all done).
func (m *meter) finish(ok bool) {
	if m.terminal {
		if m.drawn > 0 {
			fmt.Fprintf(m.env.stderr, "\r%s\r", strings.Repeat(" ", m.drawn))
			m.drawn = 0
		}
		return
	}
	if m.lines == 0 {
		return
	}
	t := m.now()
	if !ok {
		m.log(fmt.Sprintf("%s: stopped at %s", m.label, m.count()))
		return
	}
	if m.total > 0 && m.n < m.total {
		m.total = m.n // the task ended where it was asked to
	}
	msg := fmt.Sprintf("%s: %s done in %s", m.label, m.count(), t.Sub(m.created).Round(100*time.Millisecond))
	if r, ok := m.rate(t); ok {
		msg += fmt.Sprintf(", %.0f %s/s", r, m.unit)
	}
	m.log(msg)
}

// barWidth is the width of the bar between its brackets.
const barWidth = 30

// draw writes the meter's line over the one drawn before: "rebuild alice
// [=========>      ]  43% 4572/20000 events, 3100 events/s, eta 5s".
func (m *meter) draw(t time.Time) {
	var b strings.Builder
	b.WriteString(termSafe(m.label))
	if m.total > 0 {
		done := int(min(m.n, m.total) * barWidth / m.total)
		b.WriteString(" [")
		b.WriteString(strings.Repeat("=", done))
		if done < barWidth {
			b.WriteString(">")
			b.WriteString(strings.Repeat(" ", barWidth-done-1))
		}
		fmt.Fprintf(&b, "] %3d%%", min(m.n, m.total)*100/m.total)
	}
	b.WriteString(" " + m.count())
	if sp := m.speed(t); sp != "" {
		b.WriteString(", " + sp)
	}
	line := b.String()
	width := utf8.RuneCountInString(line)
	fmt.Fprintf(m.env.stderr, "\r%s%s", line, strings.Repeat(" ", max(0, m.drawn-width)))
	m.drawn = max(width, m.drawn)
}

// log writes one progress line through the command's logger.
func (m *meter) log(msg string) {
	m.env.logger().Info(msg)
}

// rate returns the units per second since the first update, once there
// is one to give.
func (m *meter) rate(t time.Time) (float64, bool) {
	d := t.Sub(m.t0).Seconds()
	if !m.started || d <= 0 || m.n <= m.n0 {
		return 0, false
	}
	return float64(m.n-m.n0) / d, true
}

// count is "4572/20000 events", or "4572 events" when the total is not
// known.
func (m *meter) count() string {
	if m.total > 0 {
		return fmt.Sprintf("%d/%d %s", m.n, m.total, m.unit)
	}
	return fmt.Sprintf("%d %s", m.n, m.unit)
}

// speed is "3100 events/s, eta 5s" ("" before there is a rate; no ETA
// without a total).
func (m *meter) speed(t time.Time) string {
	r, ok := m.rate(t)
	if !ok {
		return ""
	}
	s := fmt.Sprintf("%.0f %s/s", r, m.unit)
	if m.total > 0 {
		eta := time.Duration(float64(m.total-m.n) / r * float64(time.Second))
		s += ", eta " + eta.Round(time.Second).String()
	}
	return s
}

// status is a progress line: "rebuild alice: 4572/20000 events, 3100
// events/s, eta 5s".
func (m *meter) status(t time.Time) string {
	s := m.label + ": " + m.count()
	if sp := m.speed(t); sp != "" {
		s += ", " + sp
	}
	return s
}

// progress returns replay options that report cmd's progress on inst on
// stderr (see meter), one meter per replay phase, and a function to call
// when the operation ended (ok: it succeeded). The unit is the
// installation's events; each phase's total is counted on the stream
// (Log.Pending) when the phase starts: the events after its first
// checkpoint, less those after its target when it has one.
func progress(ctx context.Context, env *cliEnv, log *eventlog.Log, cmd string, inst events.InstallationID) (*replay.Options, func(ok bool)) {
	var (
		mu      sync.Mutex
		cur     *meter
		phase   string
		from    uint64
		pending = map[uint64]int64{}
	)
	// pendingAfter counts inst's events after stream sequence seq (-1 when
	// the stream does not say).
	pendingAfter := func(seq uint64) int64 {
		if n, ok := pending[seq]; ok {
			return n
		}
		p, err := log.Pending(ctx, inst, seq)
		n := int64(p.Events)
		if err != nil {
			n = -1
		}
		pending[seq] = n
		return n
	}
	// Every replay starts from a fresh database: count its events up
	// front, before the replay competes for the stream.
	pendingAfter(0)
	opts := &replay.Options{Progress: func(p replay.Progress) {
		mu.Lock()
		defer mu.Unlock()
		if cur == nil || p.Phase != phase || p.From != from {
			if cur != nil {
				cur.finish(true)
			}
			phase, from = p.Phase, p.From
			total := pendingAfter(p.From - 1)
			if p.To > 0 && total > 0 {
				if after := pendingAfter(p.To); after >= 0 {
					total -= after
				} else {
					total = -1
				}
			}
			label := cmd + " " + string(inst)
			if p.Phase != replay.PhaseReplay && p.Phase != cmd {
				label += " (" + p.Phase + ")"
			}
			cur = newMeter(env, label, "events", total)
		}
		cur.set(int64(p.Applied))
	}}
	return opts, func(ok bool) {
		mu.Lock()
		defer mu.Unlock()
		if cur != nil {
			cur.finish(ok)
			cur = nil
		}
	}
}
