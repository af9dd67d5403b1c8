package vectortest

import (
	"encoding/json"
	"os"
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
	ta.Skip(t, "unsupported", 4, "X448 not implemented")
	cases, passed, skipped, failed := ta.Counts()
	if cases != 2 || passed != 1 || skipped != 1 || failed != 0 {
		t.Fatalf("counts = %d %d %d %d", cases, passed, skipped, failed)
	}
	table := ta.Table()
	for _, want := range []string{"x.json", "suite", "X448 not implemented", "total       2      1       1      0"} {
		if !strings.Contains(table, want) {
			t.Errorf("table lacks %q:\n%s", want, table)
		}
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
