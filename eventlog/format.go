package eventlog

import (
	"fmt"
	"io"
)

// String describes the Log by its stream, subject prefix and server, never
// its credentials.
func (l *Log) String() string {
	server := "embedded server"
	if l.cfg.NATSURL != "" {
		server = l.cfg.NATSURL // without its credentials
	}
	return fmt.Sprintf("eventlog.Log(stream %s, subjects %s.>, %s)", l.cfg.Stream, l.cfg.SubjectPrefix, server)
}

// GoString is String.
func (l *Log) GoString() string { return l.String() }

// Format prints String under every verb, so that no verb (%+v, %x, %s on
// a field fmt cannot call methods on) prints the Log's fields.
func (l *Log) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, l.String()) }

// credentials are a Config's secrets, which a Log keeps apart from its
// Config and behind a pointer: fmt prints a struct behind a pointer in an
// unexported field (struct{ l *Log } under %s or %q, where it cannot call
// Log's Format), but not a pointer inside that struct.
type credentials struct {
	natsURL         string
	password, token Secret
}

// withoutCredentials returns c without Password and Token, and with the
// credentials of NATSURL redacted.
func (c Config) withoutCredentials() Config {
	c.NATSURL = redactURL(c.NATSURL)
	c.Password, c.Token = Secret{}, Secret{}
	return c
}

// config returns the Log's Config with its credentials.
func (l *Log) config() Config {
	c := l.cfg
	c.NATSURL, c.Password, c.Token = l.creds.natsURL, l.creds.password, l.creds.token
	return c
}
