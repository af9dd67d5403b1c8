package lease

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/epochlog/epochlog/telemetry/telemetrytest"
)

// tracker records which member serves each installation, and every time
// two served one at once.
type tracker struct {
	mu       sync.Mutex
	cur      map[events.InstallationID]string
	overlaps []string
}

func newTracker() *tracker { return &tracker{cur: map[events.InstallationID]string{}} }

// serve is a Serve for member name: it serves until its ctx ends.
func (tr *tracker) serve(name string) Serve {
	return func(ctx context.Context, ls *Lease) {
		inst := ls.Installation()
		tr.mu.Lock()
		if other := tr.cur[inst]; other != "" {
			tr.overlaps = append(tr.overlaps, fmt.Sprintf("%s served by %s and %s", inst, other, name))
		}
		tr.cur[inst] = name
		tr.mu.Unlock()
		<-ctx.Done()
		tr.mu.Lock()
		if tr.cur[inst] == name {
			delete(tr.cur, inst)
		}
		tr.mu.Unlock()
	}
}

// servedBy returns how many installations each member serves, and how
// many are served in all.
func (tr *tracker) servedBy() (map[string]int, int) {
	tr.mu.Lock()
	defer tr.mu.Unlock()
	by := map[string]int{}
	for _, m := range tr.cur {
		by[m]++
	}
	return by, len(tr.cur)
}

func (tr *tracker) check(t *testing.T) {
	t.Helper()
	tr.mu.Lock()
	defer tr.mu.Unlock()
	if len(tr.overlaps) > 0 {
		t.Fatalf("installations served twice at once: %s", strings.Join(tr.overlaps, "; "))
	}
}

// member is a running Member of a test.
type member struct {
	*proc
	m      *Member
	cancel context.CancelFunc
	done   chan error
}

func startMember(t *testing.T, p *proc, tr *tracker, known []events.InstallationID) *member {
	t.Helper()
	return runMember(t, p, p.bucket.NewMember(p.name), tr, known)
}

// runMember runs m, a member of p's bucket, as startMember does.
func runMember(t *testing.T, p *proc, m *Member, tr *tracker, known []events.InstallationID) *member {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	mb := &member{proc: p, m: m, cancel: cancel, done: make(chan error, 1)}
	go func() { mb.done <- mb.m.Run(ctx, func() []events.InstallationID { return known }, tr.serve(p.name)) }()
	t.Cleanup(mb.stop)
	return mb
}

// stop ends the member's Run and waits for it.
func (mb *member) stop() {
	mb.cancel()
	select {
	case <-mb.done:
	case <-time.After(waitLimit):
		panic("member " + mb.name + " did not stop")
	}
	mb.done <- nil // for a second stop
}

// shares returns how many of insts each of the member ids owns, by
// rendezvous over them all (what each holds once the share settled).
func shares(t *testing.T, b *Bucket, insts []events.InstallationID, ids ...string) map[string]int {
	t.Helper()
	owned := map[string]int{}
	for _, inst := range insts {
		p, err := b.pseudonym(inst)
		if err != nil {
			t.Fatal(err)
		}
		owned[rendezvous(ids, p)]++
	}
	return owned
}

// orphansTaken counts the installations p took as left free by their
// owner, as its log says (no metric counts them apart from other
// acquisitions of free leases).
func orphansTaken(p *proc) int {
	return strings.Count(p.logs.String(), "took an installation its owner left free")
}

func installations(n int) []events.InstallationID {
	out := make([]events.InstallationID, n)
	for i := range out {
		out[i] = events.InstallationID(fmt.Sprintf("inst-%02d", i))
	}
	return out
}

func acquisitions(t *testing.T, how string, ps ...*member) float64 {
	var n float64
	for _, p := range ps {
		n += telemetrytest.Value(t, p.metrics, "epochlog_lease_acquisitions_total", "how", how)
	}
	return n
}

// Three members share twelve installations with no overlap and no gap. One
// crashes (its connection gone, nothing released): the others take its
// installations over once its leases expire, as takeovers. Another leaves
// cleanly: its installations are released and taken at once, as free.
func TestShareSplitsAndTakesOver(t *testing.T) {
	cfg := startServer(t)
	insts := installations(12)
	tr := newTracker()
	var ms []*member
	for _, name := range []string{"A", "B", "C"} {
		ms = append(ms, startMember(t, newProc(t, cfg, name, "g", testTTL), tr, insts))
	}
	// Each serves its share by rendezvous, no more: a member that took
	// everything before it saw the others holds it all, with every member
	// seeing three, until it hands the others their shares.
	owned := shares(t, ms[0].bucket, insts, ms[0].m.ID(), ms[1].m.ID(), ms[2].m.ID())
	eventually(t, "every member to serve its share, by every member's account", func() bool {
		by, n := tr.servedBy()
		for _, mb := range ms {
			if n, joined := mb.m.Members(); n != 3 || !joined {
				return false
			}
			if len(mb.m.Held()) != owned[mb.m.ID()] || by[mb.name] != owned[mb.m.ID()] {
				return false
			}
		}
		return n == len(insts)
	})
	tr.check(t)
	by, _ := tr.servedBy()
	t.Logf("shared: %v", by)

	// Crash the member serving the most.
	victim := ms[0]
	for _, mb := range ms {
		if by[mb.name] > by[victim.name] {
			victim = mb
		}
	}
	var survivors []*member
	for _, mb := range ms {
		if mb != victim {
			survivors = append(survivors, mb)
		}
	}
	lost := by[victim.name]
	crashed := time.Now()
	victim.log.Close()
	victim.stop()
	eventually(t, "the survivors to serve every installation", func() bool {
		by, n := tr.servedBy()
		return n == len(insts) && by[victim.name] == 0
	})
	took := time.Since(crashed)
	tr.check(t)
	t.Logf("%d installations taken over %v after the crash (bound %v + catch-up)", lost, took.Round(time.Millisecond), victim.bucket.TakeoverBound())
	if n := acquisitions(t, telemetry.LeaseTakeover, survivors...); n < float64(lost) {
		t.Errorf("%v takeovers, want at least the %d installations of the crashed member", n, lost)
	}

	// A clean leave hands over at once: released leases are free, not
	// taken over.
	leaving, staying := survivors[0], survivors[1]
	by, _ = tr.servedBy()
	moved := by[leaving.name]
	freeBefore := acquisitions(t, telemetry.LeaseFree, staying)
	takeBefore := acquisitions(t, telemetry.LeaseTakeover, staying)
	leaving.stop()
	eventually(t, "the last member to serve every installation", func() bool {
		by, n := tr.servedBy()
		return n == len(insts) && by[staying.name] == len(insts)
	})
	tr.check(t)
	if got := acquisitions(t, telemetry.LeaseFree, staying) - freeBefore; got != float64(moved) {
		t.Errorf("%v free acquisitions after a clean leave of %d installations", got, moved)
	}
	if got := acquisitions(t, telemetry.LeaseTakeover, staying) - takeBefore; got != 0 {
		t.Errorf("%v takeovers after a clean leave", got)
	}
	if v := telemetrytest.Value(t, staying.metrics, "epochlog_leases_held"); v != float64(len(insts)) {
		t.Errorf("leases held %v, want %d", v, len(insts))
	}
}

// A member that joins gets its share: the member holding everything hands
// over what the new one owns, released before it is taken, never served
// twice.
func TestShareHandsOverToNewMember(t *testing.T) {
	cfg := startServer(t)
	insts := installations(12)
	tr := newTracker()
	a := startMember(t, newProc(t, cfg, "A", "g", testTTL), tr, insts)
	eventually(t, "A to serve everything", func() bool { _, n := tr.servedBy(); return n == len(insts) })
	// B must own some of them, or nothing is handed over: ids are random,
	// so draw B's until it does.
	pb := newProc(t, cfg, "B", "g", testTTL)
	mb := pb.bucket.NewMember("B")
	for shares(t, a.bucket, insts, a.m.ID(), mb.ID())[mb.ID()] == 0 {
		mb = pb.bucket.NewMember("B")
	}
	b := runMember(t, pb, mb, tr, insts)
	owned := shares(t, a.bucket, insts, a.m.ID(), b.m.ID())
	// B's whole share, not its first installation: the hand-over goes on
	// after B serves one.
	eventually(t, "B to get its share", func() bool {
		by, n := tr.servedBy()
		return n == len(insts) && by["A"] == owned[a.m.ID()] && by["B"] == owned[b.m.ID()] &&
			len(a.m.Held()) == owned[a.m.ID()] && len(b.m.Held()) == owned[b.m.ID()]
	})
	tr.check(t)
	by, _ := tr.servedBy()
	t.Logf("after B joined: %v", by)
	if got := acquisitions(t, telemetry.LeaseFree, b); got != float64(owned[b.m.ID()]) {
		t.Errorf("B acquired %v as free, owns %d", got, owned[b.m.ID()])
	}
}

// Members that do not know the same installations leave no gap: an
// installation whose owner does not know it is taken by a member that
// does, once it stayed free for a TTL.
func TestShareTakesWhatTheOwnerDoesNotKnow(t *testing.T) {
	cfg := startServer(t)
	insts := installations(12)
	tr := newTracker()
	a := startMember(t, newProc(t, cfg, "A", "g", testTTL), tr, insts)
	b := startMember(t, newProc(t, cfg, "B", "g", testTTL), tr, nil) // knows none
	// B's share, by rendezvous, is what A must take as left free by its
	// owner: at once if A saw B before it took anything, else after it
	// handed the share to B. (A that serves everything before it sees B
	// is not the case under test.)
	bShare := shares(t, a.bucket, insts, a.m.ID(), b.m.ID())[b.m.ID()]
	eventually(t, "A to see B and serve every installation, B's share as left free by its owner", func() bool {
		by, n := tr.servedBy()
		na, _ := a.m.Members()
		return na == 2 && n == len(insts) && by["A"] == len(insts) && len(b.m.Held()) == 0 &&
			orphansTaken(a.proc) >= bShare
	})
	tr.check(t)
}

// A member cut off from the bucket steps aside before the others take
// its installations (never served twice), and gets its share back once
// it can reach the bucket again.
func TestSharePartitionedMemberStepsAside(t *testing.T) {
	cfg := startServer(t)
	insts := installations(12)
	tr := newTracker()
	a := startMember(t, newProc(t, cfg, "A", "g", testTTL), tr, insts)
	b := startMember(t, newProc(t, cfg, "B", "g", testTTL), tr, insts)
	// Both hold their own share and nothing else: a hand-over still under
	// way when A is cut off ends in a failed release that B then takes
	// over as expired, which A does not count as lost.
	owned := map[string]int{}
	for _, inst := range insts {
		p, err := a.bucket.pseudonym(inst)
		if err != nil {
			t.Fatal(err)
		}
		owned[rendezvous([]string{a.m.ID(), b.m.ID()}, p)]++
	}
	if owned[a.m.ID()] == 0 {
		t.Fatalf("A owns none of %d installations: pick others", len(insts))
	}
	eventually(t, "both to share", func() bool {
		by, n := tr.servedBy()
		na, _ := a.m.Members()
		nb, _ := b.m.Members()
		return n == len(insts) && na == 2 && nb == 2 &&
			len(a.m.Held()) == owned[a.m.ID()] && len(b.m.Held()) == owned[b.m.ID()] && by["A"] == owned[a.m.ID()]
	})
	restore := cutOff(a.bucket)
	eventually(t, "B to serve everything while A is cut off", func() bool {
		by, n := tr.servedBy()
		return n == len(insts) && by["B"] == len(insts)
	})
	tr.check(t)
	// What A held when it was cut off is what it lost as expired and B
	// took over. (Counted from the metrics, not from a sample taken
	// before the cut: A may still have been handing B its share then.)
	lost := telemetrytest.Value(t, a.metrics, "epochlog_lease_losses_total", "reason", telemetry.LeaseExpired)
	if lost < 1 || lost > float64(len(insts)) {
		t.Errorf("A lost %v leases as expired, want 1 to %d", lost, len(insts))
	}
	if n := acquisitions(t, telemetry.LeaseTakeover, b); n != lost {
		t.Errorf("B took over %v, want the %v A lost", n, lost)
	}
	eventually(t, "A, cut off, to hold nothing", func() bool { return len(a.m.Held()) == 0 })
	restore()
	eventually(t, "A to get its share back", func() bool {
		by, n := tr.servedBy()
		return n == len(insts) && by["A"] > 0
	})
	tr.check(t)
}

// A member bounded by SetMaxHeld never holds more than its bound: the
// installations of its share beyond it are left free, and the other
// member takes them once they have been free for a TTL. When the other
// member leaves, the bounded one still holds no more than its bound, and
// the rest stay unheld.
func TestShareMemberHoldsNoMoreThanItsBound(t *testing.T) {
	cfg := startServer(t)
	insts := installations(12)
	tr := newTracker()
	pa := newProc(t, cfg, "A", "g", testTTL)
	pb := newProc(t, cfg, "B", "g", testTTL)
	// A must own more than its bound, or no installation of its share is
	// left free for B to take (and with fewer than 3, A never reaches
	// its bound): ids are random, so draw A's until it does.
	mb := pb.bucket.NewMember("B")
	ma := pa.bucket.NewMember("A")
	for shares(t, pa.bucket, insts, ma.ID(), mb.ID())[ma.ID()] <= 3 {
		ma = pa.bucket.NewMember("A")
	}
	beyond := shares(t, pa.bucket, insts, ma.ID(), mb.ID())[ma.ID()] - 3
	a := &member{proc: pa, m: ma, done: make(chan error, 1)}
	a.m.SetMaxHeld(3)
	ctx, cancel := context.WithCancel(context.Background())
	a.cancel = cancel
	var most int
	var mu sync.Mutex
	serve := tr.serve("A")
	go func() {
		a.done <- a.m.Run(ctx, func() []events.InstallationID { return insts }, func(ctx context.Context, ls *Lease) {
			mu.Lock()
			most = max(most, len(a.m.Held()))
			mu.Unlock()
			serve(ctx, ls)
		})
	}()
	t.Cleanup(a.stop)
	b := runMember(t, pb, mb, tr, insts)
	// A counts what is unheld at its passes: the installations B took
	// as left free may have been counted at the pass before, so its count
	// must reach 0 after them, not at once.
	eventually(t, "every installation served, A at its bound, B with what A left free, and A counting none unheld", func() bool {
		by, n := tr.servedBy()
		return n == len(insts) && by["A"] == 3 && by["B"] == len(insts)-3 &&
			orphansTaken(b.proc) >= beyond &&
			a.m.Unheld() == 0
	})
	tr.check(t)

	b.stop()
	eventually(t, "B's installations let go", func() bool {
		by, _ := tr.servedBy()
		return by["B"] == 0
	})
	// A TTL and more for A to take what it may of B's: nothing. The rest
	// are counted as nobody's once any member could have taken them.
	time.Sleep(2 * testTTL)
	if by, n := tr.servedBy(); by["A"] != 3 || n != 3 || len(a.m.Held()) != 3 {
		t.Fatalf("with B gone, A serves %d of %d served (holds %d); want its bound, 3", by["A"], n, len(a.m.Held()))
	}
	eventually(t, "A to count the 9 installations nobody holds", func() bool { return a.m.Unheld() == len(insts)-3 })
	mu.Lock()
	defer mu.Unlock()
	if most > 3 {
		t.Fatalf("A held %d installations at once, more than its bound of 3", most)
	}
	tr.check(t)
}
