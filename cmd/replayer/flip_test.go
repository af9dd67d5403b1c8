package main

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/internal/natstest"
)

// Environment of the byte-flip test: how many random flips (make soak sets
// 100 or more) and the seed that picks them (random by default; the test
// logs it so a failing run can be repeated).
const (
	envFlipRounds = "EPOCHLOG_FLIP_ROUNDS"
	envFlipSeed   = "EPOCHLOG_FLIP_SEED"
)

// defaultFlipRounds is the number of random flips of a plain go test run.
const defaultFlipRounds = 12

// flipTally counts what the flips did.
type flipTally struct {
	tried    int // flips tried (the unflipped control round excluded)
	harmless int // the server returned the stream unchanged and every command succeeded with equal content
	detected int // some command refused (non-zero exit), its live file intact, nothing lost
	absorbed int // the server returned a changed stream, yet every rebuild and verify succeeded with equal content
	lost     int // a rebuild exited 0 with less or other content than the live database: must stay 0
	// failures other than a loss: a hang, a live file changed by a refused
	// rebuild or by verify, verify vouching for a damaged history, files
	// left behind.
	broken      int
	truncated   int            // flips after which the server returned fewer messages
	falseAlarms int            // refusals (rebuild or verify) although all of the installation's events were intact on the server
	reasons     map[string]int // refusals by command and cause
	slowest     time.Duration
	slowestCmd  string
	commands    int
}

// TestRebuildUnderByteFlips flips single bytes in the message blocks of a
// real nats-server process's store, restarts the server on the flipped
// store, and runs `replayer rebuild` and `replayer verify` for every
// installation against its live database. The flips: random offsets, and
// in the first and the last event of every aggregate kind a byte of the
// envelope, the record's sequence number, its hash and its headers'
// length. Two store layouts: the history in one block (the default 8 MB
// blocks), and in blocks of 32 kB (17 for this history), where a block cut
// short leaves a hole in the middle of the history. Asserted: rebuild never exits 0 with fewer
// events or with another installation's data; a refused rebuild and every
// verify leave the live file byte for byte as it was and nothing beside
// it; verify never exits 0 when the server lost or changed one of the
// installation's events, and never recommends a rebuild that refuses; no
// command outlives its deadline. Each round starts from a pristine copy of
// the store and of the live databases, so rounds are independent.
func TestRebuildUnderByteFlips(t *testing.T) {
	rounds := defaultFlipRounds
	if s := os.Getenv(envFlipRounds); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 0 {
			t.Fatalf("$%s=%q: want a number of random flips (0 or more)", envFlipRounds, s)
		}
		rounds = n
	}
	seed := rand.Uint64()
	if s := os.Getenv(envFlipSeed); s != "" {
		n, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("$%s=%q: want an unsigned number", envFlipSeed, s)
		}
		seed = n
	}
	t.Logf("%d random flips in all, seed %d (repeat with %s=%d %s=%d)", rounds, seed, envFlipRounds, rounds, envFlipSeed, seed)
	// No other test of this package starts a server process: remove the
	// binary natstest built once this test is done with it.
	t.Cleanup(natstest.RemoveBuiltServer)

	ctx := context.Background()
	start := time.Now()
	var (
		mu               sync.Mutex
		total            = &flipTally{reasons: map[string]int{}}
		targeted, random int
	)
	layouts := []struct {
		name        string
		smallBlocks bool
	}{{"one block", false}, {"32kB blocks", true}}
	// The layouts run side by side, each with a server process of its own;
	// the random flips are shared out between them.
	t.Run("layouts", func(t *testing.T) {
		for i, layout := range layouts {
			n := rounds / len(layouts)
			if i < rounds%len(layouts) {
				n++
			}
			t.Run(strings.ReplaceAll(layout.name, " ", "-"), func(t *testing.T) {
				t.Parallel()
				tally, tf, rf := flipLayout(t, ctx, layout.smallBlocks, layout.name, n, rand.New(rand.NewPCG(seed, uint64(i))))
				mu.Lock()
				defer mu.Unlock()
				total.add(tally)
				targeted, random = targeted+tf, random+rf
			})
		}
	})
	summary := fmt.Sprintf("flips tried %d (%d targeted, %d random), detected %d, harmless %d, lost %d",
		total.tried, targeted, random, total.detected, total.harmless, total.lost)
	if total.absorbed > 0 {
		summary += fmt.Sprintf(", absorbed %d", total.absorbed)
	}
	if total.broken > 0 {
		summary += fmt.Sprintf(", other failures %d", total.broken)
	}
	t.Logf("%s; %d commands, slowest %v; %v in all", summary, total.commands, total.slowest.Round(time.Millisecond), time.Since(start).Round(time.Second))
}

// flipLayout writes a history in one store layout and runs the control
// round, the targeted flips and n random ones on it. It returns the counts
// and how many targeted and random flips it tried.
func flipLayout(t *testing.T, ctx context.Context, smallBlocks bool, layout string, n int, rng *rand.Rand) (*flipTally, int, int) {
	f := newFlipFixture(t, ctx, smallBlocks, 4, 2, 24)
	t.Logf("history: %d events of %d installations in %d message block(s), written and rebuilt in %v",
		len(f.msgs), len(f.insts), len(f.blks), f.setup.Round(time.Millisecond))
	tf, err := f.targetedFlips()
	if err != nil {
		t.Fatal(err)
	}
	rf, err := f.randomFlips(rng, n)
	if err != nil {
		t.Fatal(err)
	}
	tally := &flipTally{reasons: map[string]int{}}
	// The control: the pristine store restarted, no flip. Every command
	// must succeed with equal content, or the classification below means
	// nothing.
	if got, server := f.round(t, ctx, nil, tally); got != "harmless" {
		t.Fatalf("control round without a flip: %s; server: %s", got, server)
	}
	// One line per flip, logged in one piece at the end so that the two
	// layouts running side by side do not interleave them (failures are
	// reported as they happen).
	var lines strings.Builder
	for _, fl := range append(tf, rf...) {
		got, server := f.round(t, ctx, &fl, tally)
		tally.count(got)
		fmt.Fprintf(&lines, "\n%s: %s; server: %s", fl, got, server)
	}
	t.Logf("%s: the flips%s", layout, lines.String())
	tally.log(t, layout)
	return tally, len(tf), len(rf)
}

// count adds the outcome of one flip.
func (y *flipTally) count(outcome string) {
	y.tried++
	switch outcome {
	case "harmless":
		y.harmless++
	case "detected":
		y.detected++
	case "absorbed":
		y.absorbed++
	case "lost":
		y.lost++
	default:
		y.broken++
	}
}

// add adds o's counts to y.
func (y *flipTally) add(o *flipTally) {
	y.tried += o.tried
	y.harmless += o.harmless
	y.detected += o.detected
	y.absorbed += o.absorbed
	y.lost += o.lost
	y.broken += o.broken
	y.truncated += o.truncated
	y.falseAlarms += o.falseAlarms
	y.commands += o.commands
	for k, n := range o.reasons {
		y.reasons[k] += n
	}
	if o.slowest > y.slowest {
		y.slowest, y.slowestCmd = o.slowest, o.slowestCmd
	}
}

// log prints the counts of one layout.
func (y *flipTally) log(t *testing.T, layout string) {
	t.Helper()
	for _, k := range slices.Sorted(maps.Keys(y.reasons)) {
		t.Logf("refused %4d× %s", y.reasons[k], k)
	}
	t.Logf("%s: flips tried %d, detected %d, harmless %d, absorbed %d, lost %d, other failures %d; "+
		"%d flips left the server with fewer messages; %d refusals although the installation's events were intact; "+
		"%d commands, slowest %v (%s)",
		layout, y.tried, y.detected, y.harmless, y.absorbed, y.lost, y.broken, y.truncated, y.falseAlarms,
		y.commands, y.slowest.Round(time.Millisecond), y.slowestCmd)
}

// round restores the pristine store, applies fl (nil: none), restarts the
// server and runs rebuild then verify for every installation. It reports
// "harmless", "detected", "absorbed", "lost" or "failed" (a hang, a live
// file changed, verify vouching for a damaged history, files left
// behind), and what the server made of the flip; every failure is also
// reported with t.Errorf.
func (f *flipFixture) round(t *testing.T, ctx context.Context, fl *flip, tally *flipTally) (string, string) {
	t.Helper()
	what := "control round"
	if fl != nil {
		what = fl.String()
	}
	f.srv.Kill()
	if err := f.restoreStore(); err != nil {
		t.Fatal(err)
	}
	if fl != nil {
		if err := fl.apply(f.srv.Store()); err != nil {
			t.Fatal(err)
		}
	}
	f.srv.Start()
	got, last, unreadable, serr := readStream(ctx, f.srv.URL(), f.stream)
	same := func(seq uint64) bool {
		m, ok := got[seq]
		return serr == nil && ok && m.subject == f.msgs[seq].subject && bytes.Equal(m.data, f.msgs[seq].data)
	}
	identical := serr == nil && last == f.lastSeq && len(got) == len(f.msgs)
	for seq := range f.msgs {
		identical = identical && same(seq)
	}
	if len(got) < len(f.msgs) || serr != nil {
		tally.truncated++
	}
	server := "stream unchanged"
	if !identical {
		var missing, changed []uint64
		for seq := range f.msgs {
			if _, ok := got[seq]; !ok {
				missing = append(missing, seq)
			} else if !same(seq) {
				changed = append(changed, seq)
			}
		}
		server = fmt.Sprintf("%d of %d messages, last seq %d (was %d), %d missing %s (%d of them unreadable), %d changed %s",
			len(got), len(f.msgs), last, f.lastSeq, len(missing), seqRanges(missing), unreadable, len(changed), seqRanges(changed))
		if serr != nil {
			server += fmt.Sprintf(", read error: %v", serr)
		}
	}

	var refused, lost, failed bool
	fail := func(format string, args ...any) {
		t.Helper()
		failed = true
		t.Errorf("%s: "+format, append([]any{what}, args...)...)
	}
	timed := func(cmd string, r cliRun) {
		tally.commands++
		if r.elapsed > tally.slowest {
			tally.slowest, tally.slowestCmd = r.elapsed, cmd+" after "+what
		}
		if r.hung {
			fail("%s hung: still running after %v", cmd, flipCmdLimit)
		}
	}
	for _, in := range f.insts {
		intact := true
		for _, seq := range in.seqs {
			intact = intact && same(seq)
		}
		if err := in.restoreLive(); err != nil {
			t.Fatal(err)
		}
		before, err := dirNames(f.dbDir)
		if err != nil {
			t.Fatal(err)
		}

		rb := f.rebuild(ctx, in)
		timed("rebuild "+string(in.id), rb)
		if rb.code == 0 && !rb.hung {
			h, d, err := headOf(ctx, in.db, in.dbKey)
			switch {
			case err != nil:
				lost = true
				fail("rebuild of %s exited 0 but its database does not open: %v", in.id, err)
			case h.Installation != in.id:
				lost = true
				fail("rebuild of %s exited 0 with the history of %q", in.id, h.Installation)
			case h.Checkpoint < in.head.Checkpoint || len(h.Lacks(in.head)) > 0:
				lost = true
				fail("rebuild of %s exited 0 with less: checkpoint %d (live %d), lacking %v", in.id, h.Checkpoint, in.head.Checkpoint, h.Lacks(in.head))
			case !d.Equal(in.digest):
				lost = true
				fail("rebuild of %s exited 0 with other content: %v", in.id, d.String())
			}
		} else {
			refused = true
			tally.reasons[fmt.Sprintf("rebuild (exit %d): %s", rb.code, rb.reason())]++
			if intact {
				tally.falseAlarms++
			}
			if now, err := os.ReadFile(in.db); err != nil || !bytes.Equal(now, in.live) {
				fail("refused rebuild of %s (exit %d: %s) changed the live file (read error %v)", in.id, rb.code, rb.reason(), err)
			}
		}
		after, err := dirNames(f.dbDir)
		if err != nil {
			t.Fatal(err)
		}
		for _, name := range after {
			if !slices.Contains(before, name) && !strings.HasSuffix(name, ".lock") {
				fail("rebuild of %s (exit %d) left %s behind", in.id, rb.code, name)
			}
		}

		liveNow, err := os.ReadFile(in.db)
		if err != nil {
			t.Fatal(err)
		}
		v := f.verify(ctx, in)
		timed("verify "+string(in.id), v)
		if now, err := os.ReadFile(in.db); err != nil || !bytes.Equal(now, liveNow) {
			fail("verify of %s changed the live file (read error %v)", in.id, err)
		}
		switch {
		case v.hung:
		case v.code == 0 && !intact:
			fail("verify of %s exited 0 though the server lost or changed some of its events", in.id)
		case v.code != 0:
			refused = true
			tally.reasons[fmt.Sprintf("verify (exit %d): %s", v.code, v.reason())]++
			if intact {
				tally.falseAlarms++
			}
			if rb.code != 0 && strings.Contains(v.fail.Hint+v.stderr, "rebuild it") {
				fail("verify of %s recommends a rebuild (%q) that refuses: %s", in.id, v.fail.Hint, rb.reason())
			}
		}
	}
	switch {
	case lost:
		return "lost", server
	case failed:
		return "failed", server
	case refused:
		return "detected", server
	case identical:
		return "harmless", server
	default:
		return "absorbed", server
	}
}

// seqRanges writes sequences as sorted ranges: [3-7 9].
func seqRanges(seqs []uint64) string {
	slices.Sort(seqs)
	var parts []string
	for i := 0; i < len(seqs); {
		j := i
		for j+1 < len(seqs) && seqs[j+1] == seqs[j]+1 {
			j++
		}
		if i == j {
			parts = append(parts, strconv.FormatUint(seqs[i], 10))
		} else {
			parts = append(parts, fmt.Sprintf("%d-%d", seqs[i], seqs[j]))
		}
		i = j + 1
	}
	return "[" + strings.Join(parts, " ") + "]"
}
