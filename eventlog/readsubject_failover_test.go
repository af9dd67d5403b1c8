package eventlog

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/internal/natstest"
)

// ReadSubject and a stream-leader failover in the middle of its read:
// the leader (which holds the read's consumer) is shut down while the
// first event is handled, beyond what the consumer's first pull
// delivered. The read carries on with the new leader and delivers every
// event once, in order, as ReadN does across a failover.
func TestReadSubjectAcrossLeaderLoss(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	cfg := clusterConfig(c.URL())
	cfg.RequestTimeout = time.Second
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	agg := group(instA, "readsubject-failover")
	const n = 3 * readPrefetch
	for i := range n {
		mustAppend(t, l, uint64(i), msg(agg, uint64(i)+1, fmt.Sprint(i+1)))
	}
	subject, err := l.Subject(agg)
	if err != nil {
		t.Fatal(err)
	}
	c.WaitStreamCurrent(l.Stream())
	leader := c.StreamLeader(l.Stream())
	defer leader.Start()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var got []string
	err = l.ReadSubject(ctx, instA, subject, 0, func(r Record) error {
		if len(got) == 0 {
			leader.Shutdown()
		}
		got = append(got, content(r.Event))
		return nil
	})
	if err != nil {
		t.Fatalf("ReadSubject with the stream leader %s shut down after the first event (%d read): %v", leader.Name(), len(got), err)
	}
	if len(got) != n {
		t.Fatalf("read %d events across the failover, want %d", len(got), n)
	}
	for i, s := range got {
		if s != fmt.Sprint(i+1) {
			t.Fatalf("event %d is %q, want %q", i, s, fmt.Sprint(i+1))
		}
	}
}
