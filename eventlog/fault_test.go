package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
)

// TestFollowAcrossServerKill9 follows an installation while the nats-server
// process is killed with SIGKILL and started again on the same store: the
// follower sees every event exactly once and in order, and retried appends
// do not duplicate.
func TestFollowAcrossServerKill9(t *testing.T) {
	srv := natstest.StartProcess(t)
	cfg := Config{NATSURL: srv.URL(), RequestTimeout: 5 * time.Second, ReconnectWait: 50 * time.Millisecond}
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	followAcross(t, l, group(instA, "kill9"), []int{40, 40}, func() {
		srv.Kill()
		srv.Start()
	})
}

// A server that stops answering while its connection stays up (a hung
// process, a path that drops packets) still looks Connected until the
// client's pings time out; Responsive says so within its bound, and again
// that it answers once it is back. replayer's /healthz asks it.
func TestResponsiveNoticesAFrozenServer(t *testing.T) {
	srv := natstest.StartProcess(t)
	l := openLog(t, Config{NATSURL: srv.URL(), RequestTimeout: 5 * time.Second}, keyring(t, 1, 0x11))
	if err := l.Responsive(5 * time.Second); err != nil {
		t.Fatalf("a running server: %v", err)
	}
	srv.Freeze()
	thawed := false
	defer func() {
		if !thawed {
			srv.Thaw()
		}
	}()
	if !l.Connected() {
		t.Log("the client noticed the frozen server by itself")
	}
	if err := l.Responsive(time.Second); err == nil {
		t.Fatal("a frozen server answered")
	}
	srv.Thaw()
	thawed = true
	deadline := time.Now().Add(time.Minute)
	for {
		err := l.Responsive(5 * time.Second)
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the server does not answer a minute after it resumed: %v", err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// A read whose server stops answering mid-read (hung, or a path that drops
// packets) ends with ErrStalled saying the server did not answer, not
// that the stream holds events it does not deliver, within its
// bound (eventlog.Config.ProgressTimeout): its consumer is not deleted
// (that request would wait out its own timeout; the server reaps it).
// Until 2026-12-06 it blamed the stream.
func TestReadStalledByAFrozenServerSaysSo(t *testing.T) {
	srv := natstest.StartProcess(t)
	cfg := Config{NATSURL: srv.URL(), RequestTimeout: 3 * time.Second, ProgressTimeout: 3 * time.Second}
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	ctx := context.Background()
	// More events than a read buffers ahead (two pull requests of 500).
	var ts []Transition
	for i := range 3000 {
		agg := group(instA, fmt.Sprintf("g%d", i%10))
		ts = append(ts, Transition{Expected: uint64(i / 10), Events: []events.Event{msg(agg, uint64(i/10)+1, "x")}})
	}
	if _, err := l.AppendBulk(ctx, ts); err != nil {
		t.Fatal(err)
	}
	frozen := false
	defer func() {
		if frozen {
			srv.Thaw()
		}
	}()
	start := time.Now()
	err := l.Read(ctx, instA, 1, func(Record) error {
		if !frozen {
			srv.Freeze()
			frozen = true
			start = time.Now()
		}
		return nil
	})
	took := time.Since(start)
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "no answer from the server") {
		t.Fatalf("read with the server frozen: %v, want ErrStalled saying the server did not answer", err)
	}
	// ProgressTimeout, a tick of the watchdog, the probe, and Stop
	// waiting out the consumer's own attempt to recreate itself: about
	// 15 s; generously bounded for a loaded machine.
	if took > 45*time.Second {
		t.Fatalf("the stalled read took %v to end", took)
	}
}
