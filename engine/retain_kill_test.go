package engine

import (
	"context"
	"errors"
	"fmt"
	"io"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/internal/childproc"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// envRetainKillChild carries what the child of TestRetainKilled needs:
// the server URL and bob's read model path, separated by a space.
const envRetainKillChild = "EPOCHLOG_TEST_RETAIN_KILL_CHILD"

// retainKillFill is the fill byte of bob's raw read-model key there.
const retainKillFill = 0xb7

// retainKillAt is the time of the retention there: the day after the
// messages, an hour and a half in (KeepNone deletes and shreds that day).
var retainKillAt = time.Date(2026, 11, 24, 1, 30, 0, 0, time.UTC)

// retainKillSteps are the log messages at which the child prints a step
// and pauses, so that a kill lands there: a group state appended (not
// yet projected) and projected, the rows deleted (no snapshot yet), the
// snapshot stored, the keys shredded, retention applied, the stream
// compacted.
var retainKillSteps = map[string]string{
	"engine: recorded":                 "recorded",
	"engine: projected":                "projected",
	"replay: retention: rows deleted":  "deleted",
	"replay: snapshot stored":          "snapshot",
	"eventlog: data keys shredded":     "shredded",
	"replay: retention applied":        "applied",
	"eventlog: installation compacted": "compacted",
}

// TestRetainKilledChild is bob's process applying retention through the
// engine (messages none, compacted), run by TestRetainKilled. It does
// nothing when run alone.
func TestRetainKilledChild(t *testing.T) {
	l, path := killChildLog(t, envRetainKillChild, "TestRetainKilled", stepPrinter{steps: retainKillSteps})
	ctx := context.Background()
	in, err := OpenInstallation(ctx, l, bob, path, rawDBKey(t, retainKillFill),
		&InstallationOptions{UpdateInterval: time.Hour, Now: func() time.Time { return retainKillAt }})
	if err != nil {
		t.Fatal(err)
	}
	fmt.Println("step:start")
	if _, err := in.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, &RetainOptions{Compact: true}); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	fmt.Println("step:done")
}

// An engine process SIGKILLed (a real child process) at each step of
// Installation.Retain (a group's state appended but not projected, then
// projected, between the two groups, after the rows are deleted and
// before the snapshot, after the snapshot, the shred,
// before the compaction) loses nothing and re-accepts nothing: after a
// restart every message delivered again is refused, retention run again
// finishes, the member's next messages are received by its peers (no
// generation sealed twice), and a rebuild equals the live read model.
func TestRetainKilled(t *testing.T) {
	if testing.Short() {
		t.Skip("runs child processes; not with -short")
	}
	t.Parallel() // mostly waits on its own servers; sets no package variable

	steps := -1 // counted by the first round, which runs to the end
	for round := 0; steps < 0 || round <= steps; round++ {
		killAfter := round // 0: no kill
		ok := t.Run(strconv.Itoa(round), func(t *testing.T) {
			ctx := context.Background()
			b := newBackend(t)
			key := rawDBKey(t, retainKillFill)
			in, err := CreateInstallation(ctx, b.log, bob, b.dbPath(bob), key, b.opts())
			if err != nil {
				t.Fatal(err)
			}
			b.insts[bob], b.keys[bob] = in, key
			b.create(alice)
			b.create(carol)
			g1 := b.groupOf(b.insts[alice], bob)
			g2 := b.groupOf(b.insts[carol], bob)
			var replays []*SendOutput
			for i := range 3 {
				replays = append(replays, b.send(alice, g1, fmt.Sprintf("alice %d", i)), b.send(carol, g2, fmt.Sprintf("carol %d", i)))
			}
			b.send(bob, g1, "bob to alice")
			b.send(bob, g2, "bob to carol")
			b.drainAll()
			if err := b.insts[bob].Close(); err != nil {
				t.Fatal(err)
			}

			child := childproc.Start(t, "TestRetainKilledChild", []string{envRetainKillChild + "=" + b.srv.URL() + " " + b.dbPath(bob)}, "-test.count=1", "-test.v")
			n, last := 0, ""
			started := false
			for {
				line, err := child.Next()
				if err == io.EOF {
					break
				}
				if err != nil {
					child.Kill()
					child.Wait()
					t.Fatalf("the child is stuck after step %q: %v\n%s", last, err, child.Output())
				}
				s, isStep := strings.CutPrefix(line, "step:")
				if !isStep {
					continue
				}
				if s == "start" {
					started = true
					continue
				}
				if !started || s == "done" {
					continue
				}
				n, last = n+1, s
				if n == killAfter {
					child.Kill()
					break
				}
			}
			werr := child.Wait()
			switch {
			case killAfter == 0 && werr != nil:
				t.Fatalf("the uninterrupted child failed: %v\n%s", werr, child.Output())
			case killAfter == 0:
				steps = n
				t.Logf("%d steps", n)
			case !child.Killed():
				t.Fatalf("the child was not killed after step %d (%q): %v\n%s", killAfter, last, werr, child.Output())
			default:
				t.Logf("killed after step %d (%q)", killAfter, last)
			}

			b.now = retainKillAt
			refused := func(when string) {
				t.Helper()
				for i, m := range replays {
					if r, err := b.insts[bob].Receive(ctx, m.Message); !errors.Is(err, mls.ErrGenerationReused) && !errors.Is(err, ErrDuplicateMessage) {
						t.Fatalf("%s: message %d delivered again: %+v, %v; want it refused", when, i, r, err)
					}
				}
			}
			in, err = OpenInstallation(ctx, b.log, bob, b.dbPath(bob), key, b.opts())
			if err != nil {
				t.Fatalf("open after the kill at %q: %v", last, err)
			}
			b.insts[bob] = in
			if last == "deleted" {
				// The kill landed where it says: the rows gone, no snapshot.
				for _, g := range [][]byte{g1, g2} {
					if n := countMessages(t, in, g, func(projections.Message) bool { return true }); n != 0 {
						t.Fatalf("killed after the rows were deleted: %d messages of group %x left", n, g)
					}
				}
				if refs, err := b.log.Snapshots(ctx, bob); err != nil || len(refs) != 0 {
					t.Fatalf("killed before the snapshot: snapshots %v, %v; want none", refs, err)
				}
			}
			refused("after the kill")
			if _, err := in.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepNone}, &RetainOptions{Compact: true}); err != nil {
				t.Fatalf("retain again after the kill at %q: %v", last, err)
			}
			for _, g := range [][]byte{g1, g2} {
				if n := countMessages(t, in, g, func(projections.Message) bool { return true }); n != 0 {
					t.Fatalf("%d messages of group %x left after retention ran again", n, g)
				}
			}
			b.restart(bob)
			refused("after retention ran again and a restart")
			b.send(bob, g1, "after")
			b.send(bob, g2, "after")
			for _, peer := range []*Installation{b.insts[alice], b.insts[carol]} {
				if got := b.drain(peer.ID()); len(got) != 1 || string(got[0].Content.Bytes()) != "after" {
					t.Fatalf("%s after bob's retention: %d messages", peer.ID(), len(got))
				}
			}
			b.rebuiltAsLive(bob)
		})
		if !ok {
			return
		}
	}
}
