package childproc

import (
	"fmt"
	"io"
	"os"
	"strings"
	"testing"
	"time"
)

// envChild selects what TestChild does when run as a child.
const envChild = "EPOCHLOG_CHILDPROC_TEST"

// TestChild is the child of the tests below: it prints lines, then exits
// 0, fails, or waits to be killed. It does nothing when run alone.
func TestChild(t *testing.T) {
	mode := os.Getenv(envChild)
	if mode == "" {
		t.Skip("run by the other tests")
	}
	fmt.Println("one")
	fmt.Println("two")
	switch mode {
	case "fail":
		t.Fatal("child-failure-7d3a")
	case "hang":
		time.Sleep(Timeout + time.Minute) // until killed
	}
}

func TestLinesThenExit(t *testing.T) {
	c := Start(t, "TestChild", []string{envChild + "=exit"})
	var got []string
	for {
		line, err := c.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, line)
	}
	if err := c.Wait(); err != nil || c.Killed() {
		t.Fatalf("Wait = %v, Killed = %v, want an exit 0\n%s", err, c.Killed(), c.Output())
	}
	if len(got) < 2 || got[0] != "one" || got[1] != "two" {
		t.Fatalf("lines %q, want one, two first", got)
	}
}

func TestKilled(t *testing.T) {
	c := Start(t, "TestChild", []string{envChild + "=hang"})
	for {
		line, err := c.Next()
		if err != nil {
			t.Fatalf("before line two: %v", err)
		}
		if line == "two" {
			break
		}
	}
	c.Kill()
	if err := c.Wait(); err == nil || !c.Killed() {
		t.Fatalf("Wait = %v, Killed = %v after Kill, want killed\n%s", err, c.Killed(), c.Output())
	}
}

func TestFailed(t *testing.T) {
	c := Start(t, "TestChild", []string{envChild + "=fail"}, "-test.v")
	if err := c.Wait(); err == nil || c.Killed() {
		t.Fatalf("Wait = %v, Killed = %v, want a failure exit", err, c.Killed())
	}
	if out := c.Output(); !strings.Contains(out, "child-failure-7d3a") || !strings.Contains(out, "two") {
		t.Fatalf("Output lacks the child's lines or its failure:\n%s", out)
	}
}
