package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/lease"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// The share group's fault test: a 3-node JetStream cluster, the stream
// and the lease bucket on all three; 9 installations whose read models
// sit in one directory (the shared storage of the test); events appended
// to them all the time; 3 "replayer follow --share" processes. Each round
// SIGKILLs the follower holding the most read models: every one of them
// must be followed again (an event appended after the kill applied) within
// the takeover bound the docs give, TTL + TTL/3, plus a catch-up
// allowance. A replacement follower then joins, and the next round
// starts once it has its share. At the end every read model equals a
// fresh rebuild of its installation, no follower logged a failure (an
// event applied twice would have been refused, and logged), and the
// events each follower logged as applied add up to exactly the events
// appended, per installation (a SIGKILLed follower may have committed its
// last batch without logging it: those installations may come up short
// by at most one batch, never over).
//
// `go test ./cmd/replayer` runs 1 round; EPOCHLOG_SHARE_ROUNDS=N (make
// soak) runs N.
func TestShareFollowersTakeOver(t *testing.T) {
	rounds := 1
	if s := os.Getenv("EPOCHLOG_SHARE_ROUNDS"); s != "" {
		n, err := strconv.Atoi(s)
		if err != nil || n < 1 {
			t.Fatalf("EPOCHLOG_SHARE_ROUNDS=%q: want a positive number", s)
		}
		rounds = n
	}
	const (
		group = "fault"
		ttl   = 4 * time.Second
		// catchUp is what the bound allows for opening a read model and
		// applying what it missed, on a loaded 2-core machine.
		catchUp = 5 * time.Second
	)
	ctx := context.Background()
	c := natstest.StartCluster(t, 3)
	ring, err := parseKeyring(testRingText)
	if err != nil {
		t.Fatal(err)
	}
	l := logtest.Open(t, logtest.ClusterConfig(c.URL()), ring)
	dir := t.TempDir()
	var ids []events.InstallationID
	initial := map[events.InstallationID]uint64{}
	for i := range 9 {
		id := events.InstallationID(fmt.Sprintf("share-%02d", i))
		createInstallation(t, l, dir, id)
		ids = append(ids, id)
		initial[id] = checkpointOf(t, dir, id)
	}
	bucket, err := lease.Open(ctx, l, lease.Config{Group: group, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	bound := bucket.TakeoverBound() + catchUp

	// The writer: one delivery event every 15 ms, round robin.
	queue := engine.NewDeliveries(l, nil)
	stop := make(chan struct{})
	var writer sync.WaitGroup
	var appended atomic.Int64
	writer.Go(func() {
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-time.After(15 * time.Millisecond):
			}
			id := ids[i%len(ids)]
			if _, _, err := queue.Enqueue(ctx, engine.Enqueue{Recipient: id, Channel: "mls",
				Payload: fmt.Appendf(nil, "m-%d", i), IdempotencyKey: fmt.Sprintf("k-%d", i)}); err != nil {
				t.Errorf("enqueue: %v", err)
				return
			}
			appended.Add(1)
		}
	})
	stopWriting := sync.OnceFunc(func() { close(stop); writer.Wait() })
	defer stopWriting()

	var procs []*shareProc
	start := func() *shareProc {
		p := startShareFollower(t, dir, c.URL(), group, ttl, len(procs))
		procs = append(procs, p)
		return p
	}
	for range 3 {
		start()
	}
	// holders maps each installation to its holder's member id (every
	// installation held, by running members only).
	holders := func() (map[events.InstallationID]string, bool) {
		out := map[events.InstallationID]string{}
		for _, id := range ids {
			h, err := bucket.Holding(ctx, id)
			if err != nil || !h.Held {
				return nil, false
			}
			out[id] = h.Member
		}
		return out, true
	}
	running := func() []*shareProc {
		var out []*shareProc
		for _, p := range procs {
			if !p.killed {
				out = append(out, p)
			}
		}
		return out
	}
	// settled waits until every running follower sees all the running
	// ones as the group's members, every installation is held by a
	// running follower, and who holds what has not changed for two
	// renewal periods (the handovers to a member that joined are done).
	// (A member may hold none: rendezvous hashing shares 9 installations
	// out unevenly at times.)
	settled := func(what string) map[events.InstallationID]string {
		var hs, prev map[events.InstallationID]string
		var stable time.Time
		waitFor(t, 2*time.Minute, what, func() bool {
			live := map[string]bool{}
			run := running()
			for _, p := range run {
				if p.memberID(t) == "" || p.members(t) != len(run) {
					return false
				}
				live[p.member] = true
			}
			var ok bool
			if hs, ok = holders(); !ok {
				return false
			}
			for _, m := range hs {
				if !live[m] {
					return false
				}
			}
			if !maps.Equal(hs, prev) {
				prev, stable = hs, time.Now()
				return false
			}
			return time.Since(stable) >= 2*bucket.RenewEvery()
		})
		return hs
	}
	hs := settled("3 followers to share the read models")

	for round := 1; round <= rounds; round++ {
		time.Sleep(time.Second) // steady state: everyone applying
		waitFor(t, time.Minute, "every installation held", func() bool {
			now, ok := holders()
			if ok {
				hs = now
			}
			return ok
		})
		per := map[string][]events.InstallationID{}
		for id, m := range hs {
			per[m] = append(per[m], id)
		}
		var victim *shareProc
		for _, p := range running() {
			if victim == nil || len(per[p.member]) > len(per[victim.member]) {
				victim = p
			}
		}
		lost := per[victim.member]
		slices.Sort(lost)
		killed := time.Now()
		victim.kill(t)
		t.Logf("round %d: killed %s (member %s) holding %v", round, victim.name, victim.member, lost)

		// Each of its read models is served again once a survivor applied
		// an event of it after the kill.
		// Each was taken over (its lease expired), not handed over.
		served := map[events.InstallationID]time.Time{}
		takenOver := map[events.InstallationID]bool{}
		waitFor(t, 2*time.Minute, "the survivors to follow the killed follower's read models", func() bool {
			for _, p := range running() {
				for _, r := range p.records(t) {
					id := events.InstallationID(r.Installation)
					if !r.Time.After(killed) || !slices.Contains(lost, id) {
						continue
					}
					switch r.Msg {
					case "applied events":
						if at, ok := served[id]; !ok || r.Time.Before(at) {
							served[id] = r.Time
						}
					case "lease: took over an installation whose holder let its lease expire":
						takenOver[id] = true
					}
				}
			}
			return len(served) == len(lost)
		})
		if len(takenOver) != len(lost) {
			t.Errorf("round %d: %d of the %d read models of the killed follower were taken over from an expired lease", round, len(takenOver), len(lost))
		}
		var slowest time.Duration
		for _, id := range lost {
			took := served[id].Sub(killed)
			slowest = max(slowest, took)
			if took > bound {
				t.Errorf("round %d: %s followed again %v after the kill; the bound is %v (TTL %v + TTL/3 + %v to catch up)", round, id, took.Round(time.Millisecond), bound.Round(time.Millisecond), ttl, catchUp)
			}
		}
		t.Logf("round %d: %d read models followed again, the last %v after the kill (bound %v)", round, len(lost), slowest.Round(time.Millisecond), bound.Round(time.Millisecond))
		if round < rounds {
			start()
			hs = settled(fmt.Sprintf("round %d: the replacement follower to get its share", round))
		}
	}

	// Let the survivors run with the new holders a moment, stop writing,
	// and wait until every read model has applied everything.
	time.Sleep(time.Second)
	stopWriting()
	last := map[events.InstallationID]uint64{}
	for _, id := range ids {
		last[id] = logtest.LastSeq(t, l, id)
	}
	waitFor(t, 2*time.Minute, "every read model to reach the stream's end", func() bool {
		at := map[events.InstallationID]uint64{}
		for _, p := range procs {
			for _, r := range p.records(t) {
				if r.Msg == "applied events" {
					at[events.InstallationID(r.Installation)] = max(at[events.InstallationID(r.Installation)], r.Checkpoint)
				}
			}
		}
		for _, id := range ids {
			if at[id] < last[id] {
				return false
			}
		}
		return true
	})
	for _, p := range running() {
		if code := p.interrupt(t); code != exitInterrupted {
			t.Errorf("%s exited %d when interrupted, want %d:\n%s", p.name, code, exitInterrupted, p.text(t))
		}
	}

	// What was applied, per installation, from every follower's log.
	applied := map[events.InstallationID]int{}
	heldAtKill := map[events.InstallationID]bool{}
	for _, p := range procs {
		for _, r := range p.records(t) {
			switch {
			case r.Msg == "applied events":
				applied[events.InstallationID(r.Installation)] += r.Events
			case r.Level == "ERROR":
				t.Errorf("%s logged an error: %s: %s (installation %s)", p.name, r.Msg, r.Err, r.Installation)
			}
		}
	}
	for _, p := range procs {
		for _, id := range p.held {
			heldAtKill[id] = true
		}
	}
	key := func(id events.InstallationID) projections.Key {
		k, err := readDBKeyFile(filepath.Join(dir, string(id)+".key"))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	short := 0
	for _, id := range ids {
		p, err := l.Pending(ctx, id, initial[id])
		if err != nil {
			t.Fatal(err)
		}
		want := int(p.Events)
		got := applied[id]
		switch {
		case got > want:
			t.Errorf("%s: followers logged %d events applied, %d were appended: applied twice", id, got, want)
		case got < want && !heldAtKill[id]:
			t.Errorf("%s: followers logged %d events applied, %d were appended (no follower holding it was killed)", id, got, want)
		case want-got > replay.DefaultBatch:
			t.Errorf("%s: followers logged %d events applied, %d were appended: more than one batch unlogged", id, got, want)
		}
		short += want - got

		fresh := filepath.Join(t.TempDir(), "fresh.db")
		if _, err := replay.Rebuild(ctx, l, id, fresh, key(id), nil); err != nil {
			t.Fatalf("rebuild %s: %v", id, err)
		}
		wantD, wantCP := digestAt(t, fresh, key(id))
		gotD, gotCP := digestAt(t, filepath.Join(dir, string(id)+".db"), key(id))
		if diff := projections.Compare(wantD, gotD); diff != nil || gotCP != wantCP || gotCP != last[id] {
			t.Errorf("%s: read model at %d, fresh rebuild at %d, stream at %d: %v", id, gotCP, wantCP, last[id], diff)
		}
	}
	t.Logf("%d rounds, %d events appended, every read model equal to a fresh rebuild; 0 applied twice, %d applied by a killed follower without logging it",
		rounds, appended.Load(), short)
}

// shareProc is a "replayer follow --share" process of the fault test.
type shareProc struct {
	name    string
	cmd     *exec.Cmd
	logPath string
	done    chan error
	member  string
	killed  bool
	// held is what the process held when it was killed.
	held []events.InstallationID
}

func startShareFollower(t *testing.T, dir, url, group string, ttl time.Duration, n int) *shareProc {
	t.Helper()
	p := &shareProc{name: fmt.Sprintf("follower-%d", n), logPath: filepath.Join(t.TempDir(), "stderr.log"), done: make(chan error, 1)}
	f, err := os.Create(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	p.cmd = exec.Command("replayer", "follow", "--nats", url, "--db-dir", dir, "--db-keys-beside",
		"--share", group, "--lease-ttl", ttl.String(), "--log-format", "json", "-v")
	p.cmd.Env = append(os.Environ(), envRootKeys+"="+testRingText)
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatalf("start %s: %v", p.name, err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		if !p.killed {
			p.cmd.Process.Kill()
			<-p.done
			p.killed = true
		}
		if t.Failed() {
			t.Logf("%s (member %s):\n%s", p.name, p.member, p.text(t))
		}
	})
	return p
}

// shareRecord is what the test reads of a follower's JSON log records.
type shareRecord struct {
	Time         time.Time `json:"time"`
	Level        string    `json:"level"`
	Msg          string    `json:"msg"`
	Installation string    `json:"installation"`
	Member       string    `json:"member"`
	Events       int       `json:"events"`
	Checkpoint   uint64    `json:"checkpoint"`
	Members      int       `json:"members"`
	Err          string    `json:"err"`
}

// records parses the process's log records so far (lines that are not
// JSON, such as the summary, are skipped).
func (p *shareProc) records(t *testing.T) []shareRecord {
	t.Helper()
	f, err := os.Open(p.logPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []shareRecord
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		var r shareRecord
		if json.Unmarshal(sc.Bytes(), &r) == nil && r.Msg != "" {
			out = append(out, r)
		}
	}
	return out
}

func (p *shareProc) text(t *testing.T) string {
	b, err := os.ReadFile(p.logPath)
	if err != nil {
		return err.Error()
	}
	return string(b)
}

// memberID returns the process's member id once it has logged it.
func (p *shareProc) memberID(t *testing.T) string {
	if p.member == "" {
		for _, r := range p.records(t) {
			if r.Msg == "following read models as a member of a share group" {
				p.member = r.Member
			}
		}
	}
	return p.member
}

// members returns how many members the process last said its share group
// has (0 before it said).
func (p *shareProc) members(t *testing.T) int {
	n := 0
	for _, r := range p.records(t) {
		if r.Msg == "lease: share group members" {
			n = r.Members
		}
	}
	return n
}

// kill SIGKILLs the process, after noting what it holds.
func (p *shareProc) kill(t *testing.T) {
	t.Helper()
	if err := p.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	<-p.done
	p.killed = true
	p.held = heldBy(p)
}

// interrupt sends SIGINT and returns the exit code.
func (p *shareProc) interrupt(t *testing.T) int {
	t.Helper()
	if err := p.cmd.Process.Signal(os.Interrupt); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-p.done:
		p.killed = true
		var ee *exec.ExitError
		if errors.As(err, &ee) {
			return ee.ExitCode()
		}
		if err != nil {
			t.Fatalf("%s: %v", p.name, err)
		}
		return 0
	case <-time.After(time.Minute):
		t.Fatalf("%s did not stop within a minute of SIGINT", p.name)
		return -1
	}
}

// heldBy lists the read models a process held when it was killed, from its
// log: those given to it and not given up since.
func heldBy(p *shareProc) []events.InstallationID {
	f, err := os.Open(p.logPath)
	if err != nil {
		return nil
	}
	defer f.Close()
	held := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var r shareRecord
		if json.Unmarshal(sc.Bytes(), &r) != nil {
			continue
		}
		switch r.Msg {
		case "the share group gave this follower the read model":
			held[r.Installation] = true
		case "read model given up to the share group":
			delete(held, r.Installation)
		}
	}
	var out []events.InstallationID
	for id := range held {
		out = append(out, events.InstallationID(id))
	}
	return out
}

// waitFor polls cond every 100 ms until it holds, failing the test after
// limit.
func waitFor(t *testing.T, limit time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("waited %v for %s", limit, what)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// digestAt opens a read model as it is and returns its digest and
// checkpoint.
func digestAt(t *testing.T, path string, key projections.Key) (projections.Digest, uint64) {
	t.Helper()
	db, err := projections.OpenExisting(path, key, nil)
	if err != nil {
		t.Fatalf("open %s: %v", path, err)
	}
	defer db.Close()
	d, err := db.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	cp, err := db.Checkpoint(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d, cp
}
