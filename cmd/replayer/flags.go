package main

import (
	"context"
	"encoding/hex"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// Environment variables the CLI reads (the library reads none).
const (
	envRootKeys     = "EPOCHLOG_ROOT_KEYS"     // keyring, same format as --keys-file
	envNATSPassword = "EPOCHLOG_NATS_PASSWORD" // password for --nats-user
)

// newFlagSet returns a flag set that reports errors instead of exiting, so
// run can map them to exit codes.
func newFlagSet(env *cliEnv, name, args, summary string) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(env.stderr)
	fs.Usage = func() {
		fmt.Fprintf(env.stderr, "usage: replayer %s %s\n\n%s\n\nflags:\n", name, args, summary)
		fs.PrintDefaults()
	}
	return fs
}

// parseFlags parses args and turns flag errors into usage errors. It also
// records in env whether the command was asked for --json (when it has
// that flag), so that report prints a failure as JSON too.
func parseFlags(env *cliEnv, fs *flag.FlagSet, args []string) error {
	err := fs.Parse(args)
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
// external server or cluster with --nats.
//
// Only demo, the one command that creates the stream and writes events to
// it, registers --replicas (registerStreamSettings). Every other command
// (inspect, verify, rebuild, rekey, migrate, follow) only reads the stream:
// it leaves every stream setting of eventlog.Config zero (Replicas,
// DuplicateWindow, MaxAge, MaxBytes), which opens an existing stream
// without asking to change its configuration.
type connFlags struct {
	data, nats, ca, cert, key, creds, nkey, user, stream, prefix string
	replicas                                                     int
}

func (c *connFlags) register(fs *flag.FlagSet, defaultData string) {
	fs.StringVar(&c.data, "data", defaultData, "data directory of the embedded JetStream server")
	fs.StringVar(&c.nats, "nats", "", "external NATS URL(s), comma-separated (default: embedded server)")
	fs.StringVar(&c.ca, "nats-ca", "", "PEM file of CAs that sign the NATS server certificate")
	fs.StringVar(&c.cert, "nats-cert", "", "client certificate PEM file (mutual TLS)")
	fs.StringVar(&c.key, "nats-key", "", "client private key PEM file (mutual TLS)")
	fs.StringVar(&c.creds, "nats-creds", "", "NATS credentials (.creds) file")
	fs.StringVar(&c.nkey, "nats-nkey", "", "file holding a NATS user nkey seed")
	fs.StringVar(&c.user, "nats-user", "", "NATS user name (password from $"+envNATSPassword+")")
	fs.StringVar(&c.stream, "stream", eventlog.DefaultStream, "JetStream stream name")
	fs.StringVar(&c.prefix, "subject-prefix", eventlog.DefaultSubjectPrefix, "first token of every event subject")
}

// registerStreamSettings registers the flags that set the stream's
// configuration: only for demo, which creates the stream.
func (c *connFlags) registerStreamSettings(fs *flag.FlagSet) {
	fs.IntVar(&c.replicas, "replicas", 0, "stream replicas, 1 to 5, when this command creates the stream or should change it (default: a new stream gets 1, an existing one keeps its own)")
}

func (c *connFlags) config(env *cliEnv) (eventlog.Config, error) {
	cfg := eventlog.DefaultConfig(c.data)
	cfg.NATSURL = c.nats
	cfg.TLSCAFile, cfg.TLSCertFile, cfg.TLSKeyFile = c.ca, c.cert, c.key
	cfg.CredsFile, cfg.NKeySeedFile = c.creds, c.nkey
	cfg.User = c.user
	if c.user != "" {
		cfg.Password = eventlog.Secret(env.getenv(envNATSPassword))
	}
	cfg.Stream, cfg.SubjectPrefix = c.stream, c.prefix
	// Zero (every command but demo): an existing stream keeps its own.
	cfg.Replicas = c.replicas
	cfg.ConnectionName = "epochlog-replayer"
	if c.replicas < 0 || c.replicas > 5 {
		return cfg, usageError{fmt.Sprintf("--replicas %d: must be 1 to 5", c.replicas)}
	}
	if c.nats == "" && c.data == "" {
		return cfg, usageError{"--data is required with the embedded server (or give --nats)"}
	}
	if c.nats == "" {
		for _, f := range []struct{ flag, value string }{
			{"--nats-ca", c.ca}, {"--nats-cert", c.cert}, {"--nats-key", c.key},
			{"--nats-creds", c.creds}, {"--nats-nkey", c.nkey}, {"--nats-user", c.user},
		} {
			if f.value != "" {
				return cfg, usageError{f.flag + " needs --nats (the embedded server has no TLS or users)"}
			}
		}
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
	return openEventLog(ctx, cfg, ring)
}

// openEventLog opens the log. With the embedded server it first checks
// that the data directory can be written: nats-server reports a store it
// cannot create only to its log, which eventlog switches off, so
// eventlog.Open would wait a minute for a server that never becomes ready
// and then not say why.
func openEventLog(ctx context.Context, cfg eventlog.Config, ring *events.Keyring) (*eventlog.Log, error) {
	if cfg.NATSURL == "" {
		if _, err := os.Stat(cfg.DataDir); cfg.ReadOnly && errors.Is(err, fs.ErrNotExist) {
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

// keyFlags locate the event keyring.
type keyFlags struct {
	file   string
	inline string
}

func (k *keyFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&k.file, "keys-file", "", "event keyring file (lines \"<key-id>:<64 hex digits>\"; the highest id seals new events); default $"+envRootKeys)
	fs.StringVar(&k.inline, "keys", "", "event keyring given inline (discouraged: visible in the process list and shell history); wins over $"+envRootKeys)
}

// keyring loads the keyring from --keys-file, --keys or $EPOCHLOG_ROOT_KEYS,
// in that order of preference: a flag given on the command line wins over
// the environment, which is only the default (a shell that exports a
// keyring must not silently override the one asked for).
func (k *keyFlags) keyring(env *cliEnv) (*events.Keyring, error) {
	if k.file != "" && k.inline != "" {
		return nil, usageError{"give the event keyring once: --keys-file or --keys, not both"}
	}
	switch {
	case k.file != "":
		if err := checkKeyFileMode(env, k.file); err != nil {
			return nil, err
		}
		data, err := os.ReadFile(k.file)
		if err != nil {
			return nil, fmt.Errorf("reading keyring: %w", err)
		}
		ring, err := parseKeyring(string(data))
		if err != nil {
			return nil, fmt.Errorf("keyring file %s: %w", k.file, err)
		}
		return ring, nil
	case k.inline != "":
		fmt.Fprintln(env.stderr, "replayer: warning: a key given on the command line is visible to other users of this machine; prefer --keys-file or $"+envRootKeys)
		ring, err := parseKeyring(k.inline)
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

// checkKeyFileMode warns when a key file is readable by others.
func checkKeyFileMode(env *cliEnv, path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("keyring file: %w", err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		fmt.Fprintf(env.stderr, "replayer: warning: keyring file %s is accessible by other users (mode %04o); chmod 600 it\n", path, fi.Mode().Perm())
	}
	return nil
}

// parseKeyring reads "<id>:<hex>" entries separated by newlines or commas.
// Errors name the entry by its position, never its contents.
func parseKeyring(text string) (*events.Keyring, error) {
	type entry struct {
		id  events.KeyID
		key events.RootKey
	}
	var entries []entry
	fields := strings.FieldsFunc(text, func(r rune) bool { return r == '\n' || r == ',' || r == '\r' })
	for i, f := range fields {
		f = strings.TrimSpace(f)
		if f == "" || strings.HasPrefix(f, "#") {
			continue
		}
		idText, hexKey, ok := strings.Cut(f, ":")
		if !ok {
			return nil, fmt.Errorf("entry %d: want \"<key-id>:<64 hex digits>\"", i+1)
		}
		id, err := strconv.ParseUint(strings.TrimSpace(idText), 10, 32)
		if err != nil || id == 0 {
			return nil, fmt.Errorf("entry %d: key id must be a positive 32-bit number", i+1)
		}
		raw, err := hex.DecodeString(strings.TrimSpace(hexKey))
		if err != nil {
			return nil, fmt.Errorf("entry %d (key id %d): key is not hex", i+1, id)
		}
		key, err := events.NewRootKey(raw)
		clear(raw)
		if err != nil {
			return nil, fmt.Errorf("entry %d (key id %d): %w", i+1, id, err)
		}
		entries = append(entries, entry{events.KeyID(id), key})
	}
	if len(entries) == 0 {
		return nil, errors.New("no keys")
	}
	// The highest key id is the current one.
	cur := 0
	for i, e := range entries {
		if e.id > entries[cur].id {
			cur = i
		}
	}
	ring, err := events.NewKeyring(entries[cur].id, entries[cur].key)
	if err != nil {
		return nil, err
	}
	for i, e := range entries {
		if i == cur {
			continue
		}
		if err := ring.Add(e.id, e.key); err != nil {
			return nil, err
		}
	}
	return ring, nil
}

// ensureKeyringFile creates a keyring file with one fresh key (id 1, mode
// 0600) if path does not exist, and returns whether it created one. The
// key is written to a temporary file, fsynced, and linked into place, so
// path never holds an empty or partial keyring (a failed write or a crash
// leaves no file, and the next run creates one), and a keyring another
// process created meanwhile is never replaced.
func ensureKeyringFile(path string) (bool, error) {
	if _, err := os.Stat(path); err == nil {
		return false, nil
	}
	dir := filepath.Dir(path)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return false, fmt.Errorf("creating %s: %w", dir, err)
	}
	key, err := events.GenerateRootKey()
	if err != nil {
		return false, err
	}
	raw := key.Bytes()
	defer clear(raw)
	line := []byte("# epochlog event keyring: <key-id>:<hex>; the highest id seals new events\n1:" + hex.EncodeToString(raw) + "\n")
	defer clear(line)
	tmp, err := writeTemp(path, line)
	if err != nil {
		return false, fmt.Errorf("writing keyring file %s: %w", path, err)
	}
	defer os.Remove(tmp)
	// Link, not rename: it fails if the keyring appeared meanwhile, so a
	// keyring in use is never replaced.
	if err := os.Link(tmp, path); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return false, nil
		}
		return false, fmt.Errorf("installing keyring file %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return true, fmt.Errorf("syncing directory of keyring file %s: %w", path, err)
	}
	return true, nil
}

// writeTemp writes data to a new temporary file beside path (mode 0600,
// as os.CreateTemp makes it) and fsyncs it, for the caller to install
// whole under path (rename or link) and then remove. A failure leaves no
// file behind.
func writeTemp(path string, data []byte) (string, error) {
	f, err := os.CreateTemp(filepath.Dir(path), filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", err
	}
	_, err = f.Write(data)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// syncDir fsyncs a directory so a file just linked into it survives a
// crash.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	if err := d.Sync(); err != nil {
		d.Close()
		return err
	}
	return d.Close()
}
