package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/url"
	"os"
	"path/filepath"
	"reflect"
	"strings"

	"github.com/epochlog/epochlog/eventlog"
)

// nats CLI contexts: the connection settings the nats tool keeps in
// $XDG_CONFIG_HOME/nats/context/NAME.json (~/.config/nats/context/NAME.json
// when XDG_CONFIG_HOME is not set), one JSON object per context, as
// written by "nats context add" (NATS ADR-21; natscli's natscontext
// package). The selected context ("nats context select") is named in
// .../nats/context.txt; the nats tool uses it whenever no --context is
// given, and $NATS_CONTEXT names one too. So does the replayer, below
// $NATS_URL (see connFlags.config for the whole order).

// envNATSURL and envNATSContext are the nats tool's variables.
const (
	envNATSURL     = "NATS_URL"
	envNATSContext = "NATS_CONTEXT"
)

// defaultNATSURL is the nats tool's server for a context without a url
// (nats.DefaultURL).
const defaultNATSURL = "nats://127.0.0.1:4222"

// natsContext is one nats CLI context. The fields the replayer cannot
// honour, and which would change what it connects to or how, make loading
// the context fail rather than be ignored (see unsupported).
type natsContext struct {
	name, path string

	Description string          `json:"description"`
	URL         string          `json:"url"`
	User        string          `json:"user"`
	Password    eventlog.Secret `json:"password"`
	Creds       string          `json:"creds"`
	NKey        string          `json:"nkey"`
	Cert        string          `json:"cert"`
	Key         string          `json:"key"`
	CA          string          `json:"ca"`

	Token               eventlog.Secret `json:"token"`
	UserJWT             eventlog.Secret `json:"user_jwt"`
	NSC                 string          `json:"nsc"`
	JSDomain            string          `json:"jetstream_domain"`
	JSAPIPrefix         string          `json:"jetstream_api_prefix"`
	JSEventPrefix       string          `json:"jetstream_event_prefix"`
	InboxPrefix         string          `json:"inbox_prefix"`
	TLSFirst            bool            `json:"tls_first"`
	SocksProxy          string          `json:"socks_proxy"`
	WindowsCertStore    string          `json:"windows_cert_store"`
	WindowsCertMatchBy  string          `json:"windows_cert_match_by"`
	WindowsCertMatch    string          `json:"windows_cert_match"`
	WindowsCACertsMatch []string        `json:"windows_ca_certs_match"`
	ColorScheme         string          `json:"color_scheme"`
}

// unsupported names the context's settings the replayer cannot use: each
// would change which server or account it reaches, or how.
func (c *natsContext) unsupported() []string {
	var bad []string
	for _, f := range []struct {
		key string
		set bool
	}{
		{"user_jwt", !c.UserJWT.IsZero()}, {"nsc", c.NSC != ""},
		{"jetstream_domain", c.JSDomain != ""}, {"jetstream_api_prefix", c.JSAPIPrefix != ""},
		{"socks_proxy", c.SocksProxy != ""},
		{"windows_cert_store", c.WindowsCertStore != ""},
	} {
		if f.set {
			bad = append(bad, f.key)
		}
	}
	return bad
}

// natsConfigDir returns the nats tool's configuration directory:
// $XDG_CONFIG_HOME/nats, else $HOME/.config/nats. The environment comes
// from env, so tests are hermetic.
func natsConfigDir(env *cliEnv) (string, error) {
	if d := env.getenv("XDG_CONFIG_HOME"); d != "" {
		return filepath.Join(d, "nats"), nil
	}
	if h := env.getenv("HOME"); h != "" {
		return filepath.Join(h, ".config", "nats"), nil
	}
	return "", errors.New("neither $XDG_CONFIG_HOME nor $HOME is set, so the nats contexts cannot be found")
}

// selectedNATSContext returns the context the nats tool would use without
// --context, and says where that choice comes from: $NATS_CONTEXT, else
// the name in context.txt ("nats context select"). It returns "" when none
// is selected (no context.txt, or no configuration directory).
func selectedNATSContext(env *cliEnv) (name, source string, err error) {
	if n := env.getenv(envNATSContext); n != "" {
		return n, "$" + envNATSContext, nil
	}
	dir, err := natsConfigDir(env)
	if err != nil {
		return "", "", nil
	}
	path := filepath.Join(dir, "context.txt")
	b, err := os.ReadFile(path)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return "", "", nil
	case err != nil:
		return "", "", fmt.Errorf("reading the selected nats context: %w", err)
	}
	if n := strings.TrimSpace(string(b)); n != "" {
		return n, "selected in " + path, nil
	}
	return "", "", nil
}

// loadNATSContext reads context name. A context that is missing, is not
// valid JSON or sets something the replayer cannot honour is an error
// naming the file; nothing of its content (a password) is ever printed.
func loadNATSContext(env *cliEnv, name string) (*natsContext, error) {
	if name == "" || strings.Contains(name, "..") || strings.ContainsRune(name, os.PathSeparator) || strings.ContainsRune(name, '/') {
		return nil, fmt.Errorf("nats context %q: not a context name", name)
	}
	dir, err := natsConfigDir(env)
	if err != nil {
		return nil, fmt.Errorf("nats context %q: %w", name, err)
	}
	path := filepath.Join(dir, "context", name+".json")
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("nats context %q: %s does not exist (\"nats context ls\" lists the contexts)", name, path)
	}
	if err != nil {
		return nil, fmt.Errorf("nats context %q: %w", name, err)
	}
	c := &natsContext{name: name, path: path}
	if err := json.Unmarshal(b, c); err != nil {
		// Not the decoder's message: a syntax error quotes a character
		// of the file, which could be one of the password's.
		var se *json.SyntaxError
		var te *json.UnmarshalTypeError
		switch {
		case errors.As(err, &se):
			err = fmt.Errorf("not valid JSON (at byte %d)", se.Offset)
		case errors.As(err, &te):
			kind := te.Type.Kind().String()
			if te.Type == reflect.TypeFor[eventlog.Secret]() {
				kind = "string" // an opaque struct, read from a JSON string
			}
			err = fmt.Errorf("%s must be a JSON %s", te.Field, kind)
		default:
			err = errors.New("not a JSON object of context settings")
		}
		return nil, fmt.Errorf("nats context %q: %s: %w", name, path, err)
	}
	if bad := c.unsupported(); len(bad) > 0 {
		return nil, fmt.Errorf("nats context %q: %s sets %s, which the replayer cannot use; give the connection with --nats and its flags instead",
			name, path, strings.Join(bad, ", "))
	}
	for _, f := range []struct {
		key string
		v   *string
	}{{"creds", &c.Creds}, {"nkey", &c.NKey}, {"cert", &c.Cert}, {"key", &c.Key}, {"ca", &c.CA}} {
		p, err := contextFile(env, *f.v)
		if err != nil {
			return nil, fmt.Errorf("nats context %q: %s: %s: %w", name, path, f.key, err)
		}
		*f.v = p
	}
	return c, nil
}

// contextFile turns a context's file setting into a path: "~/" is the
// home directory and "file://" is dropped, as the nats tool does. The
// other credential URIs (nsc://, op://, env://, data:) are refused, naming
// only their scheme (a data: URI holds the credential itself).
func contextFile(env *cliEnv, v string) (string, error) {
	switch {
	case v == "":
		return "", nil
	case strings.HasPrefix(v, "file://"):
		v = strings.TrimPrefix(v, "file://")
	case strings.HasPrefix(v, "data:"):
		return "", errors.New("a data: URI is not supported: give a file")
	case strings.Contains(v, "://"):
		scheme, _, _ := strings.Cut(v, "://")
		return "", fmt.Errorf("a %s:// URI is not supported: give a file", scheme)
	}
	if rest, ok := strings.CutPrefix(v, "~/"); ok {
		h := env.getenv("HOME")
		if h == "" {
			return "", errors.New("the path starts with ~/ and $HOME is not set")
		}
		v = filepath.Join(h, rest)
	}
	return v, nil
}

// redactURLs returns NATS URLs (comma-separated) fit for a log or a
// message: a password in one is replaced by "xxxxx"; a part that does not
// parse is replaced whole, since it may be anything.
func redactURLs(urls string) string {
	parts := strings.Split(urls, ",")
	for i, p := range parts {
		p = strings.TrimSpace(p)
		if !strings.Contains(p, "@") {
			parts[i] = p
			continue
		}
		u, err := url.Parse(p)
		if err != nil || u.User == nil {
			parts[i] = "<a URL with credentials>"
			continue
		}
		if _, has := u.User.Password(); !has {
			// A user name alone may be a token.
			u.User = url.User("xxxxx")
		}
		parts[i] = u.Redacted()
	}
	return strings.Join(parts, ",")
}
