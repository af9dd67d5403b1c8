package vectortest

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestTallyCounts(t *testing.T) {
	ta := &Tally{file: "x.json", rows: map[uint16]*row{}, reasons: map[uint16]string{}}
	ran := false
	if !ta.Run(t, "ok", 1, func(t *testing.T) { ran = true }) || !ran {
		t.Fatal("passing case not reported as passed")
	}
	// 0xf000 is in RFC 9420's private-use range: not registered, so a skip.
	ta.Skip(t, "unsupported", 0xf000, "private-use suite")
	cases, passed, skipped, failed := ta.Counts()
	if cases != 2 || passed != 1 || skipped != 1 || failed != 0 {
		t.Fatalf("counts = %d %d %d %d", cases, passed, skipped, failed)
	}
	table := ta.Table()
	for _, want := range []string{"x.json", "suite", "private-use suite", "total       2      1       1      0"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
	}
}

// skipRegisteredEnv makes TestSkipOfRegisteredSuiteFails, run as a
// subprocess, skip a case of a registered suite.
const skipRegisteredEnv = "VECTORTEST_SKIP_REGISTERED"

// TestSkipOfRegisteredSuiteFails: every registered suite is implemented, so
// Skip of a case of suites 1 to 7 must fail the test rather than count a
// skip. The failing run happens in a subprocess, since a failure in this
// process would fail this test.
func TestSkipOfRegisteredSuiteFails(t *testing.T) {
	if os.Getenv(skipRegisteredEnv) == "1" {
		ta := &Tally{file: "x.json", rows: map[uint16]*row{}, reasons: map[uint16]string{}}
		ta.Skip(t, "registered", 4, "pretend X448 is missing")
		if _, _, skipped, failed := ta.Counts(); skipped != 0 || failed != 1 {
			t.Logf("counts: skipped %d, failed %d; want 0, 1", skipped, failed)
		}
		return
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestSkipOfRegisteredSuiteFails$", "-test.v")
	cmd.Env = append(os.Environ(), skipRegisteredEnv+"=1")
	out, err := cmd.CombinedOutput()
	if _, ok := err.(*exec.ExitError); !ok {
		t.Fatalf("skipping a suite-4 case did not fail the test (err %v):\n%s", err, out)
	}
	for _, want := range []string{"case registered of registered suite 4 skipped", "pretend X448 is missing"} {
		if !strings.Contains(string(out), want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(string(out), "counts:") {
		t.Errorf("skip of a registered suite was not counted as a failure:\n%s", out)
	}
}

func TestDirFromEnvAndLoad(t *testing.T) {
	dir := t.TempDir()
	if err := os.WriteFile(filepath.Join(dir, "v.json"), []byte(`[{"a":"00ff"}]`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv(EnvDir, dir)
	if got := Dir(t); got != dir {
		t.Fatalf("Dir = %q, want %q", got, dir)
	}
	var v []struct {
		A HexBytes `json:"a"`
	}
	Load(t, "v.json", &v)
	if len(v) != 1 || string(v[0].A) != "\x00\xff" {
		t.Fatalf("Load = %+v", v)
	}
}

func TestDirFindsSharedVectors(t *testing.T) {
	t.Setenv(EnvDir, "")
	d := Dir(t) // skips when shared/ is absent, as in a bare checkout
	if _, err := os.Stat(filepath.Join(d, "tree-math.json")); err != nil {
		t.Fatalf("vectors dir %s lacks tree-math.json: %v", d, err)
	}
}

func TestHexBytesRejectsBadInput(t *testing.T) {
	var h HexBytes
	for _, in := range []string{`"0g"`, `"abc"`, `12`} {
		if err := json.Unmarshal([]byte(in), &h); err == nil {
			t.Errorf("HexBytes accepted %s", in)
		}
	}
	if Hex(t, "0a0b")[1] != 0x0b {
		t.Fatal("Hex decoded wrongly")
	}
}
