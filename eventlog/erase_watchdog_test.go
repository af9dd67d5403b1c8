package eventlog

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"github.com/epochlog/epochlog/internal/natstest"
)

// TestFollowNoticesATombstoneItIsNotDelivered: a follow whose consumer
// stays alive but never delivers the installation's tombstone (a stored
// message it cannot load, here left out by a proxy) does not wait for
// good once the erase has purged the events it watched: its watchdog
// sees the undelivered tombstone and ends it (ErrStalled), as it does
// for an undelivered event. Until 2026-12-07 the watchdog looked at the
// event subjects only, which the erase empties: the follow was idle, for
// good.
func TestFollowNoticesATombstoneItIsNotDelivered(t *testing.T) {
	l, srv := newLog(t)
	n := writeMixed(t, l, instA)
	tomb, err := l.TombstoneSubject(instA)
	if err != nil {
		t.Fatal(err)
	}
	// The server's deliveries on the tombstone subject are left out.
	px := natstest.NewProxy(t, srv.URL(), func(client io.Writer, server io.Reader) {
		natstest.EditMessages(client, server, func(subject string, data []byte) ([]byte, bool) { return data, subject != tomb })
	})
	cfg := testConfig(srv)
	cfg.NATSURL = px.URL()
	cfg.ProgressTimeout = 2 * time.Second
	follower := openLog(t, cfg, keyring(t, 1, 0x11))
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	seen := make(chan int, 100)
	done := make(chan error, 1)
	go func() {
		got := 0
		done <- follower.Follow(ctx, instA, 0, func(Record) error { got++; seen <- got; return nil })
	}()
	for got := 0; got < n; {
		select {
		case got = <-seen:
		case err := <-done:
			t.Fatalf("follow ended after %d of %d records: %v", got, n, err)
		case <-ctx.Done():
			t.Fatalf("follow delivered %d of %d records", got, n)
		}
	}
	if _, err := l.Erase(context.Background(), instA, &EraseOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	select {
	case err := <-done:
		if ctx.Err() != nil || !(errors.Is(err, ErrStalled) || errors.Is(err, ErrErased)) {
			t.Fatalf("follow of the erased %s, its tombstone undelivered: %v, want ErrStalled or ErrErased before the test's deadline", instA, err)
		}
	case <-ctx.Done():
		t.Fatalf("follow of the erased %s, its tombstone undelivered, still waits", instA)
	}
}
