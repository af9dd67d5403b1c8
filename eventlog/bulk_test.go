package eventlog

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// TestAppendBulk runs with each way AppendBulk seals: in the publishing
// goroutine (two CPUs or fewer, as on CI's machine) and ahead on worker
// goroutines (more than two).
func TestAppendBulk(t *testing.T) {
	for _, procs := range []int{2, 4} {
		t.Run(fmt.Sprintf("gomaxprocs=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			testAppendBulk(t)
		})
	}
}

func testAppendBulk(t *testing.T) {
	l, srv := newLog(t)
	l.cfg.MaxInFlight = 8 // small, so the bound is exercised
	ctx := context.Background()
	const aggs, perAgg = 20, 10
	var ts []Transition
	want := map[string][]string{}
	for pos := uint64(1); pos <= perAgg; pos++ {
		for a := range aggs {
			agg := group(instA, fmt.Sprintf("bulk%02d", a))
			text := fmt.Sprintf("g%d-p%d", a, pos)
			ts = append(ts, Transition{Expected: pos - 1, Events: []events.Event{msg(agg, pos, text)}})
			want[agg.ID] = append(want[agg.ID], text)
		}
	}
	// A long run of one aggregate, as a few multi-event transitions.
	run := group(instA, "run")
	for start := uint64(0); start < 30; start += 10 {
		var evs []events.Event
		for p := start + 1; p <= start+10; p++ {
			evs = append(evs, msg(run, p, fmt.Sprintf("r%d", p)))
			want[run.ID] = append(want[run.ID], fmt.Sprintf("r%d", p))
		}
		ts = append(ts, Transition{Expected: start, Events: evs})
	}
	res, err := l.AppendBulk(ctx, ts)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	seen := map[uint64]bool{}
	for i, r := range res {
		if len(r) != len(ts[i].Events) {
			t.Fatalf("transition %d: %d results", i, len(r))
		}
		for j, a := range r {
			if a.Duplicate || a.Position != ts[i].Expected+uint64(j)+1 || seen[a.Seq] {
				t.Fatalf("transition %d event %d: %+v", i, j, a)
			}
			if n := storedSize(t, l, a.Seq); n != a.Size {
				t.Fatalf("transition %d event %d: %+v, the stream stores %d bytes", i, j, a, n)
			}
			seen[a.Seq] = true
			total++
		}
	}
	check := func(l *Log) {
		t.Helper()
		got := map[string][]string{}
		for _, r := range readAll(t, l, instA, 0) {
			if !seen[r.Seq] {
				t.Fatalf("read seq %d that AppendBulk did not report", r.Seq)
			}
			got[r.Event.Aggregate.ID] = append(got[r.Event.Aggregate.ID], content(r.Event))
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("read back\n%v\nwant\n%v", got, want)
		}
	}
	check(l)
	if n := streamMsgs(t, l); n != uint64(total) {
		t.Fatalf("stream holds %d messages, want %d", n, total)
	}

	// The whole load again, from a fresh client: all found, nothing added.
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	again, err := fresh.AppendBulk(ctx, ts)
	if err != nil {
		t.Fatal(err)
	}
	for i := range again {
		for j := range again[i] {
			if !again[i][j].Duplicate || again[i][j].Seq != res[i][j].Seq {
				t.Fatalf("retry transition %d event %d: %+v, want duplicate of seq %d", i, j, again[i][j], res[i][j].Seq)
			}
		}
	}
	if n := streamMsgs(t, l); n != uint64(total) {
		t.Fatalf("stream holds %d messages after the retried load, want %d", n, total)
	}
	check(fresh)

	// A conflicting transition stops the load and is named.
	bad := []Transition{
		{Expected: perAgg, Events: []events.Event{msg(group(instA, "bulk00"), perAgg+1, "ok")}},
		{Expected: 0, Events: []events.Event{msg(group(instA, "bulk01"), 1, "conflict")}},
	}
	res, err = l.AppendBulk(ctx, bad)
	if !errors.Is(err, ErrConflict) || res[0] == nil || res[1] != nil {
		t.Fatalf("conflicting load: %v, results %v", err, res)
	}

	// A transition that cannot be prepared, in a later window than the
	// first: the load stops there, everything before it appended, it and
	// nothing after it.
	var load []Transition
	for i := range 3 * prepWindowSize {
		agg := group(instA, fmt.Sprintf("late%03d", i))
		load = append(load, Transition{Expected: 0, Events: []events.Event{msg(agg, 1, "x")}})
	}
	badAt := prepWindowSize + 7
	load[badAt].Events[0].Position = 5 // after position 0 it can only be 1
	before := streamMsgs(t, l)
	res, err = l.AppendBulk(ctx, load)
	if !errors.Is(err, ErrInvalidAppend) || !strings.Contains(err.Error(), fmt.Sprintf("transition %d:", badAt)) {
		t.Fatalf("load with transition %d invalid: %v", badAt, err)
	}
	for i, r := range res {
		if (i < badAt) != (r != nil) {
			t.Fatalf("load with transition %d invalid: transition %d's result %v", badAt, i, r)
		}
	}
	if n := streamMsgs(t, l); n != before+uint64(badAt) {
		t.Fatalf("stream holds %d messages after the load stopped at transition %d, want %d", n, badAt, before+uint64(badAt))
	}
}

// Each event of a bulk load is sealed under its own period's data key,
// also where the window hands the seals the keys it found in the cache:
// loads that mix groups, days and transitions of several events, with
// the keys cached and not, on either way of sealing.
func TestAppendBulkSealsUnderEachEventsKey(t *testing.T) {
	for _, procs := range []int{2, 4} {
		t.Run(fmt.Sprintf("gomaxprocs=%d", procs), func(t *testing.T) {
			defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(procs))
			l, _ := newLog(t)
			ctx := context.Background()
			const groups = 5
			pos := map[string]uint64{}
			load := func(rounds int) []Transition {
				var ts []Transition
				for r := range rounds {
					for g := range groups {
						agg := group(instA, fmt.Sprintf("keys%d", g))
						n := 1 + (r+g)%3 // one to three events
						var evs []events.Event
						for range n {
							pos[agg.ID]++
							e := msg(agg, pos[agg.ID], fmt.Sprintf("g%d-%d", g, pos[agg.ID]))
							e.Time = baseTime.Add(time.Duration(pos[agg.ID]%4) * 24 * time.Hour) // four days
							evs = append(evs, e)
						}
						ts = append(ts, Transition{Expected: pos[agg.ID] - uint64(n), Events: evs})
					}
				}
				return ts
			}
			for _, ts := range [][]Transition{load(30), load(30)} { // the second with every key cached
				if _, err := l.AppendBulk(ctx, ts); err != nil {
					t.Fatal(err)
				}
			}
			ids := map[events.DataKeyID]bool{}
			for _, r := range readAll(t, l, instA, 0) {
				want, err := l.dkIDs.get(l.keys, instA, events.PeriodKeyOf(r.Event, time.Time{}))
				if err != nil {
					t.Fatal(err)
				}
				m, err := l.getMsg(ctx, r.Seq)
				if err != nil {
					t.Fatal(err)
				}
				got, ok, err := events.EnvelopeDataKeyID(m.Data)
				if err != nil || !ok || got != want {
					t.Fatalf("seq %d (%s at position %d, %s): sealed under %v (ok %v, %v), want %v", r.Seq, r.Event.Aggregate.ID, r.Event.Position, r.Event.Time.Format(time.DateOnly), got, ok, err, want)
				}
				ids[got] = true
			}
			if len(ids) != groups*4 {
				t.Fatalf("%d data keys, want %d (a group's day each)", len(ids), groups*4)
			}
		})
	}
}
