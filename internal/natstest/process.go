package natstest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
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
	t       *testing.T
	bin     string
	port    int
	store   string
	name    string   // server name, which the client checks it reached
	cluster bool     // a ProcessCluster's node: ready when it takes clients
	monitor int      // a ProcessCluster's node: its monitoring port
	args    []string // the command line's arguments after the name's, store's and port's
	cmd     *exec.Cmd
	exited  chan struct{} // closed when cmd has exited and been waited for
	stderr  *tail         // the end of cmd's standard error
}

// processes numbers the processes StartProcess names.
var processes atomic.Int64

// StartProcess builds nats-server (once per test binary) and starts it with
// JetStream on a free loopback port and a fresh store; the test's cleanup
// kills it.
func StartProcess(t *testing.T) *Process {
	t.Helper()
	bin, err := serverBinary()
	if err != nil {
		t.Fatal(err)
	}
	store := t.TempDir()
	name := fmt.Sprintf("natstest-%d-%d", os.Getpid(), processes.Add(1))
	// A port picked free can be taken before the process listens on it
	// (see errPortTaken): another is picked.
	s := startOnFreePorts(t, "process", func(int) (*Process, error) {
		s := &Process{t: t, bin: bin, port: freePorts(t, 1)[0], store: store, name: name}
		return s, s.start()
	})
	t.Cleanup(s.Kill)
	return s
}

// Store is the process's JetStream store directory.
func (s *Process) Store() string { return s.store }

// URL is the client URL of the process.
func (s *Process) URL() string { return "nats://127.0.0.1:" + strconv.Itoa(s.port) }

// Name is the process's server name.
func (s *Process) Name() string { return s.name }

// Start starts the process (again) on the same port and store and waits
// until JetStream answers; a node of a ProcessCluster, until it takes
// clients (its JetStream needs a quorum of the cluster, which the
// cluster waits for).
func (s *Process) Start() {
	s.t.Helper()
	if err := restartOnSamePorts(s.start); err != nil {
		s.t.Fatalf("natstest: %v", err)
	}
}

// start is Start, returning errPortTaken if the process exits saying it
// could not listen, and an error naming what it said if it exits
// otherwise.
func (s *Process) start() error {
	args := append([]string{"-n", s.name, "-js", "-sd", s.store, "-a", "127.0.0.1", "-p", strconv.Itoa(s.port)}, s.args...)
	cmd := exec.Command(s.bin, args...)
	s.stderr = &tail{}
	cmd.Stderr = s.stderr
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("nats-server process: %w", err)
	}
	exited := make(chan struct{})
	go func() {
		_ = cmd.Wait()
		close(exited)
	}()
	s.cmd, s.exited = cmd, exited
	var err error
	for deadline := time.Now().Add(readyTimeout); ; time.Sleep(50 * time.Millisecond) {
		select {
		case <-exited:
			s.cmd = nil
			said := s.stderr.String()
			if strings.Contains(said, "Error listening") {
				return fmt.Errorf("nats-server process on port %d: %w: %s", s.port, errPortTaken, said)
			}
			return fmt.Errorf("nats-server process on port %d exited: %s", s.port, said)
		default:
		}
		if err = s.ready(); err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			s.Kill()
			return fmt.Errorf("nats-server process on port %d not ready after %v: %w", s.port, readyTimeout, err)
		}
	}
}

// ready reports why the process does not take clients yet (nil if it
// does): alone, until JetStream answers too. A server that answers under
// another name is another test's, on a port this one could not take.
func (s *Process) ready() error {
	nc, err := nats.Connect(s.URL())
	if err != nil {
		return err
	}
	defer nc.Close()
	if got := nc.ConnectedServerName(); got != s.name {
		return fmt.Errorf("port %d answered by server %q, not %q", s.port, got, s.name)
	}
	if s.cluster {
		return nil
	}
	js, err := nc.JetStream()
	if err != nil {
		return err
	}
	_, err = js.AccountInfo()
	return err
}

// Kill sends SIGKILL and waits for the process to go.
func (s *Process) Kill() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = s.cmd.Process.Kill()
	<-s.exited
	s.cmd = nil
}

// tail keeps the last 4 KiB written to it: enough of a process's log to
// say why it exited.
type tail struct {
	mu  sync.Mutex
	buf []byte
}

func (t *tail) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.buf = append(t.buf, p...)
	if over := len(t.buf) - 4<<10; over > 0 {
		t.buf = append(t.buf[:0], t.buf[over:]...)
	}
	return len(p), nil
}

func (t *tail) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.buf))
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
