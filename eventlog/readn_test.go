package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/internal/natstest"
)

// ReadN's message gets and a stream-leader failover: the gets asked while
// the stream has no leader (unanswered, or answered "JetStream system
// temporarily unavailable") are asked again until the new leader answers,
// so the read delivers every event once, in order, and fails nothing.
// The request timeout is shorter than an election, so a get that gave up
// after one try would fail here.
func TestReadNAcrossLeaderLoss(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	cfg := clusterConfig(c.URL())
	cfg.RequestTimeout = time.Second
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	agg := group(instA, "readn-failover")
	const n = 20
	for i := range n {
		mustAppend(t, l, uint64(i), msg(agg, uint64(i)+1, fmt.Sprint(i+1)))
	}
	filter, err := l.InstallationFilter(instA)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitStreamCurrent(l.Stream())
	leader := c.StreamLeader(l.Stream())
	leader.Shutdown()
	defer leader.Start()

	// One event per call, as many gets as events, all during the election.
	var got []string
	next := uint64(1)
	for {
		k, nx, err := l.ReadN(context.Background(), instA, filter, next, 1, func(r Record) error {
			got = append(got, content(r.Event))
			return nil
		})
		if err != nil {
			t.Fatalf("ReadN after seq %d with the stream leader %s down: %v", next-1, leader.Name(), err)
		}
		if k == 0 {
			break
		}
		next = nx
	}
	if len(got) != n {
		t.Fatalf("read %d events across the failover, want %d: %v", len(got), n, got)
	}
	for i, s := range got {
		if s != fmt.Sprint(i+1) {
			t.Fatalf("event %d is %q, want %q", i, s, fmt.Sprint(i+1))
		}
	}
}

// A get the server never answers ends the read with ErrStalled after
// ProgressTimeout, naming the sequence it was fetching after; a cancelled
// context ends it sooner, with the context's error.
func TestReadNStallsWhenTheServerStaysAway(t *testing.T) {
	srv := natstestStart(t)
	cfg := testConfig(srv)
	cfg.RequestTimeout, cfg.ProgressTimeout = 300*time.Millisecond, 2*time.Second
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	agg := group(instA, "readn-stall")
	mustAppend(t, l, 0, msg(agg, 1, "one"))
	filter, err := l.InstallationFilter(instA)
	if err != nil {
		t.Fatal(err)
	}
	srv.Shutdown()

	readN := func(ctx context.Context) <-chan error {
		done := make(chan error, 1)
		go func() {
			_, _, err := l.ReadN(ctx, instA, filter, 2, 10, func(Record) error { return nil })
			done <- err
		}()
		return done
	}
	wait := func(done <-chan error) error {
		t.Helper()
		select {
		case err := <-done:
			return err
		case <-time.After(time.Minute):
			t.Fatal("ReadN with its server gone did not end within a minute (bound 2s)")
			return nil
		}
	}

	err = wait(readN(context.Background()))
	if !errors.Is(err, ErrStalled) || !strings.Contains(err.Error(), "after seq 1") {
		t.Fatalf("ReadN with its server gone: %v, want ErrStalled after seq 1", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := readN(ctx)
	time.Sleep(100 * time.Millisecond)
	cancel()
	if err := wait(done); !errors.Is(err, context.Canceled) || errors.Is(err, ErrStalled) {
		t.Fatalf("ReadN cancelled while its server is gone: %v, want context.Canceled", err)
	}
}

// An answer of the server stands: "stream not found" is returned at once,
// not asked again until the progress bound.
func TestReadNAnswerStands(t *testing.T) {
	l, _ := newLog(t)
	mustAppend(t, l, 0, msg(group(instA, "gone"), 1, "one"))
	filter, err := l.InstallationFilter(instA)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	if err := js.DeleteStream(context.Background(), l.Stream()); err != nil {
		t.Fatal(err)
	}
	_, _, err = l.ReadN(context.Background(), instA, filter, 1, 10, func(Record) error { return nil })
	if !errors.Is(err, jetstream.ErrStreamNotFound) || errors.Is(err, ErrStalled) {
		t.Fatalf("ReadN of a deleted stream: %v, want jetstream.ErrStreamNotFound at once", err)
	}
}
