package main

import (
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
)

// testRingText is the event keyring of the tests that start their own
// server.
var testRingText = "1:" + strings.Repeat("5a", 32)

// startLog starts a JetStream server and opens the event log on it under
// testRingText.
func startLog(t testing.TB) (*natstest.Server, *eventlog.Log) {
	t.Helper()
	srv := natstest.Start(t, natstest.Options{})
	ring, err := parseKeyring(testRingText)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(context.Background(), eventlog.Config{NATSURL: srv.URL()}, ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return srv, l
}

// createInstallation creates installation id on l with its read model at
// DIR/ID.db under a raw key written to DIR/ID.key (the layout follow
// --db-keys-beside reads), and closes it: a follower or a command, not the
// installation, keeps the read model from here on.
func createInstallation(t testing.TB, l *eventlog.Log, dir string, id events.InstallationID) {
	t.Helper()
	key, err := writeDBKeyFile(filepath.Join(dir, string(id)+".key"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := engine.CreateInstallation(context.Background(), l, id, filepath.Join(dir, string(id)+".db"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	in.Close()
}

// ringEnv is an environment holding only the event keyring, plus vars.
func ringEnv(stdout, stderr interface{ Write([]byte) (int, error) }, vars map[string]string) *cliEnv {
	return &cliEnv{stdout: stdout, stderr: stderr, getenv: func(k string) string {
		if k == envRootKeys {
			return testRingText
		}
		return vars[k]
	}}
}

// deleteSeq deletes the message at stream sequence seq from l's stream: a
// lost event.
func deleteSeq(t *testing.T, l *eventlog.Log, seq uint64) {
	t.Helper()
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(context.Background(), l.Stream())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(context.Background(), seq); err != nil {
		t.Fatalf("delete stream seq %d: %v", seq, err)
	}
}

// noTerminal makes the command take stdin for no terminal, as under a
// service manager or in CI, until the test ends.
func noTerminal(t *testing.T) {
	t.Helper()
	was := stdinIsTerminal
	stdinIsTerminal = func() bool { return false }
	t.Cleanup(func() { stdinIsTerminal = was })
}
