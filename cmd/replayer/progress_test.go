package main

import (
	"bytes"
	"context"
	"fmt"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// fakeClock is a meter clock the test moves by hand.
type fakeClock struct{ t time.Time }

func (c *fakeClock) now() time.Time { return c.t }

// useClock makes the meters use c and log lines every lineEvery, for the
// rest of the test.
func useClock(t *testing.T, c *fakeClock, lineEvery time.Duration) {
	oldClock, oldEvery := progressClock, progressLineEvery
	progressClock, progressLineEvery = c.now, lineEvery
	t.Cleanup(func() { progressClock, progressLineEvery = oldClock, oldEvery })
}

// progressMessages returns the msg of each log line in stderr.
func progressMessages(stderr string) []string {
	var msgs []string
	for _, m := range regexp.MustCompile(`msg="([^"]*)"`).FindAllStringSubmatch(stderr, -1) {
		msgs = append(msgs, m[1])
	}
	return msgs
}

// TestMeterLines: without a terminal a meter logs a line at most every
// progressLineEvery, with a rate counted from its first update (so the
// first batch, however fast it came, does not make it up) and an ETA, and
// one line when it ends.
func TestMeterLines(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)}
	useClock(t, clock, 5*time.Second)
	var errb bytes.Buffer
	env := &cliEnv{stdout: &bytes.Buffer{}, stderr: &errb, getenv: func(string) string { return "" }}
	m := newMeter(env, "rebuild alice", "events", 20000)
	step := func(d time.Duration, n int64) {
		clock.t = clock.t.Add(d)
		m.set(n)
	}
	step(time.Second, 500)    // the first batch: the clock starts here
	step(3*time.Second, 3600) // 4s after the start: no line yet
	step(2*time.Second, 5600) // 6s: a line, 5100 events in 5s
	step(2*time.Second, 8000) // 2s after that line: none
	step(3*time.Second, 11000)
	clock.t = clock.t.Add(time.Second)
	m.finish(true)
	got := progressMessages(errb.String())
	want := []string{
		"rebuild alice: 5600/20000 events, 1020 events/s, eta 14s",
		"rebuild alice: 11000/20000 events, 1050 events/s, eta 9s",
		"rebuild alice: 11000/11000 events done in 12s, 955 events/s",
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Fatalf("lines:\n%s\nwant:\n%s\nstderr:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"), errb.String())
	}
	if !strings.Contains(errb.String(), "time=") {
		t.Fatalf("lines without a time: %s", errb.String())
	}

	// The first update alone gives a count, no rate.
	errb.Reset()
	useClock(t, clock, 0)
	m = newMeter(env, "verify bob", "events", 0)
	m.set(512)
	m.finish(false)
	got = progressMessages(errb.String())
	if len(got) != 2 || got[0] != "verify bob: 512 events" || got[1] != "verify bob: stopped at 512 events" {
		t.Fatalf("lines: %q", got)
	}

	// A short task logs nothing.
	errb.Reset()
	useClock(t, clock, 5*time.Second)
	m = newMeter(env, "demo", "messages", 10)
	m.set(10)
	m.finish(true)
	if errb.Len() != 0 {
		t.Fatalf("a task shorter than a line logged: %s", errb.String())
	}
}

// TestMeterBarRedrawsAFewTimesASecond: on a terminal, 2000 updates over 2
// seconds (the demo's messages) redraw the bar a few times a second, not
// 2000 times.
func TestMeterBarRedrawsAFewTimesASecond(t *testing.T) {
	clock := &fakeClock{t: time.Date(2026, 11, 23, 3, 0, 0, 0, time.UTC)}
	useClock(t, clock, 5*time.Second)
	var errb bytes.Buffer
	env := &cliEnv{stdout: &bytes.Buffer{}, stderr: &errb, getenv: func(string) string { return "" }, isTerminal: true}
	m := newMeter(env, "demo", "messages", 2000)
	for i := range 2000 {
		clock.t = clock.t.Add(time.Millisecond)
		m.set(int64(i + 1))
	}
	draws := strings.Count(errb.String(), "\r")
	if draws < 2 || draws > 2*int(time.Second/progressDrawEvery)+1 {
		t.Fatalf("%d draws for 2000 updates in 2s; want at most %d", draws, 2*int(time.Second/progressDrawEvery)+1)
	}
	last := errb.String()[strings.LastIndex(errb.String(), "\r"):]
	if !strings.Contains(last, "/2000 messages, 1000 messages/s, eta ") {
		t.Fatalf("last draw: %q", last)
	}
	errb.Reset()
	m.finish(true)
	if got := errb.String(); strings.Trim(got, " \r") != "" || !strings.HasSuffix(got, "\r") {
		t.Fatalf("finish wrote %q, want the line cleared", got)
	}
}

// TestProgressCountsInstallationEvents: a rebuild and a verify of an
// installation with a known number of events report that number as their
// total (not the stream's last sequence: another installation's events
// share the stream).
func TestProgressCountsInstallationEvents(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	createInstallation(t, l, dir, "progress-other")
	createInstallation(t, l, dir, "progress-a")
	for _, id := range []events.InstallationID{"progress-other", "progress-a", "progress-other"} {
		key, err := readDBKeyFile(filepath.Join(dir, string(id)+".key"))
		if err != nil {
			t.Fatal(err)
		}
		in, err := engine.OpenInstallation(ctx, l, id, filepath.Join(dir, string(id)+".db"), key, nil)
		if err != nil {
			t.Fatal(err)
		}
		for range 10 {
			if _, err := in.PublishKeyPackage(ctx, "directory", false); err != nil {
				t.Fatal(err)
			}
		}
		in.Close()
	}
	n := 0
	if err := l.Read(ctx, "progress-a", 0, func(eventlog.Record) error { n++; return nil }); err != nil {
		t.Fatal(err)
	}
	last, err := l.LastSeq(ctx, "progress-a")
	if err != nil {
		t.Fatal(err)
	}
	if uint64(n) >= last {
		t.Fatalf("the test wants other events on the stream: %d events, last sequence %d", n, last)
	}
	clock := &fakeClock{t: time.Now()}
	useClock(t, clock, 0)
	db, key := filepath.Join(dir, "progress-a.db"), filepath.Join(dir, "progress-a.key")
	for _, cmd := range []string{"rebuild", "verify"} {
		var out, errb bytes.Buffer
		code := run(ctx, ringEnv(&out, &errb, nil), []string{cmd, "--nats", srv.URL(), "--installation", "progress-a", "--db", db, "--db-key-file", key})
		if code != exitOK {
			t.Fatalf("%s: exit %d; stderr:\n%s", cmd, code, errb.String())
		}
		want := fmt.Sprintf("%s progress-a: %d/%d events", cmd, n, n)
		found := false
		for _, msg := range progressMessages(errb.String()) {
			if strings.Contains(msg, fmt.Sprintf("/%d events", last)) {
				t.Fatalf("%s counts against the stream's last sequence: %q", cmd, msg)
			}
			found = found || strings.HasPrefix(msg, want)
		}
		if !found {
			t.Fatalf("%s: no progress line %q in:\n%s", cmd, want, errb.String())
		}
		if !strings.Contains(errb.String(), want+" done in") {
			t.Fatalf("%s: no final line %q in:\n%s", cmd, want+" done in", errb.String())
		}
	}
}
