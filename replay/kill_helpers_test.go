package replay

import (
	"context"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/internal/childproc"
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
// its "done" step. A child that fails, exits 0 early or hangs for
// childproc.Timeout fails t.
func killRun(t *testing.T, round int, test string, env []string, killAfter int, late time.Duration) (last string, finished bool) {
	t.Helper()
	child := childproc.Start(t, test, env)
	for n := 0; ; {
		line, err := child.Next()
		if err == io.EOF {
			break // the child finished (or failed) before its kill
		}
		if err != nil {
			child.Kill()
			t.Fatalf("round %d: the child is stuck after step %q: %v", round, last, err)
		}
		s, ok := strings.CutPrefix(line, "step:")
		if !ok {
			continue
		}
		if last, n = s, n+1; n == killAfter {
			time.Sleep(late)
			child.Kill()
			break // Wait reads the rest
		}
	}
	werr := child.Wait()
	switch {
	case werr == nil:
		if last != "done" {
			t.Fatalf("round %d: the child exited 0 after step %q", round, last)
		}
		return last, true
	case child.Killed():
		return last, false
	default:
		t.Fatalf("round %d: the child failed after step %q: %v\n%s", round, last, werr, child.Output())
	}
	return last, false
}
