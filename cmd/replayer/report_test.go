package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// jsonError decodes stdout as exactly one {"error": {...}} object.
func jsonError(t *testing.T, stdout []byte) failure {
	t.Helper()
	dec := json.NewDecoder(bytes.NewReader(stdout))
	dec.DisallowUnknownFields()
	var v struct {
		Error *failure `json:"error"`
	}
	if err := dec.Decode(&v); err != nil {
		t.Fatalf("stdout is not a JSON error object: %v\n%s", err, stdout)
	}
	if v.Error == nil {
		t.Fatalf("stdout has no \"error\": %s", stdout)
	}
	if err := dec.Decode(&struct{}{}); err != io.EOF {
		t.Fatalf("stdout holds more than one JSON value (%v): %s", err, stdout)
	}
	return *v.Error
}

// TestJSONUsageError: with --json a usage error, found before, during or
// after flag parsing, is one JSON object on stdout with the same exit
// code (2) as without, and the hint.
func TestJSONUsageError(t *testing.T) {
	for _, tc := range []struct {
		name string
		args []string
		env  map[string]string
		msg  string
	}{
		{"missing flag", []string{"verify", "--json", "--data", t.TempDir()}, nil, "--installation is required"},
		{"unknown flag before --json", []string{"rebuild", "--bogus", "--json"}, nil, "flag provided but not defined: -bogus"},
		{"unknown flag after --json", []string{"rebuild", "--json", "--bogus"}, nil, "flag provided but not defined: -bogus"},
		{"bad environment", []string{"catalogue", "--json"}, map[string]string{envMemorySecurity: "maybe"}, "must be \"on\" or \"off\""},
		{"read command with --replicas", []string{"verify", "--json=true", "--replicas", "1"}, nil, "only demo"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var out, errb bytes.Buffer
			code := run(context.Background(), ringEnv(&out, &errb, tc.env), tc.args)
			if code != exitUsage {
				t.Fatalf("exit %d, want %d: %s", code, exitUsage, errb.String())
			}
			f := jsonError(t, out.Bytes())
			if f.Code != "usage" || f.Exit != exitUsage || !strings.Contains(f.Message, tc.msg) ||
				f.Hint != fmt.Sprintf("run \"replayer %s -h\" for its flags", tc.args[0]) || f.StreamSequence != 0 {
				t.Fatalf("JSON error %+v", f)
			}
			// Without --json: the same exit code, nothing on stdout.
			var args []string
			for _, a := range tc.args {
				if !strings.HasPrefix(a, "--json") {
					args = append(args, a)
				}
			}
			out.Reset()
			if code := run(context.Background(), ringEnv(&out, &errb, tc.env), args); code != exitUsage || out.Len() != 0 {
				t.Fatalf("without --json: exit %d, stdout %q", code, out.String())
			}
		})
	}
	// --json=false, or a command without --json, prints no JSON.
	for _, args := range [][]string{{"verify", "--json=false"}, {"inspect", "--json"}} {
		var out, errb bytes.Buffer
		if code := run(context.Background(), ringEnv(&out, &errb, nil), args); code != exitUsage || out.Len() != 0 {
			t.Fatalf("%q: exit %d, stdout %q", args, code, out.String())
		}
	}
}

// TestJSONVerificationFailure: verify --json with the wrong read-model key
// exits 3 and prints one JSON object saying so, with the hint of the
// database error and without the key.
func TestJSONVerificationFailure(t *testing.T) {
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("json-a")
	createInstallation(t, l, dir, id)
	wrong := filepath.Join(dir, "wrong.key")
	if _, err := writeDBKeyFile(wrong); err != nil {
		t.Fatal(err)
	}
	var out, errb bytes.Buffer
	code := run(context.Background(), ringEnv(&out, &errb, nil), []string{"verify", "--json", "--nats", srv.URL(),
		"--installation", string(id), "--db", filepath.Join(dir, string(id)+".db"), "--db-key-file", wrong})
	if code != exitVerify {
		t.Fatalf("exit %d, want %d: %s", code, exitVerify, errb.String())
	}
	f := jsonError(t, out.Bytes())
	if f.Code != "verify_failed" || f.Exit != exitVerify || !strings.Contains(f.Message, "wrong key") || !strings.Contains(f.Hint, "check the key") {
		t.Fatalf("JSON error %+v", f)
	}
	if !strings.Contains(errb.String(), "verification failed") {
		t.Fatalf("stderr: %s", errb.String())
	}
}

// publishJunk publishes a message that is not a sealed event on a subject
// of id's installation whose last token is token, and returns its stream
// sequence. Anyone who can publish to the bus can do this; the readers
// must stop on it, and print its subject safely.
func publishJunk(t *testing.T, l *eventlog.Log, id events.InstallationID, token string) uint64 {
	t.Helper()
	filter, err := l.InstallationFilter(id)
	if err != nil {
		t.Fatal(err)
	}
	// A JetStream publish, answered once the stream stored it: with a core
	// publish and a flush, the stream could still be storing it when its
	// last sequence was asked (seen under the race run's load).
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ack, err := js.Publish(ctx, strings.TrimSuffix(filter, ">")+"group."+token, []byte("junk"))
	if err != nil {
		t.Fatal(err)
	}
	return ack.Sequence
}

// TestStreamBytesEscaped: a subject carrying an ESC byte (a terminal
// escape sequence, here "set the colour to red") stops inspect and verify;
// the error names the subject with the byte escaped (\x1b) on stderr and
// in the JSON error (\u001b), never raw, and the JSON error gives the
// record's stream sequence.
func TestStreamBytesEscaped(t *testing.T) {
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("escape-a")
	createInstallation(t, l, dir, id)
	seq := publishJunk(t, l, id, "x\x1b[31mred")

	var out, errb bytes.Buffer
	code := run(context.Background(), ringEnv(&out, &errb, nil), []string{"inspect", "--nats", srv.URL(), "--installation", string(id)})
	if code == exitOK {
		t.Fatalf("inspect over a junk record succeeded: %s", out.String())
	}
	if bytes.IndexByte(errb.Bytes(), 0x1b) >= 0 || !strings.Contains(errb.String(), `x\x1b[31mred`) {
		t.Fatalf("inspect's error does not escape the subject's ESC: %q", errb.String())
	}
	if bytes.IndexByte(out.Bytes(), 0x1b) >= 0 {
		t.Fatalf("inspect's output holds a raw ESC: %q", out.String())
	}

	out.Reset()
	errb.Reset()
	code = run(context.Background(), ringEnv(&out, &errb, nil), []string{"verify", "--json", "--nats", srv.URL(),
		"--installation", string(id), "--db", filepath.Join(dir, string(id)+".db"), "--db-key-file", filepath.Join(dir, string(id)+".key")})
	if code == exitOK {
		t.Fatal("verify over a junk record succeeded")
	}
	if bytes.IndexByte(out.Bytes(), 0x1b) >= 0 || bytes.IndexByte(errb.Bytes(), 0x1b) >= 0 {
		t.Fatalf("verify printed a raw ESC:\nstdout %q\nstderr %q", out.String(), errb.String())
	}
	if !strings.Contains(out.String(), `x\u001b[31mred`) {
		t.Fatalf("the JSON error does not hold the escaped subject: %s", out.String())
	}
	f := jsonError(t, out.Bytes())
	if f.StreamSequence != seq || f.Exit != code {
		t.Fatalf("JSON error %+v, want stream sequence %d and exit %d", f, seq, code)
	}
}

// TestTermSafe: what a terminal could act on is escaped; printable text,
// non-ASCII letters included, is not.
func TestTermSafe(t *testing.T) {
	for in, want := range map[string]string{
		"plain subject epochlog.abc.group.def": "plain subject epochlog.abc.group.def",
		"x\x1b[31mred":                         `x\x1b[31mred`,
		"bell\a and del\x7f":                   `bell\a and del\x7f`,
		"line\nbreak\ttab\rreturn":             `line\nbreak\ttab\rreturn`,
		"c1 \u009b csi":                        `c1 \u009b csi`,
		"bidi \u202eevil":                      `bidi \u202eevil`,
		"not utf-8 \xff\xfe":                   `not utf-8 \xff\xfe`,
		"Zoë 日本 ✓":                             "Zoë 日本 ✓",
		"replacement \ufffd stays":             "replacement \ufffd stays",
		"":                                     "",
	} {
		if got := termSafe(in); got != want {
			t.Errorf("termSafe(%q) = %q, want %q", in, got, want)
		}
	}
}
