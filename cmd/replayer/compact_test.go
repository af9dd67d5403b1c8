package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestCompactTakesNoReadModel: compact works on the stream alone (the
// newest snapshot says what is covered). Its help listed --db as
// required and the read-model key flags, which it never read: a compact
// given another installation's read model, or a wrong key, exited 0 as
// if they had been checked. They are refused as flags it does not know.
func TestCompactTakesNoReadModel(t *testing.T) {
	var out, errb bytes.Buffer
	env := &cliEnv{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
	if code := run(context.Background(), env, []string{"compact", "-h"}); code != exitOK {
		t.Fatalf("compact -h: exit %d: %s", code, errb.String())
	}
	for _, f := range []string{"-db ", "-db-key", "-plaintext"} {
		if strings.Contains(out.String(), f) {
			t.Errorf("compact -h lists %s, which compact does not read:\n%s", f, out.String())
		}
	}
	for _, args := range [][]string{
		{"--db", "a.db"},
		{"--db-key-file", "a.key"},
		{"--db", "a.db", "--plaintext"},
	} {
		out.Reset()
		errb.Reset()
		args = append([]string{"compact", "--installation", "inst-a", "--data", t.TempDir()}, args...)
		if code := run(context.Background(), env, args); code != exitUsage || !strings.Contains(errb.String(), "flag provided but not defined") {
			t.Errorf("%q: exit %d, want %d (a flag compact does not take); stderr %s", args, code, exitUsage, errb.String())
		}
	}
}
