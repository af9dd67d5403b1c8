package eventlog

import (
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	neturl "net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
	"github.com/nats-io/nats.go"

	"github.com/epochlog/epochlog/internal/serverready"
)

// embeddedReadyTimeout bounds the embedded server's start (recovering a large
// file store takes a while).
const embeddedReadyTimeout = 60 * time.Second

// EmbeddedMaxPayload is the embedded server's max_payload, the largest
// event it stores: 8 MiB, nats-server's largest recommended (its default
// is 1 MiB). Events that record a group's whole state, and the Welcome
// with its ratchet tree, pass 1 MiB from a few thousand members: at
// 10,000 the commit adding them all is about 4.9 MB sealed, a join about
// as large. A cluster's servers need the same setting (max_payload) for
// such groups; below it an append fails with ErrEventTooLarge.
const EmbeddedMaxPayload = 8 << 20

// startEmbedded starts nats-server in this process with JetStream storing
// under cfg.DataDir/jetstream, after taking the data directory's lock
// (lockStore): one server per store. The lock lives as long as the server:
// it is released once the server has shut down (Log.Close, or Open's own
// failure paths), when its store is closed, and by the kernel if the
// process dies.
func startEmbedded(cfg Config) (*server.Server, error) {
	if cfg.ReadOnly || cfg.NoCreate {
		// A tool on a mistyped --data must not start an empty store
		// there and report an empty history.
		store := filepath.Join(cfg.DataDir, "jetstream")
		if st, err := os.Stat(store); err != nil || !st.IsDir() {
			return nil, fmt.Errorf("%w: %s holds no JetStream store (%s missing); only demo creates one: check --data, or run demo first", ErrNoStore, cfg.DataDir, store)
		}
	}
	// nats-server stores under <StoreDir>/jetstream itself.
	if err := os.MkdirAll(cfg.DataDir, 0o700); err != nil {
		return nil, fmt.Errorf("eventlog: embedded server: create data directory %s: %w", cfg.DataDir, err)
	}
	lk, err := lockStore(cfg.DataDir)
	if err != nil {
		return nil, err
	}
	storeDir := filepath.Join(cfg.DataDir, "jetstream")
	port := cfg.ListenPort
	if port == 0 {
		port = server.RANDOM_PORT
	}
	opts := &server.Options{
		ServerName: "epochlog-embedded",
		Host:       cfg.ListenHost,
		Port:       port,
		DontListen: cfg.EmbeddedInProcess,
		JetStream:  true,
		StoreDir:   cfg.DataDir,
		// Durable before acknowledged: fsync every write before its ack
		// (an atomic batch once). nats-server's default syncs every two
		// minutes, so a power failure could drop appends whose Commit and
		// Welcome were already sent (docs/operations.md, "Durability").
		SyncAlways: !cfg.NoSync,
		MaxPayload: EmbeddedMaxPayload,
		// The library never logs (the caller owns logging) and never owns
		// the process's signals.
		NoLog:  true,
		NoSigs: true,
	}
	srv, err := server.NewServer(opts)
	if err != nil {
		lk.release()
		return nil, fmt.Errorf("eventlog: embedded server (store %s): %w", storeDir, err)
	}
	lk.srv.Store(srv)
	// A listen address in use or not this host's is said at once, not
	// waited out.
	if err := serverready.Start(srv, embeddedReadyTimeout); errors.Is(err, serverready.ErrListen) {
		lk.release()
		return nil, fmt.Errorf("%w (store %s, listening on %s): %w", ErrListenAddr, storeDir, wantedAddr(cfg), err)
	} else if err != nil {
		lk.release()
		return nil, fmt.Errorf("eventlog: embedded server (store %s, listening on %s): %w", storeDir, wantedAddr(cfg), err)
	}
	where := "url " + srv.ClientURL()
	if cfg.EmbeddedInProcess {
		where = inProcessLine
	}
	if err := lk.describe(where); err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
		lk.release()
		return nil, err
	}
	go func() {
		srv.WaitForShutdown()
		lk.release()
	}()
	return srv, nil
}

// wantedAddr is where cfg asks the embedded server to listen, as an
// error names it.
func wantedAddr(cfg Config) string {
	if cfg.EmbeddedInProcess {
		return "no port (in process)"
	}
	port := "a random port"
	if cfg.ListenPort != 0 {
		port = "port " + strconv.Itoa(cfg.ListenPort)
	}
	return cfg.ListenHost + ", " + port
}

// pingInterval and pingsOut bound how long a connection to a server that
// stopped answering looks connected: pingsOut unanswered pings, one every
// pingInterval.
const (
	pingInterval = 20 * time.Second
	pingsOut     = 3
)

// connect opens the client connection: to the embedded server if srv is not
// nil, else to cfg.NATSURL with the configured TLS and credentials. extra
// are more options (the Log's handlers of the connection's life).
func connect(cfg Config, srv *server.Server, extra ...nats.Option) (*nats.Conn, error) {
	name := cfg.ConnectionName
	if name == "" {
		name = "epochlog"
	}
	opts := []nats.Option{
		nats.Name(name),
		// The library never writes to the process's stderr (nats.go's
		// default handler does): an asynchronous error (say, a stored
		// message whose headers do not decode) surfaces where it matters,
		// as the read that does not get its record. extra may set a
		// handler that logs it to Config.Logger.
		nats.ErrorHandler(func(*nats.Conn, *nats.Subscription, error) {}),
		nats.MaxReconnects(-1),
		nats.ReconnectWait(cfg.ReconnectWait),
		nats.Timeout(cfg.RequestTimeout),
		// A server that stops answering without closing the connection
		// (a hung process, a path that drops packets) is noticed after
		// pingsOut pings go unanswered: about a minute, not nats.go's
		// default of four to six.
		nats.PingInterval(pingInterval),
		nats.MaxPingsOutstanding(pingsOut),
		// Appends in flight during a disconnect are resolved by re-reading
		// the stream, so buffering them in the client only delays errors.
		nats.ReconnectBufSize(-1),
	}
	if cfg.InboxPrefix != "" {
		opts = append(opts, nats.CustomInboxPrefix(cfg.InboxPrefix))
	}
	url := cfg.NATSURL
	if srv != nil {
		if cfg.EmbeddedInProcess {
			opts = append(opts, nats.InProcessServer(srv))
		} else {
			url = srv.ClientURL()
		}
	} else {
		if cfg.TLSCAFile != "" {
			opts = append(opts, nats.RootCAs(cfg.TLSCAFile))
		}
		if cfg.TLSCertFile != "" {
			// Loaded here first only to name both files when they do not
			// make a pair (the client's error names neither).
			if _, err := tls.LoadX509KeyPair(cfg.TLSCertFile, cfg.TLSKeyFile); err != nil {
				return nil, fmt.Errorf("eventlog: TLS client certificate %s with key %s: %w", cfg.TLSCertFile, cfg.TLSKeyFile, err)
			}
			opts = append(opts, nats.ClientCert(cfg.TLSCertFile, cfg.TLSKeyFile))
		}
		if cfg.CredsFile != "" {
			opts = append(opts, nats.UserCredentials(cfg.CredsFile))
		}
		if cfg.NKeySeedFile != "" {
			o, err := nats.NkeyOptionFromSeed(cfg.NKeySeedFile)
			if err != nil {
				// The nkeys error never contains the seed.
				return nil, fmt.Errorf("eventlog: nkey seed file %s: %w", cfg.NKeySeedFile, err)
			}
			opts = append(opts, o)
		}
		if cfg.User != "" {
			opts = append(opts, nats.UserInfo(cfg.User, cfg.Password.Reveal()))
		}
		if !cfg.Token.IsZero() {
			opts = append(opts, nats.Token(cfg.Token.Reveal()))
		}
		if cfg.TLSHandshakeFirst {
			opts = append(opts, nats.TLSHandshakeFirst())
		}
	}
	nc, err := nats.Connect(url, append(opts, extra...)...)
	if err != nil {
		return nil, fmt.Errorf("%w at %s: %w%s", ErrConnect, redactURL(url), scrubURLs(err, url), connectCause(err, url, cfg.RequestTimeout))
	}
	return nc, nil
}

// connectCause says more than nats.go does about a failed connect: "no
// servers available" hides the dial's own error (a refused connection, a
// name that does not resolve), and an i/o timeout while waiting for the
// server's INFO is most often a port where something other than NATS
// listens.
func connectCause(err error, urls string, timeout time.Duration) string {
	switch {
	case errors.Is(err, nats.ErrNoServers):
		for _, u := range strings.Split(urls, ",") {
			pu, perr := neturl.Parse(strings.TrimSpace(u))
			if perr != nil || pu.Host == "" {
				continue
			}
			host := pu.Host
			if pu.Port() == "" {
				host = net.JoinHostPort(pu.Hostname(), "4222")
			}
			c, derr := net.DialTimeout("tcp", host, min(timeout, 5*time.Second))
			if derr != nil {
				return fmt.Sprintf(" (%v)", derr)
			}
			c.Close()
		}
	case errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, nats.ErrTimeout):
		return " (the address accepted the connection but sent no NATS greeting: is a NATS server listening there, or something else?)"
	}
	return ""
}

// scrubbedError is an error whose text had the URLs it quoted redacted;
// it unwraps to the original, so errors.Is still finds its sentinels.
type scrubbedError struct {
	msg string
	err error
}

func (e *scrubbedError) Error() string { return e.msg }
func (e *scrubbedError) Unwrap() error { return e.err }

// scrubURLs returns err with every URL of urls (comma-separated) that it
// quotes redacted: the client's error for a URL that does not parse
// quotes it whole, password and all (`parse "nats://u:pw@h": invalid URL
// escape "%zz"`), and so does the parser's own error, in a piece.
func scrubURLs(err error, urls string) error {
	var ue *neturl.Error
	if errors.As(err, &ue) {
		// The parser's own words quote the URL, or a piece of it (the
		// bad escape): say what is wrong without either.
		why := "it does not parse"
		var esc neturl.EscapeError
		var host neturl.InvalidHostError
		switch {
		case errors.As(ue.Err, &esc):
			why = "a '%' in it is not followed by two hex digits (write a '%' in a password as %25)"
		case errors.As(ue.Err, &host):
			why = "its host has a character a host cannot"
		}
		return &scrubbedError{msg: "invalid URL: " + why, err: err}
	}
	msg := err.Error()
	scrubbed := msg
	for _, u := range strings.Split(urls, ",") {
		u = strings.TrimSpace(u)
		at := strings.LastIndexByte(u, '@')
		if at < 0 {
			continue
		}
		scrubbed = strings.ReplaceAll(scrubbed, u, redactURL(u))
		// Whatever is left of the user information (a piece the parser
		// quotes on its own) goes too.
		userinfo := u[:at]
		if k := strings.Index(userinfo, "://"); k >= 0 {
			userinfo = userinfo[k+3:]
		}
		for _, piece := range strings.FieldsFunc(userinfo, func(r rune) bool { return r == ':' }) {
			if len(piece) >= 3 {
				scrubbed = strings.ReplaceAll(scrubbed, piece, "xxxxx")
			}
		}
	}
	if scrubbed == msg {
		return err
	}
	return &scrubbedError{msg: scrubbed, err: err}
}

// checkInbox fails at once, saying why, when the server refuses the
// connection's subscriptions to its reply inboxes (the user may subscribe
// only below another prefix): every request would otherwise wait out
// RequestTimeout for a reply that cannot arrive, and report only that.
// The server answers a refused subscription before the flush's pong.
func checkInbox(nc *nats.Conn, cfg Config) error {
	inbox := nc.NewInbox()
	sub, err := nc.SubscribeSync(inbox)
	if err != nil {
		return fmt.Errorf("eventlog: subscribe to reply inbox %s: %w", inbox, err)
	}
	defer sub.Unsubscribe()
	if err := nc.FlushTimeout(cfg.RequestTimeout); err != nil {
		return fmt.Errorf("%w at %s: no answer within %v: %w", ErrConnect, nc.ConnectedUrlRedacted(), cfg.RequestTimeout, err)
	}
	if err := nc.LastError(); errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), inbox) {
		prefix := cfg.InboxPrefix
		if prefix == "" {
			prefix = nats.InboxPrefix[:len(nats.InboxPrefix)-1] + " (the default)"
		}
		return fmt.Errorf("eventlog: the server does not let this user subscribe to its reply inboxes under %s: %w; set the inbox prefix (Config.InboxPrefix) to one the user may subscribe to", prefix, err)
	}
	return nil
}

// redactURL hides credentials embedded in NATS URLs (nats://user:pw@host or
// nats://token@host); it works on each comma-separated URL without parsing,
// so a malformed URL still comes out redacted.
func redactURL(u string) string {
	parts := strings.Split(u, ",")
	for i, p := range parts {
		at := strings.LastIndexByte(p, '@')
		if at < 0 {
			continue
		}
		scheme := 0
		if k := strings.Index(p, "://"); k >= 0 && k < at {
			scheme = k + 3
		}
		if c := strings.IndexByte(p[scheme:at], ':'); c >= 0 {
			parts[i] = p[:scheme+c+1] + redacted + p[at:]
		} else {
			parts[i] = p[:scheme] + redacted + p[at:]
		}
	}
	return strings.Join(parts, ",")
}

// listenAddr returns the embedded server's client address, or "" when it
// does not listen.
func listenAddr(srv *server.Server) string {
	if srv == nil {
		return ""
	}
	if a, ok := srv.Addr().(*net.TCPAddr); ok {
		return a.String()
	}
	return ""
}
