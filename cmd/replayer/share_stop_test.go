package main

import (
	"context"
	"fmt"
	"maps"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/lease"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// A "replayer follow --share" process stopped (SIGSTOP) past its leases,
// on shared storage, while events keep coming: the other member takes
// its leases and, since the stopped one still has the files locked,
// waits; once the stopped one resumes, it finds its leases ended, writes
// nothing more and lets go, and the read models are followed again. At
// the end every read model equals a fresh rebuild and the events the
// followers logged as applied add up to exactly the events appended: none
// applied twice, none skipped.
func TestShareStoppedFollowerResumes(t *testing.T) {
	const (
		group = "stop"
		ttl   = 2 * time.Second
	)
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	var ids []events.InstallationID
	initial := map[events.InstallationID]uint64{}
	for i := range 4 {
		id := events.InstallationID(fmt.Sprintf("stop-%d", i))
		createInstallation(t, l, dir, id)
		ids = append(ids, id)
		initial[id] = checkpointOf(t, dir, id)
	}
	bucket, err := lease.Open(ctx, l, lease.Config{Group: group, TTL: ttl})
	if err != nil {
		t.Fatal(err)
	}
	procs := []*shareProc{startShareFollower(t, dir, srv.URL(), group, ttl, 0), startShareFollower(t, dir, srv.URL(), group, ttl, 1)}
	holders := func() map[events.InstallationID]string {
		out := map[events.InstallationID]string{}
		for _, id := range ids {
			h, err := bucket.Holding(ctx, id)
			if err != nil || !h.Held {
				return nil
			}
			out[id] = h.Member
		}
		return out
	}
	var victim, other *shareProc
	var lost []events.InstallationID
	// Who holds what must also have stayed the same for two renewal
	// periods: a follower that took every read model before it saw the
	// other holds them all, both seeing two members, until it hands the
	// other its share, and may hand all it holds over between this wait
	// and its stop (then nothing of the stopped follower's is taken over).
	var prev map[events.InstallationID]string
	var stable time.Time
	waitFor(t, 2*time.Minute, "both followers to share the read models, settled", func() bool {
		hs := holders()
		if hs == nil || procs[0].memberID(t) == "" || procs[1].memberID(t) == "" || procs[0].members(t) != 2 || procs[1].members(t) != 2 {
			return false
		}
		if !maps.Equal(hs, prev) {
			prev, stable = hs, time.Now()
			return false
		}
		if time.Since(stable) < 2*bucket.RenewEvery() {
			return false
		}
		for i, p := range procs {
			lost = lost[:0]
			for id, m := range hs {
				if m == p.member {
					lost = append(lost, id)
				}
			}
			if len(lost) > 0 {
				victim, other = p, procs[1-i]
				return true
			}
		}
		return false
	})
	slices.Sort(lost)
	round := 0
	enqueueAll := func() {
		round++
		for _, id := range ids {
			enqueueFor(t, l, id, fmt.Sprintf("r%d", round), 3)
		}
	}
	enqueueAll()
	if err := victim.cmd.Process.Signal(syscall.SIGSTOP); err != nil {
		t.Fatal(err)
	}
	t.Logf("stopped %s (member %s) holding %v", victim.name, victim.member, lost)
	enqueueAll()
	waitFor(t, time.Minute, "the other follower to take the stopped one's leases", func() bool {
		hs := holders()
		for _, id := range lost {
			if hs == nil || hs[id] != other.member {
				return false
			}
		}
		return true
	})
	enqueueAll()
	time.Sleep(2 * ttl) // the other tries the locked files a few times
	if err := victim.cmd.Process.Signal(syscall.SIGCONT); err != nil {
		t.Fatal(err)
	}
	enqueueAll()
	last := map[events.InstallationID]uint64{}
	for _, id := range ids {
		last[id] = logtest.LastSeq(t, l, id)
	}
	waitFor(t, 2*time.Minute, "every read model to reach the stream's end", func() bool {
		for _, id := range ids {
			if checkpointOf(t, dir, id) != last[id] {
				return false
			}
		}
		return true
	})
	for _, p := range procs {
		if code := p.interrupt(t); code != exitInterrupted {
			t.Errorf("%s exited %d when interrupted, want %d:\n%s", p.name, code, exitInterrupted, p.text(t))
		}
	}
	applied := map[events.InstallationID]int{}
	for _, p := range procs {
		for _, r := range p.records(t) {
			switch {
			case r.Msg == "applied events":
				applied[events.InstallationID(r.Installation)] += r.Events
			case r.Level == "ERROR" && !strings.Contains(r.Err, "locked by another writer"):
				t.Errorf("%s logged an error: %s: %s (installation %s)", p.name, r.Msg, r.Err, r.Installation)
			}
		}
	}
	for _, id := range ids {
		p, err := l.Pending(ctx, id, initial[id])
		if err != nil {
			t.Fatal(err)
		}
		if got, want := applied[id], int(p.Events); got != want {
			t.Errorf("%s: followers logged %d events applied, %d were appended", id, got, want)
		}
		key, err := readDBKeyFile(filepath.Join(dir, string(id)+".key"))
		if err != nil {
			t.Fatal(err)
		}
		fresh := filepath.Join(t.TempDir(), "fresh.db")
		if _, err := replay.Rebuild(ctx, l, id, fresh, key, nil); err != nil {
			t.Fatal(err)
		}
		wantD, _ := digestAt(t, fresh, key)
		gotD, _ := digestAt(t, filepath.Join(dir, string(id)+".db"), key)
		if diff := projections.Compare(wantD, gotD); diff != nil {
			t.Errorf("%s: read model differs from a fresh rebuild: %v", id, diff)
		}
	}
}
