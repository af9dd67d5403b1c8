package natstest

import (
	"bufio"
	"bytes"
	"io"
	"net"
	"strconv"
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

// EditMessages copies a server's protocol from server to client one
// operation at a time (a toClient for NewProxy), passing each message it
// delivers (an MSG or HMSG frame) through edit with the frame's subject
// and its bytes (an HMSG's headers and body). edit returns the bytes to
// deliver instead (the frame's size is set to theirs; an HMSG's header
// size is kept, so change only its body) and keep false to leave the
// message out. Everything else passes unchanged.
func EditMessages(client io.Writer, server io.Reader, edit func(subject string, data []byte) (out []byte, keep bool)) {
	r := bufio.NewReader(server)
	w := bufio.NewWriter(client)
	for {
		line, err := r.ReadBytes('\n')
		if err != nil {
			return
		}
		var payload []byte
		keep := true
		if bytes.HasPrefix(line, []byte("MSG ")) || bytes.HasPrefix(line, []byte("HMSG ")) {
			// MSG <subject> <sid> [reply] <bytes>, HMSG ... <header bytes> <total bytes>
			fields := strings.Fields(string(line))
			size, err := strconv.Atoi(fields[len(fields)-1])
			if err != nil {
				return
			}
			payload = make([]byte, size+2) // and its CRLF
			if _, err := io.ReadFull(r, payload); err != nil {
				return
			}
			var out []byte
			if out, keep = edit(fields[1], payload[:size]); keep && !bytes.Equal(out, payload[:size]) {
				fields[len(fields)-1] = strconv.Itoa(len(out))
				line = []byte(strings.Join(fields, " ") + "\r\n")
				payload = append(out, '\r', '\n')
			}
		}
		if keep {
			if _, err := w.Write(line); err != nil {
				return
			}
			if _, err := w.Write(payload); err != nil {
				return
			}
		}
		if r.Buffered() == 0 {
			if err := w.Flush(); err != nil {
				return
			}
		}
	}
}
