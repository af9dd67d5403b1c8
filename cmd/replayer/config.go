package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"

	"go.yaml.in/yaml/v3"

	"github.com/epochlog/epochlog/events"
)

// follow --config FILE: a YAML file holding what follow's flags say (the
// connection, the event keyring, the read models, the metrics address,
// --ready-lag, the log format and level, the share group), for a follower run by a service
// manager. Its format, with a complete example, is in docs/operations.md
// ("The follow config file"); TestFollowConfigDocExample parses that
// example. Decoding is strict: an unknown key is an error naming it and
// its line. A flag given on the command line wins over the file (for the
// server, the read-model key and the read models, a flag of the group wins
// over the whole group: see confGroups). Relative paths in the file are
// relative to the file's directory.

// confValue is one scalar of the config file, with its line for errors.
type confValue struct {
	value string
	line  int
	set   bool
}

// UnmarshalYAML takes a scalar (string, number or boolean) as its text; a
// null leaves the value unset; anything else is an error naming the line.
func (v *confValue) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind == yaml.AliasNode {
		n = n.Alias
	}
	if n.Kind != yaml.ScalarNode {
		return &yaml.TypeError{Errors: []string{fmt.Sprintf("line %d: want a single value (text, a number or true/false), not a %s", n.Line, nodeKind(n.Kind))}}
	}
	if n.Tag == "!!null" {
		return nil
	}
	v.value, v.line, v.set = n.Value, n.Line, true
	return nil
}

func nodeKind(k yaml.Kind) string {
	switch k {
	case yaml.MappingNode:
		return "mapping"
	case yaml.SequenceNode:
		return "list"
	}
	return "document"
}

// followConfig is the config file.
type followConfig struct {
	NATS       natsConfig       `yaml:"nats"`
	KeysFile   confValue        `yaml:"keys-file"`
	ReadModels readModelsConfig `yaml:"read-models"`
	Metrics    confValue        `yaml:"metrics"`
	ReadyLag   confValue        `yaml:"ready-lag"`
	Log        logConfig        `yaml:"log"`
	Share      shareConfig      `yaml:"share"`
}

// natsConfig is the file's nats section: the connection flags.
type natsConfig struct {
	URL           confValue `yaml:"url"`
	Context       confValue `yaml:"context"`
	Data          confValue `yaml:"data"`
	Stream        confValue `yaml:"stream"`
	SubjectPrefix confValue `yaml:"subject-prefix"`
	TLS           tlsConfig `yaml:"tls"`
	Creds         confValue `yaml:"creds"`
	NKey          confValue `yaml:"nkey"`
	User          confValue `yaml:"user"`
	InboxPrefix   confValue `yaml:"inbox-prefix"`
	// RequestTimeout is --request-timeout.
	RequestTimeout confValue `yaml:"request-timeout"`
}

// tlsConfig is nats.tls: --nats-ca, --nats-cert, --nats-key,
// --nats-tls-first.
type tlsConfig struct {
	CA             confValue `yaml:"ca"`
	Cert           confValue `yaml:"cert"`
	Key            confValue `yaml:"key"`
	HandshakeFirst confValue `yaml:"handshake-first"`
}

// readModelsConfig is the read-models section: --db-dir, the key flags and
// a list of read models (what --installation names, with a database and a
// key file each if wanted).
type readModelsConfig struct {
	DBDir            confValue         `yaml:"db-dir"`
	DBKeysBeside     confValue         `yaml:"db-keys-beside"`
	DBKeyFile        confValue         `yaml:"db-key-file"`
	DBPassphraseFile confValue         `yaml:"db-passphrase-file"`
	List             []readModelConfig `yaml:"list"`
}

// readModelConfig is one read model of read-models.list. DB defaults to
// DB-DIR/INSTALLATION.db; DBKeyFile to the shared key (or the key beside
// the database with db-keys-beside).
type readModelConfig struct {
	Installation confValue `yaml:"installation"`
	DB           confValue `yaml:"db"`
	DBKeyFile    confValue `yaml:"db-key-file"`
}

// shareConfig is the share section: --share and --lease-ttl.
type shareConfig struct {
	Group    confValue `yaml:"group"`
	LeaseTTL confValue `yaml:"lease-ttl"`
}

// logConfig is the log section: --log-format and --log-level.
type logConfig struct {
	Format confValue `yaml:"format"`
	Level  confValue `yaml:"level"`
}

// confSetting ties a key of the file to the flag it sets.
type confSetting struct {
	key, flag string
	path      bool // a file or directory: relative to the file's directory
	v         confValue
}

func (c *followConfig) settings() []confSetting {
	return []confSetting{
		{"nats.url", "nats", false, c.NATS.URL},
		{"nats.context", "context", false, c.NATS.Context},
		{"nats.data", "data", true, c.NATS.Data},
		{"nats.stream", "stream", false, c.NATS.Stream},
		{"nats.subject-prefix", "subject-prefix", false, c.NATS.SubjectPrefix},
		{"nats.tls.ca", "nats-ca", true, c.NATS.TLS.CA},
		{"nats.tls.cert", "nats-cert", true, c.NATS.TLS.Cert},
		{"nats.tls.key", "nats-key", true, c.NATS.TLS.Key},
		{"nats.creds", "nats-creds", true, c.NATS.Creds},
		{"nats.nkey", "nats-nkey", true, c.NATS.NKey},
		{"nats.user", "nats-user", false, c.NATS.User},
		{"nats.inbox-prefix", "nats-inbox-prefix", false, c.NATS.InboxPrefix},
		{"nats.tls.handshake-first", "nats-tls-first", false, c.NATS.TLS.HandshakeFirst},
		{"nats.request-timeout", "request-timeout", false, c.NATS.RequestTimeout},
		{"keys-file", "keys-file", true, c.KeysFile},
		{"read-models.db-dir", "db-dir", true, c.ReadModels.DBDir},
		{"read-models.db-keys-beside", "db-keys-beside", false, c.ReadModels.DBKeysBeside},
		{"read-models.db-key-file", "db-key-file", true, c.ReadModels.DBKeyFile},
		{"read-models.db-passphrase-file", "db-passphrase-file", true, c.ReadModels.DBPassphraseFile},
		{"metrics", "metrics", false, c.Metrics},
		{"ready-lag", "ready-lag", false, c.ReadyLag},
		{"log.format", "log-format", false, c.Log.Format},
		{"log.level", "log-level", false, c.Log.Level},
		{"share.group", "share", false, c.Share.Group},
		{"share.lease-ttl", "lease-ttl", false, c.Share.LeaseTTL},
	}
}

// confGroups puts flags that choose one thing together: a flag of a group
// given on the command line makes follow ignore every setting of that
// group in the file (so --nats on the command line is not mixed with the
// file's context, nor --db-key-file with its db-keys-beside). The other
// flags are each their own group.
var confGroups = map[string]string{
	"nats": "server", "context": "server", "data": "server",
	"db-keys-beside": "db-key", "db-key-file": "db-key", "db-passphrase-file": "db-key", "db-key": "db-key", "plaintext": "db-key",
	"keys-file": "keyring", "keys": "keyring",
}

func confGroup(flag string) string {
	if g, ok := confGroups[flag]; ok {
		return g
	}
	return flag
}

// loadFollowConfig reads and decodes the config file at path.
func loadFollowConfig(path string) (*followConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading the config file: %w", err)
	}
	return parseFollowConfig(path, b)
}

// parseFollowConfig decodes a config file's content; name is the file's
// name for errors. Errors are usage errors naming the file, the line and
// the key.
func parseFollowConfig(name string, b []byte) (*followConfig, error) {
	dec := yaml.NewDecoder(bytes.NewReader(b))
	dec.KnownFields(true)
	var c followConfig
	if err := dec.Decode(&c); err != nil && !errors.Is(err, io.EOF) {
		return nil, usageError{fmt.Sprintf("config file %s: %s", name, yamlError(err))}
	}
	var more yaml.Node
	if err := dec.Decode(&more); !errors.Is(err, io.EOF) {
		return nil, usageError{fmt.Sprintf("config file %s: holds more than one YAML document (one is read)", name)}
	}
	for i, rm := range c.ReadModels.List {
		if !rm.Installation.set {
			return nil, usageError{fmt.Sprintf("config file %s: read-models.list entry %d: installation is required", name, i+1)}
		}
		if err := events.InstallationID(rm.Installation.value).Validate(); err != nil {
			return nil, usageError{fmt.Sprintf("config file %s: line %d: read-models.list: installation: %v", name, rm.Installation.line, err)}
		}
	}
	return &c, nil
}

var (
	unknownFieldRE = regexp.MustCompile(`^line (\d+): field (.+) not found in type main\.(\w+)$`)
	typeNameRE     = regexp.MustCompile(`main\.(\w+)`)
	syntaxLineRE   = regexp.MustCompile(`^yaml: line (\d+): (.*)$`)
)

// confTypes are the file's mappings, by type name, for errors.
var confTypes = map[string]reflect.Type{}

func init() {
	for _, v := range []any{followConfig{}, natsConfig{}, tlsConfig{}, readModelsConfig{}, readModelConfig{}, logConfig{}, shareConfig{}} {
		t := reflect.TypeOf(v)
		confTypes[t.Name()] = t
	}
}

// confKeys lists the keys of the mapping type name.
func confKeys(name string) string {
	t, ok := confTypes[name]
	if !ok {
		return ""
	}
	var keys []string
	for f := range t.Fields() {
		if k, _, _ := strings.Cut(f.Tag.Get("yaml"), ","); k != "" {
			keys = append(keys, k)
		}
	}
	return strings.Join(keys, ", ")
}

// yamlError rewrites the decoder's errors for people: an unknown key is
// named with its line and the keys allowed there, and Go type names are
// not shown.
func yamlError(err error) string {
	var te *yaml.TypeError
	if !errors.As(err, &te) {
		// A syntax error: yaml.v3 names the line where the construct
		// holding it began, and for some errors the line before that
		// (its 0-based number: "[a, b" left open on line 2 and noticed
		// on line 3 is "line 1"). The error is on that line or after.
		if m := syntaxLineRE.FindStringSubmatch(err.Error()); m != nil {
			return fmt.Sprintf("YAML syntax error at or after line %s: %s", m[1], m[2])
		}
		return strings.TrimPrefix(err.Error(), "yaml: ")
	}
	msgs := make([]string, 0, len(te.Errors))
	for _, e := range te.Errors {
		if m := unknownFieldRE.FindStringSubmatch(e); m != nil {
			e = fmt.Sprintf("line %s: unknown key %q (the keys here are: %s)", m[1], m[2], confKeys(m[3]))
		} else {
			e = typeNameRE.ReplaceAllStringFunc(e, func(s string) string {
				return "a mapping of " + confKeys(strings.TrimPrefix(s, "main."))
			})
		}
		msgs = append(msgs, e)
	}
	return strings.Join(msgs, "; ")
}

// maxShownValue is the longest invalid setting an error quotes: a longer
// one may be a key or passphrase pasted under the wrong name.
const maxShownValue = 24

// apply sets, in fs, every flag the file gives a value for and the command
// line did not (by group: see confGroups), and returns the file's list of
// read models, or nil when the command line names the read models itself.
// file is the config file's path: relative paths in it are taken relative
// to its directory. A value its flag refuses is a usage error naming the
// file, line and key.
func (c *followConfig) apply(fs *flag.FlagSet, file string) ([]readModelConfig, error) {
	given := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { given[confGroup(f.Name)] = true })
	dir := filepath.Dir(file)
	resolve := func(p string) string {
		if p == "" || filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	for _, s := range c.settings() {
		if !s.v.set || given[confGroup(s.flag)] {
			continue
		}
		v := s.v.value
		if s.path {
			v = resolve(v)
		}
		if err := fs.Set(s.flag, v); err != nil {
			shown, why := fmt.Sprintf("%q", v), err.Error()
			if len(v) > maxShownValue {
				// Long enough to be a key pasted into the wrong place:
				// this error goes to the service manager's logs.
				shown = fmt.Sprintf("(%d characters, not shown)", len(v))
				why = strings.ReplaceAll(why, v, "…")
			}
			return nil, usageError{fmt.Sprintf("config file %s: line %d: %s: invalid value %s for --%s: %v", file, s.v.line, s.key, shown, s.flag, why)}
		}
	}
	if given["installation"] {
		return nil, nil
	}
	list := slices.Clone(c.ReadModels.List)
	for i := range list {
		if list[i].DB.set {
			list[i].DB.value = resolve(list[i].DB.value)
		}
		if list[i].DBKeyFile.set {
			list[i].DBKeyFile.value = resolve(list[i].DBKeyFile.value)
		}
	}
	return list, nil
}
