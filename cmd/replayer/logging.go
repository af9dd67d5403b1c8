package main

import (
	"flag"
	"fmt"
	"io"
	"log/slog"
	"strings"
)

// Structured logs: every command takes --log-format and --log-level
// (newFlagSet registers them) and logs to stderr through one *slog.Logger,
// which conn.config hands to eventlog.Config.Logger, so the library's
// records (reconnects, stream leader changes, retries, conflicts, rebuilds)
// and the command's own (follow's failures, retries and batches) come out
// alike. Results still go to stdout and a command's final message or
// summary stays human text on stderr.

// logFormat is the value of --log-format: "text" (slog's key=value lines)
// or "json" (one JSON object per line).
type logFormat string

// String implements flag.Value.
func (f *logFormat) String() string { return string(*f) }

// Set implements flag.Value: a bad value is refused by the flag package,
// which names the flag (a usage error).
func (f *logFormat) Set(s string) error {
	switch strings.ToLower(s) {
	case "text", "json":
		*f = logFormat(strings.ToLower(s))
		return nil
	}
	return fmt.Errorf("must be text or json, not %q", s)
}

// logLevel is the value of --log-level: the least severe record written.
type logLevel slog.Level

// String implements flag.Value.
func (l *logLevel) String() string { return strings.ToLower(slog.Level(*l).String()) }

// Set implements flag.Value. Only the four names are taken (not slog's
// "info+2" offsets).
func (l *logLevel) Set(s string) error {
	switch strings.ToLower(s) {
	case "debug":
		*l = logLevel(slog.LevelDebug)
	case "info":
		*l = logLevel(slog.LevelInfo)
	case "warn", "warning":
		*l = logLevel(slog.LevelWarn)
	case "error":
		*l = logLevel(slog.LevelError)
	default:
		return fmt.Errorf("must be debug, info, warn or error, not %q", s)
	}
	return nil
}

// logFlags are a command's --log-format and --log-level.
type logFlags struct {
	format logFormat
	level  logLevel
}

// register adds --log-format and --log-level to fs, with their defaults
// (text, and level).
func (l *logFlags) register(fs *flag.FlagSet, level slog.Level) {
	l.format, l.level = "text", logLevel(level)
	fs.Var(&l.format, "log-format", "`FORMAT` of the log records on stderr, each with its time: text (key=value pairs) or json (one object per line)")
	fs.Var(&l.level, "log-level", fmt.Sprintf("least severe log record written, a `LEVEL`: debug, info, warn or error (default %s)", &l.level))
}

// newLogger returns a logger writing records of l's level and up to w in
// l's format, each with its time.
func (l *logFlags) newLogger(w io.Writer) *slog.Logger {
	opts := &slog.HandlerOptions{Level: slog.Level(l.level)}
	if l.format == "json" {
		return slog.New(slog.NewJSONHandler(w, opts))
	}
	return slog.New(slog.NewTextHandler(w, opts))
}

// setLogger (re)builds env's logger from the command's log flags. parseFlags
// calls it; follow calls it again once its config file has filled in the
// flags not given on the command line.
func (env *cliEnv) setLogger() {
	if env.logFlags == nil {
		env.logFlags = &logFlags{format: "text", level: logLevel(slog.LevelInfo)}
	}
	env.log = env.logFlags.newLogger(env.stderr)
	if env.processLogger {
		slog.SetDefault(env.log)
	}
}

// logger returns the command's logger (text, info, to stderr when the
// flags have not been parsed, as in tests that build a cliEnv by hand).
func (env *cliEnv) logger() *slog.Logger {
	if env.log == nil {
		env.setLogger()
	}
	return env.log
}
