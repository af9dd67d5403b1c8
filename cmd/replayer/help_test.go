package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
)

// TestHelpGoesToStdout: help asked for (replayer help, -h, a command's
// -h) is the command's output, on stdout with exit 0, so that
// "replayer rebuild -h | less" shows it; the usage printed for a usage
// error stays on stderr beside the error. Until 2026-12-06 all of it
// went to stderr.
func TestHelpGoesToStdout(t *testing.T) {
	for _, tc := range []struct {
		args   []string
		exit   int
		stdout string // "" : nothing on stdout
		stderr string // "" : nothing on stderr
	}{
		{[]string{"help"}, exitOK, "usage: replayer <command>", ""},
		{[]string{"--help"}, exitOK, "usage: replayer <command>", ""},
		{nil, exitUsage, "", "usage: replayer <command>"},
		{[]string{"rebuild", "-h"}, exitOK, "usage: replayer rebuild", ""},
		{[]string{"status", "--help"}, exitOK, "usage: replayer status", ""},
		{[]string{"rebuild", "--bogus"}, exitUsage, "", "usage: replayer rebuild"},
	} {
		var out, errb bytes.Buffer
		env := &cliEnv{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
		code := run(context.Background(), env, tc.args)
		if code != tc.exit {
			t.Errorf("%q: exit %d, want %d", tc.args, code, tc.exit)
		}
		for _, s := range []struct {
			name, got, want string
		}{{"stdout", out.String(), tc.stdout}, {"stderr", errb.String(), tc.stderr}} {
			if s.want == "" && s.got != "" || !strings.Contains(s.got, s.want) {
				t.Errorf("%q: %s %q, want it to hold %q", tc.args, s.name, s.got, s.want)
			}
		}
	}
}
