package replay

import (
	"context"
	"path/filepath"
	"sync"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/nats-io/nats.go/jetstream"
)

// A rebuild that loses the node serving its reads halfway carries on from
// another node and builds the same read model as one that did not.
func TestClusterRebuildAcrossNodeLoss(t *testing.T) {
	c := natstest.StartCluster(t, 3)
	l := openLog(t, clusterConfig(c.URL()), keyring(t, 1, 0x11))
	writeHistory(t, l, instA, 3, 20000)
	ctx := context.Background()
	dir := t.TempDir()
	key := rawDBKey(t, 0xA1)

	calm := filepath.Join(dir, "calm.db")
	if _, err := Rebuild(ctx, l, instA, calm, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatalf("rebuild: %v", err)
	}
	want, _ := digestOf(t, calm, key)

	// Halfway, take down the node serving the rebuild's consumer (reads
	// need no stream leader; the consumer's host they do need).
	var (
		once sync.Once
		lost *natstest.Server
	)
	opts := RebuildOptions{Options: *testReplayOptions()}
	opts.Progress = func(p Progress) {
		if p.Applied > 100 {
			once.Do(func() {
				lost = c.Node(consumerHost(t, l))
				t.Logf("shutting down %s at event %d", lost.Name(), p.Applied)
				lost.Shutdown()
			})
		}
	}
	stormy := filepath.Join(dir, "stormy.db")
	res, err := Rebuild(ctx, l, instA, stormy, key, &opts)
	if err != nil {
		t.Fatalf("rebuild across leader loss: %v", err)
	}
	if lost == nil || lost.NATSServer() != nil {
		t.Fatal("no node was shut down: the test did not test anything")
	}
	got, _ := digestOf(t, stormy, key)
	if diff := projections.Compare(want, got); diff != nil || res.Checkpoint != lastSeq(t, l, instA) {
		t.Fatalf("rebuild across leader loss: checkpoint %d, differs from a calm rebuild: %v", res.Checkpoint, diff)
	}
}

// consumerHost is the server name of the node hosting the stream's newest
// consumer (the one the running Read created; an earlier read's consumer
// may linger a moment after its delete).
func consumerHost(t *testing.T, l *eventlog.Log) string {
	t.Helper()
	var newest *jetstream.ConsumerInfo
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	stream, err := js.Stream(context.Background(), l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	list := stream.ListConsumers(context.Background())
	for info := range list.Info() {
		if newest == nil || info.Created.After(newest.Created) {
			newest = info
		}
	}
	if err := list.Err(); err != nil {
		t.Fatalf("list consumers of %s: %v", l.Stream(), err)
	}
	if newest == nil || newest.Cluster == nil || newest.Cluster.Leader == "" {
		t.Fatalf("stream %s: no consumer with a host (%+v)", l.Stream(), newest)
	}
	return newest.Cluster.Leader
}
