package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
)

// TestFollowStopsAtAnErasedInstallation: a follower of two read models,
// both caught up, whose installation gone-b is erased while it runs,
// notices it: it says so at level ERROR naming the installation, stops
// following gone-b (tried no more), shows it as failing in /readyz and
// the failing-read-models gauge, and goes on following keep-a. Until
// 2026-12-07 it followed gone-b, healthy, until restarted.
func TestFollowStopsAtAnErasedInstallation(t *testing.T) {
	shortRetries(t)
	ctx := context.Background()
	w := newErasedWorld(t)
	srv, l, dir, keep, gone := w.srv, w.l, w.dir, w.keep, w.gone
	caughtUp := func(id events.InstallationID) func() bool { return w.caughtUp(t, id) }
	f := startFollow(t, srv.URL(), dir, "--db-keys-beside", "--metrics", "127.0.0.1:0", "--log-format", "json")
	addr := f.metricsAddr(t)
	f.waitFor(t, "keep-a to catch up", caughtUp(keep))
	f.waitFor(t, "gone-b to catch up", caughtUp(gone))
	f.waitFor(t, "/readyz 200", func() bool { code, _ := get(t, addr, "/readyz"); return code == http.StatusOK })

	if _, err := l.Erase(ctx, gone, &eventlog.EraseOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	var stopped map[string]any
	f.waitFor(t, "the erase noticed", func() bool {
		stopped = findRecord(logRecords(t, f.stderr.String()), "installation erased; stopped following its read model (delete it)",
			"installation", string(gone), "level", "ERROR")
		return stopped != nil
	})
	if e, _ := stopped["err"].(string); !strings.Contains(e, "installation gone-b was erased at") {
		t.Fatalf("the record does not give the erase: %v", stopped)
	}

	// keep-a is still followed.
	enqueueFor(t, l, keep, "after-erase", 4)
	f.waitFor(t, "keep-a to catch up after the erase", caughtUp(keep))

	code, body := get(t, addr, "/readyz")
	var ready followReady
	if err := json.Unmarshal([]byte(body), &ready); err != nil {
		t.Fatalf("/readyz body: %v: %s", err, body)
	}
	if code != http.StatusServiceUnavailable || ready.Ready || len(ready.NotReady) != 1 || ready.NotReady[0] != string(gone) {
		t.Fatalf("/readyz after the erase: %d %s", code, body)
	}
	for _, rm := range ready.ReadModels {
		switch events.InstallationID(rm.Installation) {
		case keep:
			if !rm.Ready {
				t.Fatalf("/readyz: keep-a not ready after another installation's erase: %s", body)
			}
		case gone:
			if !strings.Contains(rm.Reason, "failing: ") || !strings.Contains(rm.Reason, "was erased at") {
				t.Fatalf("/readyz: gone-b's reason does not say it was erased: %s", body)
			}
		}
	}
	_, metrics := get(t, addr, "/metrics")
	if v := metricValue(t, metrics, "epochlog_follow_read_models_failing", ""); v != 1 {
		t.Fatalf("epochlog_follow_read_models_failing = %v after the erase, want 1", v)
	}

	code = f.stop()
	out := f.stderr.String()
	if code != exitFailure {
		t.Fatalf("follow with an erased read model exited %d after Ctrl-C, want %d: %s", code, exitFailure, out)
	}
	// It was not tried again: one failure, however long follow ran on.
	goneDB := filepath.Join(dir, string(gone)+".db")
	if !strings.Contains(out, fmt.Sprintf("replayer: gone-b: FAILING (database %s, 1 failed attempts)", goneDB)) {
		t.Fatalf("the summary does not show gone-b failing once: %s", out)
	}
	if n := strings.Count(out, `"msg":"following read model again","installation":"gone-b"`); n != 0 {
		t.Fatalf("gone-b was tried again %d times after the erase: %s", n, out)
	}
	if !strings.Contains(out, "1 of 2 read models failing when follow stopped: gone-b ("+goneDB+")") {
		t.Fatalf("the final error does not name gone-b: %s", out)
	}
}

// TestFollowShareLeavesAnErasedInstallation: in a share group, the member
// following an installation that is erased gives its read model back at
// once, saying why at level ERROR, and no member takes it more than once
// after that (each may find it erased once); the other read model is
// still followed. Until 2026-12-07 each member took it in turn, failed
// three times, rested shareRest and took it again, for good.
func TestFollowShareLeavesAnErasedInstallation(t *testing.T) {
	shortRetries(t)
	oldRest := shareRest
	shareRest = 300 * time.Millisecond
	t.Cleanup(func() { shareRest = oldRest })
	ctx := context.Background()
	w := newErasedWorld(t)
	srv, l, dir, keep, gone := w.srv, w.l, w.dir, w.keep, w.gone
	caughtUp := func(id events.InstallationID) func() bool { return w.caughtUp(t, id) }
	members := []*runningFollow{
		startFollow(t, srv.URL(), dir, "--db-keys-beside", "--share", "erase", "--lease-ttl", "2s", "--log-format", "json"),
		startFollow(t, srv.URL(), dir, "--db-keys-beside", "--share", "erase", "--lease-ttl", "2s", "--log-format", "json"),
	}
	members[0].waitFor(t, "keep-a to catch up", caughtUp(keep))
	members[0].waitFor(t, "gone-b to catch up", caughtUp(gone))
	const given = "the share group gave this follower the read model"
	takes := func(m *runningFollow) int {
		n := 0
		for _, r := range logRecords(t, m.stderr.String()) {
			if r["msg"] == given && r["installation"] == string(gone) {
				n++
			}
		}
		return n
	}
	before := []int{takes(members[0]), takes(members[1])}

	if _, err := l.Erase(ctx, gone, &eventlog.EraseOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	left := func() bool {
		for _, m := range members {
			if findRecord(logRecords(t, m.stderr.String()),
				"installation erased; this member gives its read model back to the share group and will not take it again (delete it)",
				"installation", string(gone), "level", "ERROR") != nil {
				return true
			}
		}
		return false
	}
	members[0].waitFor(t, "a member to give gone-b back as erased", left)
	// Several lease periods and many rests: long enough for the members
	// to take it again and again if they did.
	time.Sleep(4 * 2 * time.Second)
	for i, m := range members {
		if n := takes(m) - before[i]; n > 1 {
			t.Fatalf("member %d took the erased read model %d times after the erase, want at most once: %s", i, n, m.stderr.String())
		}
	}
	enqueueFor(t, l, keep, "after-erase", 2)
	members[0].waitFor(t, "keep-a to catch up after the erase", caughtUp(keep))
}

// erasedWorld is two installations with read models in dir, keep-a and
// gone-b (the one a test erases), each with a few events to follow.
type erasedWorld struct {
	srv        *natstest.Server
	l          *eventlog.Log
	dir        string
	keep, gone events.InstallationID
}

func newErasedWorld(t *testing.T) *erasedWorld {
	t.Helper()
	srv, l := startLog(t)
	w := &erasedWorld{srv: srv, l: l, dir: t.TempDir(), keep: "keep-a", gone: "gone-b"}
	for _, id := range []events.InstallationID{w.keep, w.gone} {
		createInstallation(t, l, w.dir, id)
		enqueueFor(t, l, id, "before", 3)
	}
	return w
}

// caughtUp is a condition for waitFor: id's read model holds its
// installation's last event.
func (w *erasedWorld) caughtUp(t *testing.T, id events.InstallationID) func() bool {
	return func() bool {
		last, err := w.l.LastSeq(context.Background(), id)
		if err != nil {
			t.Fatal(err)
		}
		return checkpointOf(t, w.dir, id) == last
	}
}
