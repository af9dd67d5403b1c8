package eventlog

import (
	"context"
	"errors"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/epochlog/epochlog/internal/tmpfstest"
)

// On a full disk a standalone embedded server often does not answer an
// append, JetStream still on. The error says that the store's file
// system is out of room, naming it, and is still an unanswered one (its
// outcome unknown: whoever must know appends the same events again).
// Until 2026-12-06 it said only "context deadline exceeded". Once room is
// made and the server started again, the same append is decided and the
// next one stored (nats-server 2.15's file store keeps its write error
// until then).
func TestEmbeddedStoreOnFullDiskSaysSo(t *testing.T) {
	dir := tmpfstest.Mount(t, "size=8m")
	l := openLog(t, Config{DataDir: dir, RequestTimeout: 2 * time.Second}, keyring(t, 1, 1))
	a := group(instA, "g")
	big := strings.Repeat("x", 32<<10)
	if _, err := l.Append(context.Background(), 0, msg(a, 1, big)); err != nil {
		t.Fatal(err)
	}
	// Filled by something else (read models beside the store, logs):
	// the server's own limit, set from the free space when it started,
	// is not reached.
	filler := tmpfstest.Fill(t, dir)
	var err error
	p := uint64(1)
	for ; p < 200; p++ {
		if _, err = l.Append(context.Background(), p, msg(a, p+1, big)); err != nil {
			break
		}
	}
	if err == nil {
		t.Fatal("6 MB of events fitted on a full disk")
	}
	if !errors.Is(err, syscall.ENOSPC) || !strings.Contains(err.Error(), dir) || errors.Is(err, ErrStreamFull) != !Unanswered(err) {
		t.Fatalf("append on a full disk: %v; want an error wrapping ENOSPC naming %s, unanswered unless the server said the stream is full", err, dir)
	}
	t.Logf("reported: %v", err)
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	// Room made: the server's store keeps its write error until the
	// server starts again (a restart of the process).
	if _, err := l.Append(context.Background(), p, msg(a, p+1, big)); err == nil {
		t.Log("the same server took the append once room was made")
	} else {
		t.Logf("the same server, after room was made: %v", err)
	}
	l.Close()
	l = openLog(t, Config{DataDir: dir, RequestTimeout: 2 * time.Second}, keyring(t, 1, 1))
	// The same event, appended again, is stored (or found stored), and
	// the next one after it.
	for i := range 2 {
		if _, err := l.Append(context.Background(), p+uint64(i), msg(a, p+uint64(i)+1, big)); err != nil {
			t.Fatalf("append at position %d after room was made: %v", p+uint64(i)+1, err)
		}
	}
}
