// Package childproc runs the test binary again as a child process running
// one test, for the tests that SIGKILL a real process at chosen moments:
// the child prints a line at each moment worth a kill, and the parent
// reads them as they come.
package childproc

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Timeout bounds every wait on a child's lines, from its start: a child
// that has printed nothing more by then is stuck (CI shares two cores
// under load, hence the margin).
const Timeout = 2 * time.Minute

// ErrStuck is Next's error when the child printed no line within Timeout
// of its start.
var ErrStuck = errors.New("childproc: the child printed nothing more within the timeout")

// Child is the test binary re-executed as a child process running one test.
type Child struct {
	test     string
	cmd      *exec.Cmd
	lines    chan string
	deadline time.Time
	stderr   strings.Builder // written by exec's copier until Wait returns
	waited   bool

	mu  sync.Mutex
	out strings.Builder // every line the child printed on stdout
}

// Start re-executes the test binary running only test (-test.run=^test$,
// then args), with env added to this process's environment. Its stdout
// lines come from Next; a test that ends before Wait kills the child.
func Start(t testing.TB, test string, env []string, args ...string) *Child {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	c := &Child{
		test:  test,
		cmd:   exec.Command(self, append([]string{"-test.run=^" + test + "$"}, args...)...),
		lines: make(chan string),
	}
	c.cmd.Env = append(os.Environ(), env...)
	c.cmd.Stderr = &c.stderr
	stdout, err := c.cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := c.cmd.Start(); err != nil {
		t.Fatalf("start child %s: %v", test, err)
	}
	c.deadline = time.Now().Add(Timeout)
	go func() {
		defer close(c.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			c.mu.Lock()
			c.out.WriteString(sc.Text() + "\n")
			c.mu.Unlock()
			c.lines <- sc.Text()
		}
	}()
	t.Cleanup(func() {
		if !c.waited { // the test failed before Wait: leave no child behind
			c.Kill()
			_ = c.Wait()
		}
	})
	return c
}

// Next returns the child's next stdout line. It returns io.EOF once the
// child closed its stdout (it exited), and an error wrapping ErrStuck when
// no line came within Timeout of the child's start.
func (c *Child) Next() (string, error) {
	timer := time.NewTimer(time.Until(c.deadline))
	defer timer.Stop()
	select {
	case s, ok := <-c.lines:
		if !ok {
			return "", io.EOF
		}
		return s, nil
	case <-timer.C:
		return "", fmt.Errorf("child %s (pid %d): %w (%v)", c.test, c.cmd.Process.Pid, ErrStuck, Timeout)
	}
}

// Kill sends the child SIGKILL; a child already gone is no error.
func (c *Child) Kill() { _ = c.cmd.Process.Signal(syscall.SIGKILL) }

// Wait reads what the child still prints until it closes its stdout, then
// waits for it to exit and returns exec.Cmd.Wait's error: nil when it
// exited 0.
func (c *Child) Wait() error {
	for range c.lines {
	}
	c.waited = true
	return c.cmd.Wait()
}

// Killed reports, after Wait, whether SIGKILL ended the child.
func (c *Child) Killed() bool {
	if c.cmd.ProcessState == nil {
		return false
	}
	ws, ok := c.cmd.ProcessState.Sys().(syscall.WaitStatus)
	return ok && ws.Signaled() && ws.Signal() == syscall.SIGKILL
}

// Output returns, after Wait, what the child printed: its stdout, then its
// stderr.
func (c *Child) Output() string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.out.String() + c.stderr.String()
}
