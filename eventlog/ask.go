package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// JetStream API error codes of a stream without a leader for the moment
// (nats-server errors.json); every answer with status 503 is one too:
// 10008 JSClusterNotAvailErr ("JetStream system temporarily unavailable",
// the answer while the stream's or the meta group has no leader), 10076
// and 10039 (JetStream not yet enabled on a node that is starting).
const (
	codeNotLeader     jetstream.ErrorCode = 10009 // JSClusterNotLeaderErr
	codeOffline       jetstream.ErrorCode = 10118 // JSStreamOfflineErr
	codeOfflineReason jetstream.ErrorCode = 10194 // JSStreamOfflineReasonErrF
	// codeNoPeers (JSClusterNoPeersErrF) is an answer, not a leaderless
	// moment: too few peers are online and current for a stream's
	// replicas. Creating a stream waits it out (createStream).
	codeNoPeers jetstream.ErrorCode = 10005
)

// unanswered reports whether a failed request may succeed when asked
// again. Without an answer of the JetStream API the request had no answer
// at all: its bound passed (context.DeadlineExceeded: the leader died
// with the request, or an election is under way), nobody took it
// (nats.ErrNoResponders: the node restarts), or the connection moved to
// another node (nats.ErrDisconnected, nats.ErrConnectionReconnecting,
// ...). An answer stands (stream not found, message not found, bad
// request), except the leaderless ones.
func unanswered(err error) bool {
	// The key-value client's answers that carry no API error: the
	// bucket's stream was answered not found, or not a bucket; the key
	// not found, or deleted.
	for _, answer := range []error{jetstream.ErrBucketNotFound, jetstream.ErrBadBucket, jetstream.ErrInvalidBucketName,
		jetstream.ErrKeyNotFound, jetstream.ErrKeyDeleted} {
		if errors.Is(err, answer) {
			return false
		}
	}
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return true
	}
	switch ae.ErrorCode {
	case codeNotLeader, codeOffline, codeOfflineReason:
		return true
	}
	return ae.Code == 503
}

// NotServedError is a request askAgain made that JetStream left
// unanswered, or refused for want of a leader, until its bound: the
// stream, bucket or consumer it was about, or the cluster's meta group,
// had no leader all along. An append its stream's leader kept refusing
// as in process (stored there, not replicated) until its bound carries
// one too. On a cluster that is what a lost quorum
// looks like (a majority of its nodes down or cut off): the node the
// client reaches answers the connection but cannot serve JetStream. Err
// is the last try's error (a deadline, no responders, a status 503).
type NotServedError struct {
	Took  time.Duration
	Tries int
	Err   error
}

func (e *NotServedError) Error() string {
	return fmt.Sprintf("JetStream did not serve the request for %v (%d tries: no answer, no leader to answer, or one that could not replicate; on a cluster, check that a majority of the cluster's nodes are up and connected): %v",
		e.Took.Round(time.Millisecond), e.Tries, e.Err)
}

func (e *NotServedError) Unwrap() error { return e.Err }

// firstTry bounds the first try of a request askAgain makes; each later
// try gets twice the last one's bound, so a slow answer still arrives.
const firstTry = time.Second

// askAgain makes an idempotent JetStream API request (a stream's info, a
// message get) until it has an answer, within ctx's deadline (or
// Config.RequestTimeout when ctx has none: the bound one request had). A
// cluster that cannot serve a request for a moment (its meta or stream
// leader died with it, an election is under way) drops it unanswered:
// asked once, the request waited out the whole timeout and failed, while
// the cluster answered again within seconds (seen when a meta leader was
// shut down: the next stream info or message get of a Log timed out, the
// one after answered at once). Each try is bounded, the first by
// firstTry, and one left unanswered, or refused for want of a leader, is
// asked again, after a short pause when the refusal was immediate. The
// last error is returned as the request made it.
func askAgain[T any](ctx context.Context, l *Log, req func(context.Context) (T, error)) (T, error) {
	// The bound a single request had: ctx's deadline, or (as the
	// jetstream client's default timeout) the request timeout.
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(l.cfg.RequestTimeout)
	}
	bound := firstTry
	first := time.Now()
	for attempt := 0; ; attempt++ {
		start := time.Now()
		tryEnd := start.Add(bound)
		if tryEnd.After(deadline) {
			tryEnd = deadline
		}
		tctx, cancel := context.WithDeadline(ctx, tryEnd)
		v, err := req(tctx)
		cancel()
		if err == nil || errors.Is(ctx.Err(), context.Canceled) || l.closed.Load() || errors.Is(err, nats.ErrConnectionClosed) ||
			!unanswered(err) {
			return v, err
		}
		if ctx.Err() != nil || !time.Now().Before(deadline) {
			return v, &NotServedError{Took: time.Since(first), Tries: attempt + 1, Err: err}
		}
		l.logger.Debug("eventlog: request unanswered; asking again", "stream", l.cfg.Stream, "attempt", attempt+1, "err", err)
		// A refusal that came back at once (no responders, no leader yet)
		// waits a little before the next try; a try that used its bound
		// has waited already.
		if time.Since(start) < bound/2 {
			pause := min(50*time.Millisecond<<min(attempt, 4), time.Until(deadline))
			select {
			case <-ctx.Done():
				if errors.Is(ctx.Err(), context.Canceled) {
					return v, err
				}
				return v, &NotServedError{Took: time.Since(first), Tries: attempt + 1, Err: err}
			case <-time.After(pause):
			}
		}
		bound *= 2
	}
}

// getMsg is the stream's message get, asked again while unanswered
// (askAgain).
func (l *Log) getMsg(ctx context.Context, seq uint64, opts ...jetstream.GetMsgOpt) (*jetstream.RawStreamMsg, error) {
	return askAgain(ctx, l, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return l.stream.GetMsg(ctx, seq, opts...)
	})
}

// getLastMsg is the stream's last message on subject, asked again while
// unanswered (askAgain).
func (l *Log) getLastMsg(ctx context.Context, subject string) (*jetstream.RawStreamMsg, error) {
	return askAgain(ctx, l, func(ctx context.Context) (*jetstream.RawStreamMsg, error) {
		return l.stream.GetLastMsgForSubject(ctx, subject)
	})
}

// streamInfo is the stream's info, asked again while unanswered
// (askAgain).
func (l *Log) streamInfo(ctx context.Context, opts ...jetstream.StreamInfoOpt) (*jetstream.StreamInfo, error) {
	return askAgain(ctx, l, func(ctx context.Context) (*jetstream.StreamInfo, error) {
		return l.stream.Info(ctx, opts...)
	})
}

// orderedConsumer creates an ordered consumer on the stream, asked again
// while unanswered (askAgain): creating one needs the cluster's meta
// leader. A try that timed out may have created a consumer whose answer
// was lost; the server reaps it after its inactive threshold.
func (l *Log) orderedConsumer(ctx context.Context, cfg jetstream.OrderedConsumerConfig) (jetstream.Consumer, error) {
	return askAgain(ctx, l, func(ctx context.Context) (jetstream.Consumer, error) {
		return l.stream.OrderedConsumer(ctx, cfg)
	})
}
