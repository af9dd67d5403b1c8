package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestLibraryRecordsFollowLogFormat: records of packages that log
// through slog's default logger (keyfile, which has no Log) are written
// as --log-format says, like every other record. Here demo, writing its
// keyring, removes a temporary file a crashed write left beside it
// (keyfile warns); with --log-format json that warning is a JSON object
// on the command's stderr. Until 2026-12-06 it went to Go's default
// logger ("2026/12/06 15:28:24 WARN keyfile: ..."), whatever the flag.
func TestLibraryRecordsFollowLogFormat(t *testing.T) {
	prev, prevOut, prevFlags := slog.Default(), log.Writer(), log.Flags()
	t.Cleanup(func() {
		slog.SetDefault(prev)
		log.SetOutput(prevOut)
		log.SetFlags(prevFlags)
	})
	data := filepath.Join(t.TempDir(), "data")
	if err := os.MkdirAll(data, 0o700); err != nil {
		t.Fatal(err)
	}
	leftover := filepath.Join(data, "event.keys.tmp-123")
	if err := os.WriteFile(leftover, []byte("half a keyring"), 0o600); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	env := &cliEnv{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }, processLogger: true}
	args := []string{"demo", "--data", data, "--installations", "2", "--groups", "1", "--messages", "2", "--log-format", "json"}
	if code := run(context.Background(), env, args); code != exitOK {
		t.Fatalf("demo: exit %d; stderr:\n%s", code, errb.String())
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Fatalf("the leftover %s is still there (%v): keyfile did not clean it up", leftover, err)
	}
	for _, line := range strings.Split(errb.String(), "\n") {
		if !strings.Contains(line, "keyfile: removed a temporary key file") {
			continue
		}
		var rec map[string]any
		if err := json.Unmarshal([]byte(line), &rec); err != nil {
			t.Fatalf("keyfile's record is not JSON with --log-format json: %q", line)
		}
		if rec["file"] != leftover || rec["level"] != "WARN" {
			t.Fatalf("keyfile's record: %v", rec)
		}
		return
	}
	t.Fatalf("no keyfile record on the command's stderr:\n%s", errb.String())
}
