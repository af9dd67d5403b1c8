package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

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

// A listing of the key bucket whose server stops answering midway (here
// frozen, SIGSTOP, while the listing waits on flow control) is an error
// naming the bucket and the filter, never the shorter list it got so
// far: retention takes a key left out of the list for a key kept, and
// erase for a key destroyed.
//
// The listing is made long enough for the server to stop at a flow
// control window (about 1 MiB of names a window, doubling): a second
// connection listens on the consumer's deliver subjects and the server is
// frozen as soon as it asks for the first flow control reply, before the
// listing client can have drained the window and answered twice. A
// listing that still completed (the freeze came late) is tried again.
func TestKeyListingCutShortIsAnError(t *testing.T) {
	srv := natstest.StartProcess(t)
	// The Log's inboxes have a prefix of their own, which the spy below
	// listens on.
	cfg := Config{NATSURL: srv.URL(), RequestTimeout: 2 * time.Second, InboxPrefix: "LISTING"}
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	ctx := context.Background()
	nc, err := nats.Connect(srv.URL())
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	const keys = 40000 // about 9 MiB of names: more than the first windows
	js, err := jetstream.New(nc, jetstream.WithPublishAsyncMaxPending(keys))
	if err != nil {
		t.Fatal(err)
	}
	filter := l.instPseudonym(instA) + "." + events.ClassMessages.String() + ".*"
	prefix := "$KV." + keyBucket(l.cfg.Stream) + "." + strings.TrimSuffix(filter, "*")
	for i := range keys {
		if _, err := js.PublishAsync(fmt.Sprintf("%stok%05d", prefix, i), []byte("k")); err != nil {
			t.Fatal(err)
		}
	}
	select {
	case <-js.PublishAsyncComplete():
	case <-time.After(2 * time.Minute):
		t.Fatal("filling the key bucket: no acknowledgement of every put within 2 minutes")
	}
	if names, err := l.keyNames(ctx, filter); err != nil || len(names) != keys {
		t.Fatalf("listing with the server answering: %d names, %v; want %d", len(names), err, keys)
	}

	// Flow control requests go to the consumer's deliver subject (an
	// inbox of the Log's) with a reply subject of $JS.FC.; the first one
	// of each listing (each has its own deliver subject) is signalled.
	asked := make(chan struct{}, 1)
	seen := map[string]bool{} // only the subscription's goroutine touches it
	spy, err := nc.Subscribe("LISTING.>", func(m *nats.Msg) {
		if strings.HasPrefix(m.Reply, "$JS.FC.") && !seen[m.Subject] {
			seen[m.Subject] = true
			asked <- struct{}{}
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	defer spy.Unsubscribe()
	if err := nc.Flush(); err != nil {
		t.Fatal(err)
	}
	for attempt := 1; ; attempt++ {
		type listing struct {
			names map[string]bool
			err   error
		}
		done := make(chan listing, 1)
		go func() {
			names, err := l.keyNames(ctx, filter)
			done <- listing{names, err}
		}()
		var got listing
		select {
		case <-asked:
		case got = <-done:
			t.Fatalf("the listing of %d names returned (%d names, %v) without asking for flow control: the test cannot stop the server midway", keys, len(got.names), got.err)
		case <-time.After(time.Minute):
			t.Fatal("the listing neither asked for flow control nor returned within a minute")
		}
		srv.Freeze()
		select {
		case got = <-done:
		case <-time.After(time.Minute):
			srv.Thaw()
			t.Fatal("the listing did not return within a minute of the server freezing")
		}
		srv.Thaw()
		if got.err == nil && len(got.names) < keys {
			t.Fatalf("listing cut short by a frozen server: %d of %d names and no error", len(got.names), keys)
		}
		if got.err != nil {
			msg := got.err.Error()
			if !strings.Contains(msg, keyBucket(l.cfg.Stream)) || !strings.Contains(msg, filter) {
				t.Fatalf("listing cut short: error %q does not name the bucket %s and the filter %s", msg, keyBucket(l.cfg.Stream), filter)
			}
			if got.names != nil {
				t.Fatalf("listing cut short: an error and %d names", len(got.names))
			}
			return
		}
		// Complete: the freeze came after the server had sent every name.
		if attempt == 3 {
			t.Skipf("the server sent all %d names before it froze, 3 times: this machine is too loaded for the test", keys)
		}
	}
}
