package main

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/keyfile"
)

// deadURL is a NATS URL nothing listens on.
const deadURL = "nats://127.0.0.1:1"

// openTestLog opens the event log on the server at url as user, under
// testRingText, and closes it when the test ends.
func openTestLog(t *testing.T, url, user, password string) *eventlog.Log {
	t.Helper()
	return openLogWith(t, eventlog.Config{NATSURL: url, User: user, Password: eventlog.NewSecret(password)})
}

// natsHome is a temporary $XDG_CONFIG_HOME holding nats CLI contexts.
type natsHome struct {
	t   *testing.T
	dir string
}

func newNATSHome(t *testing.T) *natsHome {
	h := &natsHome{t: t, dir: t.TempDir()}
	if err := os.MkdirAll(filepath.Join(h.dir, "nats", "context"), 0o700); err != nil {
		t.Fatal(err)
	}
	return h
}

// context writes context name with settings (or raw text when settings is
// a string).
func (h *natsHome) context(name string, settings any) string {
	h.t.Helper()
	b, ok := settings.(string)
	if !ok {
		j, err := json.Marshal(settings)
		if err != nil {
			h.t.Fatal(err)
		}
		b = string(j)
	}
	p := filepath.Join(h.dir, "nats", "context", name+".json")
	if err := os.WriteFile(p, []byte(b), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return p
}

// selectContext selects name as "nats context select" does.
func (h *natsHome) selectContext(name string) {
	h.t.Helper()
	if err := os.WriteFile(filepath.Join(h.dir, "nats", "context.txt"), []byte(name+"\n"), 0o600); err != nil {
		h.t.Fatal(err)
	}
}

// inspectWith runs "replayer inspect --installation ID args..." with the
// event keyring and vars as its environment.
func inspectWith(t *testing.T, vars map[string]string, id events.InstallationID, args ...string) (int, string, string) {
	t.Helper()
	var stdout, stderr syncBuffer
	code := run(context.Background(), ringEnv(&stdout, &stderr, vars), append([]string{"inspect", "--installation", string(id)}, args...))
	return code, stdout.String(), stderr.String()
}

// TestNATSURLAndContexts: the server comes from --nats, then --context,
// then $NATS_URL, then the selected nats context, as documented; a context
// brings its user and password, which are never printed; a missing or
// broken context is an error naming its file.
func TestNATSURLAndContexts(t *testing.T) {
	const password = "s3cret-Passw0rd"
	srv := natstest.Start(t, natstest.Options{User: "replayer", Password: password})
	l := openTestLog(t, srv.URL(), "replayer", password)
	id := events.InstallationID("ctx-a")
	createInstallation(t, l, t.TempDir(), id)
	home := newNATSHome(t)
	home.context("good", map[string]any{"description": "test server", "url": srv.URL(), "user": "replayer", "password": password})
	home.context("dead", map[string]any{"url": deadURL, "user": "replayer", "password": password})
	home.context("nourl", map[string]any{"user": "replayer", "password": password})
	xdg := map[string]string{"XDG_CONFIG_HOME": home.dir}
	with := func(kv ...string) map[string]string {
		m := map[string]string{"XDG_CONFIG_HOME": home.dir}
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i]] = kv[i+1]
		}
		return m
	}
	ok := func(name string, vars map[string]string, from string, args ...string) {
		t.Helper()
		code, out, errs := inspectWith(t, vars, id, args...)
		if code != exitOK || !strings.Contains(out, `"installation.created"`) {
			t.Fatalf("%s: exit %d\nstdout: %s\nstderr: %s", name, code, out, errs)
		}
		if !strings.Contains(errs, "from="+from) {
			t.Errorf("%s: the log does not say the server came from %s:\n%s", name, from, errs)
		}
		if strings.Contains(out+errs, password) {
			t.Fatalf("%s: the password is in the output:\n%s\n%s", name, out, errs)
		}
	}

	// $NATS_URL alone (the password from $EPOCHLOG_NATS_PASSWORD).
	ok("NATS_URL", with(envNATSURL, srv.URL(), envNATSPassword, password), "$NATS_URL", "--nats-user", "replayer")
	// --nats wins over $NATS_URL.
	ok("--nats over NATS_URL", with(envNATSURL, deadURL, envNATSPassword, password), "--nats", "--nats", srv.URL(), "--nats-user", "replayer")
	// --context, with its user and password; it wins over $NATS_URL.
	ok("--context", xdg, `"nats context \"good\" (--context)"`, "--context", "good")
	ok("--context over NATS_URL", with(envNATSURL, deadURL), `"nats context \"good\" (--context)"`, "--context", "good")
	// --nats wins over the context's url; the context still gives the user.
	ok("--nats over --context", xdg, "--nats", "--context", "dead", "--nats", srv.URL())
	// The selected context, without --context; $NATS_URL wins over its
	// url (as in the nats tool) and it still gives the user.
	home.selectContext("good")
	ok("selected context", xdg, `"nats context \"good\" (selected in `+filepath.Join(home.dir, "nats", "context.txt")+`)"`)
	home.selectContext("nourl")
	ok("NATS_URL over the selected context", with(envNATSURL, srv.URL()), "$NATS_URL")
	ok("NATS_CONTEXT", with(envNATSContext, "good"), `"nats context \"good\" ($NATS_CONTEXT)"`)

	// --data given explicitly is the embedded server: the selected
	// context (a dead server) is not used.
	home.selectContext("dead")
	empty := t.TempDir()
	code, _, errs := inspectWith(t, xdg, id, "--data", filepath.Join(empty, "none"))
	if code == exitOK || strings.Contains(errs, "cannot connect") || !strings.Contains(errs, "using the embedded NATS server") {
		t.Fatalf("--data with a selected context: exit %d: %s", code, errs)
	}
	if err := os.Remove(filepath.Join(home.dir, "nats", "context.txt")); err != nil {
		t.Fatal(err)
	}

	// A wrong password from the context: refused, and not printed.
	home.context("wrongpw", map[string]any{"url": srv.URL(), "user": "replayer", "password": "not-" + password})
	code, out, errs := inspectWith(t, xdg, id, "--context", "wrongpw")
	if code != exitFailure || !strings.Contains(errs, "cannot connect to NATS") || strings.Contains(out+errs, password) {
		t.Fatalf("a wrong password: exit %d\n%s%s", code, out, errs)
	}

	// Missing, broken and unusable contexts name their file.
	for _, c := range []struct {
		name, content string
		code          int
		want          string
	}{
		{"missing", "", exitFailure, `nats context "missing": ` + filepath.Join(home.dir, "nats", "context", "missing.json") + " does not exist"},
		{"broken", `{"url": "` + srv.URL() + `", "password": "` + password + `" "user": "x"}`, exitFailure,
			`nats context "broken": ` + filepath.Join(home.dir, "nats", "context", "broken.json") + ": not valid JSON (at byte"},
		{"typed", `{"url": 4222}`, exitFailure, "url must be a JSON string"},
		{"typedpw", `{"url": "` + srv.URL() + `", "password": 4222}`, exitFailure, "password must be a JSON string"},
		{"userjwt", `{"url": "` + srv.URL() + `", "user_jwt": "` + password + `"}`, exitFailure, "sets user_jwt, which the replayer cannot use"},
		{"nsccreds", `{"url": "` + srv.URL() + `", "creds": "nsc://op/acct/user"}`, exitFailure, "creds: a nsc:// URI is not supported"},
		{"datacreds", `{"url": "` + srv.URL() + `", "creds": "data:;base64,` + password + `"}`, exitFailure, "creds: a data: URI is not supported"},
	} {
		if c.content != "" {
			home.context(c.name, c.content)
		}
		code, out, errs := inspectWith(t, xdg, id, "--context", c.name)
		if code != c.code || !strings.Contains(errs, c.want) {
			t.Errorf("context %s: exit %d, want %d with %q:\n%s", c.name, code, c.code, c.want, errs)
		}
		if strings.Contains(out+errs, password) {
			t.Errorf("context %s: the password is in the output:\n%s%s", c.name, out, errs)
		}
	}

	// --context with --data (given) is a usage error.
	if code, _, errs := inspectWith(t, xdg, id, "--context", "good", "--data", empty); code != exitUsage ||
		!strings.Contains(errs, "--data selects the embedded server and --context an external one") {
		t.Errorf("--context with --data: exit %d: %s", code, errs)
	}
	// No configuration directory at all: --context says so.
	if code, _, errs := inspectWith(t, nil, id, "--context", "good"); code != exitFailure || !strings.Contains(errs, "$XDG_CONFIG_HOME nor $HOME") {
		t.Errorf("--context without $HOME: exit %d: %s", code, errs)
	}
}

// TestDemoIgnoresAmbientServer: demo, which creates the stream and writes
// to it, goes to an external server only when its command line says so:
// $NATS_URL and the selected nats context leave it on the embedded one.
func TestDemoIgnoresAmbientServer(t *testing.T) {
	home := newNATSHome(t)
	home.context("staging", map[string]any{"url": deadURL})
	home.selectContext("staging")
	for name, vars := range map[string]map[string]string{
		"NATS_URL":         {"XDG_CONFIG_HOME": home.dir, envNATSURL: deadURL},
		"selected context": {"XDG_CONFIG_HOME": home.dir},
		"NATS_CONTEXT":     {"XDG_CONFIG_HOME": home.dir, envNATSContext: "staging"},
	} {
		var stdout, stderr syncBuffer
		env := ringEnv(&stdout, &stderr, vars)
		fs := newFlagSet(env, "demo", "", "")
		var c connFlags
		c.register(fs, t.TempDir())
		c.registerStreamSettings(fs)
		if err := parseFlags(env, fs, nil); err != nil {
			t.Fatal(err)
		}
		cfg, err := c.config(env)
		if err != nil || cfg.NATSURL != "" {
			t.Errorf("demo with %s: server %q, %v; want the embedded server", name, cfg.NATSURL, err)
		}
		// A read command with the same environment does use it.
		fs = newFlagSet(env, "inspect", "", "")
		var r connFlags
		r.register(fs, "")
		if err := parseFlags(env, fs, nil); err != nil {
			t.Fatal(err)
		}
		if cfg, err := r.config(env); err != nil || cfg.NATSURL != deadURL {
			t.Errorf("inspect with %s: server %q, %v; want %s", name, cfg.NATSURL, err, deadURL)
		}
	}
}

// TestRedactURLs: a password in a URL never reaches a log.
func TestRedactURLs(t *testing.T) {
	for in, want := range map[string]string{
		"nats://a:4222,nats://b:4222":           "nats://a:4222,nats://b:4222",
		"nats://user:pw@a:4222, tls://b:4222":   "nats://user:xxxxx@a:4222,tls://b:4222",
		"nats://token@a:4222":                   "nats://xxxxx@a:4222",
		"nats://u:p%zz@a:4222":                  "<a URL with credentials>",
		"tls://u:hunter2@a:4222,nats://v:x@b:1": "tls://u:xxxxx@a:4222,nats://v:xxxxx@b:1",
	} {
		if got := redactURLs(in); got != want {
			t.Errorf("redactURLs(%q) = %q, want %q", in, got, want)
		}
	}
}

// TestContextTokenInboxPrefixTLSFirst: a context's token, inbox_prefix and
// tls_first reach the connection, as their flags do; a user who may
// subscribe only below its own prefix is told at once, without one, which
// inbox the server refused; no token or password is printed.
func TestContextTokenInboxPrefixTLSFirst(t *testing.T) {
	home := newNATSHome(t)
	xdg := map[string]string{"XDG_CONFIG_HOME": home.dir}
	id := events.InstallationID("ctx-b")
	inspect := func(name string, vars map[string]string, wantOK bool, want string, secrets []string, args ...string) {
		t.Helper()
		code, out, errs := inspectWith(t, vars, id, args...)
		if got := code == exitOK && strings.Contains(out, `"installation.created"`); got != wantOK || !strings.Contains(errs, want) {
			t.Errorf("%s: exit %d, want success %v and %q in stderr:\n%s", name, code, wantOK, want, errs)
		}
		for _, s := range secrets {
			if strings.Contains(out+errs, s) {
				t.Errorf("%s: a secret is in the output:\n%s%s", name, out, errs)
			}
		}
	}

	// A token, from the context or in the URL.
	const token = "tok-c0ntext-7d1e"
	tsrv := natstest.Start(t, natstest.Options{Token: token})
	createInstallation(t, openLogWith(t, eventlog.Config{NATSURL: tsrv.URL(), Token: eventlog.NewSecret(token)}), t.TempDir(), id)
	home.context("tok", map[string]any{"url": tsrv.URL(), "token": token})
	inspect("context token", xdg, true, "using an external NATS server", []string{token}, "--context", "tok")
	tokURL := strings.Replace(tsrv.URL(), "nats://", "nats://"+token+"@", 1)
	inspect("token in the URL", nil, true, "using an external NATS server", []string{token}, "--nats", tokURL)
	home.context("notok", map[string]any{"url": tsrv.URL(), "token": "tok-wrong-0000"})
	inspect("wrong context token", xdg, false, "Authorization Violation", []string{"tok-wrong-0000"}, "--context", "notok")

	// A user who may subscribe only below _SCOPED.
	const password = "pw-sc0ped"
	ssrv := natstest.Start(t, natstest.Options{User: "scoped", Password: password, SubscribeOnly: []string{"_SCOPED.>", "$JS.EVENT.>"}})
	createInstallation(t, openLogWith(t, eventlog.Config{NATSURL: ssrv.URL(), User: "scoped", Password: eventlog.NewSecret(password), InboxPrefix: "_SCOPED"}), t.TempDir(), id)
	home.context("scoped", map[string]any{"url": ssrv.URL(), "user": "scoped", "password": password, "inbox_prefix": "_SCOPED"})
	inspect("context inbox_prefix", xdg, true, "using an external NATS server", []string{password}, "--context", "scoped")
	pw := map[string]string{envNATSPassword: password}
	inspect("--nats-inbox-prefix", pw, true, "using an external NATS server", []string{password},
		"--nats", ssrv.URL(), "--nats-user", "scoped", "--nats-inbox-prefix", "_SCOPED")
	inspect("no inbox prefix", pw, false, `permissions violation: Permissions Violation for Subscription to "_INBOX.`, []string{password},
		"--nats", ssrv.URL(), "--nats-user", "scoped")

	// A server that wants the TLS handshake first.
	pki := natstest.NewPKI(t)
	fsrv := natstest.Start(t, natstest.Options{TLS: pki, TLSHandshakeFirst: true})
	createInstallation(t, openLogWith(t, eventlog.Config{NATSURL: fsrv.URL(), TLSCAFile: pki.CAFile, TLSHandshakeFirst: true}), t.TempDir(), id)
	home.context("first", map[string]any{"url": fsrv.URL(), "ca": pki.CAFile, "tls_first": true})
	inspect("context tls_first", xdg, true, "using an external NATS server", nil, "--context", "first")
	inspect("--nats-tls-first", nil, true, "using an external NATS server", nil, "--nats", fsrv.URL(), "--nats-ca", pki.CAFile, "--nats-tls-first")
	inspect("--nats-tls-first=false over the context", xdg, false, "cannot connect to NATS", nil, "--context", "first", "--nats-tls-first=false")
	inspect("--nats-tls-first on the embedded server", nil, false, "--nats-tls-first needs --nats", nil, "--data", t.TempDir(), "--nats-tls-first")
}

// openLogWith opens the event log with cfg under testRingText and closes
// it when the test ends.
func openLogWith(t *testing.T, cfg eventlog.Config) *eventlog.Log {
	t.Helper()
	ring, err := keyfile.ParseKeyring(testRingText)
	if err != nil {
		t.Fatal(err)
	}
	l, err := eventlog.Open(context.Background(), cfg, ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { l.Close() })
	return l
}
