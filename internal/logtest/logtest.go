// Package logtest opens event logs on test servers for the tests of the
// packages above eventlog (replay, engine, the CLI).
package logtest

import (
	"bytes"
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/projections"
)

// Keyring is a keyring with one root key id, every byte of it fill.
func Keyring(t testing.TB, id events.KeyID, fill byte) *events.Keyring {
	t.Helper()
	k, err := events.NewRootKey(bytes.Repeat([]byte{fill}, 32))
	if err != nil {
		t.Fatal(err)
	}
	r, err := events.NewKeyring(id, k)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// Config points a Log at a natstest server, with waits generous enough for
// a loaded machine.
func Config(srv *natstest.Server) eventlog.Config {
	return eventlog.Config{NATSURL: srv.URL(), RequestTimeout: 5 * time.Second, ReconnectWait: 20 * time.Millisecond}
}

// ClusterConfig points a Log at a cluster's URLs, with the stream
// replicated to three nodes.
func ClusterConfig(url string) eventlog.Config {
	cfg := eventlog.Config{NATSURL: url, Replicas: 3}
	cfg.RequestTimeout, cfg.ReconnectWait = 5*time.Second, 20*time.Millisecond
	return cfg
}

// Open opens a Log, closed when the test ends.
func Open(t testing.TB, cfg eventlog.Config, r *events.Keyring) *eventlog.Log {
	t.Helper()
	l, err := eventlog.Open(context.Background(), cfg, r)
	if err != nil {
		t.Fatalf("open log: %v", err)
	}
	t.Cleanup(func() { _ = l.Close() })
	return l
}

// New starts a server and opens a Log on it with key ring {1: 0x11}.
func New(t testing.TB) (*eventlog.Log, *natstest.Server) {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	return Open(t, Config(srv), Keyring(t, 1, 0x11)), srv
}

// Group is the aggregate of a group of inst.
func Group(inst events.InstallationID, id string) events.Aggregate {
	return events.Aggregate{Installation: inst, Type: events.AggGroup, ID: id}
}

// RawDBKey is a raw read-model key, every byte of it fill.
func RawDBKey(t testing.TB, fill byte) projections.Key {
	t.Helper()
	k, err := projections.RawKey(bytes.Repeat([]byte{fill}, projections.KeySize))
	if err != nil {
		t.Fatal(err)
	}
	return k
}

// LastSeq is the stream sequence of inst's last event.
func LastSeq(t testing.TB, l *eventlog.Log, inst events.InstallationID) uint64 {
	t.Helper()
	s, err := l.LastSeq(context.Background(), inst)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// Envelope is the envelope stored at seq of l's stream, as is (a raw
// get, no opening).
func Envelope(l *eventlog.Log, seq uint64) ([]byte, error) {
	js, err := l.Conn().JetStream() // legacy API, for a raw get
	if err != nil {
		return nil, err
	}
	m, err := js.GetMsg(l.Stream(), seq)
	if err != nil {
		return nil, err
	}
	return m.Data, nil
}

// OnMessage is a slog handler that passes records to Handler and calls
// Hook once, after the first record whose message is Msg: a point inside
// a running operation where a test acts, found by what the operation
// logs. Once must be set; copies made by WithAttrs share it.
type OnMessage struct {
	slog.Handler
	Msg  string
	Once *sync.Once
	Hook func()
}

// Handle passes r on, then calls Hook if r is the first record of Msg.
func (h OnMessage) Handle(ctx context.Context, r slog.Record) error {
	err := h.Handler.Handle(ctx, r)
	if r.Message == h.Msg {
		h.Once.Do(h.Hook)
	}
	return err
}

// WithAttrs is Handler's, still watching for Msg.
func (h OnMessage) WithAttrs(as []slog.Attr) slog.Handler {
	h.Handler = h.Handler.WithAttrs(as)
	return h
}

// WithGroup is Handler's, still watching for Msg.
func (h OnMessage) WithGroup(name string) slog.Handler {
	h.Handler = h.Handler.WithGroup(name)
	return h
}
