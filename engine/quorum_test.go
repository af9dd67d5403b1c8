package engine

import (
	"context"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// TestEveryCallWithoutQuorum kills two of the three nodes of a cluster
// holding the stream at 3 replicas, those the Log is not connected to:
// the node left answers the client, but neither the stream nor the meta
// group has a quorum. Every call a service makes must return within its
// bound (ProgressTimeout for a read, OutcomeTimeout and RequestTimeout for
// an append) with an error that says JetStream did not serve it and what
// to check; no append may succeed. Once the nodes are back, the read
// models equal their histories. Until 2026-12-08 the errors ended in
// "context deadline exceeded" or a bare status 503.
func TestEveryCallWithoutQuorum(t *testing.T) {
	if testing.Short() {
		t.Skip("builds nats-server and kills cluster nodes")
	}
	t.Parallel() // mostly waits on its own servers; sets no package variable

	ctx := context.Background()
	c := natstest.StartProcessCluster(t, 3)
	cfg := eventlog.Config{NATSURL: c.URL(), Replicas: 3, RequestTimeout: 2 * time.Second, ReconnectWait: 20 * time.Millisecond, ProgressTimeout: 8 * time.Second}
	l := openLog(t, cfg, keyring(t, 1, 0x42))
	w := newCallWorld(t, l)
	dir, keys, opts, del, alice, bob, g, first, pool := w.dir, w.keys, w.opts, w.del, w.alice, w.bob, w.g, w.first, w.pool
	kp2, err := bob.PublishKeyPackage(ctx, "e", false)
	if err != nil {
		t.Fatal(err)
	}
	g2, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	del2 := NewDeliveries(l, nil)
	del2.OutcomeTimeout = 3 * time.Second

	ack, err := del.FanOut(ctx, []events.InstallationID{"bob"}, mlsChannel, []byte("to ack"), time.Time{}, "m2")
	if err != nil {
		t.Fatal(err)
	}
	nodes := c.Nodes()
	connected := l.Conn().ConnectedServerName()
	t.Logf("connected to %s; stream leader %s", connected, c.StreamLeader(l.Stream()).Name())
	// The two nodes the Log is not connected to: the one it is connected
	// to answers, JetStream cannot.
	for _, p := range nodes {
		if p.Name() != connected {
			p.Kill()
		}
	}
	calls := map[string]func() error{
		"Send":    func() error { _, err := alice.Send(ctx, g.GroupID, []byte("q"), nil); return err },
		"Receive": func() error { _, err := bob.Receive(ctx, first.Message); return err },
		"CatchUp": func() error { return alice.CatchUp(ctx) },
		"AddMembers": func() error {
			_, err := alice.AddMembers(ctx, g2.GroupID, kp2.KeyPackage)
			return err
		},
		"Create": func() error {
			k, _ := projections.GenerateRawKey()
			in, err := CreateInstallation(ctx, l, "erin", filepath.Join(dir, "erin.db"), k, opts)
			if err == nil {
				in.Close()
			}
			return err
		},
		"Open": func() error {
			in, err := OpenInstallation(ctx, l, "carol", filepath.Join(dir, "carol.db"), keys["carol"], opts)
			if err == nil {
				in.Close()
			}
			return err
		},
		"Pool.Acquire": func() error {
			_, release, err := pool.Acquire(ctx, "dave")
			if err == nil {
				release()
			}
			return err
		},
		"Fetch":       func() error { _, err := del2.Fetch(ctx, "bob", mlsChannel, 0); return err },
		"Acknowledge": func() error { return del2.Acknowledge(ctx, "bob", mlsChannel, ack["bob"]) },
		"FanOut": func() error {
			_, err := del.FanOut(ctx, []events.InstallationID{"carol"}, mlsChannel, []byte("x"), time.Time{}, "k-q")
			return err
		},
	}
	writes := map[string]bool{"Send": true, "Receive": true, "AddMembers": true, "Create": true, "FanOut": true, "Acknowledge": true}
	results := runCalls(t, calls, "without a quorum", nil)
	for name, err := range results {
		switch {
		case err == nil && writes[name]:
			t.Errorf("%s without a quorum succeeded", name)
		case err != nil && !strings.Contains(err.Error(), "majority of the cluster's nodes"):
			t.Errorf("%s without a quorum does not say what to check: %v", name, err)
		}
	}
	for _, p := range nodes {
		if p.Name() != connected {
			p.Start()
		}
	}
	c.WaitStreamCurrent(l.Stream())
	if err := alice.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if err := bob.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	// Nothing the calls did (none returned done) is half there: every
	// read model equals its history, and alice goes on.
	if _, err := alice.Send(ctx, g.GroupID, []byte("after"), nil); err != nil {
		t.Fatalf("send once the quorum is back: %v", err)
	}
	for _, id := range []events.InstallationID{"alice", "bob"} {
		if _, err := replay.Verify(ctx, l, id, filepath.Join(dir, string(id)+".db"), keys[id], nil); err != nil {
			t.Errorf("verify %s: %v", id, err)
		}
	}
}
