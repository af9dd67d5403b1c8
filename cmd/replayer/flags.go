package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/keyfile"
	"github.com/epochlog/epochlog/telemetry"
)

// Environment variables the CLI reads (the library reads none).
const (
	envRootKeys     = "EPOCHLOG_ROOT_KEYS"     // keyring, same format as --keys-file
	envNATSPassword = "EPOCHLOG_NATS_PASSWORD" // password for --nats-user
)

// newFlagSet returns a flag set that reports errors instead of exiting, so
// run can map them to exit codes. Every command's set has --log-format and
// --log-level (see logging.go): parseFlags builds env's logger from them.
func newFlagSet(env *cliEnv, name, args, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	env.logFlags = &logFlags{}
	level := slog.LevelInfo
	if name == "demo" {
		// The demo is read by a person: its summary tells the story, and
		// the records of every installation it runs would drown it.
		level = slog.LevelWarn
	}
	env.logFlags.register(fs, level)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "usage: replayer %s %s\n\n%s\n\nflags:\n", name, args, summary)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and turns flag errors into usage errors. It also
// records in env whether the command was asked for --json (when it has
// that flag), so that report prints a failure as JSON too.
func parseFlags(env *cliEnv, fs *flag.FlagSet, args []string) error {
	// The usage is printed here, not by Parse: asked for with -h it is
	// the command's output (stdout); after a bad flag it goes to stderr
	// with the error.
	usage := fs.Usage
	fs.Usage = func() {}
	err := fs.Parse(args)
	fs.Usage = usage
	switch {
	case errors.Is(err, flag.ErrHelp):
		fs.SetOutput(env.stdout)
		usage()
		fs.SetOutput(env.stderr)
	case err != nil:
		usage()
	}
	if f := fs.Lookup("json"); f == nil {
		env.json = false
	} else if on, _ := f.Value.(flag.Getter).Get().(bool); err == nil {
		env.json = on
	} else {
		// The flags after the bad one were not parsed: the scan of the
		// arguments (run's) still counts.
		env.json = env.json || on
	}
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		if strings.HasSuffix(err.Error(), "flag provided but not defined: -replicas") {
			return usageError{err.Error() + ": only demo, which creates the stream, takes --replicas; " +
				"this command never changes the stream's configuration (change an existing stream's replicas with \"nats stream edit\")"}
		}
		return usageError{err.Error()}
	}
	if fs.NArg() > 0 {
		// No command takes positional arguments: the flag package stops at
		// the first one, so the flags after it would silently go unread.
		return usageError{fmt.Sprintf("unexpected argument %s: every value goes with its flag (e.g. --db PATH); the %d argument(s) from there on were not read",
			strayArg(fs.Arg(0)), fs.NArg())}
	}
	env.setLogger()
	return nil
}

// strayArg names a stray argument for an error: quoted when it looks like
// a path, otherwise not echoed, since it may be a key or passphrase typed
// in the wrong place.
func strayArg(a string) string {
	if len(a) <= 200 && (strings.ContainsRune(a, os.PathSeparator) || strings.HasSuffix(a, ".db") || strings.HasSuffix(a, ".key")) && strconv.Quote(a) == "\""+a+"\"" {
		return strconv.Quote(a)
	}
	return fmt.Sprintf("of %d characters (not shown: it may be a secret)", len(a))
}

// connFlags select the NATS server: embedded under --data by default, or an
// external server or cluster with --nats, --context (a nats CLI context) or
// $NATS_URL; see config for the order.
//
// Only demo, the one command that creates the stream and writes events to
// it, registers --replicas (registerStreamSettings). Every other command
// (inspect, verify, rebuild, rekey, migrate, follow) only reads the stream:
// it leaves every stream setting of eventlog.Config zero (Replicas,
// DuplicateWindow, MaxAge, MaxBytes), which opens an existing stream
// without asking to change its configuration.
type connFlags struct {
	data, nats, context, ca, cert, key, creds, nkey, user, stream, prefix string
	inboxPrefix                                                           string
	tlsFirst                                                              bool
	requestTimeout                                                        time.Duration
	replicas                                                              int

	// fs is the flag set the flags are registered in: config asks it
	// which were given (on the command line, or by follow's config file).
	fs *flag.FlagSet
	// metrics, if set, goes into eventlog.Config.Metrics (--metrics).
	metrics *telemetry.Metrics
	// writes marks the one command that creates the stream and appends
	// (demo): it goes to an external server only when told so on its
	// command line (--nats, --context), never because of $NATS_URL or the
	// nats CLI's selected context, which would make a try-out write events
	// to whatever server the shell happens to point at.
	writes bool
}

// natsSourceHelp says where the server comes from, for -h.
const natsSourceHelp = "external NATS URL(s), comma-separated. The server is the first of: --nats; --context's url; " +
	"$" + envNATSURL + "; the nats CLI context named by $" + envNATSContext + " or selected with \"nats context select\"; " +
	"else the embedded server on --data. --data given explicitly skips $" + envNATSURL + " and the selected context, and demo (which writes) never uses them"

func (c *connFlags) register(fs *flag.FlagSet, defaultData string) {
	c.fs = fs
	fs.StringVar(&c.data, "data", defaultData, "data directory of the embedded JetStream server")
	fs.StringVar(&c.nats, "nats", "", natsSourceHelp)
	fs.StringVar(&c.context, "context", "", "nats CLI context: its url, creds, nkey, cert, key, ca, user and password, token, inbox_prefix and tls_first "+
		"($XDG_CONFIG_HOME/nats/context/`NAME`.json, default ~/.config/nats/context/NAME.json); each flag given wins over the context's setting")
	fs.StringVar(&c.ca, "nats-ca", "", "PEM file of CAs that sign the NATS server certificate")
	fs.StringVar(&c.cert, "nats-cert", "", "client certificate PEM file (mutual TLS)")
	fs.StringVar(&c.key, "nats-key", "", "client private key PEM file (mutual TLS)")
	fs.StringVar(&c.creds, "nats-creds", "", "NATS credentials (.creds) file")
	fs.StringVar(&c.nkey, "nats-nkey", "", "file holding a NATS user nkey seed")
	fs.StringVar(&c.user, "nats-user", "", "NATS user name (password from $"+envNATSPassword+")")
	fs.StringVar(&c.inboxPrefix, "nats-inbox-prefix", "", "subject prefix of the connection's reply inboxes (default _INBOX), for a user who may subscribe only below its own")
	fs.BoolVar(&c.tlsFirst, "nats-tls-first", false, "start TLS before the server's greeting (servers or proxies set to handshake_first)")
	fs.DurationVar(&c.requestTimeout, "request-timeout", eventlog.DefaultRequestTimeout, "bound on each request to the server, asked again within it while unanswered: "+
		"a lookup waits out a leader's election within it, which on a loaded cluster can take longer than the default")
	fs.StringVar(&c.stream, "stream", eventlog.DefaultStream, "JetStream stream name")
	fs.StringVar(&c.prefix, "subject-prefix", eventlog.DefaultSubjectPrefix, "first token of every event subject")
}

// registerStreamSettings registers the flags that set the stream's
// configuration: only for demo, which creates the stream.
func (c *connFlags) registerStreamSettings(fs *flag.FlagSet) {
	c.writes = true
	fs.IntVar(&c.replicas, "replicas", 0, "stream replicas, 1 to 5, when this command creates the stream or should change it (default: a new stream gets 1, an existing one keeps its own)")
}

// given returns the flags that were given (on the command line, or set by
// follow's config file), by name.
func (c *connFlags) given() map[string]bool {
	set := map[string]bool{}
	if c.fs != nil {
		c.fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	}
	return set
}

// natsTarget is the server the flags, a nats context and the environment
// resolve to, with its credentials. An empty url is the embedded server.
type natsTarget struct {
	url, ca, cert, key, creds, nkey, user string
	password, token                       eventlog.Secret
	inboxPrefix                           string
	tlsFirst                              bool
	// from says where url comes from ("--nats", "$NATS_URL", a
	// context); context names the nats context used, if any.
	from, context string
}

// target resolves the server to connect to, the nats tool's way: each
// setting comes from the first of
//
//  1. its flag (--nats, --nats-ca, ...; the cert and key as a pair);
//  2. the context named by --context;
//  3. $NATS_URL (the url only);
//  4. the context named by $NATS_CONTEXT, else the one selected with
//     "nats context select" (~/.config/nats/context.txt);
//  5. for the url: none, i.e. the embedded server on --data.
//
// A context without a url means nats://127.0.0.1:4222, as in the nats
// tool. --data given explicitly means the embedded server: then $NATS_URL
// and the selected context are not used (with --context it is a usage
// error). The user's password is $EPOCHLOG_NATS_PASSWORD when the user
// comes from --nats-user, else the context's (or that variable when the
// context has none).
func (c *connFlags) target(env *cliEnv) (natsTarget, error) {
	given := c.given()
	t := natsTarget{url: c.nats, ca: c.ca, cert: c.cert, key: c.key, creds: c.creds, nkey: c.nkey, user: c.user,
		inboxPrefix: c.inboxPrefix, tlsFirst: c.tlsFirst}
	if c.user != "" {
		t.password = eventlog.NewSecret(env.getenv(envNATSPassword))
	}
	if t.url != "" {
		t.from = "--nats"
	}
	var nc *natsContext
	switch {
	case c.context != "":
		if given["data"] && c.nats == "" {
			return t, usageError{"--data selects the embedded server and --context an external one: give one of them"}
		}
		var err error
		if nc, err = loadNATSContext(env, c.context); err != nil {
			return t, err
		}
		t.context = fmt.Sprintf("nats context %q (--context)", c.context)
	case t.url == "" && given["data"]:
		// The embedded server, asked for.
	case c.writes:
		// demo: the embedded server unless --nats said otherwise.
	default:
		if t.url == "" && env.getenv(envNATSURL) != "" {
			t.url, t.from = env.getenv(envNATSURL), "$"+envNATSURL
		}
		name, from, err := selectedNATSContext(env)
		if err != nil {
			return t, err
		}
		if name != "" {
			if nc, err = loadNATSContext(env, name); err != nil {
				return t, fmt.Errorf("%w (%s)", err, from)
			}
			t.context = fmt.Sprintf("nats context %q (%s)", name, from)
		}
	}
	if nc != nil {
		if t.url == "" {
			t.url, t.from = nc.URL, t.context
			if t.url == "" {
				t.url = defaultNATSURL
			}
		}
		fill := func(v *string, from string) {
			if *v == "" {
				*v = from
			}
		}
		fill(&t.ca, nc.CA)
		fill(&t.creds, nc.Creds)
		fill(&t.nkey, nc.NKey)
		if t.cert == "" && t.key == "" {
			t.cert, t.key = nc.Cert, nc.Key
		}
		// The context's user or token only when the flags gave no
		// credentials of their own: one way to authenticate, not two.
		own := t.user != "" || t.creds != "" || t.nkey != ""
		if t.user == "" && nc.User != "" {
			t.user, t.password = nc.User, nc.Password
			if t.password.IsZero() {
				t.password = eventlog.NewSecret(env.getenv(envNATSPassword))
			}
		}
		if !own && !nc.Token.IsZero() {
			t.token = nc.Token
		}
		fill(&t.inboxPrefix, nc.InboxPrefix)
		if !given["nats-tls-first"] {
			t.tlsFirst = nc.TLSFirst
		}
	}
	return t, nil
}

func (c *connFlags) config(env *cliEnv) (eventlog.Config, error) {
	cfg := eventlog.DefaultConfig(c.data)
	if c.replicas < 0 || c.replicas > 5 {
		return cfg, usageError{fmt.Sprintf("--replicas %d: must be 1 to 5", c.replicas)}
	}
	if c.requestTimeout <= 0 && c.given()["request-timeout"] {
		return cfg, usageError{fmt.Sprintf("--request-timeout %v: must be positive", c.requestTimeout)}
	}
	t, err := c.target(env)
	if err != nil {
		return cfg, err
	}
	cfg.NATSURL = t.url
	cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile = t.ca, t.cert, t.key
	cfg.CredsFile, cfg.NKeySeedFile = t.creds, t.nkey
	cfg.User, cfg.Password, cfg.Token = t.user, t.password, t.token
	cfg.InboxPrefix, cfg.TLSHandshakeFirst = t.inboxPrefix, t.tlsFirst
	cfg.Stream, cfg.SubjectPrefix = c.stream, c.prefix
	if c.requestTimeout > 0 {
		cfg.RequestTimeout = c.requestTimeout
	}
	// Zero (every command but demo): an existing stream keeps its own.
	cfg.Replicas = c.replicas
	cfg.ConnectionName = "epochlog-replayer"
	cfg.Logger, cfg.Metrics = env.logger(), c.metrics
	if t.url == "" && c.data == "" {
		return cfg, usageError{"--data is required with the embedded server (or give --nats, --context or $" + envNATSURL + ")"}
	}
	if t.url == "" {
		for _, f := range []struct{ flag, value string }{
			{"--nats-ca", c.ca}, {"--nats-cert", c.cert}, {"--nats-key", c.key},
			{"--nats-creds", c.creds}, {"--nats-nkey", c.nkey}, {"--nats-user", c.user},
		} {
			if f.value != "" {
				return cfg, usageError{f.flag + " needs --nats (the embedded server has no TLS or users)"}
			}
		}
		if c.tlsFirst {
			return cfg, usageError{"--nats-tls-first needs --nats (the embedded server has no TLS)"}
		}
		env.logger().Info("using the embedded NATS server", "data", c.data)
	} else {
		attrs := []any{"url", redactURLs(t.url), "from", t.from}
		if t.context != "" && t.context != t.from {
			attrs = append(attrs, "context", t.context)
		}
		env.logger().Info("using an external NATS server", attrs...)
	}
	return cfg, nil
}

// openLog connects to the event log the flags describe.
func openLog(ctx context.Context, env *cliEnv, conn *connFlags, keys *keyFlags) (*eventlog.Log, error) {
	cfg, err := conn.config(env)
	if err != nil {
		return nil, err
	}
	ring, err := keys.keyring(env)
	if err != nil {
		return nil, err
	}
	// Every command but demo only reads the stream: it creates no store
	// or stream and changes no stream setting.
	cfg.ReadOnly = true
	l, err := openEventLog(ctx, cfg, ring)
	if err == nil {
		warnIfNotActive(ctx, env, l)
	}
	return l, err
}

// warnIfNotActive warns when a re-seal switched the stream the log opened
// (a base name) to another: the command reads the stream it was given,
// as it always has, but its operator most likely meant the active one,
// and a read model rebuilt there does not match this one. A pointer that
// cannot be read (no permission on the metadata bucket) says nothing.
func warnIfNotActive(ctx context.Context, env *cliEnv, l *eventlog.Log) {
	a, err := l.ActiveStream(ctx, l.Stream())
	if err != nil {
		env.logger().Debug("cannot read the active-stream pointer", "stream", l.Stream(), "err", err)
		return
	}
	if a.Revision == 0 || a.Current.Stream == l.Stream() {
		return
	}
	env.logger().Warn(fmt.Sprintf("stream %s is not the active stream: replayer reseal switched it to %s at %s; this command reads %s as asked (give --stream %s --subject-prefix %s and that stream's keyring to read the active one)",
		l.Stream(), a.Current.Stream, a.SwitchedAt.UTC().Format(time.RFC3339), l.Stream(), a.Current.Stream, a.Current.SubjectPrefix))
}

// openLogWritable is openLog for a command that writes beside the stream
// (the snapshots bucket: replayer snapshot, follow with a snapshot
// policy; retention). The stream itself is never appended to, and a
// missing stream or store is refused, not created (only demo creates).
func openLogWritable(ctx context.Context, env *cliEnv, conn *connFlags, keys *keyFlags) (*eventlog.Log, error) {
	cfg, err := conn.config(env)
	if err != nil {
		return nil, err
	}
	ring, err := keys.keyring(env)
	if err != nil {
		return nil, err
	}
	cfg.NoCreate = true
	l, err := openEventLog(ctx, cfg, ring)
	if err == nil {
		warnIfNotActive(ctx, env, l)
	}
	return l, err
}

// fromStartHelp is the help of --from-start on the replaying commands.
const fromStartHelp = "replay the whole history instead of starting from the installation's newest stored snapshot (the default: the snapshot, then the events after it)"

// openEventLog opens the log. With the embedded server it first checks
// that the data directory can be written: nats-server reports a store it
// cannot create only to its log, which eventlog switches off, so
// eventlog.Open would wait a minute for a server that never becomes ready
// and then not say why.
func openEventLog(ctx context.Context, cfg eventlog.Config, ring *events.Keyring) (*eventlog.Log, error) {
	if cfg.NATSURL == "" {
		if _, err := os.Stat(cfg.DataDir); (cfg.ReadOnly || cfg.NoCreate) && errors.Is(err, fs.ErrNotExist) {
			// eventlog names the missing store; nothing is created.
			return eventlog.Open(ctx, cfg, ring)
		}
		if err := checkDataDir(cfg.DataDir); err != nil {
			return nil, err
		}
	}
	return eventlog.Open(ctx, cfg, ring)
}

// jetStreamDir is where the embedded nats-server keeps its store under the
// data directory.
const jetStreamDir = "jetstream"

// checkDataDir checks that the embedded server can store under dir: dir
// (created, mode 0700, if missing, as eventlog.Open would) and its
// jetstream directory, if there is one, must be directories this process
// can create files in. It tries, with a temporary file it removes at once.
// The error names the directory and the cause (permission denied, a
// read-only file system, not a directory).
func checkDataDir(dir string) error {
	const fix = "the embedded JetStream server stores the stream there; fix its permissions, give --data a writable directory, or use --nats for an external server"
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("data directory %s cannot be created: %w (%s)", dir, err, fix)
	}
	for _, d := range []string{dir, filepath.Join(dir, jetStreamDir)} {
		fi, err := os.Stat(d)
		switch {
		case d != dir && errors.Is(err, fs.ErrNotExist):
			continue // the server creates it
		case err != nil:
			return fmt.Errorf("data directory %s: %w (%s)", d, pathCause(err), fix)
		case !fi.IsDir():
			return fmt.Errorf("data directory %s: %s is not a directory (%s)", dir, d, fix)
		}
		f, err := os.CreateTemp(d, ".replayer-write-check-*")
		if err != nil {
			return fmt.Errorf("data directory %s is not writable: %w (%s)", d, pathCause(err), fix)
		}
		f.Close()
		if err := os.Remove(f.Name()); err != nil {
			return fmt.Errorf("data directory %s: removing %s: %w", d, f.Name(), err)
		}
	}
	return nil
}

// pathCause returns the cause of a *fs.PathError (e.g. "permission
// denied") without the path, which the caller names itself.
func pathCause(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// secretFlag is the value of a flag that is a key (--keys, --db-key). It
// keeps the key in an eventlog.Secret rather than a string, which fmt
// would print raw from the unexported fields of the flag structs; its
// String, which the flag package calls for defaults, is empty.
type secretFlag struct{ v eventlog.Secret }

// Set implements flag.Value.
func (s *secretFlag) Set(v string) error {
	s.v = eventlog.NewSecret(v)
	return nil
}

// String implements flag.Value without the key.
func (s *secretFlag) String() string { return "" }

// given reports whether the flag holds a key.
func (s *secretFlag) given() bool { return !s.v.IsZero() }

// reveal returns the key given.
func (s *secretFlag) reveal() string { return s.v.Reveal() }

// keyFlags locate the event keyring.
type keyFlags struct {
	file   string
	inline secretFlag
}

func (k *keyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.file, "keys-file", "", "event keyring file (lines \"<key-id>:<64 hex digits>\"; the highest id seals new events); default $"+envRootKeys)
	fs.Var(&k.inline, "keys", "event keyring given inline as `TEXT` (discouraged: visible in the process list and shell history); wins over $"+envRootKeys)
}

// keyring loads the keyring from --keys-file, --keys or $EPOCHLOG_ROOT_KEYS,
// in that order of preference: a flag given on the command line wins over
// the environment, which is only the default (a shell that exports a
// keyring must not silently override the one asked for).
func (k *keyFlags) keyring(env *cliEnv) (*events.Keyring, error) {
	if k.file != "" && k.inline.given() {
		return nil, usageError{"give the event keyring once: --keys-file or --keys, not both"}
	}
	switch {
	case k.file != "":
		// keyfile.LoadKeyring refuses a file others can read; the replayer
		// has always only warned about it, so it checks the mode itself.
		if err := checkKeyFileMode(env, k.file); err != nil {
			return nil, err
		}
		data, err := keyfile.ReadSecretFile(k.file)
		if err != nil {
			return nil, fmt.Errorf("reading keyring: %w", err)
		}
		defer clear(data)
		ring, err := parseKeyring(string(data))
		if err != nil {
			return nil, fmt.Errorf("keyring file %s: %w", k.file, err)
		}
		return ring, nil
	case k.inline.given():
		fmt.Fprintln(env.stderr, "replayer: warning: a key given on the command line is visible to other users of this machine; prefer --keys-file or $"+envRootKeys)
		ring, err := parseKeyring(k.inline.reveal())
		if err != nil {
			return nil, fmt.Errorf("--keys: %w", err)
		}
		return ring, nil
	case env.getenv(envRootKeys) != "":
		ring, err := parseKeyring(env.getenv(envRootKeys))
		if err != nil {
			return nil, fmt.Errorf("$%s: %w", envRootKeys, err)
		}
		return ring, nil
	}
	return nil, usageError{"no event keyring: give --keys-file or set $" + envRootKeys}
}

// checkKeyFileMode warns when a key file is readable by others, and
// refuses one owned by another user (keyfile.CheckOwner): that user could
// choose the keys this command seals with.
func checkKeyFileMode(env *cliEnv, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("keyring file: %w", err)
	}
	if err := keyfile.CheckOwner(path); err != nil {
		return err
	}
	if fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(env.stderr, "replayer: warning: keyring file %s is accessible by other users (mode %04o); chmod 600 it\n", path, fi.Mode().Perm())
	}
	return nil
}

// parseKeyring reads "<id>:<hex>" entries separated by newlines or commas
// (keyfile.ParseKeyring). Errors name the entry by its position, never its
// contents.
func parseKeyring(text string) (*events.Keyring, error) {
	return keyfile.ParseKeyring(text)
}

// ensureKeyringFile creates a keyring file with one fresh key (id 1, mode
// 0600) if path does not exist, and returns whether it created one
// (keyfile.CreateKeyring: never a partial file, never a replaced one).
func ensureKeyringFile(path string) (bool, error) {
	return keyfile.CreateKeyring(path)
}
