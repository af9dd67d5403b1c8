package natstest

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/nats-io/nats.go"
)

// built is the nats-server binary StartProcess built, if any.
var built struct {
	sync.Mutex
	dir, bin string
}

// RemoveBuiltServer removes the nats-server binary StartProcess built, if
// any; a later StartProcess builds it again. Call it from TestMain after
// m.Run, or from a test's cleanup.
func RemoveBuiltServer() {
	built.Lock()
	defer built.Unlock()
	if built.dir != "" {
		os.RemoveAll(built.dir)
		built.dir, built.bin = "", ""
	}
}

// serverBinary builds nats-server from the module's own dependency (once
// while it lasts), so fault tests can kill a real server process.
func serverBinary() (string, error) {
	built.Lock()
	defer built.Unlock()
	if built.bin != "" {
		if _, err := os.Stat(built.bin); err == nil {
			return built.bin, nil
		}
	}
	dir, err := os.MkdirTemp("", "epochlog-nats-server-")
	if err != nil {
		return "", err
	}
	bin := filepath.Join(dir, "nats-server")
	out, err := exec.Command("go", "build", "-o", bin, "github.com/nats-io/nats-server/v2").CombinedOutput()
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("building nats-server: %v: %s", err, out)
	}
	built.dir, built.bin = dir, bin
	return bin, nil
}

// Process is a nats-server with JetStream running as a separate
// process on a fixed port and store directory, so it can be killed with
// SIGKILL and started again on the same state.
type Process struct {
	t     *testing.T
	bin   string
	port  int
	store string
	name  string   // server name; empty but in a ProcessCluster
	args  []string // the command line's arguments after the store's and port's
	cmd   *exec.Cmd
}

// StartProcess builds nats-server (once per test binary) and starts it with
// JetStream on a free loopback port and a fresh store; the test's cleanup
// kills it.
func StartProcess(t *testing.T) *Process {
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
	s := &Process{t: t, bin: bin, port: port, store: t.TempDir()}
	s.Start()
	t.Cleanup(s.Kill)
	return s
}

// Store is the process's JetStream store directory.
func (s *Process) Store() string { return s.store }

// URL is the client URL of the process.
func (s *Process) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// Name is the process's server name in a ProcessCluster.
func (s *Process) Name() string { return s.name }

// Start starts the process (again) on the same port and store and waits
// until JetStream answers; a node of a ProcessCluster, until it takes
// clients (its JetStream needs a quorum of the cluster, which the
// cluster waits for).
func (s *Process) Start() {
	s.t.Helper()
	args := append([]string{"-js", "-sd", s.store, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port)}, s.args...)
	s.cmd = exec.Command(s.bin, args...)
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	deadline := time.Now().Add(30 * time.Second)
	for {
		nc, err := nats.Connect(s.URL())
		if err == nil {
			if s.name != "" {
				nc.Close()
				return
			}
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

// Kill sends SIGKILL and waits for the process to go.
func (s *Process) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	_ = s.cmd.Wait()
	s.cmd = nil
}

// Freeze stops the process (SIGSTOP) without closing its connections: a
// server that hangs, or a path that drops packets while TCP stays up. It
// returns once the process is stopped (a signal is delivered
// asynchronously: a server still running for a moment answers). Thaw
// (SIGCONT) resumes it; Kill works on a frozen process too.
func (s *Process) Freeze() {
	s.t.Helper()
	s.signal(syscall.SIGSTOP)
	stat := fmt.Sprintf("/proc/%d/stat", s.cmd.Process.Pid)
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		b, err := os.ReadFile(stat)
		if err != nil {
			time.Sleep(200 * time.Millisecond) // no /proc: give the signal time
			return
		}
		// "pid (comm) state ...": the state follows the last ')'.
		if i := strings.LastIndexByte(string(b), ')'); i >= 0 && i+2 < len(b) && (b[i+2] == 'T' || b[i+2] == 't') {
			return
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("natstest: the nats-server process did not stop within 10s of SIGSTOP")
		}
	}
}

// Thaw resumes a frozen process.
func (s *Process) Thaw() { s.signal(syscall.SIGCONT) }

func (s *Process) signal(sig syscall.Signal) {
	s.t.Helper()
	if s.cmd == nil || s.cmd.Process == nil {
		s.t.Fatal("natstest: the nats-server process is not running")
	}
	if err := s.cmd.Process.Signal(sig); err != nil {
		s.t.Fatal(err)
	}
}
