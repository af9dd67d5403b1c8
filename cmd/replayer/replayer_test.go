package main

import (
	"context"
	"database/sql"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	sqlite3 "github.com/mutecomm/go-sqlcipher/v4"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the scripts in testdata/script (and the tests that start
// followers as processes) run "replayer" as a command backed by this
// package's run function, in a subprocess of the test binary; as in main,
// SIGINT and SIGTERM stop it between transactions.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"replayer": func() {
			ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
			env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
			code := run(ctx, env, os.Args[1:])
			stop()
			os.Exit(code)
		},
	})
}

// TestScripts runs the CLI scripts: each asserts stdout, stderr and exit
// status of real invocations against an embedded JetStream server in the
// script's own temporary directory.
func TestScripts(t *testing.T) {
	testscript.Run(t, testscript.Params{
		Dir: "testdata/script",
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"sqlexec": sqlexec,
		},
	})
}

// sqlexec DB KEYFILE STATEMENT (paths may be globs matching one file) runs one SQL statement on a read model with
// its key, the way an attacker (or a bug) holding the key could change it
// behind the engine's back.
func sqlexec(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: sqlexec DB KEYFILE STATEMENT")
	}
	one := func(pattern string) string {
		m, err := filepath.Glob(ts.MkAbs(pattern))
		ts.Check(err)
		if len(m) != 1 {
			ts.Fatalf("sqlexec: %s matches %d files, want 1", pattern, len(m))
		}
		return m[0]
	}
	db, err := openRaw(one(args[0]), one(args[1]))
	ts.Check(err)
	defer db.Close()
	res, err := db.Exec(args[2])
	ts.Check(err)
	if n, _ := res.RowsAffected(); n == 0 {
		ts.Fatalf("sqlexec: no row changed")
	}
}

// openRaw opens the read model at path with the raw key in keyPath (a key
// file of 64 hex digits) through the SQLCipher driver, behind package
// projections' back.
func openRaw(path, keyPath string) (*sql.DB, error) {
	if _, err := readDBKeyFile(keyPath); err != nil { // the same checks as the CLI's
		return nil, err
	}
	b, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, err
	}
	if _, err := os.Stat(path); err != nil {
		return nil, err // the driver would create it
	}
	dsn := "file:" + path + "?_pragma_key=x'" + strings.TrimSpace(string(b)) + "'&_pragma_cipher_page_size=4096"
	db, err := sql.Open("sqlite3", dsn)
	if err != nil {
		return nil, err
	}
	db.SetMaxOpenConns(1)
	return db, nil
}

var _ = sqlite3.SQLITE_OK // the driver registers "sqlite3" for openRaw
