// Command replayer rebuilds, rekeys, migrates, verifies, inspects and follows
// epochlog read models by replaying their encrypted event log.
//
// Usage:
//
//	replayer <command> [flags]
//
// Run "replayer help" for the commands and "replayer <command> -h" for the
// flags of one. Messages go to stderr prefixed with "replayer:"; results go
// to stdout (as JSON lines with --json).
//
// Exit codes: 0 success, 1 failure, 2 usage error, 3 verification failed
// (drift, tampering, a wrong key), 130 interrupted.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"

	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// Exit codes (documented in the package doc and docs/operations.md).
const (
	exitOK          = 0
	exitFailure     = 1
	exitUsage       = 2
	exitVerify      = 3
	exitInterrupted = 130
)

// command is one subcommand: its name, one-line summary and entry point.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) error
}

var commands = []command{
	{"demo", "run real MLS among installations on the embedded server, rekey one read model, verify all", runDemo},
	{"rebuild", "rebuild (or recover) an installation's read model from the stream, swapped in atomically", runRebuild},
	{"rekey", "rebuild a read model under a new key; the old key is refused afterwards", runRekey},
	{"migrate", "bring a read model to the newest schema, by replay or in place", runMigrate},
	{"verify", "compare a read model with a fresh replay of its history; exit 3 on drift", runVerify},
	{"follow", "keep read models current from the bus, resuming from their checkpoints", runFollow},
	{"inspect", "print an installation's events, opened, as JSON lines", runInspect},
	{"catalogue", "list the event kinds this build knows, with their schema versions", runCatalogue},
}

// cliEnv carries the process's streams and environment so tests can run the
// CLI in-process.
type cliEnv struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	isTerminal     bool
}

// usageError marks a bad invocation: exit code 2 and a hint.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// verifyError marks a failed verification (exit code 3).
type verifyError struct{ err error }

func (e verifyError) Error() string { return e.err.Error() }
func (e verifyError) Unwrap() error { return e.err }

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, isTerminal: stderrIsTerminal()}
	os.Exit(run(ctx, env, os.Args[1:]))
}

// run executes one invocation and returns its exit code.
func run(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(env.stderr)
		if len(args) == 0 {
			return exitUsage
		}
		return exitOK
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		if err := setMemorySecurity(env); err != nil {
			return report(ctx, env, c.name, err)
		}
		err := c.run(ctx, env, args[1:])
		return report(ctx, env, c.name, err)
	}
	fmt.Fprintf(env.stderr, "replayer: unknown command %q\nreplayer: hint: run \"replayer help\" for the list of commands\n", args[0])
	return exitUsage
}

// report prints err (if any) and maps it to an exit code.
func report(ctx context.Context, env *cliEnv, name string, err error) int {
	var ue usageError
	var ve verifyError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintf(env.stderr, "replayer %s: %v\nreplayer: hint: run \"replayer %s -h\" for its flags\n", name, err, name)
		return exitUsage
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		fmt.Fprintf(env.stderr, "replayer %s: interrupted; nothing was left half-written\n", name)
		return exitInterrupted
	case errors.As(err, &ve), replay.IsVerificationFailure(err):
		fmt.Fprintf(env.stderr, "replayer %s: verification failed: %v\n", name, err)
		return exitVerify
	default:
		fmt.Fprintf(env.stderr, "replayer %s: %v\n", name, err)
		return exitFailure
	}
}

func printUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: replayer <command> [flags]")
	fmt.Fprintln(w)
	fmt.Fprintln(w, "commands:")
	for _, c := range commands {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w)
	fmt.Fprintln(w, `Run "replayer <command> -h" for a command's flags.`)
	fmt.Fprintln(w, "Exit codes: 0 ok, 1 failure, 2 usage, 3 verification failed, 130 interrupted.")
}

// envMemorySecurity turns SQLCipher's cipher_memory_security on ("on") or
// off ("off", the default). On, every SQLCipher allocation is mlock'ed and
// wiped when freed, so freed memory never holds pages or keys; it makes
// replays four to six times slower (docs/benchmarks.md). The tool defaults
// to off, as SQLCipher itself does since 4.5.
const envMemorySecurity = "EPOCHLOG_SQLCIPHER_MEMORY_SECURITY"

func setMemorySecurity(env *cliEnv) error {
	switch v := env.getenv(envMemorySecurity); v {
	case "", "off":
		return projections.SetMemorySecurity(false)
	case "on":
		return projections.SetMemorySecurity(true)
	default:
		return usageError{fmt.Sprintf("$%s must be \"on\" or \"off\", not %q", envMemorySecurity, v)}
	}
}

func stderrIsTerminal() bool {
	fi, err := os.Stderr.Stat()
	return err == nil && fi.Mode()&os.ModeCharDevice != 0
}
