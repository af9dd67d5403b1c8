package eventlog

import (
	"context"
	"errors"
	"testing"
	"time"
)

// A follower whose server goes away for good ends with ErrStalled within
// the progress bound, instead of reconnecting forever; one that merely
// waits for new events on a healthy server does not.
func TestFollowEndsWhenTheServerStaysAway(t *testing.T) {
	srv := natstestStart(t)
	cfg := testConfig(srv)
	cfg.ProgressTimeout = 2 * time.Second
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "s"), 1, "one"))
	c := newCollector()
	done := make(chan error, 1)
	go func() { done <- l.Follow(context.Background(), instA, 0, c.add) }()
	c.waitFor(t, 1)

	// Idle for longer than the bound: nothing pending, nothing wrong.
	select {
	case err := <-done:
		t.Fatalf("an idle follow ended: %v", err)
	case <-time.After(3 * cfg.ProgressTimeout):
	}

	srv.Shutdown()
	start := time.Now()
	select {
	case err := <-done:
		if !errors.Is(err, ErrStalled) {
			t.Fatalf("follow with its server gone: %v, want ErrStalled", err)
		}
		t.Logf("ended after %v: %v", time.Since(start).Round(time.Millisecond), err)
	case <-time.After(60 * time.Second):
		t.Fatal("follow with its server gone did not end within 60s (bound 2s)")
	}
}
