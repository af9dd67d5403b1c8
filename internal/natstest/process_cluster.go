package natstest

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// ProcessCluster is a JetStream cluster of nats-server processes routed
// over loopback. Unlike a [Cluster]'s in-process nodes, whose Shutdown
// has the server step down from every Raft group it leads first, a
// node here can be killed (SIGKILL): a stream leader dies with its
// batches staged and its replication in flight, as on a crash or a lost
// machine, and its peers notice by its silence.
type ProcessCluster struct {
	t     *testing.T
	nodes []*Process
}

// StartProcessCluster builds nats-server (once per test binary, as
// StartProcess), starts n nodes on free ports with fresh stores, waits
// until the cluster places a stream on every node, and kills the nodes
// when the test ends.
func StartProcessCluster(t *testing.T, n int) *ProcessCluster {
	t.Helper()
	if n < 1 {
		t.Fatalf("natstest: process cluster of %d nodes", n)
	}
	bin, err := serverBinary()
	if err != nil {
		t.Fatal(err)
	}
	root := t.TempDir()
	// A port taken since it was picked (see errPortTaken): other ports.
	c := startOnFreePorts(t, "process cluster", func(attempt int) (*ProcessCluster, error) {
		return startProcessCluster(t, bin, n, filepath.Join(root, strconv.Itoa(attempt)))
	})
	c.waitPlaceable()
	return c
}

// startProcessCluster starts n nodes under root on ports picked free. If
// a node cannot start, it kills those it started and says why.
func startProcessCluster(t *testing.T, bin string, n int, root string) (*ProcessCluster, error) {
	ports := freePorts(t, 3*n)
	clientPorts, routePorts, monitorPorts := ports[:n], ports[n:2*n], ports[2*n:]
	routes := make([]string, n)
	for i, p := range routePorts {
		routes[i] = fmt.Sprintf("nats-route://127.0.0.1:%d", p)
	}
	c := &ProcessCluster{t: t}
	for i := range n {
		name := fmt.Sprintf("node%d", i)
		s := &Process{t: t, bin: bin, port: clientPorts[i], store: filepath.Join(root, name), name: name, cluster: true,
			monitor: monitorPorts[i],
			args: []string{"--cluster_name", "natstest", "-m", strconv.Itoa(monitorPorts[i]),
				"--cluster", "nats://127.0.0.1:" + strconv.Itoa(routePorts[i]), "--routes", strings.Join(routes, ",")}}
		if err := s.start(); err != nil {
			for _, s := range c.nodes {
				s.Kill()
			}
			return nil, fmt.Errorf("%s: %w", name, err)
		}
		t.Cleanup(s.Kill)
		c.nodes = append(c.nodes, s)
	}
	return c, nil
}

// Nodes returns the cluster's processes, in start order.
func (c *ProcessCluster) Nodes() []*Process { return c.nodes }

// Node returns the node with the given server name, failing the test if
// there is none.
func (c *ProcessCluster) Node(name string) *Process {
	c.t.Helper()
	return nodeNamed(c.t, c.nodes, name)
}

// URL lists every node's client URL, comma-separated (see Cluster.URL).
func (c *ProcessCluster) URL() string { return clusterURL(c.nodes) }

// MetaLeader waits until a running node names the JetStream meta
// group's leader (its monitoring endpoint /jsz) and returns that node.
func (c *ProcessCluster) MetaLeader() *Process {
	c.t.Helper()
	var leader string
	waitUntil(c.t, "a meta leader", func() bool {
		for _, s := range c.nodes {
			if s.cmd == nil {
				continue
			}
			cl := http.Client{Timeout: time.Second}
			resp, err := cl.Get(fmt.Sprintf("http://127.0.0.1:%d/jsz", s.monitor))
			if err != nil {
				continue
			}
			var jsz struct {
				Meta *struct {
					Leader string `json:"leader"`
				} `json:"meta_cluster"`
			}
			err = json.NewDecoder(resp.Body).Decode(&jsz)
			resp.Body.Close()
			if err == nil && jsz.Meta != nil && jsz.Meta.Leader != "" {
				leader = jsz.Meta.Leader
				return true
			}
		}
		time.Sleep(100 * time.Millisecond)
		return false
	})
	return c.Node(leader)
}

// StreamLeader waits until the stream info names a leader and returns
// that node.
func (c *ProcessCluster) StreamLeader(stream string) *Process {
	c.t.Helper()
	var leader string
	c.waitInfo("a leader of stream "+stream, stream, func(ci *jetstream.ClusterInfo) bool {
		leader = ci.Leader
		return leader != ""
	})
	return c.Node(leader)
}

// WaitStreamCurrent waits until the stream's leader reports every other
// node's replica current (caught up).
func (c *ProcessCluster) WaitStreamCurrent(stream string) {
	c.t.Helper()
	c.waitInfo("every replica of stream "+stream+" to be current", stream, func(ci *jetstream.ClusterInfo) bool {
		return replicasCurrent(ci, len(c.nodes))
	})
}

// StepDownStream moves the stream's leadership to node to (asking the
// current leader to step down in its favour, again until it happens) and
// waits until to leads.
func (c *ProcessCluster) StepDownStream(stream string, to *Process) {
	c.t.Helper()
	nc, js := c.jetStream()
	defer nc.Close()
	req, err := json.Marshal(map[string]any{"placement": map[string]string{"preferred": to.name}})
	if err != nil {
		c.t.Fatal(err)
	}
	waitUntil(c.t, to.name+" to lead stream "+stream, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		if st, err := js.Stream(ctx, stream); err == nil {
			if ci := st.CachedInfo().Cluster; ci != nil && ci.Leader == to.name {
				return true
			}
		}
		// Errors (no leader right now, the preferred node not caught up)
		// are answered by asking again.
		_, _ = nc.Request("$JS.API.STREAM.LEADER.STEPDOWN."+stream, req, time.Second)
		time.Sleep(100 * time.Millisecond)
		return false
	})
}

// waitInfo asks for the stream's info until cond holds of its cluster
// section, failing the test after readyTimeout.
func (c *ProcessCluster) waitInfo(what, stream string, cond func(*jetstream.ClusterInfo) bool) {
	c.t.Helper()
	nc, js := c.jetStream()
	defer nc.Close()
	waitUntil(c.t, what, func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		st, err := js.Stream(ctx, stream)
		if err != nil {
			return false
		}
		ci := st.CachedInfo().Cluster
		return ci != nil && cond(ci)
	})
}

// waitPlaceable waits until the cluster creates (and deletes) a memory
// stream with a replica on every node: its meta group has a leader that
// has heard from every peer (see Cluster.waitPlaceable).
func (c *ProcessCluster) waitPlaceable() {
	c.t.Helper()
	nc, js := c.jetStream()
	defer nc.Close()
	const probe = "NATSTEST_PLACEMENT_PROBE"
	cfg := jetstream.StreamConfig{Name: probe, Subjects: []string{"natstest.placement.probe"}, Storage: jetstream.MemoryStorage, Replicas: len(c.nodes)}
	var last error
	waitUntil(c.t, "a stream placed on every node", func() bool {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_, last = js.CreateStream(ctx, cfg)
		return last == nil
	})
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := js.DeleteStream(ctx, probe); err != nil {
		c.t.Fatalf("natstest: process cluster: delete the placement probe: %v", err)
	}
}

func (c *ProcessCluster) jetStream() (*nats.Conn, jetstream.JetStream) {
	c.t.Helper()
	nc, err := nats.Connect(c.URL(), nats.MaxReconnects(-1), nats.RetryOnFailedConnect(true))
	if err != nil {
		c.t.Fatalf("natstest: process cluster: connect: %v", err)
	}
	js, err := jetstream.New(nc)
	if err != nil {
		nc.Close()
		c.t.Fatalf("natstest: process cluster: %v", err)
	}
	return nc, js
}

// replicasCurrent reports whether a stream's cluster info shows a leader
// and every other of n nodes' replicas online and current.
func replicasCurrent(ci *jetstream.ClusterInfo, n int) bool {
	if ci.Leader == "" || len(ci.Replicas) != n-1 {
		return false
	}
	for _, r := range ci.Replicas {
		if !r.Current || r.Offline {
			return false
		}
	}
	return true
}

// waitUntil polls cond until it holds, failing the test after
// readyTimeout.
func waitUntil(tb testing.TB, what string, cond func() bool) {
	tb.Helper()
	deadline := time.Now().Add(readyTimeout)
	for !cond() {
		if time.Now().After(deadline) {
			tb.Fatalf("natstest: waited %v for %s", readyTimeout, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
