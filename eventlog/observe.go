package eventlog

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"strings"
	"time"

	"github.com/epochlog/epochlog/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// What the Log tells an operator (docs/observability.md): the connection
// going down and up, the stream's leader elections, retried and conflicting
// appends, stalled reads, through Config.Logger and Config.Metrics.

// connHandlers are the client options that report the connection's life:
// lost (Warn, with the error), regained (Info, naming the server without
// userinfo), closed (Info), and asynchronous errors (Debug; a permission
// refused on the leader advisories is expected on a restricted account).
func (l *Log) connHandlers() []nats.Option {
	m := l.cfg.Metrics
	return []nats.Option{
		nats.DisconnectErrHandler(func(nc *nats.Conn, err error) {
			// The PubAcks AppendBulk waits for are lost with the
			// connection: its publishes are appended again, at once.
			l.acks.failAll(nats.ErrDisconnected)
			if l.closed.Load() || nc.IsClosed() {
				return // Close, not a loss: ClosedHandler says it
			}
			m.Disconnected()
			l.logger.Warn("eventlog: NATS connection lost; reconnecting", "stream", l.cfg.Stream, "err", err)
		}),
		nats.ReconnectHandler(func(nc *nats.Conn) {
			m.Reconnected()
			l.logger.Info("eventlog: NATS connection regained", "stream", l.cfg.Stream,
				"server", stripUserinfo(nc.ConnectedUrl()), "server_name", nc.ConnectedServerName())
			// An election while this client was reconnecting (often the
			// one its own server's loss caused) sent its advisory to no
			// one here: ask the stream who leads now.
			go l.checkLeader()
		}),
		nats.ClosedHandler(func(*nats.Conn) {
			l.acks.failAll(nats.ErrConnectionClosed)
			// Close records its own closing, before it returns: this
			// handler runs on nats.go's goroutine, possibly after Close
			// returned and the caller moved on from the logger's output.
			if l.closed.Load() {
				return
			}
			m.Connected(false)
			l.logger.Info("eventlog: NATS connection closed", "stream", l.cfg.Stream)
		}),
		// The library never writes to the process's stderr (nats.go's
		// default handler does): an asynchronous error (say, a stored
		// message whose headers do not decode) surfaces where it matters,
		// as the read that does not get its record.
		nats.ErrorHandler(func(_ *nats.Conn, _ *nats.Subscription, err error) {
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), l.leaderAdvisory()) {
				l.logger.Debug("eventlog: no permission to follow the stream's leader elections; not counted", "stream", l.cfg.Stream, "err", err)
				return
			}
			if errors.Is(err, nats.ErrPermissionViolation) && strings.Contains(err.Error(), l.updateAdvisory()) {
				l.logger.Debug("eventlog: no permission to follow the stream's configuration updates; checked after reconnects only", "stream", l.cfg.Stream, "err", err)
				return
			}
			l.logger.Debug("eventlog: NATS asynchronous error", "stream", l.cfg.Stream, "err", err)
		}),
	}
}

// leaderAdvisory is the subject on which JetStream announces a new leader of
// the log's stream.
func (l *Log) leaderAdvisory() string {
	return "$JS.EVENT.ADVISORY.STREAM.LEADER_ELECTED." + l.cfg.Stream
}

// followLeader subscribes to the stream's leader elections: each one
// counts (telemetry.Metrics.LeaderChanged) and is logged at Warn, naming
// the new leader. A replicated stream elects one when its leader's server
// stops or steps down; a single server never does. Without permission to
// subscribe (a restricted account) the server refuses asynchronously (see
// connHandlers) and nothing is counted; Open does not fail for it.
//
// The advisory reaches only connected clients: after a reconnect the Log
// asks the stream for its leader (checkLeader), so an election it missed
// still counts once. A leader re-elected (the same server again) is not a
// change and is not counted.
func (l *Log) followLeader() {
	if info := l.stream.CachedInfo(); info != nil && info.Cluster != nil {
		l.leaderChanged(info.Cluster.Leader, "")
	}
	_, err := l.nc.Subscribe(l.leaderAdvisory(), func(msg *nats.Msg) {
		var adv struct {
			Stream string `json:"stream"`
			Leader string `json:"leader"`
		}
		if err := json.Unmarshal(msg.Data, &adv); err != nil {
			l.logger.Debug("eventlog: undecodable stream leader advisory", "stream", l.cfg.Stream, "err", err)
			return
		}
		l.leaderChanged(adv.Leader, "eventlog: stream leader elected")
	})
	if err != nil {
		l.logger.Debug("eventlog: cannot follow the stream's leader elections", "stream", l.cfg.Stream, "err", err)
	}
}

// checkLeader asks the stream for its current leader (bounded by
// RequestTimeout) and counts a change an advisory did not bring.
func (l *Log) checkLeader() {
	if l.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.RequestTimeout)
	defer cancel()
	info, err := l.streamInfo(ctx)
	if err != nil {
		l.logger.Debug("eventlog: cannot ask the stream for its leader after a reconnect", "stream", l.cfg.Stream, "err", err)
		return
	}
	if info.Cluster != nil {
		l.leaderChanged(info.Cluster.Leader, "eventlog: stream leader changed while reconnecting")
	}
	// An edit while this client was away sent its advisory to no one here.
	l.noteConfig(info.Config)
}

// updateAdvisory is the subject on which JetStream announces a change of
// the log's stream's configuration.
func (l *Log) updateAdvisory() string {
	return "$JS.EVENT.ADVISORY.STREAM.UPDATED." + l.cfg.Stream
}

// watchConfig subscribes to the stream's configuration updates (an
// operator's `nats stream edit`, another process's Open) and checks each
// as Open checks an existing stream (compatible): a stream edited, while
// this Log runs, to drop or hide events (a per-subject limit, a subject
// transform, discard old with a limit, another retention) fails every
// append with ErrIncompatibleStream, logged once at Error, until it is
// edited back. Open alone would notice only at the next restart, and
// appends meanwhile would be acknowledged and then dropped. Without
// permission to subscribe the check runs after reconnects only.
func (l *Log) watchConfig() {
	_, err := l.nc.Subscribe(l.updateAdvisory(), func(*nats.Msg) { go l.recheckConfig() })
	if err != nil {
		l.logger.Debug("eventlog: cannot follow the stream's configuration updates", "stream", l.cfg.Stream, "err", err)
	}
}

// recheckConfig reads the stream's configuration (bounded by
// RequestTimeout) and notes it (noteConfig).
func (l *Log) recheckConfig() {
	if l.closed.Load() {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), l.cfg.RequestTimeout)
	defer cancel()
	info, err := l.streamInfo(ctx)
	if l.closed.Load() {
		// Closed meanwhile: its caller may have moved on from the
		// logger's output.
		return
	}
	if err != nil {
		l.logger.Warn("eventlog: the stream's configuration changed and cannot be read back to check it", "stream", l.cfg.Stream, "err", err)
		return
	}
	l.noteConfig(info.Config)
}

// noteConfig checks have, the stream's configuration as read now, and
// refuses appends while it would drop or hide events.
func (l *Log) noteConfig(have jetstream.StreamConfig) {
	err := compatible(have, l.cfg.streamConfig())
	if err == nil {
		if l.edited.Swap(nil) != nil {
			l.logger.Info("eventlog: the stream's configuration is fit again; appends go on", "stream", l.cfg.Stream)
		}
		return
	}
	err = fmt.Errorf("eventlog: stream %s was edited while this log runs, and appends are refused until it is edited back: %w", l.cfg.Stream, err)
	if l.edited.Swap(&err) == nil {
		l.logger.Error("eventlog: the stream's configuration would drop or hide events; appends refused", "stream", l.cfg.Stream, "err", err)
	}
}

// leaderChanged records leader as the stream's leader; when it differs
// from the one known before (and one was known), the change counts and is
// logged at Warn with msg. An empty msg only records the first leader.
func (l *Log) leaderChanged(leader, msg string) {
	if leader == "" {
		return
	}
	l.leaderMu.Lock()
	prev := l.leader
	l.leader = leader
	l.leaderMu.Unlock()
	if prev == leader || msg == "" {
		return
	}
	l.cfg.Metrics.LeaderChanged()
	l.logger.Warn(msg, "stream", l.cfg.Stream, "leader", leader, "previous", prev)
}

// stripUserinfo drops user, password or token from a server URL before it
// is logged; what does not parse is redacted like an error's URL.
func stripUserinfo(u string) string {
	p, err := url.Parse(u)
	if err != nil || p.Host == "" {
		return redactURL(u)
	}
	p.User = nil
	return p.String()
}

// logStalled logs a read that ended with ErrStalled (an operator must look:
// the server does not answer, or the stream holds an event it cannot
// deliver), and returns err.
func (l *Log) logStalled(err error, inst string) error {
	if errors.Is(err, ErrStalled) {
		l.logger.Error("eventlog: read stalled", "stream", l.cfg.Stream, "installation", inst, "err", err)
	}
	return err
}

// countAppended counts a successful append's events by kind, and how long
// it took from its first send.
func (l *Log) countAppended(p *prepared, took time.Duration) {
	m := l.cfg.Metrics
	if m == nil {
		return
	}
	for _, k := range p.kinds {
		m.Appended(k, 1)
	}
	m.AppendTook(took)
}

// retryReason classifies an append that failed for want of an answer, for
// telemetry's retry counter: the answer was lost (RetryLostAnswer: a
// timeout, a reconnect) or nobody could answer (RetryNoLeader: no
// responders, or JetStream's "no leader right now"). Anything else is "".
func retryReason(err error) string {
	const (
		codeNotLeader jetstream.ErrorCode = 10009 // JSClusterNotLeaderErr
		codeOffline   jetstream.ErrorCode = 10118 // JSStreamOfflineErr
	)
	var ae *jetstream.APIError
	switch {
	case errors.Is(err, nats.ErrNoResponders), errors.Is(err, jetstream.ErrNoStreamResponse):
		return telemetry.RetryNoLeader
	case errors.As(err, &ae) && (ae.Code == 503 || ae.ErrorCode == codeNotLeader || ae.ErrorCode == codeOffline):
		return telemetry.RetryNoLeader
	case Unanswered(err), errors.Is(err, jetstream.ErrAsyncPublishTimeout):
		return telemetry.RetryLostAnswer
	}
	return ""
}

// appendAttrs are the attributes of an append's log records.
func appendAttrs(stream string, p *prepared) []any {
	return []any{slog.String("stream", stream), slog.String("installation", string(p.agg.Installation)),
		slog.String("aggregate", string(p.agg.Type)), slog.String("kind", p.kinds[0]), slog.Int("events", len(p.kinds))}
}
