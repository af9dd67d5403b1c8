package main

import (
	"flag"
	"io"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/internal/redacttest"
	"github.com/epochlog/epochlog/keyfile"
)

// The structs the command's flags and connection settings are parsed
// into hold keys and credentials: they print none of them however they
// are held (in an unexported field fmt prints a string raw, without any
// method of its type; internal/redacttest).
func TestFlagStructsPrintNoSecret(t *testing.T) {
	ring := "1:" + strings.Repeat("a7", 32)
	dbHex, newDBHex := strings.Repeat("c3", 32), strings.Repeat("d9", 32)
	fs := flag.NewFlagSet("test", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	var keys keyFlags
	keys.register(fs)
	db, newDB := newDBKeyFlags(fs, ""), newDBKeyFlags(fs, "new-")
	if err := fs.Parse([]string{"--keys", ring, "--db-key", dbHex, "--new-db-key", newDBHex}); err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{"keyring": []byte(ring[2:]), "db key": []byte(dbHex), "new db key": []byte(newDBHex)}
	type flags struct {
		keys      keyFlags
		db, newDB *dbKeyFlags
	}
	redacttest.Check(t, flags{keys, db, newDB}, secrets)
	redacttest.Check(t, []*dbKeyFlags{db, newDB}, secrets)

	const pw, token, jwt = "pw-flagstructs-61c0", "tok-flagstructs-2be8", "jwt-flagstructs-93fa"
	creds := map[string][]byte{"password": []byte(pw), "token": []byte(token), "user JWT": []byte(jwt)}
	target := natsTarget{url: "nats://h:4222", user: "u", password: eventlog.NewSecret(pw), token: eventlog.NewSecret(token)}
	nc := natsContext{name: "c", URL: "nats://h:4222", User: "u", Password: eventlog.NewSecret(pw),
		Token: eventlog.NewSecret(token), UserJWT: eventlog.NewSecret(jwt)}
	redacttest.Check(t, target, creds)
	redacttest.Check(t, &nc, creds)
	redacttest.Check(t, map[string]natsContext{"c": nc}, creds)

	// What the flags give is the keys given.
	env := &cliEnv{stdout: io.Discard, stderr: io.Discard, getenv: func(string) string { return "" }}
	if r, err := keys.keyring(env); err != nil || r.Current() != 1 {
		t.Errorf("--keys: keyring %v, %v; want key id 1", r, err)
	}
	for _, c := range []struct {
		f   *dbKeyFlags
		hex string
	}{{db, dbHex}, {newDB, newDBHex}} {
		want, err := keyfile.ParseDBKey(c.hex)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := c.f.key(env); err != nil || !got.Equal(want) {
			t.Errorf("--%sdb-key: %v, %v; not the key given", c.f.prefix, got, err)
		}
	}
}
