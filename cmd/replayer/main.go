// Command replayer rebuilds, rekeys, migrates, verifies, inspects and follows
// epochlog read models by replaying their encrypted event log.
//
// Usage:
//
//	replayer <command> [flags]
//
// Run "replayer help" for the commands and "replayer <command> -h" for the
// flags of one. Messages go to stderr prefixed with "replayer:"; results go
// to stdout (as JSON lines with --json). Log records (the command's and the
// library's: reconnects, failovers, retries, follow's failures) go to
// stderr with their time, as text or JSON (--log-format, --log-level; see
// logging.go). follow and demo serve Prometheus metrics, /healthz and
// /readyz with --metrics ADDR (serve.go); follow reads its settings from a
// YAML file with --config (config.go). The NATS server comes from --nats,
// --context (a nats CLI context), $NATS_URL or the selected nats context,
// else the embedded server (context.go, connFlags.target).
//
// Exit codes: 0 success, 1 failure, 2 usage error, 3 verification failed
// (drift, tampering, a wrong key), 130 interrupted. With --json a failed
// command prints one JSON object {"error":{...}} on stdout as well (see
// failure).
//
// Text that comes from the stream or a database (subjects, ids, error
// messages that embed them) is escaped before it reaches a terminal (see
// termSafe); JSON output is escaped by encoding/json.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"syscall"
	"unicode"
	"unicode/utf8"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/internal/lookaside"
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

// command is one subcommand: its name, one-line summary, entry point, and
// whether it takes --json.
type command struct {
	name    string
	summary string
	run     func(ctx context.Context, env *cliEnv, args []string) error
	json    bool
}

var commands = []command{
	{"demo", "run real MLS among installations on the embedded server, rekey one read model, verify all", runDemo, true},
	{"rebuild", "rebuild (or recover) an installation's read model from the stream, swapped in atomically", runRebuild, true},
	{"rekey", "rebuild a read model under a new key; the old key is refused afterwards", runRekey, true},
	{"migrate", "bring a read model to the newest schema, by replay or in place", runMigrate, true},
	{"verify", "compare a read model with a fresh replay of its history; exit 3 on drift", runVerify, true},
	{"snapshot", "store a checked, sealed snapshot of a read model; rebuilds then replay only what follows it", runSnapshot, true},
	{"erase", "erase an installation for good: tombstone, shred its data keys, purge its events", runErase, true},
	{"retain", "apply a retention policy: old messages and deliveries, past epochs, old history: snapshot, shred their keys, compact", runRetain, true},
	{"compact", "delete from the stream the shredded (or, with --history, old) events the newest snapshot covers", runCompact, true},
	{"reseal", "retire a root key: re-wrap data keys, or re-seal the history into a new stream, verify, switch", runReseal, true},
	{"follow", "keep read models current from the bus, resuming from their checkpoints", runFollow, false},
	{"status", "show read models' schema, checkpoint, head, key kind and lag behind the stream", runStatus, true},
	{"inspect", "print an installation's events, opened, as JSON lines", runInspect, false},
	{"catalogue", "list the event kinds this build knows, with their schema versions", runCatalogue, true},
	{"version", "print the replayer's version and the SQLCipher and nats-server versions linked in", runVersion, true},
}

// cliEnv carries the process's streams and environment so tests can run the
// CLI in-process.
type cliEnv struct {
	stdout, stderr io.Writer
	getenv         func(string) string
	isTerminal     bool
	// json is set when the command was asked for --json: a failure is then
	// also printed as one JSON object on stdout. run sets it from a scan of
	// the arguments (so that an error before the flags are parsed is
	// covered too) and parseFlags from the parsed flag.
	json bool
	// logFlags are the command's --log-format and --log-level (newFlagSet
	// registers them) and log the logger built from them (setLogger,
	// logger): stderr, with timestamps, also handed to the library as
	// eventlog.Config.Logger.
	logFlags *logFlags
	log      *slog.Logger
	// processLogger makes the logger slog's default too (main's env: the
	// process is this one command), so that packages logging through
	// the default (keyfile, which has no Log) follow --log-format and
	// --log-level. Tests leave it off: they run commands side by side.
	processLogger bool
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
	env := &cliEnv{stdout: os.Stdout, stderr: os.Stderr, getenv: os.Getenv, isTerminal: stderrIsTerminal(), processLogger: true}
	os.Exit(run(ctx, env, os.Args[1:]))
}

// run executes one invocation and returns its exit code.
func run(ctx context.Context, env *cliEnv, args []string) int {
	if len(args) == 0 {
		printUsage(env.stderr)
		return exitUsage
	}
	if args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		printUsage(env.stdout) // asked for: the command's output
		return exitOK
	}
	for _, c := range commands {
		if c.name != args[0] {
			continue
		}
		env.json = c.json && jsonRequested(args[1:])
		if err := setMemorySecurity(env); err != nil {
			return report(ctx, env, c.name, err)
		}
		if _, err := lookaside.ParseSlots(env.getenv(lookaside.EnvSlots)); err != nil {
			// Read when the process started (the pool is set before
			// SQLite starts): a bad value left SQLite's default.
			return report(ctx, env, c.name, usageError{"$" + err.Error()})
		}
		err := c.run(ctx, env, args[1:])
		return report(ctx, env, c.name, err)
	}
	fmt.Fprintf(env.stderr, "replayer: unknown command %q\nreplayer: hint: run \"replayer help\" for the list of commands\n", args[0])
	return exitUsage
}

// failure is how a failed command is reported: on stderr for people and,
// with --json, as {"error": failure} on stdout for programs. Messages hold
// no secrets (no error in this tool or its libraries prints a key).
type failure struct {
	// Code is "usage", "verify_failed", "interrupted" or "failure".
	Code string `json:"code"`
	// Exit is the process's exit status.
	Exit int `json:"exit"`
	// Message is the error, as on stderr without the "replayer <command>:"
	// prefix.
	Message string `json:"message"`
	// StreamSequence is the stream sequence of the record the error is
	// about, when there is one (an *eventlog.RecordError or a
	// *projections.ApplyError in the chain).
	StreamSequence uint64 `json:"stream_sequence,omitempty"`
	// Hint says what an operator can do about it, when something is known.
	Hint string `json:"hint,omitempty"`
}

// classify maps err (not nil, not flag.ErrHelp) to its failure.
func classify(ctx context.Context, name string, err error) failure {
	var ue usageError
	var ve verifyError
	var se *replay.SwappedError
	f := failure{Code: "failure", Exit: exitFailure, Message: err.Error(), Hint: errorHint(err)}
	switch {
	case errors.As(err, &ue):
		f.Code, f.Exit = "usage", exitUsage
		f.Hint = fmt.Sprintf("run \"replayer %s -h\" for its flags", name)
	case errors.As(err, &se):
		// The change is made: saying "nothing was left half-written"
		// would have an operator keep an old key that opens nothing.
		f.Code = "swapped_lagging"
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			f.Exit = exitInterrupted
		}
		f.Hint = "the command's change is made (after a rekey the new key opens the database and the old one does not); replayer follow, or the same command again, catches it up"
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		f.Code, f.Exit = "interrupted", exitInterrupted
		f.Message, f.Hint = "interrupted; nothing was left half-written", ""
	case errors.As(err, &ve), replay.IsVerificationFailure(err):
		f.Code, f.Exit = "verify_failed", exitVerify
	}
	if f.Code != "interrupted" {
		f.StreamSequence, _ = streamSeq(err)
	}
	return f
}

// streamSeq returns the stream sequence of the record err is about, if
// err names one.
func streamSeq(err error) (uint64, bool) {
	var re *eventlog.RecordError
	if errors.As(err, &re) && re.Seq != 0 {
		return re.Seq, true
	}
	var ae *projections.ApplyError
	if errors.As(err, &ae) && ae.Seq != 0 {
		return ae.Seq, true
	}
	return 0, false
}

// errorHint returns the hint an error in err's chain carries, if any.
func errorHint(err error) string {
	var fe *projections.FileError
	if errors.As(err, &fe) && fe.Hint != "" {
		return fe.Hint
	}
	if errors.Is(err, replay.ErrDrift) {
		return "rebuild it from the stream"
	}
	return ""
}

// report prints err (if any) and maps it to an exit code.
func report(ctx context.Context, env *cliEnv, name string, err error) int {
	if err == nil || errors.Is(err, flag.ErrHelp) {
		return exitOK
	}
	f := classify(ctx, name, err)
	msg := termSafe(f.Message)
	switch f.Code {
	case "usage":
		fmt.Fprintf(env.stderr, "replayer %s: %s\nreplayer: hint: %s\n", name, msg, f.Hint)
	case "verify_failed":
		fmt.Fprintf(env.stderr, "replayer %s: verification failed: %s\n", name, msg)
	default:
		fmt.Fprintf(env.stderr, "replayer %s: %s\n", name, msg)
	}
	if env.json {
		// encoding/json escapes control characters and replaces bytes
		// that are not UTF-8, so the object is safe on a terminal too.
		if jerr := json.NewEncoder(env.stdout).Encode(map[string]failure{"error": f}); jerr != nil {
			fmt.Fprintf(env.stderr, "replayer %s: writing the JSON error: %s\n", name, termSafe(jerr.Error()))
		}
	}
	return f.Exit
}

// jsonRequested reports whether args ask for --json (-json, --json=true,
// ...), looking at the flags before a "--". It is a scan, not a parse: it
// decides whether a failure before or during flag parsing is printed as
// JSON; once the flags are parsed, the parsed value decides.
func jsonRequested(args []string) bool {
	on := false
	for _, a := range args {
		if a == "--" {
			break
		}
		name, value, hasValue := strings.Cut(strings.TrimPrefix(strings.TrimPrefix(a, "-"), "-"), "=")
		if !strings.HasPrefix(a, "-") || name != "json" {
			continue
		}
		on = true
		if hasValue {
			on, _ = strconv.ParseBool(value)
		}
	}
	return on
}

// termSafe returns s with everything a terminal could act on escaped the
// way strconv.Quote escapes it: control characters (C0 including newline
// and tab, DEL, C1), other runes that are not printable (such as
// bidirectional overrides) and bytes that are not UTF-8 become \x1b,
// \n, \u202e, \xff. Printable text, non-ASCII letters included, is left
// as it is. Human output passes every string that comes from the stream
// or a database (subjects, ids, error messages that embed them) through
// it.
func termSafe(s string) string {
	clean := true
	for _, r := range s {
		if r == utf8.RuneError || !unicode.IsPrint(r) {
			clean = false
			break
		}
	}
	if clean {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == utf8.RuneError && size == 1:
			fmt.Fprintf(&b, `\x%02x`, s[i])
		case unicode.IsPrint(r):
			b.WriteString(s[i : i+size])
		default:
			q := strconv.QuoteRune(r)
			b.WriteString(q[1 : len(q)-1])
		}
		i += size
	}
	return b.String()
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
// replays 1.5 to 2.2 times slower (docs/benchmarks.md). The tool defaults
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
