package replay

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/projections"
)

// retainChild opens, in a kill test's child, a Log on the parent's
// server at url and instA's read model at path (closed with t), and
// returns them with the step printer killRun reads: it prints
// "step:<name>" and pauses retainChildPause. It prints "open" first.
func retainChild(t *testing.T, url, path string) (*eventlog.Log, *projections.DB, func(string)) {
	t.Helper()
	l, err := eventlog.Open(context.Background(), eventlog.Config{NATSURL: url, RequestTimeout: 10 * time.Second}, keyring(t, 1, 0x11))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	db := openDB(t, path, rawDBKey(t, 0x42))
	t.Cleanup(func() { db.Close() })
	step := func(s string) {
		fmt.Println("step:" + s)
		time.Sleep(retainChildPause)
	}
	step("open")
	return l, db, step
}

// killRun is one round of a kill test: the test binary re-executed as a
// child running test alone (env added to this process's environment),
// which prints "step:<name>" after each of its steps. The child is
// SIGKILLed after its killAfter-th step, late after it (inside the next
// step) when late is not zero, or left to finish. It returns the last
// step the child printed and whether the child finished: exited 0 after
// its "done" step. A child that fails, exits 0 early or hangs for two
// minutes fails t.
func killRun(t *testing.T, round int, test string, env []string, killAfter int, late time.Duration) (last string, finished bool) {
	t.Helper()
	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self, "-test.run=^"+test+"$")
	cmd.Env = append(os.Environ(), env...)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	lines := make(chan string)
	go func() {
		defer close(lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if s, ok := strings.CutPrefix(sc.Text(), "step:"); ok {
				lines <- s
			}
		}
	}()
	n := 0
	timeout := time.After(2 * time.Minute)
read:
	for {
		select {
		case s, ok := <-lines:
			if !ok {
				break read // the child finished (or failed) before its kill
			}
			last, n = s, n+1
			if n == killAfter {
				time.Sleep(late)
				_ = cmd.Process.Signal(syscall.SIGKILL)
				for range lines { // drain until the pipe closes
				}
				break read
			}
		case <-timeout:
			_ = cmd.Process.Signal(syscall.SIGKILL)
			t.Fatalf("round %d: the child is stuck after step %q", round, last)
		}
	}
	werr := cmd.Wait()
	var ee *exec.ExitError
	switch {
	case werr == nil:
		if last != "done" {
			t.Fatalf("round %d: the child exited 0 after step %q", round, last)
		}
		return last, true
	case errors.As(werr, &ee) && ee.ProcessState.Sys().(syscall.WaitStatus).Signaled():
		return last, false
	default:
		t.Fatalf("round %d: the child failed after step %q: %v\n%s", round, last, werr, stderr.String())
	}
	return last, false
}
