package main

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/fdlimit"
)

// withFileLimit makes follow see an open-file limit that fits n read
// models, for the test.
func withFileLimit(t *testing.T, n int) {
	t.Helper()
	prev := fdlimit.Limit
	fdlimit.Limit = func() (uint64, bool) { return uint64(fdlimit.Reserve + n*fdlimit.PerReadModel), true }
	t.Cleanup(func() { fdlimit.Limit = prev })
}

// Follow refuses, at once and naming the counts, more read models than
// its open-file limit lets it keep open (until 2026-12-07 the opens past
// the limit failed, were tried again, and those read models were never
// followed); as many as fit are followed.
func TestFollowRefusesMoreReadModelsThanItCanKeepOpen(t *testing.T) {
	url, dir := threeReadModelsRoomForTwo(t)
	f := startFollow(t, url, dir, "--db-keys-beside")
	select {
	case code := <-f.code:
		f.code <- code
		if code == exitOK || code == exitInterrupted {
			t.Fatalf("follow of 3 read models with room for 2 exited %d", code)
		}
	case <-time.After(time.Minute):
		t.Fatal("follow of 3 read models with room for 2 still runs after a minute")
	}
	for _, want := range []string{"3 read models need about", "ulimit -n", "--share"} {
		if !strings.Contains(f.stderr.String(), want) {
			t.Fatalf("follow did not say %q:\n%s", want, f.stderr.String())
		}
	}

	withFileLimit(t, 3)
	f = startFollow(t, url, dir, "--db-keys-beside")
	f.waitFor(t, "every read model followed", func() bool {
		return strings.Count(f.stderr.String(), `msg="following read model"`) == 3
	})
	if code := f.stop(); code != exitInterrupted {
		t.Fatalf("follow of 3 read models with room for 3 exited %d: %s", code, f.stderr.String())
	}
}

// A share group's member holds no more read models than it can keep open,
// says so, and leaves the others to the group.
func TestFollowShareHoldsNoMoreThanItCanKeepOpen(t *testing.T) {
	url, dir := threeReadModelsRoomForTwo(t)
	f := startFollow(t, url, dir, "--db-keys-beside", "--share", "capped", "--lease-ttl", "2s", "--metrics", "127.0.0.1:0", "--log-format", "json")
	addr := f.metricsAddr(t)
	f.waitFor(t, "two read models followed", func() bool {
		return strings.Count(f.stderr.String(), `"msg":"following read model"`) == 2
	})
	f.waitFor(t, "the member to say it holds as many as it may", func() bool {
		return strings.Contains(f.stderr.String(), "holding as many installations as this member may")
	})
	time.Sleep(5 * time.Second) // two lease TTLs and more: nothing else taken
	if n := strings.Count(f.stderr.String(), `"msg":"following read model"`); n != 2 {
		t.Fatalf("the member followed %d read models with room for 2:\n%s", n, f.stderr.String())
	}
	// The third, which nobody follows, is counted where an operator looks.
	f.waitFor(t, "the read model nobody follows counted", func() bool {
		_, body := get(t, addr, "/metrics")
		return metricValue(t, body, "epochlog_share_unheld", "") == 1
	})
	_, body := get(t, addr, "/readyz")
	var r followReady
	if err := json.Unmarshal([]byte(body), &r); err != nil || r.Share == nil {
		t.Fatalf("/readyz body: %v: %s", err, body)
	}
	if r.Share.Held != 2 || r.Share.MaxHeld != 2 || r.Share.Unheld != 1 {
		t.Fatalf("/readyz share: %+v; want 2 held of at most 2, 1 unheld", *r.Share)
	}
	if code := f.stop(); code != exitInterrupted {
		t.Fatalf("follow exited %d: %s", code, f.stderr.String())
	}
}

// threeReadModelsRoomForTwo makes three installations with their read
// models (keys beside) in a directory, and an open-file limit with room
// for two; it returns the server's URL and the directory.
func threeReadModelsRoomForTwo(t *testing.T) (string, string) {
	t.Helper()
	srv, l := startLog(t)
	dir := t.TempDir()
	for i := range 3 {
		createInstallation(t, l, dir, events.InstallationID(fmt.Sprintf("cap-%d", i)))
	}
	withFileLimit(t, 2)
	return srv.URL(), dir
}
