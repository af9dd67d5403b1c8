package natstest

import (
	"io"
	"net"
	"strings"
	"sync"
	"testing"
)

// Proxy forwards TCP between clients and a nats-server: what a client
// sends reaches the server as sent; what the server sends goes through
// the toClient function the proxy was made with, so a test can drop or
// rewrite the server's answers (its PubAcks) while the server stores what
// it was sent. Clients connect to URL.
type Proxy struct {
	ln    net.Listener
	mu    sync.Mutex
	conns []net.Conn
}

// NewProxy starts a Proxy in front of the server at serverURL. For each
// connection, toClient copies the server's side (server) to the client's
// (client) until either fails; both are closed after it returns. The
// proxy and its connections close when tb ends.
func NewProxy(tb testing.TB, serverURL string, toClient func(client io.Writer, server io.Reader)) *Proxy {
	tb.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		tb.Fatal(err)
	}
	p := &Proxy{ln: ln}
	tb.Cleanup(func() { ln.Close(); p.Drop() })
	target := strings.TrimPrefix(serverURL, "nats://")
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			s, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, s)
			p.mu.Unlock()
			go func() { io.Copy(s, c); s.Close() }()
			go func() { toClient(c, s); c.Close() }()
		}
	}()
	return p
}

// URL is the proxy's client URL.
func (p *Proxy) URL() string { return "nats://" + p.ln.Addr().String() }

// Drop closes every proxied connection (the clients reconnect).
func (p *Proxy) Drop() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
