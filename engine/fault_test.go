package engine

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// serverBinaryDir holds the built nats-server; TestMain removes it.
var serverBinaryDir string

// serverBinary builds nats-server from the module's own dependency once per
// test binary run, so fault tests can kill a real server process.
var serverBinary = sync.OnceValues(func() (string, error) {
	dir, err := os.MkdirTemp("", "epochlog-nats-server-")
	if err != nil {
		return "", err
	}
	serverBinaryDir = dir
	bin := filepath.Join(dir, "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("building nats-server: %v: %s", err, out)
	}
	return bin, nil
})

// serverProcess is a nats-server with JetStream running as a separate
// process on a fixed port and store directory, so it can be killed with
// SIGKILL and started again on the same state.
type serverProcess struct {
	t     *testing.T
	bin   string
	port  int
	store string
	cmd   *exec.Cmd
}

func startServerProcess(t *testing.T) *serverProcess {
	t.Helper()
	bin, err := serverBinary()
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	s := &serverProcess{t: t, bin: bin, port: port, store: t.TempDir()}
	s.start()
	t.Cleanup(s.kill)
	return s
}

func (s *serverProcess) url() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

func (s *serverProcess) start() {
	s.t.Helper()
	s.cmd = exec.Command(s.bin, "-js", "-sd", s.store, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port))
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(s.url())
		if err == nil {
			js, jerr := nc.JetStream()
			if jerr == nil {
				if _, jerr = js.AccountInfo(); jerr == nil {
					nc.Close()
					return
				}
			}
			nc.Close()
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("nats-server process on port %d not ready: %v", s.port, err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// kill sends SIGKILL and waits for the process to go.
func (s *serverProcess) kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// TestFollowAcrossServerKill9 follows an installation while the nats-server
// process is killed with SIGKILL and started again on the same store: the
// follower sees every event exactly once and in order, and retried appends
// do not duplicate.
func TestFollowAcrossServerKill9(t *testing.T) {
	srv := startServerProcess(t)
	cfg := Config{NATSURL: srv.url(), RequestTimeout: 5 * time.Second, ReconnectWait: 50 * time.Millisecond}
	l := openLog(t, cfg, keyring(t, 1, 0x11))
	followAcross(t, l, group(instA, "kill9"), []int{40, 40}, func() {
		srv.kill()
		srv.start()
	})
}
