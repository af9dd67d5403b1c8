package replay

import (
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// The epoch retention kill test: like TestRetainKill9, but the policy
// keeps no past epochs and the history's two groups are at epoch 8 with
// epochs 0 to 4 retired, so Retain cuts both groups' epoch chains (one
// compare-and-set each, after the snapshot). The child is killed after
// each of its steps in turn, now and then a random moment later. After
// every kill, seen by a fresh Log: each chain is either untouched or cut
// at epoch 5 exactly, a cut chain's earlier events open for nobody and
// every other event opens, a cut is never without the snapshot that
// replaces it, and a rebuild equals the live read model. Running again
// finishes with both chains cut.

const envRetainEpochsChild = "EPOCHLOG_RETAIN_EPOCHS_CHILD" // the NATS URL: run as the child

// epochRetainPolicy keeps the messages and deliveries, and no past epoch
// beyond those the read model holds.
var epochRetainPolicy = RetentionPolicy{PastEpochs: KeepNoPastEpochs}

const (
	epochKillGroups = 2
	epochKillLast   = 8 // each group's current epoch
	epochKillKeep   = 5 // the oldest epoch the read model holds
)

// epochHistory is historyGen's history (groups at epoch 1, some
// messages) carried on to epochKillLast by commits that each retire the
// epoch leaving a window of three past epochs, as the engine's default.
func epochHistory(t testing.TB, l *eventlog.Log) {
	t.Helper()
	h := newHistoryGen(instA)
	h.setup(epochKillGroups)
	h.messages(6, epochKillGroups)
	for g := range epochKillGroups {
		gid := genGroupID(g)
		for e := uint64(2); e <= epochKillLast; e++ {
			var retired []uint64
			if e >= 4 {
				retired = []uint64{e - 4}
			}
			h.add(events.AggGroup, hex.EncodeToString(gid), events.CommitApplied{GroupID: gid, Epoch: e,
				EpochAuthenticator: []byte(fmt.Sprintf("auth-%d", e)), ConfirmedTranscriptHash: []byte(fmt.Sprintf("cth-%d", e)),
				Commit: []byte(fmt.Sprintf("commit-%d", e)), State: events.NewSecret([]byte(fmt.Sprintf("state-%d", e))), RetiredEpochs: retired})
		}
	}
	if _, err := h.flush(context.Background(), l); err != nil {
		t.Fatal(err)
	}
}

func runRetainEpochsChild(t *testing.T, url, path string) {
	ctx := context.Background()
	l, db, step := retainChild(t, url, path)
	if _, err := Retain(ctx, l, instA, db, epochRetainPolicy, &RetainOptions{Options: *testReplayOptions(), Step: step}); err != nil {
		t.Fatal(err)
	}
	step("done")
}

func TestRetainEpochsKill9(t *testing.T) {
	if url := os.Getenv(envRetainEpochsChild); url != "" {
		runRetainEpochsChild(t, url, os.Getenv(envRetainDB))
		return
	}
	if testing.Short() {
		t.Skip("kills child processes")
	}
	ctx := context.Background()
	l, srv := newLog(t)
	epochHistory(t, l)
	live := filepath.Join(t.TempDir(), "a.db")
	key := rawDBKey(t, 0x42)
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	want, _ := digestOf(t, live, key)
	type epochEvent struct {
		seq     uint64
		subject string
		group   string
		epoch   uint64
		data    []byte
	}
	var evs []epochEvent // every event sealed under a group's epoch chain
	if err := l.Read(ctx, instA, 0, func(r eventlog.Record) error {
		env, err := rawEnv(l, r.Seq)
		if err != nil {
			return err
		}
		id, _, err := events.EnvelopeDataKeyID(env)
		if err != nil {
			return err
		}
		if n, ok := id.Epoch(); ok {
			evs = append(evs, epochEvent{r.Seq, r.Subject, r.Event.Aggregate.ID, n, env})
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(evs) < epochKillGroups*(epochKillLast+1) {
		t.Fatalf("%d events under epoch chains, want at least %d", len(evs), epochKillGroups*(epochKillLast+1))
	}
	seed := uint64(time.Now().UnixNano())
	t.Logf("seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, 2))
	finished := false
	var kills []string
	for round := 0; round < 20 && !finished; round++ {
		killAfter := round + 1 // one step further each round
		var late time.Duration
		if round%2 == 1 {
			late = time.Duration(rng.IntN(150)) * time.Millisecond
		}
		last, done := killRun(t, round, "TestRetainEpochsKill9", []string{envRetainEpochsChild + "=" + srv.URL(), envRetainDB + "=" + live}, killAfter, late)
		if done {
			finished = true
		} else {
			kills = append(kills, last)
		}

		// The state the kill left, seen by a fresh Log (nothing cached).
		check := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
		cut := map[string]bool{}
		for g := range epochKillGroups {
			agg := hex.EncodeToString(genGroupID(g))
			id, err := check.GroupEpochID(instA, agg, 0)
			if err != nil {
				t.Fatal(err)
			}
			start, found, err := check.EpochChainStart(ctx, instA, id)
			switch {
			case err != nil || !found:
				t.Fatalf("round %d (killed after %q): group %s's chain: found %v, %v", round, last, agg, found, err)
			case start == epochKillKeep:
				cut[agg] = true
			case start != 0:
				t.Fatalf("round %d (killed after %q): group %s's chain starts at epoch %d, want 0 or %d", round, last, agg, start, epochKillKeep)
			}
		}
		for _, e := range evs {
			_, err := check.OpenEnvelope(ctx, instA, e.subject, e.data)
			if gone := cut[e.group] && e.epoch < epochKillKeep; gone && !errors.Is(err, eventlog.ErrRetainedOut) || !gone && err != nil {
				t.Fatalf("round %d (killed after %q): seq %d (group %s epoch %d, chain cut %v): %v", round, last, e.seq, e.group, e.epoch, cut[e.group], err)
			}
		}
		if len(cut) > 0 {
			if refs, err := check.Snapshots(ctx, instA); err != nil || len(refs) == 0 {
				t.Fatalf("round %d (killed after %q): %d chains cut without a snapshot (%v)", round, last, len(cut), err)
			}
		}
		p := filepath.Join(t.TempDir(), "rebuilt.db")
		if _, err := Rebuild(ctx, check, instA, p, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
			t.Fatalf("round %d (killed after %q, %d chains cut): rebuild: %v", round, last, len(cut), err)
		}
		if got, _ := digestOf(t, p, key); projections.Compare(want, got) != nil {
			t.Fatalf("round %d (killed after %q): the rebuild differs from the read model: %v", round, last, projections.Compare(want, got))
		}
		if got, _ := digestOf(t, live, key); projections.Compare(want, got) != nil {
			t.Fatalf("round %d (killed after %q): the live read model changed: %v", round, last, projections.Compare(want, got))
		}
		if finished && len(cut) != epochKillGroups {
			t.Fatalf("finished with %d of %d chains cut", len(cut), epochKillGroups)
		}
		_ = check.Close()
	}
	if !finished {
		t.Fatalf("the child never finished (killed after %v)", kills)
	}
	t.Logf("kills after steps: %v", kills)
}
