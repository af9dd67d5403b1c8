package eventlog

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// The erase kill test runs Erase in a child process (kill_helpers_test.go)
// and SIGKILLs it at spread-out
// moments; the nats-server lives in the parent. The child pauses after
// each step (a failpoint), so kills land before, between and after the
// steps. After every kill the installation is either not erased at all or
// has its tombstone, and erasing again finishes; no event of the other
// installations is lost.

const envEraseInst = "EPOCHLOG_ERASE_INSTALLATION" // the child's installation to erase

// eraseChildPause is the child's pause after each step.
const eraseChildPause = 150 * time.Millisecond

func eraseRing() (*events.Keyring, error) {
	k, err := events.NewRootKey([]byte("erase-kill-test-root-key-32bytes"))
	if err != nil {
		return nil, err
	}
	return events.NewKeyring(1, k)
}

// runEraseChild is the child: erase one installation, pausing after each
// step, and say which steps it finished.
func runEraseChild() error {
	inst := os.Getenv(envEraseInst)
	ring, err := eraseRing()
	if err != nil {
		return err
	}
	l, err := childLog(ring)
	if err != nil {
		return err
	}
	defer l.Close()
	fmt.Println("open")
	_, err = l.Erase(context.Background(), events.InstallationID(inst), &EraseOptions{By: "kill test", step: func(s string) {
		fmt.Println(s)
		time.Sleep(eraseChildPause)
	}})
	return err
}

func TestEraseKill9(t *testing.T) {
	if testing.Short() {
		t.Skip("kills child processes")
	}
	srv := natstestStart(t)
	ring, err := eraseRing()
	if err != nil {
		t.Fatal(err)
	}
	cfg := testConfig(srv)
	l := openLog(t, cfg, ring)
	ctx := context.Background()
	const rounds = 8
	keep := []events.InstallationID{"keep-1", "keep-2"}
	for _, inst := range keep {
		writeMixed(t, l, inst)
	}
	want := map[events.InstallationID][]Record{}
	for _, inst := range keep {
		want[inst] = readAll(t, l, inst, 0)
	}
	seen := map[string]int{} // the last step a killed child reported, by name
	for round := range rounds {
		inst := events.InstallationID(fmt.Sprintf("erase-%d", round))
		n := writeMixed(t, l, inst)
		// Spread the kills over the child's life: before it opens, and
		// in each pause after a step.
		out := killAfter(t, "erase", srv.URL(), time.Duration(round)*eraseChildPause/2, envEraseInst+"="+string(inst))
		lines := strings.Fields(out)
		last := "none"
		if len(lines) > 0 {
			last = lines[len(lines)-1]
		}
		seen[last]++

		// A fresh Log, as after a restart: nothing cached.
		check := openLog(t, cfg, ring)
		_, _, erased, err := check.Tombstone(ctx, inst)
		if err != nil {
			t.Fatal(err)
		}
		if !erased {
			// Nothing erased: the installation reads back whole.
			if recs, err := tryReadAll(check, inst, 0); err != nil || len(recs) != n {
				t.Fatalf("round %d (killed after %q): no tombstone, but the installation reads %d of %d events: %v", round, last, len(recs), n, err)
			}
		} else if _, err := check.LastSeq(ctx, inst); !errors.Is(err, ErrErased) {
			t.Fatalf("round %d (killed after %q): a tombstone, but LastSeq says %v", round, last, err)
		}
		// Erase again finishes (or does it all), and a third time does
		// nothing.
		res, err := check.Erase(ctx, inst, nil)
		if err != nil {
			t.Fatalf("round %d (killed after %q): erase again: %v", round, last, err)
		}
		if res.Resumed != erased {
			t.Fatalf("round %d: resumed %v, tombstone found before %v", round, res.Resumed, erased)
		}
		pa := check.instPseudonym(inst)
		for name := range bucketKeys(t, check) {
			if strings.HasPrefix(name, pa+".") {
				t.Fatalf("round %d: key %s left after erasing again", round, name)
			}
		}
		if c, err := countUnder(ctx, check.stream, check.cfg.SubjectPrefix+"."+pa+".>"); err != nil || c != 0 {
			t.Fatalf("round %d: %d events left after erasing again (%v)", round, c, err)
		}
		if res, err := check.Erase(ctx, inst, nil); err != nil || !res.Resumed || res.KeysPurged+res.EventsPurged != 0 {
			t.Fatalf("round %d: third erase %+v %v", round, res, err)
		}
		// Nothing of the others is lost.
		for _, k := range keep {
			got, err := tryReadAll(check, k, 0)
			if err != nil || len(got) != len(want[k]) {
				t.Fatalf("round %d: %s reads %d of %d events: %v", round, k, len(got), len(want[k]), err)
			}
			for i := range got {
				sameEvent(t, got[i].Event, want[k][i].Event)
			}
		}
		_ = check.Close()
	}
	t.Logf("kills by the child's last finished step: %v", seen)
}
