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

// Replication tests: the log on a 3-node JetStream cluster (in process,
// routed over loopback) with a replicated stream, as in staging.

// clusterConfig points a Log at the given URLs of a cluster, with the
// stream replicated to every node.
func clusterConfig(url string) Config {
	cfg := Config{NATSURL: url, Replicas: 3}
	cfg.RequestTimeout, cfg.ReconnectWait = 5*time.Second, 20*time.Millisecond
	return cfg
}

// Appends on a replicated stream keep their guarantees: atomic batches land
// together, a retry finds the stored events, a stale writer gets a conflict.
func TestClusterAppend(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	l := openLog(t, clusterConfig(c.URL()), keyring(t, 1, 0x11))
	info, err := l.stream.Info(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	if info.Config.Replicas != 3 || info.Cluster == nil || info.Cluster.Leader == "" || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream %s: replicas %d, cluster %+v; want a leader and 2 replicas", l.Stream(), info.Config.Replicas, info.Cluster)
	}
	if !l.AtomicBatches() {
		t.Fatal("replicated stream does not accept atomic batches")
	}
	// A process opened with the defaults (the replayer, another service)
	// must not lower the replication an operator set.
	openLog(t, Config{NATSURL: c.URL()}, keyring(t, 1, 0x11))
	if info, err = l.stream.Info(context.Background()); err != nil || info.Config.Replicas != 3 {
		t.Fatalf("after an open with default config: replicas %d (%v), want 3", info.Config.Replicas, err)
	}

	agg := group(instA, "replicated")
	mustAppend(t, l, 0, msg(agg, 1, "e1"))
	batch := mustAppend(t, l, 1, msg(agg, 2, "e2"), msg(agg, 3, "e3"), msg(agg, 4, "e4"))
	retry := mustAppend(t, l, 1, msg(agg, 2, "e2"), msg(agg, 3, "e3"), msg(agg, 4, "e4"))
	for i := range retry {
		if !retry[i].Duplicate || retry[i].Seq != batch[i].Seq {
			t.Fatalf("retried event %d: seq %d duplicate %v, want seq %d duplicate", i, retry[i].Seq, retry[i].Duplicate, batch[i].Seq)
		}
	}
	if _, err := l.Append(context.Background(), 1, msg(agg, 2, "stale")); !errors.Is(err, ErrConflict) {
		t.Fatalf("append after position 1 of 4: %v, want ErrConflict", err)
	}
	recs := readAll(t, l, instA, 0)
	if len(recs) != 4 {
		t.Fatalf("read %d events, want 4", len(recs))
	}
	for i, r := range recs {
		if want := fmt.Sprintf("e%d", i+1); content(r.Event) != want || r.Event.Position != uint64(i+1) {
			t.Fatalf("event %d: %q at position %d, want %q at %d", i, content(r.Event), r.Event.Position, want, i+1)
		}
	}
	if n := streamMsgs(t, l); n != 4 {
		t.Fatalf("stream holds %d messages, want 4", n)
	}
}

// Two writers connected to different nodes race on one aggregate: the
// replicated stream still lets exactly one win each position.
func TestClusterRaceOneAggregate(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	nodes := c.Nodes()
	l1 := openLog(t, clusterConfig(nodes[0].URL()), keyring(t, 1, 0x11))
	l2 := openLog(t, clusterConfig(nodes[2].URL()), keyring(t, 1, 0x11))
	raceOneAggregate(t, l1, l2, 50)
}

// The stream's leader goes down mid-follow and comes back: the follower
// sees every event exactly once and in order, appends retried across the
// failover do not duplicate, and the returning node catches up well enough
// to lead the stream and serve the whole history.
func TestClusterFollowAcrossLeaderLoss(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	l := openLog(t, clusterConfig(c.URL()), keyring(t, 1, 0x11))
	var old *natstest.Server
	followAcross(t, l, group(instA, "failover"), []int{30, 30, 10},
		func() { old = c.StreamLeader(l.Stream()); old.Shutdown() },
		func() { old.Start() })
	const total = 30 + 30 + 10

	// The node that missed the middle of the history leads and serves it all.
	c.WaitStreamCurrent(l.Stream())
	c.StepDownStream(l.Stream(), old)
	back := openLog(t, clusterConfig(old.URL()), keyring(t, 1, 0x11))
	if recs := readAll(t, back, instA, 0); len(recs) != total {
		t.Fatalf("read %d events through the returned node as leader, want %d", len(recs), total)
	}
}

// A bulk load of one aggregate on a replicated stream: each transition
// follows the previous one as soon as it is acknowledged, when the leader
// may still hold the subject as in flight and refuse the check (10164).
// Every transition lands once, in order.
func TestClusterBulkOneAggregate(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	l := openLog(t, clusterConfig(c.URL()), keyring(t, 1, 0x11))
	agg := group(instA, "bulk-one")
	const n = 300
	ts := make([]Transition, n)
	for i := range ts {
		ts[i] = Transition{Expected: uint64(i), Events: []events.Event{msg(agg, uint64(i)+1, fmt.Sprint(i+1))}}
	}
	res, err := l.AppendBulk(context.Background(), ts)
	if err != nil {
		t.Fatalf("bulk append of %d transitions on one aggregate: %v", n, err)
	}
	for i, r := range res {
		if len(r) != 1 || r[0].Position != uint64(i)+1 || r[0].Duplicate {
			t.Fatalf("transition %d: %+v, want position %d appended once", i, r, i+1)
		}
	}
	recs := readAll(t, l, instA, 0)
	if len(recs) != n {
		t.Fatalf("read %d events, want %d", len(recs), n)
	}
	for i, r := range recs {
		if content(r.Event) != fmt.Sprint(i+1) {
			t.Fatalf("event %d is %q, want %q", i, content(r.Event), fmt.Sprint(i+1))
		}
	}
}

// Opening a Log whose stream the cluster cannot place ("no suitable peers
// for placement": too few peers online, as for a moment while a node
// restarts or misses its heartbeats under load, which failed this
// package's cluster tests now and then) tries again until its request
// timeout, then fails saying so. Five replicas on three nodes are never
// placeable; the retries are what the wait shows.
func TestClusterOpenWaitsForPeers(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	cfg := clusterConfig(c.URL())
	cfg.Replicas = 5
	cfg.RequestTimeout = 2 * time.Second
	start := time.Now()
	_, err := Open(context.Background(), cfg, keyring(t, 1, 0x11))
	if err == nil || !strings.Contains(err.Error(), "too few peers") || !strings.Contains(err.Error(), "5 replicas") {
		t.Fatalf("open of an R5 stream on 3 nodes: %v, want an error naming too few peers for 5 replicas", err)
	}
	if waited := time.Since(start); waited < time.Second {
		t.Fatalf("open gave up after %v, before its request timeout (2 s): no retry", waited)
	}
	// The cluster is fine for what it can place.
	cfg.Replicas = 3
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "placed"), 1, "on three nodes"))
}

// A JetStream cluster drops the requests it cannot serve while it elects
// a new meta leader (and, when the meta leader led the stream too, a new
// stream leader). The Log's requests (a stream's info with its subject
// counts, the last event of a subject, a message get) are asked again
// while unanswered, within the request timeout: after the meta leader is
// shut down, each of them answers, and so do a whole read and an append.
// Asked once, the first of them failed with its timeout (5 s then) while
// the cluster answered the next within milliseconds. The timeout is
// generous here: on two loaded cores an election took longer than 5 s
// (the subject counts failed once so in CI); a request asked once and
// dropped never answers, whatever its bound.
func TestClusterAnswersAcrossMetaLeaderLoss(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	cfg := clusterConfig(c.URL())
	cfg.RequestTimeout = 30 * time.Second
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	agg := group(instA, "meta-leader")
	ctx := context.Background()
	for pos := uint64(1); pos <= 3; pos++ {
		if _, err := l.Append(ctx, pos-1, msg(agg, pos, fmt.Sprint(pos))); err != nil {
			t.Fatal(err)
		}
	}
	subj, err := l.Subject(agg)
	if err != nil {
		t.Fatal(err)
	}
	checks := []struct {
		name string
		run  func() error
	}{
		{"subject counts", func() error {
			counts, err := l.SubjectCounts(ctx, instA)
			if err == nil && counts[subj] < 3 {
				err = fmt.Errorf("counts %v, want at least 3 on %s", counts, subj)
			}
			return err
		}},
		{"last sequence", func() error {
			last, err := l.LastSeq(ctx, instA)
			if err == nil && last == 0 {
				err = errors.New("no last sequence")
			}
			return err
		}},
		{"message get", func() error {
			_, found, err := l.FirstSeqAfter(ctx, subj, 0)
			if err == nil && !found {
				err = errors.New("no first event")
			}
			return err
		}},
	}
	for _, check := range checks {
		t.Run(check.name, func(t *testing.T) {
			meta := c.MetaLeader()
			meta.Shutdown()
			defer func() {
				meta.Start()
				c.WaitStreamCurrent(l.Stream())
			}()
			if err := check.run(); err != nil {
				t.Fatalf("%s right after the meta leader %s was shut down: %v", check.name, meta.Name(), err)
			}
			if recs := readAll(t, l, instA, 0); len(recs) < 3 {
				t.Fatalf("read %d events after the meta leader's loss, want at least 3", len(recs))
			}
			last, err := l.LastSeq(ctx, instA)
			if err != nil {
				t.Fatal(err)
			}
			pos := uint64(0)
			for _, r := range readAll(t, l, instA, 0) {
				pos = max(pos, r.Event.Position)
			}
			if _, err := l.Append(ctx, pos, msg(agg, pos+1, fmt.Sprint(pos+1))); err != nil {
				t.Fatalf("append after the meta leader's loss (last seq %d): %v", last, err)
			}
		})
	}
}
