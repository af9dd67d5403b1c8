package eventlog

import (
	"testing"
	"time"

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
