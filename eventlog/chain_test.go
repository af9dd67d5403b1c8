package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// Each event links to the installation's event before it, across
// aggregates; what a reader gets back is that chain.
func TestEventsLinkToTheInstallationsPreviousEvent(t *testing.T) {
	l, _ := newLog(t)
	a, b := group(instA, "a"), group(instA, "b")
	var seqs []uint64
	for i := uint64(1); i <= 3; i++ {
		seqs = append(seqs, mustAppend(t, l, i-1, msg(a, i, "a"))[0].Seq)
		seqs = append(seqs, mustAppend(t, l, i-1, msg(b, i, "b"))[0].Seq)
	}
	recs := readAll(t, l, instA, 0)
	if len(recs) != len(seqs) {
		t.Fatalf("read %d records, appended %d", len(recs), len(seqs))
	}
	if !recs[0].Event.Prev.IsZero() {
		t.Fatalf("first event links to %v, want nothing", recs[0].Event.Prev)
	}
	for i := 1; i < len(recs); i++ {
		want := events.LinkTo(recs[i-1].Seq, rawGet(t, l, recs[i-1].Seq).Data)
		if got := recs[i].Event.Prev; got != want {
			t.Fatalf("event at seq %d links to %v, want %v", recs[i].Seq, got, want)
		}
	}
}

// The last event of an aggregate, deleted (as a corrupted block the server
// drops, or the bus operator), is missed by position checks: its aggregate
// has no later event. The next event of the installation links to it, so
// the read stops there, naming both.
func TestMissingLastEventOfAnAggregateDetected(t *testing.T) {
	l, _ := newLog(t)
	a, b := group(instA, "a"), group(instA, "b")
	mustAppend(t, l, 0, msg(a, 1, "a1"))
	lost := mustAppend(t, l, 1, msg(a, 2, "a2"))[0].Seq
	next := mustAppend(t, l, 0, msg(b, 1, "b1"))[0].Seq
	if err := l.stream.DeleteMsg(context.Background(), lost); err != nil {
		t.Fatal(err)
	}
	_, err := tryReadAll(l, instA, 0)
	wantRecordError(t, err, next, ErrMissingEvent)
	if !strings.Contains(err.Error(), fmt.Sprintf("sequence %d", lost)) {
		t.Fatalf("error %q does not name the missing seq %d", err, lost)
	}
	// The installation's own reads by message get see it too.
	n, _, err := l.ReadN(context.Background(), instA, mustFilter(t, l, instA), 1, 100, func(Record) error { return nil })
	if n != 1 {
		t.Fatalf("ReadN delivered %d records before the gap, want 1", n)
	}
	wantRecordError(t, err, next, ErrMissingEvent)
}

// A writer that knew a head the stream has since lost (a server that came
// back truncated) links its next event to it: the loss shows at once.
func TestTruncatedTailDetectedByTheNextAppend(t *testing.T) {
	l, _ := newLog(t)
	a := group(instA, "a")
	mustAppend(t, l, 0, msg(a, 1, "a1"))
	lost := mustAppend(t, l, 1, msg(a, 2, "a2"))[0].Seq
	if err := l.stream.DeleteMsg(context.Background(), lost); err != nil {
		t.Fatal(err)
	}
	// A fresh aggregate, so the position check does not stop the append.
	next := mustAppend(t, l, 0, msg(group(instA, "c"), 1, "c1"))[0].Seq
	_, err := tryReadAll(l, instA, 0)
	wantRecordError(t, err, next, ErrMissingEvent)
}

// An append after an aggregate's event the stream has lost (its writer's
// read model holds it) is told so, naming both positions, not answered as
// a conflict: another writer only moves a tail forward, so catching up
// and trying again, as a conflict asks, could never succeed. Pipelined
// appends are told the same.
func TestAppendAfterALostTailIsAMissingEvent(t *testing.T) {
	l, _ := newLog(t)
	a := group(instA, "a")
	mustAppend(t, l, 0, msg(a, 1, "a1"))
	lost := mustAppend(t, l, 1, msg(a, 2, "a2"))[0].Seq
	if err := l.stream.DeleteMsg(context.Background(), lost); err != nil {
		t.Fatal(err)
	}
	_, err := l.Append(context.Background(), 2, msg(a, 3, "a3"))
	if !errors.Is(err, ErrMissingEvent) || errors.Is(err, ErrConflict) ||
		!strings.Contains(err.Error(), "after position 2: the stream's last event of it is at position 1") {
		t.Fatalf("append after the lost tail: %v, want ErrMissingEvent naming positions 2 and 1, not ErrConflict", err)
	}
	_, err = l.AppendBulk(context.Background(), []Transition{{Expected: 2, Events: []events.Event{msg(a, 3, "a3")}}})
	if !errors.Is(err, ErrMissingEvent) || errors.Is(err, ErrConflict) {
		t.Fatalf("bulk append after the lost tail: %v, want ErrMissingEvent", err)
	}
	// A conflict is still one: the tail past the expected position.
	if _, err := l.Append(context.Background(), 0, msg(a, 1, "a1 again")); !errors.Is(err, ErrConflict) {
		t.Fatalf("append behind the tail: %v, want ErrConflict", err)
	}
}

// Two writers of one installation with stale heads (say, the installation
// and the delivery service) link to older events: that is no gap.
func TestConcurrentWritersStaleHeadsAreNoGap(t *testing.T) {
	l1, srv := newLog(t)
	l2 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	a, b := group(instA, "a"), group(instA, "b")
	for i := uint64(1); i <= 5; i++ {
		mustAppend(t, l1, i-1, msg(a, i, "from l1"))
		mustAppend(t, l2, i-1, msg(b, i, "from l2"))
	}
	if recs := readAll(t, l1, instA, 0); len(recs) != 10 {
		t.Fatalf("read %d records, want 10", len(recs))
	}
}

// A link older than the reader's window is checked against the stream:
// there when the event is, missing when it is gone.
func TestLinkBeyondTheWindowChecked(t *testing.T) {
	old := linkWindow
	linkWindow = 4
	t.Cleanup(func() { linkWindow = old })
	l, _ := newLog(t)
	keep := mustAppend(t, l, 0, msg(group(instA, "keep"), 1, "k"))[0].Seq
	lose := mustAppend(t, l, 0, msg(group(instA, "lose"), 1, "l"))[0].Seq
	staleHead := func(seq uint64, envelope []byte) {
		l.mu.Lock()
		l.heads[instA] = head{link: events.LinkTo(seq, envelope)}
		l.mu.Unlock()
	}
	// Nothing links to the event that will be lost but the last one.
	staleHead(keep, rawGet(t, l, keep).Data)
	a := group(instA, "a")
	for i := uint64(1); i <= 8; i++ {
		mustAppend(t, l, i-1, msg(a, i, "a"))
	}
	// A long-idle writer whose head is the first event.
	staleHead(keep, rawGet(t, l, keep).Data)
	mustAppend(t, l, 0, msg(group(instA, "b"), 1, "b1"))
	if recs := readAll(t, l, instA, 0); len(recs) != 11 {
		t.Fatalf("read %d records, want 11", len(recs))
	}
	// One whose head was lost meanwhile.
	staleHead(lose, rawGet(t, l, lose).Data)
	if err := l.stream.DeleteMsg(context.Background(), lose); err != nil {
		t.Fatal(err)
	}
	next := mustAppend(t, l, 1, msg(group(instA, "b"), 2, "b2"))[0].Seq
	_, err := tryReadAll(l, instA, 0)
	wantRecordError(t, err, next, ErrMissingEvent)
	if !strings.Contains(err.Error(), fmt.Sprintf("sequence %d", lose)) {
		t.Fatalf("error %q does not name the missing seq %d", err, lose)
	}
}

func mustFilter(t *testing.T, l *Log, inst events.InstallationID) string {
	t.Helper()
	f, err := l.InstallationFilter(inst)
	if err != nil {
		t.Fatal(err)
	}
	return f
}

// A message the server counts on a subject but did not deliver is missing,
// even the last of its aggregate.
func TestCheckCounts(t *testing.T) {
	counts := map[string]uint64{"p.i.group.a": 3, "p.i.group.b": 1}
	if err := checkCounts("S", counts, map[string]uint64{"p.i.group.a": 3, "p.i.group.b": 1}); err != nil {
		t.Fatalf("complete read: %v", err)
	}
	if err := checkCounts("S", counts, map[string]uint64{"p.i.group.a": 4, "p.i.group.b": 1}); err != nil {
		t.Fatalf("more delivered than counted (appended meanwhile): %v", err)
	}
	err := checkCounts("S", counts, map[string]uint64{"p.i.group.a": 2})
	if !errors.Is(err, ErrMissingEvent) || !strings.Contains(err.Error(), "p.i.group.a: 2 of 3") || !strings.Contains(err.Error(), "p.i.group.b: 0 of 1") {
		t.Fatalf("short read: %v", err)
	}
	if err := checkCounts("S", nil, nil); err != nil {
		t.Fatalf("no counts: %v", err)
	}
}

// A read of one installation remembers at most linkWindowPerInstallation
// events for its link checks, a read of many up to linkWindow: a follower
// holds one read per read model, and each full window costs megabytes.
func TestLinkWindowScalesWithTheInstallationsRead(t *testing.T) {
	const n = 3 * linkWindowPerInstallation
	for _, c := range []struct{ insts, want int }{{1, linkWindowPerInstallation}, {100, n}} {
		lc := newLinkChecker(nil, 1, c.insts)
		for seq := uint64(1); seq <= n; seq++ {
			lc.remember(events.Link{Seq: seq})
		}
		if len(lc.seen) != c.want || len(lc.ring) != c.want {
			t.Errorf("a read of %d installations after %d events remembers %d (ring %d), want %d", c.insts, n, len(lc.seen), len(lc.ring), c.want)
		}
		if want := uint64(n - c.want + 1); lc.oldest != want {
			t.Errorf("a read of %d installations: oldest remembered seq %d, want %d", c.insts, lc.oldest, want)
		}
	}
}
