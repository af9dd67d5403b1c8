package main

import (
	"context"
	"os"
	"path/filepath"
	"testing"

	"github.com/epochlog/epochlog/projections"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestMain lets the scripts in testdata/script run "replayer" as a command
// backed by this package's run function, in a subprocess of the test binary.
func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"replayer": func() {
			env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv}
			os.Exit(run(context.Background(), env, os.Args[1:]))
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
	key, err := readDBKeyFile(one(args[1]))
	ts.Check(err)
	db, err := projections.OpenExisting(one(args[0]), key, nil)
	ts.Check(err)
	defer db.Close()
	res, err := db.SQL().Exec(args[2])
	ts.Check(err)
	if n, _ := res.RowsAffected(); n == 0 {
		ts.Fatalf("sqlexec: no row changed")
	}
}
