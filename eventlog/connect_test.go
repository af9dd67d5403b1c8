package eventlog

import (
	"context"
	"errors"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/nats-io/nats.go"
)

// External servers with the security settings of a production deployment:
// TLS, mutual TLS, nkey and JWT (.creds) authentication. Each test opens a
// Log with the matching Config, appends and reads back, and checks that a
// client with the wrong material is refused with an error that says what
// was wrong (naming the file) without echoing secrets.

// roundTrip appends one event through l and reads it back.
func roundTrip(t *testing.T, l *Log, id string) {
	t.Helper()
	mustAppend(t, l, 0, msg(group(instA, id), 1, "over "+id))
	recs := readAll(t, l, instA, 0)
	if len(recs) == 0 || content(recs[len(recs)-1].Event) != "over "+id {
		t.Fatalf("read back %d records, want the event appended over %s", len(recs), id)
	}
}

// openFails opens a Log with cfg, expects an error, and checks that it
// contains every part of want and none of the secrets.
func openFails(t *testing.T, cfg Config, want []string, secrets ...string) {
	t.Helper()
	cfg.RequestTimeout = 2 * time.Second
	l, err := Open(context.Background(), cfg, keyring(t, 1, 0x21))
	if err == nil {
		l.Close()
		t.Fatalf("Open succeeded, want an error containing %q", want)
	}
	t.Logf("refused: %v", err)
	for _, w := range want {
		if !strings.Contains(strings.ToLower(err.Error()), strings.ToLower(w)) {
			t.Errorf("error %q does not contain %q", err, w)
		}
	}
	for _, s := range secrets {
		if s != "" && strings.Contains(err.Error(), s) {
			t.Errorf("error %q echoes a secret", err)
		}
	}
}

// writeTemp writes content to a fresh file named name (mode 0600).
func writeTemp(t *testing.T, name, content string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return f
}

func secretOf(t *testing.T, file string) string {
	t.Helper()
	b, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

func TestConnectTLS(t *testing.T) {
	pki := natstest.NewPKI(t)
	srv := natstest.Start(t, natstest.Options{TLS: pki})
	cfg := Config{NATSURL: srv.URL(), TLSCAFile: pki.CAFile, RequestTimeout: 2 * time.Second}
	roundTrip(t, openLog(t, cfg, keyring(t, 1, 0x21)), "tls")

	// The same URL with the tls:// scheme.
	cfg.NATSURL = strings.Replace(srv.URL(), "nats://", "tls://", 1)
	roundTrip(t, openLog(t, cfg, keyring(t, 1, 0x21)), "tls-scheme")

	// A server certificate from a CA the client was not given.
	openFails(t, Config{NATSURL: srv.URL()}, []string{"x509", "unknown authority"})
	other := natstest.NewPKI(t)
	openFails(t, Config{NATSURL: srv.URL(), TLSCAFile: other.CAFile}, []string{"x509", "unknown authority"})

	// A CA file that is missing or holds no certificate is named.
	missing := filepath.Join(t.TempDir(), "no-such-ca.pem")
	openFails(t, Config{NATSURL: srv.URL(), TLSCAFile: missing}, []string{missing})
	notPEM := writeTemp(t, "ca.pem", "not a certificate\n")
	openFails(t, Config{NATSURL: srv.URL(), TLSCAFile: notPEM}, []string{notPEM})
}

func TestConnectMutualTLS(t *testing.T) {
	pki := natstest.NewPKI(t)
	srv := natstest.Start(t, natstest.Options{TLS: pki, VerifyClients: true})
	cfg := Config{NATSURL: srv.URL(), TLSCAFile: pki.CAFile, TLSCertFile: pki.ClientCertFile, TLSKeyFile: pki.ClientKeyFile, RequestTimeout: 2 * time.Second}
	roundTrip(t, openLog(t, cfg, keyring(t, 1, 0x21)), "mtls")

	// No client certificate: the server refuses the handshake (the client
	// sees "certificate required" or the connection closed, by timing).
	openFails(t, Config{NATSURL: srv.URL(), TLSCAFile: pki.CAFile}, []string{"cannot connect to NATS", "tls"})
	// A client certificate from another CA.
	other := natstest.NewPKI(t)
	openFails(t, Config{NATSURL: srv.URL(), TLSCAFile: pki.CAFile, TLSCertFile: other.ClientCertFile, TLSKeyFile: other.ClientKeyFile}, []string{"cannot connect to NATS", "tls"})
	// A key that does not belong to the certificate: both files named, the
	// key's bytes never shown.
	openFails(t, Config{NATSURL: srv.URL(), TLSCAFile: pki.CAFile, TLSCertFile: pki.ClientCertFile, TLSKeyFile: other.ClientKeyFile},
		[]string{pki.ClientCertFile, other.ClientKeyFile}, secretOf(t, other.ClientKeyFile))
}

func TestConnectNKey(t *testing.T) {
	user := natstest.NewNKeyUser(t)
	srv := natstest.Start(t, natstest.Options{NKey: &user})
	cfg := Config{NATSURL: srv.URL(), NKeySeedFile: user.SeedFile, RequestTimeout: 2 * time.Second}
	roundTrip(t, openLog(t, cfg, keyring(t, 1, 0x21)), "nkey")

	// No credentials, or another user's seed: refused by the server.
	openFails(t, Config{NATSURL: srv.URL()}, []string{"authorization violation"})
	stranger := natstest.NewNKeyUser(t)
	openFails(t, Config{NATSURL: srv.URL(), NKeySeedFile: stranger.SeedFile}, []string{"authorization violation"}, secretOf(t, stranger.SeedFile))

	// A missing seed file, or one that holds no seed, is named.
	missing := filepath.Join(t.TempDir(), "missing.nk")
	openFails(t, Config{NATSURL: srv.URL(), NKeySeedFile: missing}, []string{missing})
	bad := writeTemp(t, "bad.nk", "SUAnotaseed-but-secret-looking\n")
	openFails(t, Config{NATSURL: srv.URL(), NKeySeedFile: bad}, []string{bad}, "SUAnotaseed-but-secret-looking")
}

func TestConnectCreds(t *testing.T) {
	op := natstest.NewOperator(t)
	srv := natstest.Start(t, natstest.Options{Operator: op})
	creds := op.UserCreds("engine")
	cfg := Config{NATSURL: srv.URL(), CredsFile: creds, RequestTimeout: 2 * time.Second}
	roundTrip(t, openLog(t, cfg, keyring(t, 1, 0x21)), "creds")

	// The stream lives in the account: another user of the same account
	// sees the same history.
	l2 := openLog(t, Config{NATSURL: srv.URL(), CredsFile: op.UserCreds("engine-2"), RequestTimeout: 2 * time.Second}, keyring(t, 1, 0x21))
	if recs := readAll(t, l2, instA, 0); len(recs) != 1 {
		t.Fatalf("second user of the account read %d records, want 1", len(recs))
	}

	// A user of an operator the server does not trust is refused.
	stranger := natstest.NewOperator(t).UserCreds("stranger")
	openFails(t, Config{NATSURL: srv.URL(), CredsFile: stranger}, []string{"authorization violation"})

	// A missing or malformed creds file is named, its content never shown.
	missing := filepath.Join(t.TempDir(), "missing.creds")
	openFails(t, Config{NATSURL: srv.URL(), CredsFile: missing}, []string{missing})
	bad := writeTemp(t, "bad.creds", "not-a-jwt-but-secret\n")
	openFails(t, Config{NATSURL: srv.URL(), CredsFile: bad}, []string{bad}, "not-a-jwt-but-secret")
}

// A connection failure is reported as such (not as a stream problem), so
// callers can tell a wrong address or credentials from the rest.
func TestConnectErrorIsConnectionError(t *testing.T) {
	user := natstest.NewNKeyUser(t)
	srv := natstest.Start(t, natstest.Options{NKey: &user})
	_, err := Open(context.Background(), Config{NATSURL: srv.URL(), RequestTimeout: 2 * time.Second}, keyring(t, 1, 0x21))
	if !errors.Is(err, ErrConnect) || !errors.Is(err, nats.ErrAuthorization) {
		t.Fatalf("Open without credentials: %v, want ErrConnect wrapping nats.ErrAuthorization", err)
	}
}

func TestConnectToken(t *testing.T) {
	const token = "tok-s3cret-4f1c"
	srv := natstest.Start(t, natstest.Options{Token: token})
	cfg := Config{NATSURL: srv.URL(), Token: NewSecret(token), RequestTimeout: 2 * time.Second}
	roundTrip(t, openLog(t, cfg, keyring(t, 1, 0x21)), "token")

	// No token, or another one: refused by the server, the token never shown.
	openFails(t, Config{NATSURL: srv.URL()}, []string{"authorization violation"})
	openFails(t, Config{NATSURL: srv.URL(), Token: NewSecret("tok-wrong-9a2b")}, []string{"authorization violation"}, "tok-wrong-9a2b")
	// A token with another way to authenticate is a mistake in the Config.
	openFails(t, Config{NATSURL: srv.URL(), Token: NewSecret(token), User: "u"}, []string{"Token", "User"}, token)
}

// A user who may subscribe only below a prefix of its own: with that
// prefix as InboxPrefix every reply the Log waits for arrives (PubAcks,
// reads, the data keys' bucket); without it the Log says what was refused.
func TestConnectInboxPrefix(t *testing.T) {
	srv := natstest.Start(t, natstest.Options{User: "scoped", Password: "pw-scoped",
		SubscribeOnly: []string{"_SCOPED.>", "$JS.EVENT.>"}})
	cfg := Config{NATSURL: srv.URL(), User: "scoped", Password: NewSecret("pw-scoped"), InboxPrefix: "_SCOPED", RequestTimeout: 2 * time.Second}
	l := openLog(t, cfg, keyring(t, 1, 0x21))
	roundTrip(t, l, "inbox")
	// Pipelined appends wait for their PubAcks on the same inboxes.
	var ts []Transition
	for i := range 20 {
		ts = append(ts, Transition{Events: []events.Event{msg(group(instA, fmt.Sprintf("bulk-%d", i)), 1, "bulk")}})
	}
	if _, err := l.AppendBulk(context.Background(), ts); err != nil {
		t.Fatalf("AppendBulk with inbox prefix _SCOPED: %v", err)
	}

	cfg.InboxPrefix = ""
	openFails(t, cfg, []string{"permissions violation", "_INBOX"}, "pw-scoped")

	cfg.InboxPrefix = "_SCOPED.*"
	openFails(t, cfg, []string{"inbox prefix", "_SCOPED.*"})
}

func TestConnectTLSHandshakeFirst(t *testing.T) {
	pki := natstest.NewPKI(t)
	srv := natstest.Start(t, natstest.Options{TLS: pki, TLSHandshakeFirst: true})
	cfg := Config{NATSURL: srv.URL(), TLSCAFile: pki.CAFile, TLSHandshakeFirst: true, RequestTimeout: 2 * time.Second}
	roundTrip(t, openLog(t, cfg, keyring(t, 1, 0x21)), "tls-first")

	// A client that waits for the greeting first gets none: refused, as a
	// connection failure.
	cfg.TLSHandshakeFirst = false
	openFails(t, cfg, []string{"cannot connect to NATS"})

	// The embedded server has no TLS.
	openFails(t, Config{DataDir: t.TempDir(), TLSHandshakeFirst: true}, []string{"TLSHandshakeFirst", "NATSURL"})
}

// A URL that does not parse is named without its password: the client's
// error quotes the URL whole, and the parser's a piece of it.
func TestConnectBadURLHidesItsPassword(t *testing.T) {
	for _, u := range []string{
		"nats://alice:S3cret%zzPW@127.0.0.1:1",
		"nats://alice:S3cret PW@127.0.0.1:1",
		"nats://alice:S3cretPW@[::1:4222",
	} {
		_, err := Open(context.Background(), Config{NATSURL: u, RequestTimeout: time.Second}, keyring(t, 1, 0x21))
		if err == nil {
			t.Fatalf("%q: opened", u)
		}
		t.Logf("refused: %v", err)
		for _, secret := range []string{"S3cret", "zzPW", "%zz"} {
			if strings.Contains(err.Error(), secret) {
				t.Errorf("%q: error %q shows part of the password (%q)", u, err, secret)
			}
		}
		if !errors.Is(err, ErrConnect) {
			t.Errorf("%q: %v, want ErrConnect", u, err)
		}
	}
}

// A failed connect says why in the operator's terms: a refused connection
// (nats.go says only "no servers available"), and a port that accepts
// but never speaks NATS (nats.go says "i/o timeout").
func TestConnectSaysWhyItFailed(t *testing.T) {
	closed, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	closedURL := "nats://" + closed.Addr().String()
	closed.Close()
	silent, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close() // accept, then say nothing
		}
	}()
	for url, want := range map[string]string{
		closedURL:                          "connection refused",
		"nats://" + silent.Addr().String(): "sent no NATS greeting",
	} {
		_, err := Open(context.Background(), Config{NATSURL: url, RequestTimeout: time.Second}, keyring(t, 1, 0x11))
		if !errors.Is(err, ErrConnect) || !strings.Contains(err.Error(), want) {
			t.Errorf("connect to %s: %v, want ErrConnect saying %q", url, err, want)
		}
	}
}
