package events

import (
	"errors"
	"fmt"
	"math"
)

// ErrQueueRule means a delivery event breaks the rules of its queue (see
// [QueueState]): an enqueued sequence that is not the next one, an
// acknowledgement beyond the last enqueued sequence, the expiry of a
// message that is not pending, or a body that is no delivery event. The
// wrapping error names the rule and the sequences, never a payload.
var ErrQueueRule = errors.New("events: delivery event breaks its queue's rules")

// QueueState is what the rules of one delivery queue need to know of its
// history: the events of one [AggDelivery] aggregate, that is one
// (recipient, channel) pair. The zero value is a queue where nothing was
// enqueued yet. It is the one fold of those rules: the read model and the
// delivery service both step it with [QueueState.Next], so that what one
// accepts the other accepts too.
//
// The rules, one per event kind:
//
//   - delivery.enqueued: Sequence must be LastSeq+1 (sequences are 1-based
//     and contiguous: no gap, no repeat). LastSeq becomes Sequence.
//   - delivery.acknowledged: acknowledges every message up to and including
//     UpTo. UpTo must not exceed LastSeq, and a queue where nothing was
//     enqueued accepts no acknowledgement at all (not even up to 0).
//     Acknowledgements are cumulative: one at or below AckedUpTo is
//     accepted and changes nothing; a higher one moves AckedUpTo to UpTo.
//   - delivery.expired: Sequence must be pending as far as the counters
//     tell: enqueued (1 <= Sequence <= LastSeq) and not acknowledged
//     (Sequence > AckedUpTo). The counters do not change.
//
// Left to the stores, because they need more than two counters:
//
//   - A message expires at most once. A store that keeps each message's
//     state (the read model's deliveries rows, the service's pending set)
//     must refuse a second expiry of the same sequence, also as
//     ErrQueueRule.
//   - Idempotency keys: the service returns the first enqueue's sequence
//     for a repeated key and appends nothing; the read model refuses an
//     event that repeats a key used on any queue of its installation.
//   - Positions: every reader checks that an aggregate's positions are
//     contiguous, for every aggregate type alike, before the body is
//     looked at.
type QueueState struct {
	// LastSeq is the last enqueued sequence; 0 when nothing was enqueued.
	LastSeq uint64
	// AckedUpTo is the highest acknowledged sequence: every message up to
	// it is acknowledged (or had expired before). Never above LastSeq.
	AckedUpTo uint64
}

// Next checks one delivery event body (a [DeliveryEnqueued],
// [DeliveryAcknowledged] or [DeliveryExpired], or a pointer to one)
// against the rules of the queue at s and returns the queue's state after
// it. An event the rules refuse returns s unchanged and an error wrapping
// [ErrQueueRule]. Next has no side effects.
func (s QueueState) Next(b Body) (QueueState, error) {
	switch b := b.(type) {
	case DeliveryEnqueued:
		return s.enqueued(b.Sequence)
	case *DeliveryEnqueued:
		if b != nil {
			return s.enqueued(b.Sequence)
		}
	case DeliveryAcknowledged:
		return s.acknowledged(b.UpTo)
	case *DeliveryAcknowledged:
		if b != nil {
			return s.acknowledged(b.UpTo)
		}
	case DeliveryExpired:
		return s.expired(b.Sequence)
	case *DeliveryExpired:
		if b != nil {
			return s.expired(b.Sequence)
		}
	}
	return s, fmt.Errorf("%w: %T is not a delivery event", ErrQueueRule, b)
}

func (s QueueState) enqueued(seq uint64) (QueueState, error) {
	if s.LastSeq == math.MaxUint64 {
		return s, fmt.Errorf("%w: enqueue sequence %d: the queue's sequences are exhausted", ErrQueueRule, seq)
	}
	if seq != s.LastSeq+1 {
		return s, fmt.Errorf("%w: enqueue sequence %d after %d (sequences are contiguous)", ErrQueueRule, seq, s.LastSeq)
	}
	s.LastSeq = seq
	return s, nil
}

func (s QueueState) acknowledged(upTo uint64) (QueueState, error) {
	switch {
	case s.LastSeq == 0:
		return s, fmt.Errorf("%w: acknowledgement up to %d: nothing was ever enqueued", ErrQueueRule, upTo)
	case upTo > s.LastSeq:
		return s, fmt.Errorf("%w: acknowledgement up to %d: only %d enqueued", ErrQueueRule, upTo, s.LastSeq)
	case upTo > s.AckedUpTo:
		s.AckedUpTo = upTo
	}
	return s, nil
}

func (s QueueState) expired(seq uint64) (QueueState, error) {
	switch {
	case seq == 0 || seq > s.LastSeq:
		return s, fmt.Errorf("%w: expire sequence %d: never enqueued (last enqueued %d)", ErrQueueRule, seq, s.LastSeq)
	case seq <= s.AckedUpTo:
		return s, fmt.Errorf("%w: expire sequence %d: already acknowledged (up to %d)", ErrQueueRule, seq, s.AckedUpTo)
	}
	return s, nil
}
