package main

import (
	"flag"
	"fmt"

	"github.com/epochlog/epochlog/keyfile"
	"github.com/epochlog/epochlog/projections"
)

// Environment variables holding read-model keys (the library reads none).
const (
	envDBKey           = "EPOCHLOG_DB_KEY"            // 64 hex digits
	envDBPassphrase    = "EPOCHLOG_DB_PASSPHRASE"     // passphrase (Argon2id, salt beside the db)
	envNewDBKey        = "EPOCHLOG_NEW_DB_KEY"        // rekey target, 64 hex digits
	envNewDBPassphrase = "EPOCHLOG_NEW_DB_PASSPHRASE" // rekey target passphrase
)

// dbKeyFlags locate one read-model key. The same set is registered twice by
// rekey and migrate: once for the current key and once, with prefix "new-",
// for the key the database is rebuilt under.
type dbKeyFlags struct {
	prefix                string // "" or "new-"
	envKey, envPassphrase string
	keyFile, passFile     string
	hex                   secretFlag
	plaintext             bool
}

func newDBKeyFlags(fs *flag.FlagSet, prefix string) *dbKeyFlags {
	k := &dbKeyFlags{prefix: prefix, envKey: envDBKey, envPassphrase: envDBPassphrase}
	what := "read-model key"
	if prefix != "" {
		k.envKey, k.envPassphrase = envNewDBKey, envNewDBPassphrase
		what = "new read-model key"
	}
	fs.StringVar(&k.keyFile, prefix+"db-key-file", "", what+": file of 64 hex digits (a raw SQLCipher key), mode 0600; default $"+k.envKey)
	fs.StringVar(&k.passFile, prefix+"db-passphrase-file", "", what+": file holding a passphrase (Argon2id, salt in <db>.salt); default $"+k.envPassphrase)
	fs.Var(&k.hex, prefix+"db-key", what+" on the command line as `HEX`, 64 hex digits (discouraged: visible to other users)")
	if prefix == "" {
		// Only a source may be unencrypted: read models are never
		// written without a key.
		fs.BoolVar(&k.plaintext, "plaintext", false, "the read-model is not encrypted (no key; only as a migration source)")
	}
	return k
}

// given reports whether any source was named on the command line or in the
// environment.
func (k *dbKeyFlags) given(env *cliEnv) bool {
	return k.onCommandLine() || env.getenv(k.envKey) != "" || env.getenv(k.envPassphrase) != ""
}

// onCommandLine reports whether a source was named by a flag. Only flags
// conflict with another choice on the command line: the environment is a
// default, and a shell that exports a key must not break an invocation
// that does not use it.
func (k *dbKeyFlags) onCommandLine() bool {
	return k.keyFile != "" || k.passFile != "" || k.hex.given() || k.plaintext
}

// key resolves the flags to a typed key. Exactly one source may be given.
// Errors name the flag, file or variable, never the key.
func (k *dbKeyFlags) key(env *cliEnv) (projections.Key, error) {
	sources := 0
	for _, set := range []bool{k.keyFile != "", k.passFile != "", k.hex.given(), k.plaintext} {
		if set {
			sources++
		}
	}
	if sources > 1 {
		return projections.Key{}, usageError{fmt.Sprintf("give one of --%[1]sdb-key-file, --%[1]sdb-passphrase-file, --%[1]sdb-key, --%[1]splaintext", k.prefix)}
	}
	switch {
	case k.keyFile != "":
		return readDBKeyFile(k.keyFile)
	case k.passFile != "":
		return keyfile.LoadDBPassphrase(k.passFile)
	case k.hex.given():
		fmt.Fprintf(env.stderr, "replayer: warning: a key on the command line is visible to other users (ps, shell history); prefer --%sdb-key-file or $%s\n", k.prefix, k.envKey)
		return parseDBKeyHex(k.hex.reveal(), "--"+k.prefix+"db-key")
	case k.plaintext:
		return projections.NoKey(), nil
	case env.getenv(k.envKey) != "":
		return parseDBKeyHex(env.getenv(k.envKey), "$"+k.envKey)
	case env.getenv(k.envPassphrase) != "":
		return projections.PassphraseKey([]byte(env.getenv(k.envPassphrase)))
	}
	return projections.Key{}, usageError{fmt.Sprintf("no %sread-model key: give --%sdb-key-file, --%sdb-passphrase-file or --%splaintext, or set $%s",
		k.prefix, k.prefix, k.prefix, k.prefix, k.envKey)}
}

// kind names the kind of key the flags give, as key resolves them: "raw
// key", "passphrase" or "plaintext" (never the key).
func (k *dbKeyFlags) kind(env *cliEnv) string {
	switch {
	case k.keyFile != "", k.hex.given():
		return "raw key"
	case k.passFile != "":
		return "passphrase"
	case k.plaintext:
		return "plaintext"
	case env.getenv(k.envKey) != "":
		return "raw key"
	case env.getenv(k.envPassphrase) != "":
		return "passphrase"
	}
	return ""
}

// parseDBKeyHex parses 64 hex digits; what names the source in errors.
func parseDBKeyHex(text, what string) (projections.Key, error) {
	k, err := keyfile.ParseDBKey(text)
	if err != nil {
		return projections.Key{}, fmt.Errorf("%s: %w", what, err)
	}
	return k, nil
}

// readDBKeyFile reads a raw read-model key file: 64 hex digits and an
// optional newline, mode 0600 or stricter (keyfile.LoadDBKey).
func readDBKeyFile(path string) (projections.Key, error) {
	return keyfile.LoadDBKey(path)
}

// writeDBKeyFile generates a raw read-model key, writes it to path as 64
// hex digits (mode 0600, fsynced, atomically replacing any old file) and
// returns it (keyfile.NewDBKeyFile).
func writeDBKeyFile(path string) (projections.Key, error) {
	return keyfile.NewDBKeyFile(path)
}
