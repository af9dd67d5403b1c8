package engine

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/telemetry"
	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"
)

// Deciding an append: an operation whose append went unanswered (a
// timeout, a reconnect, a stream leader lost mid-request) may have stored
// its events, so its output must not be dropped while they are durable nor
// returned while they are not. It appends the same events again (the same
// message ids, which Append never stores twice) until the server answers.

// decideAppend appends evs, one aggregate's events, at expected and does
// not return before the outcome is known: stored (by this try or an
// earlier one, which Append finds by message id and reports with
// Duplicate set), eventlog.ErrConflict (also after a lost answer: the
// aggregate's event at expected+1 is not one of evs), or refused. A try
// whose answer is lost may have stored the events; one that finds the
// stream without a leader (nats.ErrNoResponders, a JetStream API answer
// with status 503, such as 10008 "JetStream system temporarily
// unavailable") stored nothing. Both are tried again with the same events
// (evs keep their time, so their message ids stay the same), after a
// pause (outcomeBackoff), until ctx ends or, when limit is positive, limit
// has passed: then the error wraps ErrOutcomeUnknown if a try went
// unanswered, and is the last try's otherwise.
func decideAppend(ctx context.Context, l *eventlog.Log, expected uint64, evs []events.Event, limit time.Duration) ([]eventlog.Appended, error) {
	return decideAppendFrom(ctx, l, expected, evs, limit, false)
}

// decideAppendFrom is decideAppend for events that an earlier append (a
// bulk) may have sent already when sent is set: then even an append
// that sends nothing more fails with ErrOutcomeUnknown.
func decideAppendFrom(ctx context.Context, l *eventlog.Log, expected uint64, evs []events.Event, limit time.Duration, sent bool) ([]eventlog.Appended, error) {
	start := time.Now()
	// sent: an earlier try went unanswered, so it may have landed.
	undecided := func(err error) error {
		if sent {
			return fmt.Errorf("%w: %w", ErrOutcomeUnknown, err)
		}
		return err
	}
	for attempt := 0; ; attempt++ {
		res, err := appendOnce(ctx, l, expected, evs)
		switch {
		case err == nil, errors.Is(err, eventlog.ErrConflict):
			return res, err
		case ctx.Err() != nil:
			// The try was cancelled with ctx, or failed as ctx ended; a
			// try that found ctx ended sent nothing.
			sent = sent || eventlog.Unanswered(err) && !errors.Is(err, errNotSent)
			return nil, undecided(fmt.Errorf("%w (last try: %v)", ctx.Err(), err))
		case errors.Is(err, eventlog.ErrClosed), errors.Is(err, nats.ErrConnectionClosed):
			// Closed under the try, which may have been sent and stored
			// (Unanswered holds: the connection closed while the
			// PubAck was awaited); a Log closed before it sent nothing.
			sent = sent || eventlog.Unanswered(err)
			return nil, undecided(err)
		case !failedOver(err):
			// Refused: this try stored nothing. A refusal the server
			// answered, or one that no try could have passed (an event
			// too large), also says that no earlier try stored the events:
			// one stored would have been answered as a duplicate (same
			// message ids, within the stream's duplicate window), or
			// found at the aggregate's tail, which Append reads first;
			// but for a refusal for storage (see answered).
			if answered(err) {
				return nil, err
			}
			return nil, undecided(err)
		}
		sent = sent || eventlog.Unanswered(err)
		if limit > 0 && time.Since(start) >= limit {
			return nil, undecided(fmt.Errorf("no answer for %v (%d tries): %w", time.Since(start).Round(time.Millisecond), attempt+1, err))
		}
		reason := telemetry.RetryNoLeader
		if eventlog.Unanswered(err) {
			reason = telemetry.RetryLostAnswer
		}
		l.Metrics().Retry(reason)
		l.Logger().Warn("engine: append unanswered; sending the same events again",
			append(aggAttrs(l, evs), "reason", reason, "attempt", attempt+1, "err", err)...)
		select {
		case <-time.After(outcomeBackoff(attempt)):
		case <-ctx.Done():
			return nil, undecided(fmt.Errorf("%w (last try: %v)", ctx.Err(), err))
		}
	}
}

// answered reports whether err is the server's answer to an append
// (a JetStream API error: a full stream, a rule of the stream) or the
// client's refusal of an event larger than max_payload, of an erased
// installation's or of one dated in a period retention shredded, which
// every try meets the same way. A refusal for the server's or the account's
// storage is not: on a cluster nats-server checks those before the
// message id (processClusteredInboundMsg), so it refuses so a try whose
// earlier try is still being replicated, and stored after.
func answered(err error) bool {
	var ae *jetstream.APIError
	if errors.As(err, &ae) {
		switch ae.ErrorCode {
		case codeAccountResources, codeInsufficientResources, codeStorageResources:
			return false
		}
		return true
	}
	// An erased installation's events, and events dated in a period
	// retention shredded, are refused before they are sent (they cannot
	// be sealed), by every try, and whatever an earlier try stored is
	// unreadable for good (its history erased, its period's key gone):
	// the append is over, and unknown would have the caller try again
	// for good.
	return errors.Is(err, eventlog.ErrEventTooLarge) || errors.Is(err, eventlog.ErrErased) || errors.Is(err, eventlog.ErrRetainedOut)
}

// JetStream API error codes of a refusal for the server's or the
// account's storage (nats-server errors.json).
const (
	codeAccountResources      jetstream.ErrorCode = 10002 // JSAccountResourcesExceededErr
	codeInsufficientResources jetstream.ErrorCode = 10023 // JSInsufficientResourcesErr
	codeStorageResources      jetstream.ErrorCode = 10047 // JSStorageResourcesExceededErr
)

// appendOnce is one try of an append. It runs on ctx without ctx's
// deadline, cancelled when ctx ends: nats.go then bounds each request of
// the try by the Log's RequestTimeout (its default timeout), where under
// ctx's deadline a publish that went down with the stream leader would
// wait out all of ctx, leaving no time to try again.
func appendOnce(ctx context.Context, l *eventlog.Log, expected uint64, evs []events.Event) ([]eventlog.Appended, error) {
	if err := ctx.Err(); err != nil {
		// AfterFunc below would cancel the append only after it began:
		// a publish sent on an ended context could land after the
		// caller's CatchUp found it missing.
		return nil, fmt.Errorf("%w: %w", errNotSent, err)
	}
	actx, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	defer context.AfterFunc(ctx, cancel)()
	return l.Append(actx, expected, evs...)
}

// errNotSent marks a try that found its context ended and sent nothing.
var errNotSent = errors.New("engine: append not sent")

// failedOver reports whether an append failed in a way a failover
// explains, so that trying again may succeed: no answer
// (eventlog.Unanswered: a timeout, a reconnect, the cluster's in-flight
// state), nobody to take the publish (nats.ErrNoResponders, which nats.go
// reports as jetstream.ErrNoStreamResponse), or the server's answer that
// the stream or JetStream has no leader right now (status 503: 10008
// JSClusterNotAvailErr, 10076 and 10039 on a node still starting; 10009,
// 10118). A stream without room (eventlog.ErrStreamFull, also status
// 503) is an answer: trying again fails the same way until an operator
// makes room.
func failedOver(err error) bool {
	if errors.Is(err, eventlog.ErrStreamFull) {
		return false
	}
	if eventlog.Unanswered(err) || errors.Is(err, nats.ErrNoResponders) || errors.Is(err, jetstream.ErrNoStreamResponse) {
		return true
	}
	var ae *jetstream.APIError
	if !errors.As(err, &ae) {
		return false
	}
	return ae.Code == 503 || ae.ErrorCode == codeClusterNotLeader || ae.ErrorCode == codeStreamOffline
}

// outcomeBackoff is the pause before deciding an unanswered append again
// (attempt from 0): 50 ms, doubling, at most 1.6 s.
func outcomeBackoff(attempt int) time.Duration {
	return 50 * time.Millisecond << min(attempt, 5)
}
