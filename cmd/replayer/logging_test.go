package main

import (
	"context"
	"regexp"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// TestLogFlagsUsage: a bad --log-format or --log-level is a usage error
// naming the flag, for every command.
func TestLogFlagsUsage(t *testing.T) {
	for _, c := range commands {
		for _, bad := range [][]string{{"--log-format", "xml"}, {"--log-level", "loud"}} {
			var stdout, stderr syncBuffer
			code := run(context.Background(), ringEnv(&stdout, &stderr, nil), append([]string{c.name}, bad...))
			if code != exitUsage || !strings.Contains(stderr.String(), `invalid value "`+bad[1]+`" for flag -`+strings.TrimPrefix(bad[0], "--")) {
				t.Errorf("%s %s: exit %d, stderr: %s", c.name, strings.Join(bad, " "), code, stderr.String())
			}
		}
	}
}

// TestLogFormats: the default is text with time, level and msg; json
// gives one parseable object per record; --log-level drops what is less
// severe.
func TestLogFormats(t *testing.T) {
	srv, l := startLog(t)
	id := events.InstallationID("log-a")
	createInstallation(t, l, t.TempDir(), id)
	inspect := func(args ...string) string {
		t.Helper()
		var stdout, stderr syncBuffer
		code := run(context.Background(), ringEnv(&stdout, &stderr, nil), append([]string{"inspect", "--nats", srv.URL(), "--installation", string(id)}, args...))
		if code != exitOK {
			t.Fatalf("inspect %v: exit %d: %s", args, code, stderr.String())
		}
		return stderr.String()
	}

	text := inspect()
	line := regexp.MustCompile(`(?m)^time=\S+ level=INFO msg="using an external NATS server" url=` + regexp.QuoteMeta(srv.URL()) + ` from=--nats$`)
	if !line.MatchString(text) {
		t.Fatalf("text log lacks the server record:\n%s", text)
	}

	recs := logRecords(t, inspect("--log-format", "json", "--log-level", "debug"))
	if findRecord(recs, "using an external NATS server", "level", "INFO", "from", "--nats") == nil {
		t.Fatalf("json log lacks the server record: %v", recs)
	}

	if warn := inspect("--log-level", "warn"); strings.Contains(warn, "level=INFO") || strings.Contains(warn, "level=DEBUG") {
		t.Fatalf("--log-level warn logged less severe records:\n%s", warn)
	}
}
