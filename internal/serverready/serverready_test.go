package serverready

import (
	"errors"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"
)

// never is a readiness timeout no test waits out: an answer from Start
// within answerBound did not come from it.
const (
	never       = time.Hour
	answerBound = 2 * time.Minute
)

// newServer makes (but does not start) an embedded JetStream server on
// host:port with a store under the test's directory.
func newServer(t *testing.T, host string, port int) *server.Server {
	t.Helper()
	srv, err := server.NewServer(&server.Options{
		ServerName: "serverready", Host: host, Port: port,
		JetStream: true, StoreDir: filepath.Join(t.TempDir(), "js"),
		NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		srv.Shutdown()
		srv.WaitForShutdown()
	})
	return srv
}

// start is Start(srv, never), failing t if it has not answered within
// answerBound (it waited for readiness it will never have).
func start(t *testing.T, srv *server.Server) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- Start(srv, never) }()
	select {
	case err := <-done:
		return err
	case <-time.After(answerBound):
		t.Fatalf("Start has not answered after %v (its timeout is %v): it waits instead of saying why", answerBound, never)
		return nil
	}
}

func TestStartReady(t *testing.T) {
	srv := newServer(t, "127.0.0.1", server.RANDOM_PORT)
	if err := start(t, srv); err != nil {
		t.Fatalf("Start: %v", err)
	}
	if !srv.Running() || !srv.JetStreamEnabled() {
		t.Fatalf("started: running %v, JetStream %v", srv.Running(), srv.JetStreamEnabled())
	}
	nc, err := nats.Connect(srv.ClientURL(), nats.Timeout(time.Minute))
	if err != nil {
		t.Fatalf("connect to %s: %v", srv.ClientURL(), err)
	}
	defer nc.Close()
	// JetStream answers: a request the server itself serves.
	msg, err := nc.Request("$JS.API.INFO", nil, time.Minute)
	if err != nil {
		t.Fatalf("JetStream account info: %v", err)
	}
	if !strings.Contains(string(msg.Data), `"type":"io.nats.jetstream.api.v1.account_info_response"`) {
		t.Fatalf("JetStream account info: %q", msg.Data)
	}
}

// A port someone else listens on is ErrListen naming it, at once (Start's
// timeout is an hour), and the server is shut down, the listener left
// alone.
func TestStartOnAPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	srv := newServer(t, "127.0.0.1", port)
	err = start(t, srv)
	if !errors.Is(err, ErrListen) {
		t.Fatalf("Start on port %d in use: %v, want ErrListen", port, err)
	}
	if !strings.Contains(err.Error(), strconv.Itoa(port)) {
		t.Fatalf("the error does not name port %d: %v", port, err)
	}
	if srv.Running() {
		t.Fatal("the server that could not listen is left running")
	}
	// The port is still the listener's.
	go func() {
		if c, err := ln.Accept(); err == nil {
			c.Close()
		}
	}()
	c, err := net.DialTimeout("tcp", ln.Addr().String(), time.Minute)
	if err != nil {
		t.Fatalf("dial the listener after Start: %v", err)
	}
	c.Close()
}

// An address that is not this host's is ErrListen naming it too.
func TestStartOnAnAddressNotThisHosts(t *testing.T) {
	const host = "192.0.2.1" // TEST-NET-1 (RFC 5737): no host's address
	srv := newServer(t, host, 4222)
	err := start(t, srv)
	if err == nil {
		t.Skipf("this host listens on %s (net.ipv4.ip_nonlocal_bind set?)", host)
	}
	if !errors.Is(err, ErrListen) || !strings.Contains(err.Error(), host) {
		t.Fatalf("Start on %s: %v, want ErrListen naming it", host, err)
	}
}

// Another fatal error (a JetStream store that cannot be made) is returned
// at once as the server said it, and is not ErrListen.
func TestStartOtherFatal(t *testing.T) {
	store := filepath.Join(t.TempDir(), "a-file")
	if err := os.WriteFile(store, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	srv, err := server.NewServer(&server.Options{
		ServerName: "serverready", Host: "127.0.0.1", Port: server.RANDOM_PORT,
		JetStream: true, StoreDir: store, NoLog: true, NoSigs: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Shutdown)
	err = start(t, srv)
	if err == nil || errors.Is(err, ErrListen) || !strings.Contains(err.Error(), "JetStream") {
		t.Fatalf("Start with a file as the JetStream store: %v, want the server's fatal error, not ErrListen", err)
	}
	if srv.Running() {
		t.Fatal("the server that failed is left running")
	}
}
