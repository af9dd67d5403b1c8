// Package natstest starts real in-process NATS JetStream servers for tests, with file storage in a temporary directory.
package natstest

import (
	"errors"
	"fmt"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/epochlog/epochlog/internal/serverready"
)

// readyTimeout bounds how long Start and Restart wait for the server to accept
// clients; a loaded CI machine can take a while to open a file store.
const readyTimeout = 30 * time.Second

// Options tune a test server. The zero value is a JetStream server with file
// storage in t.TempDir(), listening on 127.0.0.1 with a random port.
type Options struct {
	// StoreDir is the JetStream store directory; empty means a fresh t.TempDir().
	StoreDir string
	// Port is the client port; 0 picks a free one. Restart reuses whatever
	// port the first start got, so clients can reconnect to the same URL.
	Port int
	// ServerName names the server (useful in logs of multi-server tests).
	ServerName string
	// SyncAlways makes the file store fsync every write.
	SyncAlways bool
	// MaxBatchInflight, when set, is the most atomic batches a stream
	// stages at once (max_batch_inflight_per_stream; the server's
	// default is 50): more are refused.
	MaxBatchInflight int
	// User and Password, when set, are required of every client.
	User     string
	Password string
	// SubscribeOnly, when set with User, limits what User may subscribe
	// to to these subjects (publishing stays free), as an account that
	// gives each client its own reply prefix does.
	SubscribeOnly []string
	// Token, when set, is the authorization token every client must give.
	Token string
	// TLSHandshakeFirst, with TLS, makes the server expect the TLS
	// handshake before it sends its INFO (handshake_first).
	TLSHandshakeFirst bool
	// TLS, when set, makes the server require TLS with PKI's server
	// certificate; VerifyClients also requires a client certificate signed
	// by PKI's CA (mutual TLS).
	TLS           *PKI
	VerifyClients bool
	// NKey, when set, is the one user the server accepts, by nkey.
	NKey *NKeyUser
	// Operator, when set, runs the server in decentralized (JWT) auth mode:
	// clients connect with .creds files of Operator's JetStream account.
	Operator *Operator
}

// Server is a running (or stopped, between Shutdown and Restart) in-process
// nats-server with JetStream. Its methods are safe for concurrent use.
type Server struct {
	tb     testing.TB
	mu     sync.Mutex
	opts   server.Options
	client []nats.Option // what Connect needs for the security settings
	srv    *server.Server
	// portTaken counts the starts that found a port taken.
	portTaken atomic.Int32
}

// Start starts a JetStream server for the test and shuts it down when the
// test ends. It fails the test if the server does not come up.
func Start(tb testing.TB, o Options) *Server {
	tb.Helper()
	if o.StoreDir == "" {
		o.StoreDir = filepath.Join(tb.TempDir(), "jetstream")
	}
	client := o.clientOptions(tb)
	if o.Port != 0 {
		s := &Server{tb: tb, opts: serverOptions(tb, o), client: client}
		if err := s.start(); err != nil {
			tb.Fatalf("natstest: %v", err)
		}
		tb.Cleanup(s.Shutdown)
		return s
	}
	s := startOnFreePorts(tb, "server", func(int) (*Server, error) {
		o := o
		o.Port = freePorts(tb, 1)[0]
		s := &Server{tb: tb, opts: serverOptions(tb, o), client: client}
		return s, s.start()
	})
	tb.Cleanup(s.Shutdown)
	return s
}

// serverOptions turns o (with its StoreDir set) into nats-server options.
func serverOptions(tb testing.TB, o Options) server.Options {
	tb.Helper()
	name := o.ServerName
	if name == "" {
		name = "natstest"
	}
	opts := server.Options{
		ServerName: name,
		Host:       "127.0.0.1",
		Port:       o.Port,
		JetStream:  true,
		StoreDir:   o.StoreDir,
		SyncAlways: o.SyncAlways,
		Username:   o.User,
		Password:   o.Password,
		NoLog:      true,
		NoSigs:     true,
		// A test that appends faster than the default limits allow would
		// fail for reasons unrelated to the code under test.
		JetStreamMaxMemory: 256 << 20,
		JetStreamMaxStore:  4 << 30,
	}
	opts.JetStreamLimits.MaxBatchInflightPerStream = o.MaxBatchInflight
	if o.TLS != nil {
		o.TLS.tlsOptions(tb, &opts, o.VerifyClients)
		opts.TLSHandshakeFirst = o.TLSHandshakeFirst
	}
	if o.SubscribeOnly != nil {
		opts.Username, opts.Password = "", ""
		opts.Users = []*server.User{{Username: o.User, Password: o.Password, Permissions: &server.Permissions{
			Subscribe: &server.SubjectPermission{Allow: o.SubscribeOnly},
		}}}
	}
	opts.Authorization = o.Token
	if o.NKey != nil {
		opts.Nkeys = []*server.NkeyUser{{Nkey: o.NKey.Public}}
	}
	if o.Operator != nil {
		o.Operator.serverOptions(&opts)
	}
	return opts
}

func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.srv != nil {
		return fmt.Errorf("server already running on port %d", s.opts.Port)
	}
	opts := s.opts // nats-server keeps and mutates the pointer it is given
	srv, err := server.NewServer(&opts)
	if err != nil {
		return fmt.Errorf("new server (store %s, port %d): %w", s.opts.StoreDir, s.opts.Port, err)
	}
	if err := serverready.Start(srv, readyTimeout); errors.Is(err, serverready.ErrListen) {
		s.portTaken.Add(1)
		return fmt.Errorf("server on port %d (store %s): %w: %w", s.opts.Port, s.opts.StoreDir, errPortTaken, err)
	} else if err != nil {
		return fmt.Errorf("server on port %d (store %s): %w", s.opts.Port, s.opts.StoreDir, err)
	}
	s.srv = srv
	return nil
}

// errPortTaken is a server's or a process's answer when a port it was
// given is taken: a port picked free can be taken (by another test's
// server, or as a client connection's local port) before the node that
// was to listen on it starts.
var errPortTaken = errors.New("port taken")

// maxStartAttempts is how many times startOnFreePorts tries.
const maxStartAttempts = 5

// startOnFreePorts returns what start gives, calling it again (with the
// next attempt number, from 1) while it fails with errPortTaken: a port
// picked free can be taken before its server listens on it, and other
// ports are picked then. start must undo what it started before it
// fails. Another error, or errPortTaken maxStartAttempts times, fails tb
// (what names what was started).
func startOnFreePorts[T any](tb testing.TB, what string, start func(attempt int) (T, error)) T {
	tb.Helper()
	for attempt := 1; ; attempt++ {
		v, err := start(attempt)
		if err == nil {
			return v
		}
		if !errors.Is(err, errPortTaken) {
			tb.Fatalf("natstest: %s: %v", what, err)
		}
		if attempt == maxStartAttempts {
			tb.Fatalf("natstest: %s: %v (%d times)", what, err, attempt)
		}
	}
}

// restartOnSamePorts calls start, a server's start on the ports it had
// before (its clients and cluster peers know them), again while it fails
// with errPortTaken, for up to readyTimeout. Below the ephemeral range
// (ports.go) only another test's server can have taken one meanwhile,
// and it may give it back while this waits.
func restartOnSamePorts(start func() error) error {
	deadline := time.Now().Add(readyTimeout)
	for {
		err := start()
		if !errors.Is(err, errPortTaken) || time.Now().After(deadline) {
			return err
		}
		time.Sleep(250 * time.Millisecond)
	}
}

// URL is the client URL (nats://127.0.0.1:<port>); it stays the same across Restart.
func (s *Server) URL() string {
	return fmt.Sprintf("nats://127.0.0.1:%d", s.opts.Port)
}

// Port is the client port; it stays the same across Restart.
func (s *Server) Port() int { return s.opts.Port }

// Name is the server name.
func (s *Server) Name() string { return s.opts.ServerName }

// StoreDir is the JetStream store directory.
func (s *Server) StoreDir() string { return s.opts.StoreDir }

// NATSServer returns the running server, or nil between Shutdown and Restart.
func (s *Server) NATSServer() *server.Server {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.srv
}

// Shutdown stops the server and waits until it has released its port and
// store. It is a no-op if the server is not running.
func (s *Server) Shutdown() {
	s.mu.Lock()
	srv := s.srv
	s.srv = nil
	s.mu.Unlock()
	if srv == nil {
		return
	}
	srv.Shutdown()
	srv.WaitForShutdown()
}

// Restart stops the server and starts it again on the same store directory
// and port, so connected clients reconnect and find their streams.
func (s *Server) Restart() {
	s.tb.Helper()
	s.Shutdown()
	if err := restartOnSamePorts(s.start); err != nil {
		s.tb.Fatalf("natstest: restart: %v", err)
	}
}

// Start starts a stopped server again (after Shutdown) on the same store and port.
func (s *Server) Start() {
	s.tb.Helper()
	if err := restartOnSamePorts(s.start); err != nil {
		s.tb.Fatalf("natstest: start: %v", err)
	}
}

// Connect opens a client connection that reconnects forever (tests restart
// servers under it) and is closed when the test ends.
func (s *Server) Connect(opts ...nats.Option) *nats.Conn {
	s.tb.Helper()
	base := []nats.Option{
		nats.Name("natstest"),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(50 * time.Millisecond),
	}
	base = append(base, s.client...)
	nc, err := nats.Connect(s.URL(), append(base, opts...)...)
	if err != nil {
		s.tb.Fatalf("natstest: connect %s: %v", s.URL(), err)
	}
	s.tb.Cleanup(nc.Close)
	return nc
}
