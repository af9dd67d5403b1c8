package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/internal/natstest"
)

// nextSteps returns the commands demo printed under "next, try:", and the
// note after them, if any.
func nextSteps(t *testing.T, stdout string) (cmds []string, note string) {
	t.Helper()
	_, after, ok := strings.Cut(stdout, "\nnext, try:\n")
	if !ok {
		t.Fatalf("no next steps in:\n%s", stdout)
	}
	for _, line := range strings.Split(strings.TrimRight(after, "\n"), "\n") {
		line = strings.TrimPrefix(line, "  ")
		if strings.HasPrefix(line, "(") {
			note = line
			continue
		}
		cmds = append(cmds, line)
	}
	return cmds, note
}

// shellWords splits a command line as a POSIX shell would split what
// shellQuote writes: words separated by spaces, single quotes around a
// word that needs them, '\” for a quote inside.
func shellWords(t *testing.T, line string) []string {
	t.Helper()
	var words []string
	var cur strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(line); i++ {
		c := line[i]
		switch {
		case quoted && c == '\'':
			quoted = false
		case quoted:
			cur.WriteByte(c)
		case c == '\'':
			quoted, inWord = true, true
		case c == '\\' && i+1 < len(line):
			i++
			cur.WriteByte(line[i])
			inWord = true
		case c == ' ':
			if inWord {
				words = append(words, cur.String())
				cur.Reset()
				inWord = false
			}
		case strings.IndexByte("\"$`;&|<>(){}*?[]#~!", c) >= 0:
			t.Fatalf("unquoted shell character %q in %s", c, line)
		default:
			cur.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		t.Fatalf("unterminated quote in %s", line)
	}
	if inWord {
		words = append(words, cur.String())
	}
	return words
}

// runNextSteps checks that demo printed three commands, each starting with
// "go run ./cmd/replayer" (the test binary is no built replayer), naming
// files the run wrote, and runs each through the CLI: each must succeed.
// It returns the commands' names and what each printed.
func runNextSteps(t *testing.T, stdout string, env func(out, errb *bytes.Buffer) *cliEnv) (names, outputs []string) {
	t.Helper()
	cmds, _ := nextSteps(t, stdout)
	if len(cmds) != 3 {
		t.Fatalf("%d next steps, want 3:\n%s", len(cmds), stdout)
	}
	for _, c := range cmds {
		words := shellWords(t, c)
		if len(words) < 4 || !slices.Equal(words[:3], []string{"go", "run", "./cmd/replayer"}) {
			t.Fatalf("next step %q does not start with go run ./cmd/replayer", c)
		}
		args := words[3:]
		for i, a := range args {
			if (a == "--db" || a == "--db-key-file" || a == "--db-dir" || a == "--keys-file") && i+1 < len(args) {
				if _, err := os.Stat(args[i+1]); err != nil {
					t.Fatalf("next step %q names %s %s: %v", c, a, args[i+1], err)
				}
			}
		}
		var out, errb bytes.Buffer
		if code := run(context.Background(), env(&out, &errb), args); code != exitOK {
			t.Fatalf("next step %q: exit %d\nstdout:\n%s\nstderr:\n%s", c, code, out.String(), errb.String())
		}
		names = append(names, args[0])
		outputs = append(outputs, out.String())
	}
	return names, outputs
}

// TestDemoNextSteps: the demo ends with three commands to try, with the
// run's real ids and paths, and each runs as printed.
func TestDemoNextSteps(t *testing.T) {
	data := filepath.Join(t.TempDir(), "data")
	noEnv := func(out, errb *bytes.Buffer) *cliEnv {
		return &cliEnv{stdout: out, stderr: errb, getenv: func(string) string { return "" }}
	}
	var out, errb bytes.Buffer
	if code := run(context.Background(), noEnv(&out, &errb), []string{"demo", "--data", data, "--installations", "3", "--groups", "1", "--messages", "10"}); code != exitOK {
		t.Fatalf("demo: exit %d; stderr:\n%s", code, errb.String())
	}
	names, outputs := runNextSteps(t, out.String(), noEnv)
	if !slices.Equal(names, []string{"status", "verify", "inspect"}) {
		t.Fatalf("next steps %v", names)
	}
	// The demo leaves every read model at the stream's end (the queue's
	// last acknowledgements included): status shows none lagging.
	rows := 0
	for _, line := range strings.Split(outputs[0], "\n") {
		if !strings.Contains(line, ".db ") {
			continue
		}
		rows++
		if !strings.HasSuffix(strings.TrimSpace(line), " ok") {
			t.Errorf("after the demo, status shows: %s", line)
		}
	}
	if rows != 3 {
		t.Fatalf("status after the demo lists %d read models, want 3:\n%s", rows, outputs[0])
	}
	cmds, note := nextSteps(t, out.String())
	if note != "" || !strings.Contains(cmds[1], "--keys-file "+filepath.Join(data, "event.keys")) || !strings.Contains(cmds[1], "--mls") {
		t.Fatalf("verify step %q (note %q)", cmds[1], note)
	}
}

// TestDemoOnNATSNamesTheServer: on --nats the demo's header names the
// server, without the user information of its URL, and the next steps
// run against it (here the keyring comes from the environment, which the
// commands read too).
func TestDemoOnNATSNamesTheServer(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{})
	url := strings.Replace(srv.URL(), "nats://", "nats://secret-token@", 1)
	var out, errb bytes.Buffer
	if code := run(context.Background(), ringEnv(&out, &errb, nil), []string{"demo", "--nats", url, "--data", t.TempDir(), "--installations", "2", "--groups", "1", "--messages", "2"}); code != exitOK {
		t.Fatalf("demo: exit %d; stderr:\n%s", code, errb.String())
	}
	if !strings.Contains(out.String(), "stream EPOCHLOG on "+srv.URL()+"\n") {
		t.Fatalf("header does not name %s:\n%s", srv.URL(), out.String())
	}
	if strings.Contains(out.String()+errb.String(), "secret-token") {
		t.Fatalf("the URL's user information was printed:\n%s\n%s", out.String(), errb.String())
	}
	if _, note := nextSteps(t, out.String()); !strings.Contains(note, "without their user information") {
		t.Fatalf("no note on the user information left out: %q", note)
	}
	runNextSteps(t, out.String(), func(o, e *bytes.Buffer) *cliEnv { return ringEnv(o, e, nil) })
}

// TestReplayerCommand: the next steps start with the replayer the demo
// ran as when it is a built one, else with go run.
func TestReplayerCommand(t *testing.T) {
	for argv0, want := range map[string]string{
		"bin/replayer":                        "bin/replayer",
		"./bin/replayer":                      "./bin/replayer",
		"/usr/local/bin/replayer":             "/usr/local/bin/replayer",
		"replayer":                            "replayer",
		"/tmp/go-build1234/b001/exe/replayer": "go run ./cmd/replayer",
		"/tmp/x/replayer.test":                "go run ./cmd/replayer",
	} {
		if got := strings.Join(replayerCommand(argv0), " "); got != want {
			t.Errorf("replayerCommand(%q) = %q, want %q", argv0, got, want)
		}
	}
	for in, want := range map[string]string{
		"nats://u:p@a:4222,tls://tok@b:4222": "nats://a:4222,tls://b:4222",
		"nats://a:4222":                      "nats://a:4222",
		"u:p@host:4222":                      "host:4222",
	} {
		if got := withoutUserinfo(in); got != want {
			t.Errorf("withoutUserinfo(%q) = %q, want %q", in, got, want)
		}
	}
	if got := shellQuote("it's a dir"); got != `'it'\''s a dir'` {
		t.Errorf("shellQuote: %s", got)
	}
}
