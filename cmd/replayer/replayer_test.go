package main

import (
	"context"
	"os"
	"testing"

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
	testscript.Run(t, testscript.Params{Dir: "testdata/script"})
}
