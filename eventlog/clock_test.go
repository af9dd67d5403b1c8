package eventlog

import (
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// TestAppendRefusedOnClockBehind: a writer caches the key of its day;
// retention in another process shreds that day (by the server's clock
// it ended long enough ago); the writer's clock lags by more than the
// grace, so it still dates its events in that day. It sealed them under
// the cached key, the append succeeded, and nothing else could open them
// (every replay stopped there with ErrRetainedOut). The Log now refuses
// appends while its clock is more than MaxClockBehind behind the
// server's, from the first append after the clock stepped back (not
// only at the next periodic check), and appends again once it is right.
func TestAppendRefusedOnClockBehind(t *testing.T) {
	lw, lr, offset := writerAndRetainer(t)
	lw.clock.Store(nil)
	ctx := context.Background()
	g := group(instA, "g1")
	undated := func(agg events.Aggregate, pos uint64, text string) events.Event {
		e := msg(agg, pos, text)
		e.Time = time.Time{} // dated by the writer's clock
		return e
	}
	first := mustAppend(t, lw, 0, undated(g, 1, "on time"))[0] // caches the day's key
	dayKey, _, err := events.EnvelopeDataKeyID(rawGet(t, lw, first.Seq).Data)
	if err != nil {
		t.Fatal(err)
	}
	if n, err := lr.ShredDataKeys(ctx, instA, []events.DataKeyID{dayKey}); err != nil || n != 1 {
		t.Fatalf("shred the writer's day: %d, %v", n, err)
	}

	offset.Store(int64(-(MaxClockBehind + 30*time.Minute))) // stepped back, within clockRecheck of the last check
	before := streamMsgs(t, lw)
	_, err = lw.Append(ctx, 1, undated(g, 2, "an hour behind"))
	if !errors.Is(err, ErrClockBehind) || !strings.Contains(err.Error(), lw.cfg.Stream) {
		t.Fatalf("append with the clock an hour behind: %v; want ErrClockBehind naming stream %s", err, lw.cfg.Stream)
	}
	_, err = lw.AppendBulk(ctx, []Transition{{Expected: 1, Events: []events.Event{undated(g, 2, "bulk, an hour behind")}}})
	if !errors.Is(err, ErrClockBehind) {
		t.Fatalf("bulk append with the clock an hour behind: %v; want ErrClockBehind", err)
	}
	if after := streamMsgs(t, lw); after != before {
		t.Fatalf("the stream went from %d to %d messages while the writer's clock was behind", before, after)
	}

	offset.Store(0)
	g2 := group(instA, "g2")
	mustAppend(t, lw, 0, undated(g2, 1, "clock right again"))
	// What the writer stored after the shred opens for another process.
	var read int
	if err := lr.Read(ctx, instA, first.Seq+1, func(Record) error { read++; return nil }); err != nil || read != 1 {
		t.Fatalf("read what the writer appended after the shred: %d events, %v; want 1, no error", read, err)
	}
}

// TestCachedDayKeyRecheckedBeforeSealing: an event its caller dates
// itself (an engine on its own clock, an import) in a day another
// process shredded sealed under the key this Log had cached, for as long
// as the key stayed cached (until the process restarted): the append
// succeeded, and nothing else could open the event. A cached day key is
// now looked up in the bucket again before it seals once it was last
// found there more than dayKeyRecheck ago: the append is refused with
// ErrRetainedOut, through Append and AppendBulk, and nothing is stored.
func TestCachedDayKeyRecheckedBeforeSealing(t *testing.T) {
	lw, lr, offset := writerAndRetainer(t)
	ctx := context.Background()
	day := time.Now().UTC()
	dated := func(g events.Aggregate, pos uint64, text string) events.Event {
		e := msg(g, pos, text)
		e.Time = day
		return e
	}
	// One group for each way to append, its day's key cached by the
	// writer, then shredded by the other process.
	g1, g2 := group(instA, "g1"), group(instA, "g2")
	for _, g := range []events.Aggregate{g1, g2} {
		first := mustAppend(t, lw, 0, dated(g, 1, "before the shred"))[0]
		dayKey, _, err := events.EnvelopeDataKeyID(rawGet(t, lw, first.Seq).Data)
		if err != nil {
			t.Fatal(err)
		}
		if n, err := lr.ShredDataKeys(ctx, instA, []events.DataKeyID{dayKey}); err != nil || n != 1 {
			t.Fatalf("shred %s's day: %d, %v", g.ID, n, err)
		}
	}
	// The writer's clock moves on past the recheck (a little ahead of the
	// server's is allowed).
	offset.Store(int64(dayKeyRecheck + time.Minute))
	before := streamMsgs(t, lw)
	if _, err := lw.Append(ctx, 1, dated(g1, 2, "after the shred")); !errors.Is(err, ErrRetainedOut) {
		t.Fatalf("append into the shredded day with its key cached: %v; want ErrRetainedOut", err)
	}
	_, err := lw.AppendBulk(ctx, []Transition{{Expected: 1, Events: []events.Event{dated(g2, 2, "bulk, after the shred")}}})
	if !errors.Is(err, ErrRetainedOut) {
		t.Fatalf("bulk append into the shredded day with its key cached: %v; want ErrRetainedOut", err)
	}
	if after := streamMsgs(t, lw); after != before {
		t.Fatalf("the stream went from %d to %d messages: sealed under a shredded key", before, after)
	}
}

// writerAndRetainer opens two Logs of one stream: a writer whose clock
// runs offset (nanoseconds) from this process's, and the process that
// retains.
func writerAndRetainer(t *testing.T) (lw, lr *Log, offset *atomic.Int64) {
	t.Helper()
	srv := natstestStart(t)
	ring := keyring(t, 1, 0x11)
	lw = openLog(t, testConfig(srv), ring)
	lr = openLog(t, testConfig(srv), ring)
	offset = new(atomic.Int64)
	lw.now = func() time.Time { return time.Now().Add(time.Duration(offset.Load())) }
	return lw, lr, offset
}
