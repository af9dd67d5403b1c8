package natstest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// account is the account clients land in on a server without accounts.
const account = server.DEFAULT_GLOBAL_ACCOUNT

// Cluster is a JetStream cluster of in-process servers routed over
// loopback. Each node is a [Server]: Shutdown, Start and Restart work on
// one node while the others keep running, so tests can take a stream's
// leader away and bring it back.
type Cluster struct {
	tb    testing.TB
	nodes []*Server
}

// StartCluster starts an n-node JetStream cluster for the test, waits until
// its meta group has a leader, and shuts it down when the test ends.
func StartCluster(tb testing.TB, n int) *Cluster {
	tb.Helper()
	if n < 1 {
		tb.Fatalf("natstest: cluster of %d nodes", n)
	}
	root := tb.TempDir()
	// A port picked free can be taken before its node binds it (other
	// tests' servers start meanwhile): a node that cannot listen never
	// gets ready, so other ports are picked rather than waiting for it.
	c := startOnFreePorts(tb, "cluster", func(attempt int) (*Cluster, error) {
		return startCluster(tb, n, filepath.Join(root, fmt.Sprint(attempt)))
	})
	c.waitFor("a meta leader with every node current", c.metaReady)
	c.waitPlaceable()
	return c
}

// startCluster starts n nodes under root on ports picked free. If a
// node's ports are taken by the time it starts, it shuts down the nodes
// it started and returns nil and an errPortTaken naming what was taken.
func startCluster(tb testing.TB, n int, root string) (*Cluster, error) {
	tb.Helper()
	// Every node routes to every other, so the ports are fixed before any
	// node starts; a restarted node comes back on the same ones. One pick
	// of 2n ports, so that no client port is also a route port.
	ports := freePorts(tb, 2*n)
	clientPorts, routePorts := ports[:n], ports[n:]
	routes := make([]string, n)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &Cluster{tb: tb}
	for i := range n {
		for _, p := range []int{clientPorts[i], routePorts[i]} {
			if !portFree(p) {
				for _, s := range c.nodes {
					s.Shutdown()
				}
				return nil, fmt.Errorf("port %d: %w before its node started", p, errPortTaken)
			}
		}
		name := fmt.Sprintf("node%d", i)
		opts := serverOptions(tb, Options{
			StoreDir:   filepath.Join(root, name),
			Port:       clientPorts[i],
			ServerName: name,
		})
		opts.Cluster = server.ClusterOpts{Name: "natstest", Host: "127.0.0.1", Port: routePorts[i]}
		opts.Routes = server.RoutesFromStr(strings.Join(routes, ","))
		s := &Server{tb: tb, opts: opts}
		if beforeNodeStart != nil {
			beforeNodeStart(clientPorts[i])
		}
		if err := s.start(); errors.Is(err, errPortTaken) {
			// Taken since portFree looked: start over, as above.
			for _, s := range c.nodes {
				s.Shutdown()
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		} else if err != nil {
			tb.Fatalf("natstest: cluster %s: %v", name, err)
		}
		tb.Cleanup(s.Shutdown)
		c.nodes = append(c.nodes, s)
	}
	return c, nil
}

// beforeNodeStart, when set (by a test), is called with a cluster
// node's client port just before the node starts.
var beforeNodeStart func(clientPort int)

// waitPlaceable waits until the cluster places a stream on every node.
// The meta leader can see every peer current (metaReady) and still
// refuse a replicated stream for a moment ("no suitable peers for
// placement, peer offline", err_code 10005) until it has heard each
// peer's JetStream statistics; the tests' first stream failed so now and
// then under load. A memory stream with a replica on every node is
// created (asked again while refused so) and deleted.
func (c *Cluster) waitPlaceable() {
	c.tb.Helper()
	nc, js := c.jetStream()
	defer nc.Close()
	const probe = "NATSTEST_PLACEMENT_PROBE"
	cfg := jetstream.StreamConfig{Name: probe, Subjects: []string{"natstest.placement.probe"}, Storage: jetstream.MemoryStorage, Replicas: len(c.nodes)}
	var last error
	c.waitFor("a stream placed on every node", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, last = js.CreateStream(ctx, cfg)
		var ae *jetstream.APIError
		if last != nil && errors.As(last, &ae) && ae.ErrorCode == 10005 { // JSClusterNoPeersErrF
			return false
		}
		return true
	})
	if last != nil {
		c.tb.Fatalf("natstest: cluster: placement probe: %v", last)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, probe); err != nil {
		c.tb.Fatalf("natstest: cluster: delete the placement probe: %v", err)
	}
}

// metaReady reports whether a node leads the meta group and sees every
// other node current: before that, creating a replicated stream can fail
// with "no suitable peers for placement".
func (c *Cluster) metaReady() bool {
	for _, s := range c.running() {
		if s == nil || !s.JetStreamIsLeader() {
			continue
		}
		info, err := s.Jsz(nil)
		if err != nil || info.Meta == nil || len(info.Meta.Replicas) != len(c.nodes)-1 {
			return false
		}
		for _, p := range info.Meta.Replicas {
			if !p.Current || p.Offline {
				return false
			}
		}
		return true
	}
	return false
}

// Nodes returns the cluster's servers, in start order.
func (c *Cluster) Nodes() []*Server { return c.nodes }

// Node returns the node with the given server name, failing the test if
// there is none.
func (c *Cluster) Node(name string) *Server {
	c.tb.Helper()
	return nodeNamed(c.tb, c.nodes, name)
}

// URL lists every node's client URL, comma-separated, as nats.Connect
// accepts it: a client fails over to another node when its own goes away.
func (c *Cluster) URL() string { return clusterURL(c.nodes) }

// node is what a Cluster's and a ProcessCluster's nodes have in common.
type node interface {
	Name() string
	URL() string
}

// nodeNamed returns the node of nodes with the given server name, failing
// the test if there is none.
func nodeNamed[N node](tb testing.TB, nodes []N, name string) N {
	tb.Helper()
	for _, s := range nodes {
		if s.Name() == name {
			return s
		}
	}
	tb.Fatalf("natstest: cluster has no node %q", name)
	var none N
	return none
}

// clusterURL lists the nodes' client URLs, comma-separated.
func clusterURL[N node](nodes []N) string {
	urls := make([]string, len(nodes))
	for i, s := range nodes {
		urls[i] = s.URL()
	}
	return strings.Join(urls, ",")
}

// StreamLeader waits until a running node leads the stream (in the default
// account) and returns it.
func (c *Cluster) StreamLeader(stream string) *Server {
	c.tb.Helper()
	var leader *Server
	c.waitFor("a leader of stream "+stream, func() bool {
		for i, s := range c.running() {
			if s != nil && s.JetStreamIsStreamLeader(account, stream) {
				leader = c.nodes[i]
				return true
			}
		}
		return false
	})
	return leader
}

// MetaLeader waits until a running node leads the cluster's JetStream
// meta group (which creating streams and consumers needs) and returns it.
func (c *Cluster) MetaLeader() *Server {
	c.tb.Helper()
	var leader *Server
	c.waitFor("a meta leader", func() bool {
		for i, s := range c.running() {
			if s != nil && s.JetStreamIsLeader() {
				leader = c.nodes[i]
				return true
			}
		}
		return false
	})
	return leader
}

// jetStream connects a client to the cluster (reconnecting to whichever
// node is up) for the helpers' JetStream requests; the caller closes nc.
func (c *Cluster) jetStream() (*nats.Conn, jetstream.JetStream) {
	c.tb.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1))
	if err != nil {
		c.tb.Fatalf("natstest: cluster: connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		c.tb.Fatalf("natstest: cluster: %v", err)
	}
	return nc, js
}

// WaitStreamCurrent waits until the stream's leader reports every other
// node's replica current (caught up), as a client sees it in the stream
// info.
func (c *Cluster) WaitStreamCurrent(stream string) {
	c.tb.Helper()
	nc, js := c.jetStream()
	defer nc.Close()
	c.waitFor("every replica of stream "+stream+" to be current", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		ci := st.CachedInfo().Cluster
		return ci != nil && replicasCurrent(ci, len(c.nodes))
	})
}

// StepDownStream moves the stream's leadership to node to (asking the
// current leader to step down in its favour, again until it happens) and
// waits until to leads.
func (c *Cluster) StepDownStream(stream string, to *Server) {
	c.tb.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1))
	if err != nil {
		c.tb.Fatalf("natstest: cluster: connect: %v", err)
	}
	defer nc.Close()
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to.Name()}})
	if err != nil {
		c.tb.Fatal(err)
	}
	c.waitFor(to.Name()+" to lead stream "+stream, func() bool {
		if srv := to.NATSServer(); srv != nil && srv.JetStreamIsStreamLeader(account, stream) {
			return true
		}
		// Errors (no leader right now, the preferred node not caught up)
		// are answered by asking again.
		_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, time.Second)
		time.Sleep(100 * time.Millisecond)
		return false
	})
}

// running returns each node's live server, nil for nodes that are down.
func (c *Cluster) running() []*server.Server {
	out := make([]*server.Server, len(c.nodes))
	for i, s := range c.nodes {
		out[i] = s.NATSServer()
	}
	return out
}

// waitFor polls cond until it holds, failing the test after readyTimeout.
func (c *Cluster) waitFor(what string, cond func() bool) {
	c.tb.Helper()
	deadline := time.Now().Add(readyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			c.tb.Fatalf("natstest: cluster: waited %v for %s", readyTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
