// Package serverready waits for an in-process nats-server to take
// clients, and says why when it will not. A server that cannot listen on
// its address (taken, or not this host's) reports it only to its logger
// (with NoLog, to nobody) and then never gets ready: waiting for
// readiness alone turns a port in use into a timeout that names nothing.
package serverready

import (
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/nats-io/nats-server/v2/server"
)

// ErrListen is Wait's answer when the server could not listen on an
// address it was given (in use, or not one of this host's).
var ErrListen = errors.New("cannot listen")

// Start starts srv and waits up to timeout until it takes clients. It
// sets srv's logger, which keeps the first fatal error and drops every
// other record (as NoLog would): a listen failure is returned at once,
// wrapping ErrListen and saying what the server said. On any error the
// server is shut down.
func Start(srv *server.Server, timeout time.Duration) error {
	fatal := &fatalLogger{said: make(chan string, 1)}
	srv.SetLogger(fatal, false, false)
	go srv.Start()
	err := wait(srv, fatal.said, timeout)
	if err != nil {
		srv.Shutdown()
		srv.WaitForShutdown()
	}
	return err
}

func wait(srv *server.Server, fatal <-chan string, timeout time.Duration) error {
	for deadline := time.Now().Add(timeout); time.Now().Before(deadline); {
		if srv.ReadyForConnections(50 * time.Millisecond) {
			return nil
		}
		select {
		case msg := <-fatal:
			if strings.Contains(msg, "Error listening") {
				return fmt.Errorf("%w: %s", ErrListen, msg)
			}
			return errors.New(msg)
		default:
		}
	}
	return fmt.Errorf("not ready after %v", timeout)
}

// fatalLogger keeps a server's first fatal error and drops the rest.
type fatalLogger struct{ said chan string }

func (l *fatalLogger) Fatalf(format string, v ...any) {
	select {
	case l.said <- fmt.Sprintf(format, v...):
	default:
	}
}
func (*fatalLogger) Noticef(string, ...any) {}
func (*fatalLogger) Warnf(string, ...any)   {}
func (*fatalLogger) Errorf(string, ...any)  {}
func (*fatalLogger) Debugf(string, ...any)  {}
func (*fatalLogger) Tracef(string, ...any)  {}
