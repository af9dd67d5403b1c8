package eventlog

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// collector gathers what a Follow delivers.
type collector struct {
	mu   sync.Mutex
	recs []Record
	more chan struct{}
}

func newCollector() *collector { return &collector{more: make(chan struct{}, 1)} }

func (c *collector) add(r Record) error {
	c.mu.Lock()
	c.recs = append(c.recs, r)
	c.mu.Unlock()
	select {
	case c.more <- struct{}{}:
	default:
	}
	return nil
}

func (c *collector) snapshot() []Record {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]Record(nil), c.recs...)
}

// waitFor waits until n records arrived (or fails the test after a generous
// bound: a hang is a failure, not a timing measurement).
func (c *collector) waitFor(t *testing.T, n int) []Record {
	t.Helper()
	deadline := time.After(60 * time.Second)
	for {
		if recs := c.snapshot(); len(recs) >= n {
			return recs
		}
		select {
		case <-c.more:
		case <-deadline:
			t.Fatalf("follow delivered %d records, want %d", len(c.snapshot()), n)
		}
	}
}

// follower is a Follow of one installation from the start, running in the
// background and collecting what it delivers.
type follower struct {
	*collector
	cancel context.CancelFunc
	done   chan error
}

func startFollow(t *testing.T, l *Log, inst events.InstallationID) *follower {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	f := &follower{collector: newCollector(), cancel: cancel, done: make(chan error, 1)}
	go func() { f.done <- l.Follow(ctx, inst, 0, f.add) }()
	return f
}

// stopExactlyOnce waits for n records, stops the follow (it must end with
// context.Canceled) and checks that it delivered events "e1".."en" at
// positions 1..n in stream order, each exactly once, and that the stream
// holds n messages (no retried append duplicated).
func (f *follower) stopExactlyOnce(t *testing.T, l *Log, n int) {
	t.Helper()
	f.waitFor(t, n)
	f.cancel()
	if err := <-f.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow returned %v, want context.Canceled", err)
	}
	recs := f.snapshot()
	if len(recs) != n {
		t.Fatalf("follow delivered %d records, want %d", len(recs), n)
	}
	for i, r := range recs {
		if r.Event.Position != uint64(i+1) || content(r.Event) != fmt.Sprintf("e%d", i+1) {
			t.Fatalf("record %d: position %d %q", i, r.Event.Position, content(r.Event))
		}
		if i > 0 && r.Seq <= recs[i-1].Seq {
			t.Fatalf("record %d: seq %d after %d", i, r.Seq, recs[i-1].Seq)
		}
	}
	if got := streamMsgs(t, l); got != uint64(n) {
		t.Fatalf("stream holds %d messages, want %d (a retried append duplicated)", got, n)
	}
}

// appendRetrying appends through a server restart: the same append is
// repeated until it succeeds, which Append's idempotency makes safe.
func appendRetrying(t *testing.T, l *Log, expected uint64, e events.Event) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		_, err := l.Append(ctx, expected, e)
		cancel()
		if err == nil {
			return
		}
		if errors.Is(err, ErrConflict) || time.Now().After(deadline) {
			t.Fatalf("append position %d: %v", e.Position, err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestFollowLiveTail(t *testing.T) {
	l, _ := newLog(t)
	agg := group(instA, "live")
	mustAppend(t, l, 0, msg(agg, 1, "before"))
	mustAppend(t, l, 0, msg(group(instB, "x"), 1, "not mine"))
	ctx, cancel := context.WithCancel(context.Background())
	c := newCollector()
	done := make(chan error, 1)
	go func() { done <- l.Follow(ctx, instA, 0, c.add) }()
	c.waitFor(t, 1)
	mustAppend(t, l, 1, msg(agg, 2, "after"), msg(agg, 3, "and after"))
	recs := c.waitFor(t, 3)
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow returned %v, want context.Canceled", err)
	}
	if len(c.snapshot()) != 3 || content(recs[2].Event) != "and after" {
		t.Fatalf("follow delivered %d records", len(c.snapshot()))
	}
}

// Restart the server mid-follow and keep appending: every event is delivered
// exactly once, in order.
func TestFollowAcrossServerRestart(t *testing.T) {
	l, srv := newLog(t)
	followAcross(t, l, group(instA, "restart"), []int{30, 30}, srv.Restart)
}

// followAcross follows instA while appending "e1", "e2", ... to agg in runs
// of the given lengths, calling disruptions[i] after run i once the
// follower is halfway through what was appended, and then checks that the
// follower got every event exactly once, in order (stopExactlyOnce).
// Appends are retried until they succeed, which idempotency makes safe.
func followAcross(t *testing.T, l *Log, agg events.Aggregate, runs []int, disruptions ...func()) {
	t.Helper()
	f := startFollow(t, l, instA)
	pos := uint64(0)
	for i, n := range runs {
		for range n {
			pos++
			appendRetrying(t, l, pos-1, msg(agg, pos, fmt.Sprintf("e%d", pos)))
		}
		if i < len(disruptions) {
			f.waitFor(t, int(pos)/2)
			disruptions[i]()
		}
	}
	f.stopExactlyOnce(t, l, int(pos))
}

func TestFollowInstallations(t *testing.T) {
	l, _ := newLog(t)
	a, b := group(instA, "m"), group(instB, "m")
	mustAppend(t, l, 0, msg(a, 1, "a1"))
	mustAppend(t, l, 0, msg(b, 1, "b1"))
	mustAppend(t, l, 0, msg(group("inst-carol", "m"), 1, "c1"))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	c := newCollector()
	go func() { _ = l.FollowInstallations(ctx, []events.InstallationID{instA, instB}, 0, c.add) }()
	c.waitFor(t, 2)
	mustAppend(t, l, 1, msg(b, 2, "b2"))
	mustAppend(t, l, 1, msg(a, 2, "a2"))
	recs := c.waitFor(t, 4)
	var got []string
	for _, r := range recs {
		got = append(got, content(r.Event))
	}
	if fmt.Sprint(got) != "[a1 b1 b2 a2]" {
		t.Fatalf("merged follow delivered %v", got)
	}
	var all []string
	err := l.ReadInstallations(ctx, []events.InstallationID{instB, instA}, 0, func(r Record) error {
		all = append(all, string(r.Event.Aggregate.Installation)+":"+content(r.Event))
		return nil
	})
	if err != nil || fmt.Sprint(all) != "[inst-alice:a1 inst-bob:b1 inst-bob:b2 inst-alice:a2]" {
		t.Fatalf("ReadInstallations: %v %v", all, err)
	}
}

func TestHandlerErrorStopsRead(t *testing.T) {
	l, _ := newLog(t)
	agg := group(instA, "h")
	res := mustAppend(t, l, 0, msg(agg, 1, "a"), msg(agg, 2, "b"), msg(agg, 3, "c"))
	stop := errors.New("projection failed")
	n := 0
	err := l.Read(context.Background(), instA, 0, func(r Record) error {
		n++
		if r.Event.Position == 2 {
			return stop
		}
		return nil
	})
	if !errors.Is(err, stop) || n != 2 {
		t.Fatalf("handler error: %v after %d records", err, n)
	}
	var re *RecordError
	if !errors.As(err, &re) || re.Seq != res[1].Seq || re.Op != "handle" {
		t.Fatalf("handler error not attributed to seq %d: %v", res[1].Seq, err)
	}
}

func TestFollowStopsWhenLogCloses(t *testing.T) {
	l, _ := newLog(t)
	mustAppend(t, l, 0, msg(group(instA, "c"), 1, "one"))
	c := newCollector()
	done := make(chan error, 1)
	go func() { done <- l.Follow(context.Background(), instA, 0, c.add) }()
	c.waitFor(t, 1)
	if err := l.Close(); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if !errors.Is(err, ErrClosed) {
			t.Fatalf("follow after close: %v, want ErrClosed", err)
		}
	case <-time.After(60 * time.Second):
		t.Fatal("follow did not return after Close")
	}
}
