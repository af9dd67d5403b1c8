package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/nats-io/nats.go/jetstream"
)

// Pending is how far behind a read model of installation inst stands
// whose checkpoint is stream sequence after.
type Pending struct {
	// Events counts the installation's events with a stream sequence
	// greater than the checkpoint: what the read model has not applied.
	Events uint64
	// Oldest is when the first of those events was stored on the stream
	// (the server's timestamp); zero when Events is 0.
	Oldest time.Time
	// StreamLast is the stream sequence of the installation's last event
	// (0 if it has none): the checkpoint of a read model that is caught
	// up. It may be below the checkpoint asked about (a checkpoint from
	// another stream, or events lost: see replay.ErrBehind).
	StreamLast uint64
}

// Pending reports how many of inst's events follow stream sequence after,
// and how old the first of them is: the lag of a read model whose
// checkpoint is after. The whole call is bounded by Config.RequestTimeout.
//
// It costs one message get when nothing is pending (the installation's last
// event), one more for the oldest pending event, and, when more than one
// event is pending, a short-lived consumer on the installation's subjects
// whose creation answers with the count (deleted at once; the server reaps
// it after 30 s if the delete is lost). Call it per batch or per poll, not
// per event.
func (l *Log) Pending(ctx context.Context, inst events.InstallationID, after uint64) (Pending, error) {
	var p Pending
	if l.closed.Load() {
		return p, ErrClosed
	}
	filter, err := l.InstallationFilter(inst)
	if err != nil {
		return p, err
	}
	ctx, cancel := context.WithTimeout(ctx, l.cfg.RequestTimeout)
	defer cancel()
	fail := func(what string, err error) (Pending, error) {
		return Pending{}, fmt.Errorf("eventlog: stream %s: events of %s pending after seq %d: %s: %w", l.cfg.Stream, inst, after, what, err)
	}
	last, err := l.getLastMsg(ctx, filter)
	if errors.Is(err, jetstream.ErrMsgNotFound) {
		return p, nil
	}
	if err != nil {
		return fail("last event", err)
	}
	p.StreamLast = last.Sequence
	if last.Sequence <= after {
		return p, nil
	}
	first, err := l.getMsg(ctx, after+1, jetstream.WithGetMsgSubject(filter))
	if err != nil {
		// Not even jetstream.ErrMsgNotFound is expected: the last event
		// follows after.
		return fail("first pending event", err)
	}
	p.Oldest = first.Time
	if first.Sequence == last.Sequence {
		p.Events = 1
		return p, nil
	}
	// The server counts a new consumer's pending messages when it creates
	// it; the consumer itself is never read from.
	cons, err := l.stream.CreateConsumer(ctx, jetstream.ConsumerConfig{
		FilterSubject:     filter,
		DeliverPolicy:     jetstream.DeliverByStartSequencePolicy,
		OptStartSeq:       first.Sequence,
		AckPolicy:         jetstream.AckNonePolicy,
		InactiveThreshold: consumerInactiveThreshold,
		MemoryStorage:     true,
		Replicas:          1,
	})
	if err != nil {
		return fail("count", err)
	}
	info := cons.CachedInfo()
	defer func() {
		// Best effort, like a read's consumer (deleteConsumer).
		dctx, dcancel := context.WithTimeout(context.Background(), l.cfg.RequestTimeout)
		defer dcancel()
		_ = l.stream.DeleteConsumer(dctx, info.Name)
	}()
	// At least the two events seen above (more may have come since).
	p.Events = max(info.NumPending, 2)
	return p, nil
}
