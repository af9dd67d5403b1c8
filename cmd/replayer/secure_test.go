package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/internal/natstest"
)

// TestSecuredServer runs the demo and then verify against an external
// server set up as a production one would be: mutual TLS and JWT (.creds)
// authentication, so every connection flag reaches the client. The same
// commands without the client certificate are refused with exit 1 and an
// error naming the server and TLS.
func TestSecuredServer(t *testing.T) {
	pki := natstest.NewPKI(t)
	op := natstest.NewOperator(t)
	srv := natstest.Start(t, natstest.Options{TLS: pki, VerifyClients: true, Operator: op})
	data := t.TempDir()
	conn := []string{"--data", data, "--nats", srv.URL(), "--nats-ca", pki.CAFile,
		"--nats-cert", pki.ClientCertFile, "--nats-key", pki.ClientKeyFile, "--nats-creds", op.UserCreds("replayer")}

	replayer := func(args ...string) (code int, stdout, stderr string) {
		var out, errb bytes.Buffer
		env := &cliEnv{stdout: &out, stderr: &errb, getenv: func(string) string { return "" }}
		code = run(context.Background(), env, args)
		return code, out.String(), errb.String()
	}

	code, out, errs := replayer(append([]string{"demo", "--installations", "2", "--groups", "1", "--messages", "6", "--seed", "7", "--json"}, conn...)...)
	if code != 0 {
		t.Fatalf("demo exit %d\nstderr: %s", code, errs)
	}
	var summary demoSummary
	if err := json.Unmarshal([]byte(out), &summary); err != nil {
		t.Fatalf("demo summary: %v\n%s", err, out)
	}
	if len(summary.Installations) != 2 || !summary.Verified {
		t.Fatalf("demo summary lists %d installations (want 2), verified %v:\n%s", len(summary.Installations), summary.Verified, out)
	}
	id := summary.Installations[0]
	db := filepath.Join(summary.DBDir, id+".db")
	verify := append([]string{"verify", "--keys-file", filepath.Join(data, "event.keys"), "--installation", id,
		"--db", db, "--db-key-file", filepath.Join(summary.DBDir, id+".key"), "--mls"}, conn...)
	if code, out, errs := replayer(verify...); code != 0 || !strings.Contains(out, "verified") {
		t.Fatalf("verify over mutual TLS + creds: exit %d\nstdout: %s\nstderr: %s", code, out, errs)
	}

	// Without the client certificate the server refuses the handshake (the
	// client sees "certificate required" or the connection closed, by timing).
	var noCert []string
	for i := 0; i < len(verify); i++ {
		if verify[i] == "--nats-cert" || verify[i] == "--nats-key" {
			i++
			continue
		}
		noCert = append(noCert, verify[i])
	}
	code, _, errs = replayer(noCert...)
	if code != 1 || !strings.Contains(errs, "cannot connect to NATS at "+srv.URL()) || !strings.Contains(errs, "tls") {
		t.Fatalf("verify without client certificate: exit %d, stderr: %s", code, errs)
	}
}
