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

// withRedactedURL returns c with the credentials of NATSURL redacted.
func (c Config) withRedactedURL() Config {
	c.NATSURL = redactURL(c.NATSURL)
	return c
}

// config returns the Log's Config with NATSURL as given.
func (l *Log) config() Config {
	c := l.cfg
	c.NATSURL = l.rawURL.Get()
	return c
}
