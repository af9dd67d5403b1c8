package natstest

import (
	"context"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Restart comes back on the same URL with the same store: a client
// reconnects by itself and finds its stream and messages.
func TestRestartKeepsPortAndStore(t *testing.T) {
	s := Start(t, Options{})
	url := s.URL()
	nc := s.Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("before")); err != nil {
		t.Fatal(err)
	}
	s.Restart()
	if s.URL() != url {
		t.Fatalf("URL changed across restart: %s -> %s", url, s.URL())
	}
	if _, err := js.Publish(ctx, "t.a", []byte("after")); err != nil {
		t.Fatalf("publish after restart: %v", err)
	}
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if n := st.CachedInfo().State.Msgs; n != 2 {
		t.Fatalf("stream holds %d messages after restart, want 2", n)
	}
	s.Shutdown()
	if s.NATSServer() != nil {
		t.Fatal("server still reported after Shutdown")
	}
	s.Shutdown() // a no-op
}

// A 3-node cluster replicates a stream, elects a new leader when the
// leader goes away, and the returning node catches up.
func TestClusterFailover(t *testing.T) {
	c := StartCluster(t, 3)
	nc := c.Nodes()[0].Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("before")); err != nil {
		t.Fatal(err)
	}
	old := c.StreamLeader("T")
	old.Shutdown()
	if now := c.StreamLeader("T"); now == old {
		t.Fatal("the stopped node still leads the stream")
	}
	if _, err := js.Publish(ctx, "t.a", []byte("during")); err != nil {
		t.Fatalf("publish with the old leader down: %v", err)
	}
	old.Start()
	c.WaitStreamCurrent("T")
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	info := st.CachedInfo()
	if info.State.Msgs != 2 || info.Cluster == nil || len(info.Cluster.Replicas) != 2 {
		t.Fatalf("stream: %d messages, cluster %+v; want 2 messages on a leader and 2 replicas", info.State.Msgs, info.Cluster)
	}
	for _, r := range info.Cluster.Replicas {
		if !r.Current {
			t.Fatalf("replica %s not current", r.Name)
		}
	}
}

// A 3-node process cluster replicates a stream, elects a new leader when
// the leader is killed (SIGKILL), and the node started again catches up.
func TestProcessClusterKill(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server; not with -short")
	}
	t.Cleanup(RemoveBuiltServer)
	c := StartProcessCluster(t, 3)
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1))
	if err != nil {
		t.Fatal(err)
	}
	defer nc.Close()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	if _, err := js.CreateStream(ctx, jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
	if _, err := js.Publish(ctx, "t.a", []byte("before")); err != nil {
		t.Fatal(err)
	}
	old := c.StreamLeader("T")
	old.Kill()
	if now := c.StreamLeader("T"); now == old {
		t.Fatal("the killed node still leads the stream")
	}
	if _, err := js.Publish(ctx, "t.a", []byte("during")); err != nil {
		t.Fatalf("publish with the old leader killed: %v", err)
	}
	old.Start()
	c.WaitStreamCurrent("T")
	c.StepDownStream("T", old)
	st, err := js.Stream(ctx, "T")
	if err != nil {
		t.Fatal(err)
	}
	if info := st.CachedInfo(); info.State.Msgs != 2 || info.Cluster == nil || info.Cluster.Leader != old.Name() {
		t.Fatalf("stream: %d messages, cluster %+v; want 2 messages, led by %s again", info.State.Msgs, info.Cluster, old.Name())
	}
}
