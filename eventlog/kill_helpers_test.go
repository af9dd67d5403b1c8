package eventlog

import (
	"context"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/childproc"
)

// The kill tests (erase, re-wrap, re-seal) re-execute this test binary as
// a child that runs one operation against the parent's nats-server,
// printing a line and pausing after each step, and SIGKILL it at chosen
// moments. envKillChild names the child to run; init turns the binary
// into it before TestMain. Each child reads its other settings from its
// own environment variables.
const (
	envKillChild = "EPOCHLOG_KILL_CHILD"
	envKillURL   = "EPOCHLOG_KILL_NATS_URL" // the parent's nats-server
)

// killChildren are the children, by name.
var killChildren = map[string]func() error{
	"erase":  runEraseChild,
	"rewrap": runRewrapChild,
	"reseal": runResealChild,
}

func init() {
	name := os.Getenv(envKillChild)
	if name == "" {
		return
	}
	run, ok := killChildren[name]
	if !ok {
		fmt.Fprintln(os.Stderr, "no kill test child", name)
		os.Exit(2)
	}
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, name+" child:", err)
		os.Exit(1)
	}
	os.Exit(0)
}

// childLog opens, in a child, a Log on the parent's server under ring.
func childLog(ring *events.Keyring) (*Log, error) {
	return Open(context.Background(), Config{NATSURL: os.Getenv(envKillURL), RequestTimeout: 10 * time.Second}, ring)
}

// killAfter runs the child name against the server at url, with env added
// to this process's, kills it with SIGKILL after d, and returns what it
// printed. init runs the child before any test: the child runs none.
func killAfter(t *testing.T, name, url string, d time.Duration, env ...string) string {
	t.Helper()
	child := childproc.Start(t, "", append([]string{envKillChild + "=" + name, envKillURL + "=" + url}, env...))
	time.Sleep(d)
	child.Kill()
	_ = child.Wait()
	return child.Output()
}
