package natstest

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/internal/flock"
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

// A server given a port someone else listens on says so (errPortTaken),
// rather than waiting out readyTimeout for a listener it will never have.
func TestStartOnATakenPort(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	s := &Server{tb: t, opts: serverOptions(t, Options{StoreDir: t.TempDir(), Port: port})}
	err = s.start()
	if !errors.Is(err, errPortTaken) {
		t.Fatalf("start on a taken port: %v, want errPortTaken", err)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Fatalf("the error does not name port %d: %v", port, err)
	}
	if s.NATSServer() != nil {
		t.Fatal("a server that never listened is reported running")
	}
}

// A cluster node's port taken after it was picked free (by a client
// connection's local port, say) makes StartCluster start over on other
// ports instead of failing: the failure CI met.
func TestClusterStartsOverWhenAPortIsTaken(t *testing.T) {
	var taken net.Listener
	starts := 0
	beforeNodeStart = func(port int) {
		starts++
		if taken != nil {
			return
		}
		ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
		if err != nil {
			t.Fatalf("take port %d: %v", port, err)
		}
		taken = ln
	}
	defer func() { beforeNodeStart = nil }()
	c := StartCluster(t, 3)
	defer taken.Close()
	if starts != 4 {
		t.Fatalf("%d node starts, want 4 (one refused, then three)", starts)
	}
	takenURL := "nats://" + taken.Addr().String()
	for _, n := range c.Nodes() {
		if n.URL() == takenURL {
			t.Fatalf("node %s on the taken port %s", n.Name(), takenURL)
		}
	}
	nc := c.Nodes()[0].Connect()
	js, err := jetstream.New(nc)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := js.CreateStream(context.Background(), jetstream.StreamConfig{Name: "T", Subjects: []string{"t.>"}, Replicas: 3}); err != nil {
		t.Fatal(err)
	}
}

// The same for a nats-server process: it exits saying it cannot listen,
// and start says the port is taken instead of waiting (or reaching
// whatever listens there).
func TestProcessOnATakenPort(t *testing.T) {
	bin, err := serverBinary()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	s := &Process{t: t, bin: bin, port: port, store: t.TempDir(), name: "taken"}
	err = s.start()
	if !errors.Is(err, errPortTaken) {
		s.Kill()
		t.Fatalf("start on a taken port: %v, want errPortTaken", err)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Fatalf("the error does not name port %d: %v", port, err)
	}
}

// Servers listen below the ephemeral range, where no outgoing
// connection's local port can take a port a server gave up for a
// restart (or one picked free before its server started).
func TestPortsBelowTheEphemeralRange(t *testing.T) {
	lo, hi := pickRange()
	if hi == 0 {
		t.Skipf("this machine's ephemeral range (from port %d) leaves fewer than %d ports above %d", ephemeralLow(), minPickRange, pickFloor)
	}
	s := Start(t, Options{})
	c := StartCluster(t, 3)
	ports := []int{s.Port()}
	for _, n := range c.Nodes() {
		ports = append(ports, n.Port(), n.opts.Cluster.Port)
	}
	for _, p := range ports {
		if p < lo || p >= hi {
			t.Errorf("port %d is outside %d-%d, below the ephemeral range", p, lo, hi-1)
		}
	}
}

// A server restarted while another has its port waits for the port
// rather than failing the test at once.
func TestRestartWaitsForItsPort(t *testing.T) {
	s := Start(t, Options{})
	s.Shutdown()
	ln, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", s.Port()))
	if err != nil {
		t.Fatalf("take port %d: %v", s.Port(), err)
	}
	released := make(chan struct{})
	go func() {
		defer close(released)
		// Given back after the first start found it taken.
		for s.portTaken.Load() == 0 {
			time.Sleep(10 * time.Millisecond)
		}
		ln.Close()
	}()
	s.Start()
	<-released
	if s.NATSServer() == nil {
		t.Fatal("not running after Start")
	}
	nc := s.Connect()
	if err := nc.Flush(); err != nil {
		t.Fatalf("client on the restarted server: %v", err)
	}
}

// A port is picked once per test process, and never while another test
// process holds it: a server shut down for a restart keeps its port, so
// its clients cannot reconnect to another test's server there.
func TestPortReservedAcrossProcesses(t *testing.T) {
	lo, hi := pickRange()
	if hi == 0 {
		t.Skipf("no pick range on this machine (ephemeral range from %d)", ephemeralLow())
	}
	s := Start(t, Options{})
	s.Shutdown()
	if ok, err := reserve(s.Port()); ok || err != nil {
		t.Fatalf("the port of a stopped server was reserved again (%v)", err)
	}
	// Another process's hold: a lock on another open file description
	// of a port's file conflicts as a process's would.
	var port int
	for port = lo; port < hi; port++ {
		reserved.Lock()
		_, mine := reserved.files[port]
		reserved.Unlock()
		if !mine {
			break
		}
	}
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "epochlog-natstest-ports", strconv.Itoa(port)), os.O_RDWR|os.O_CREATE, 0o666)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if ok, err := flock.Lock(f.Fd(), true, false); !ok || err != nil {
		t.Skipf("port %d is held by another test process now (%v)", port, err)
	}
	if ok, err := reserve(port); ok || err != nil {
		t.Fatalf("port %d, held by another process, was reserved (%v)", port, err)
	}
}
