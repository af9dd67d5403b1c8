package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"
)

// Pending counts the installation's events after a checkpoint (another
// installation's events in between do not count), dates the oldest by the
// server's timestamp, and leaves no consumer behind.
func TestPending(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	a1, a2, b := group(instA, "p1"), group(instA, "p2"), group(instB, "p")
	// A's events interleaved with B's, on two aggregates.
	var pos1, pos2, posB uint64
	for i := range 7 {
		switch i % 3 {
		case 0:
			pos1++
			mustAppend(t, l, pos1-1, msg(a1, pos1, fmt.Sprint(i)))
		case 1:
			posB++
			mustAppend(t, l, posB-1, msg(b, posB, fmt.Sprint(i)))
		case 2:
			pos2++
			mustAppend(t, l, pos2-1, msg(a2, pos2, fmt.Sprint(i)))
		}
	}
	recs := readAll(t, l, instA, 0)
	last := recs[len(recs)-1].Seq
	for _, after := range []uint64{0, 1, 2, 3, recs[len(recs)-2].Seq, last, last + 5} {
		p, err := l.Pending(ctx, instA, after)
		if err != nil {
			t.Fatalf("Pending after %d: %v", after, err)
		}
		var want uint64
		var first uint64
		for _, r := range recs {
			if r.Seq > after {
				if want == 0 {
					first = r.Seq
				}
				want++
			}
		}
		if p.Events != want || p.StreamLast != last {
			t.Errorf("Pending after %d = %d events, stream last %d; want %d, %d", after, p.Events, p.StreamLast, want, last)
		}
		switch {
		case want == 0 && !p.Oldest.IsZero():
			t.Errorf("Pending after %d: nothing pending, but Oldest %v", after, p.Oldest)
		case want > 0 && !p.Oldest.Equal(rawGet(t, l, first).Time):
			t.Errorf("Pending after %d: Oldest %v, want the time of seq %d, %v", after, p.Oldest, first, rawGet(t, l, first).Time)
		}
	}

	// An installation without events.
	p, err := l.Pending(ctx, "inst-nobody", 0)
	if err != nil || p != (Pending{}) {
		t.Fatalf("Pending of an installation without events = %+v, %v; want zero", p, err)
	}
	info, err := l.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers != 0 {
		t.Errorf("%d consumers left on the stream after Pending", info.State.Consumers)
	}
	if _, err := l.Pending(ctx, "", 0); err == nil {
		t.Error("Pending of an invalid installation id: no error")
	}
}

// Pending without a server fails (each request bounded by the request
// timeout) and says what it was asking; a closed Log answers ErrClosed.
func TestPendingErrors(t *testing.T) {
	srv := natstestStart(t)
	cfg := testConfig(srv)
	cfg.RequestTimeout = time.Second
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "g"), 1, "x"))
	srv.Shutdown()
	_, err := l.Pending(context.Background(), instA, 0)
	if err == nil {
		t.Fatal("Pending with the server down: no error")
	}
	if !strings.Contains(err.Error(), "pending after seq 0") || !strings.Contains(err.Error(), string(instA)) {
		t.Errorf("error %q does not say what was asked", err)
	}
	_ = l.Close()
	if _, err := l.Pending(context.Background(), instA, 0); !errors.Is(err, ErrClosed) {
		t.Errorf("Pending on a closed Log: %v, want ErrClosed", err)
	}
}
