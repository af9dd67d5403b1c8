package main

import (
	"context"
	"flag"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// docConfigExample returns the YAML example of the follow config file in
// docs/operations.md: the first ```yaml block of the section "The follow
// config file".
func docConfigExample(t *testing.T) string {
	t.Helper()
	doc, err := os.ReadFile(filepath.Join("..", "..", "docs", "operations.md"))
	if err != nil {
		t.Fatal(err)
	}
	_, section, ok := strings.Cut(string(doc), "\n### The follow config file\n")
	if !ok {
		t.Fatal(`docs/operations.md has no section "### The follow config file"`)
	}
	_, block, ok := strings.Cut(section, "\n```yaml\n")
	if !ok {
		t.Fatal("the follow config file section has no ```yaml block")
	}
	block, _, ok = strings.Cut(block, "\n```\n")
	if !ok {
		t.Fatal("the follow config file example does not end")
	}
	return block + "\n"
}

// applyConfig parses text as the config file at path and applies it to a
// follow flag set parsed from args, as runFollow does.
func applyConfig(t *testing.T, path, text string, args ...string) (*followOpts, []readModelConfig, error) {
	t.Helper()
	env := ringEnv(io.Discard, io.Discard, nil)
	fs, o := newFollowFlags(env)
	if err := parseFlags(env, fs, args); err != nil {
		t.Fatal(err)
	}
	cf, err := parseFollowConfig(path, []byte(text))
	if err != nil {
		return nil, nil, err
	}
	list, err := cf.apply(fs, path)
	return o, list, err
}

// TestFollowConfigDocExample: the example in docs/operations.md parses
// and sets what its comments say.
func TestFollowConfigDocExample(t *testing.T) {
	o, list, err := applyConfig(t, "/etc/epochlog/follow.yaml", docConfigExample(t))
	if err != nil {
		t.Fatalf("the documented example does not parse: %v", err)
	}
	for _, c := range []struct{ what, got, want string }{
		{"nats url", o.conn.nats, "tls://nats-1.staging:4222,tls://nats-2.staging:4222,tls://nats-3.staging:4222"},
		{"stream", o.conn.stream, "EPOCHLOG"},
		{"tls ca", o.conn.ca, "/etc/epochlog/nats-ca.pem"},
		{"tls key", o.conn.key, "/etc/epochlog/replayer-key.pem"},
		{"creds", o.conn.creds, "/etc/epochlog/replayer.creds"},
		{"keys file", o.keys.file, "/etc/epochlog/event.keys"},
		{"db dir", o.dir, "/srv/epochlog/models"},
		{"metrics", o.metrics, "127.0.0.1:9464"},
		{"log format", o.conn.fs.Lookup("log-format").Value.String(), "json"},
		{"log level", o.conn.fs.Lookup("log-level").Value.String(), "info"},
	} {
		if c.got != c.want {
			t.Errorf("%s: %q, want %q", c.what, c.got, c.want)
		}
	}
	if !o.beside || o.readyLag != 30*time.Second {
		t.Errorf("db-keys-beside %v, ready-lag %v", o.beside, o.readyLag)
	}
	if o.share != "models" || o.leaseTTL != 15*time.Second {
		t.Errorf("share %q, lease-ttl %v; want models, 15s", o.share, o.leaseTTL)
	}
	ts, err := followTargets(o.dir, o.list, list, o.beside, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := []followTarget{
		{"alice-phone", "/srv/epochlog/models/alice-phone.db", "/srv/epochlog/models/alice-phone.key"},
		{"bob-laptop", "/srv/epochlog/models/bob-laptop.db", "/srv/epochlog/models/bob-laptop.key"},
		{"carol-tablet", "/mnt/archive/carol-tablet.db", "/etc/epochlog/carol-tablet.key"},
	}
	if len(ts) != len(want) {
		t.Fatalf("read models %+v, want %+v", ts, want)
	}
	for i := range want {
		if ts[i] != want[i] {
			t.Errorf("read model %d: %+v, want %+v", i, ts[i], want[i])
		}
	}
}

// TestFollowConfigErrors: an unknown key, a value where a mapping belongs
// and a bad value are usage errors naming the file, the line and the key.
func TestFollowConfigErrors(t *testing.T) {
	for _, c := range []struct{ name, text, want string }{
		{"unknown key", "nats:\n  url: nats://x:4222\n  colour: blue\n",
			`config file f.yaml: line 3: unknown key "colour" (the keys here are: url, context, data, stream, subject-prefix, tls, creds, nkey, user, inbox-prefix, request-timeout)`},
		{"unknown top key", "metrics: :9464\ndb_dir: /srv\n", `line 2: unknown key "db_dir"`},
		{"mapping for a value", "nats:\n  url:\n    host: x\n", "line 3: want a single value"},
		{"bad duration", "ready-lag: soon\n", `config file f.yaml: line 1: ready-lag: invalid value "soon" for --ready-lag: parse error`},
		{"bad lease ttl", "share:\n  group: g\n  lease-ttl: soon\n", `line 3: share.lease-ttl: invalid value "soon" for --lease-ttl`},
		{"unknown share key", "share:\n  name: g\n", `line 2: unknown key "name" (the keys here are: group, lease-ttl)`},
		{"bad log format", "log:\n  format: xml\n", `line 2: log.format: invalid value "xml" for --log-format: must be text or json, not "xml"`},
		{"bad bool", "read-models:\n  db-keys-beside: maybe\n", "line 2: read-models.db-keys-beside:"},
		// A key pasted in the wrong place is not quoted into the logs.
		{"a key for a bool", "read-models:\n  db-keys-beside: 19b7ec0a5d3e2f4c6a8b0d1e3f5a7c9e1b3d5f7a9c0e2a4c6e8a0b2d4f6a8c0e\n",
			"line 2: read-models.db-keys-beside: invalid value (64 characters, not shown) for --db-keys-beside"},
		{"entry without installation", "read-models:\n  list:\n    - db: /x.db\n", "read-models.list entry 1: installation is required"},
		{"bad installation", "read-models:\n  list:\n    - installation: a.b\n", `line 3: read-models.list: installation: events: installation id: "a.b": byte 1 is '.'`},
		{"syntax", "nats: [\n", "config file f.yaml: YAML syntax error at or after line 1: "},
		// yaml.v3 says line 1 for a flow sequence opened on line 2 and
		// found unclosed on line 3: the error says "at or after".
		{"unclosed flow sequence", "metrics: :9464\nnats: [a, b\nready-lag: 1s\n",
			"config file f.yaml: YAML syntax error at or after line 1: did not find expected ',' or ']'"},
	} {
		t.Run(c.name, func(t *testing.T) {
			_, _, err := applyConfig(t, "f.yaml", c.text)
			if err == nil {
				t.Fatalf("accepted:\n%s", c.text)
			}
			if _, ok := err.(usageError); !ok {
				t.Errorf("not a usage error: %T %v", err, err)
			}
			if !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q does not say %q", err, c.want)
			}
			if strings.Contains(err.Error(), "19b7ec0a") {
				t.Fatalf("error %q quotes the key", err)
			}
		})
	}
}

// TestFollowConfigFlagsOverride: a flag on the command line wins over the
// file; for the server, key and read-model groups it wins over the whole
// group. Relative paths are relative to the file.
func TestFollowConfigFlagsOverride(t *testing.T) {
	text := `
nats:
  context: staging
  creds: creds/replayer.creds
read-models:
  db-dir: models
  db-keys-beside: true
  list:
    - installation: alice-phone
ready-lag: 5m
metrics: ":9464"
log:
  level: warn
`
	o, list, err := applyConfig(t, "/etc/epochlog/follow.yaml", text,
		"--nats", "nats://other:4222", "--ready-lag", "10s", "--db-key-file", "/k.key", "--installation", "bob-laptop", "--log-level", "debug")
	if err != nil {
		t.Fatal(err)
	}
	if o.conn.nats != "nats://other:4222" || o.conn.context != "" {
		t.Errorf("--nats on the command line: nats %q, context %q (want the file's context ignored)", o.conn.nats, o.conn.context)
	}
	if o.conn.creds != "/etc/epochlog/creds/replayer.creds" {
		t.Errorf("creds %q: not relative to the file", o.conn.creds)
	}
	if o.readyLag != 10*time.Second || o.metrics != ":9464" {
		t.Errorf("ready-lag %v (want the flag's 10s), metrics %q (want the file's)", o.readyLag, o.metrics)
	}
	if o.beside || o.dbKey.keyFile != "/k.key" {
		t.Errorf("--db-key-file on the command line: beside %v, key file %q", o.beside, o.dbKey.keyFile)
	}
	if list != nil || o.list != "bob-laptop" || o.dir != "/etc/epochlog/models" {
		t.Errorf("--installation on the command line: list %+v, installation %q, dir %q", list, o.list, o.dir)
	}
	if lv := o.conn.fs.Lookup("log-level").Value.String(); lv != "debug" {
		t.Errorf("log level %q, want the flag's debug", lv)
	}
}

// TestFollowWithConfigFile runs follow from a config file alone: the
// server, the keyring, read models in a directory and one elsewhere with
// its own key, JSON logs; it catches both up.
func TestFollowWithConfigFile(t *testing.T) {
	srv, l := startLog(t)
	dir, other := t.TempDir(), t.TempDir()
	a, b := events.InstallationID("conf-a"), events.InstallationID("conf-b")
	createInstallation(t, l, dir, a)
	createInstallation(t, l, other, b)
	enqueueFor(t, l, a, "x", 2)
	enqueueFor(t, l, b, "x", 3)
	keys := filepath.Join(t.TempDir(), "event.keys")
	if err := os.WriteFile(keys, []byte(testRingText+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfgDir := t.TempDir()
	rel, err := filepath.Rel(cfgDir, dir)
	if err != nil {
		t.Fatal(err)
	}
	cfg := filepath.Join(cfgDir, "follow.yaml")
	text := "nats:\n  url: " + srv.URL() + "\nkeys-file: " + keys + "\nread-models:\n  db-dir: " + rel + "\n  db-keys-beside: true\n  list:\n" +
		"    - installation: conf-a\n" +
		"    - installation: conf-b\n      db: " + filepath.Join(other, "conf-b.db") + "\n      db-key-file: " + filepath.Join(other, "conf-b.key") + "\n" +
		"log:\n  format: json\n"
	if err := os.WriteFile(cfg, []byte(text), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	f := &runningFollow{stdout: &syncBuffer{}, stderr: &syncBuffer{}, code: make(chan int, 1), cancel: cancel}
	env := &cliEnv{stdout: f.stdout, stderr: f.stderr, getenv: func(string) string { return "" }}
	go func() { f.code <- run(ctx, env, []string{"follow", "--config", cfg}) }()
	t.Cleanup(func() { cancel(); <-f.code })
	for _, c := range []struct {
		id  events.InstallationID
		dir string
	}{{a, dir}, {b, other}} {
		last, err := l.LastSeq(context.Background(), c.id)
		if err != nil {
			t.Fatal(err)
		}
		f.waitFor(t, string(c.id)+" to catch up", func() bool { return checkpointOf(t, c.dir, c.id) == last })
	}
	if code := f.stop(); code != exitInterrupted {
		t.Fatalf("follow --config exited %d: %s", code, f.stderr.String())
	}
	recs := logRecords(t, f.stderr.String())
	if findRecord(recs, "following read model", "installation", "conf-b", "db", filepath.Join(other, "conf-b.db")) == nil {
		t.Fatalf("no JSON record of following conf-b:\n%s", f.stderr.String())
	}
}

// TestFollowConfigInboxPrefixTLSFirst: the file's nats.inbox-prefix and
// nats.tls.handshake-first set their flags.
func TestFollowConfigInboxPrefixTLSFirst(t *testing.T) {
	o, _, err := applyConfig(t, "/etc/epochlog/follow.yaml", "nats:\n  url: tls://nats-1:4222\n  inbox-prefix: _INBOX_replayer\n  tls:\n    handshake-first: true\n")
	if err != nil {
		t.Fatal(err)
	}
	if o.conn.inboxPrefix != "_INBOX_replayer" || !o.conn.tlsFirst {
		t.Fatalf("inbox prefix %q, TLS first %v; want _INBOX_replayer, true", o.conn.inboxPrefix, o.conn.tlsFirst)
	}
}

// TestRequestTimeout: --request-timeout, or the follow file's
// nats.request-timeout, is the Log's request bound; without it the
// default; zero or less is a usage error naming the flag.
func TestRequestTimeout(t *testing.T) {
	env := &cliEnv{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	for _, c := range []struct {
		args []string
		want time.Duration
	}{
		{nil, eventlog.DefaultRequestTimeout},
		{[]string{"--request-timeout", "45s"}, 45 * time.Second},
	} {
		var cf connFlags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		cf.register(fs, t.TempDir())
		if err := fs.Parse(c.args); err != nil {
			t.Fatal(err)
		}
		cfg, err := cf.config(env)
		if err != nil {
			t.Fatalf("%v: %v", c.args, err)
		}
		if cfg.RequestTimeout != c.want {
			t.Errorf("%v: request timeout %v, want %v", c.args, cfg.RequestTimeout, c.want)
		}
	}
	for _, bad := range []string{"0s", "-1s"} {
		var cf connFlags
		fs := flag.NewFlagSet("t", flag.ContinueOnError)
		cf.register(fs, t.TempDir())
		if err := fs.Parse([]string{"--request-timeout", bad}); err != nil {
			t.Fatal(err)
		}
		_, err := cf.config(env)
		if _, ok := err.(usageError); !ok || !strings.Contains(err.Error(), "--request-timeout") {
			t.Errorf("--request-timeout %s: %v, want a usage error naming the flag", bad, err)
		}
	}
	o, _, err := applyConfig(t, "/etc/epochlog/follow.yaml", "nats:\n  url: nats://nats-1:4222\n  request-timeout: 30s\n")
	if err != nil {
		t.Fatal(err)
	}
	if o.conn.requestTimeout != 30*time.Second {
		t.Fatalf("the file's nats.request-timeout gave %v, want 30s", o.conn.requestTimeout)
	}
}
