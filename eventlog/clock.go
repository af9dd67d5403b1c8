package eventlog

import (
	"context"
	"errors"
	"fmt"
	"time"
)

// ErrClockAhead means this process's clock is ahead of the NATS
// server's by more than MaxClockAhead: an operation that destroys by age
// (retention, compaction by stored time) refuses to run on it.
var ErrClockAhead = errors.New("eventlog: this process's clock is ahead of the server's")

// MaxClockAhead is how far this process's clock may run ahead of the
// server's for CheckClock. The check's round trip only makes the server's
// answer later than the local reading, never earlier, so the bound need
// not allow for it.
const MaxClockAhead = time.Minute

// CheckClock returns an error wrapping ErrClockAhead when now (this
// process's clock, read before the call) is more than MaxClockAhead
// after the server's clock, as the server stamps its answer to a stream
// info request. Ages are measured on the local clock: one far ahead
// (wrong by hand, a VM restored with a bad clock) would make every day
// old enough to shred. A clock behind is not refused: it destroys less.
// A server that stamps no time (older than 2.10) is not checked.
func (l *Log) CheckClock(ctx context.Context, now time.Time) error {
	info, err := l.streamInfo(ctx)
	if err != nil {
		return fmt.Errorf("eventlog: stream %s: read the server's clock: %w", l.cfg.Stream, err)
	}
	server := info.TimeStamp
	if server.IsZero() {
		return nil
	}
	if ahead := now.Sub(server); ahead > MaxClockAhead {
		return fmt.Errorf("%w: this process's clock reads %s, the server of stream %s answered at %s (%s ahead, at most %s allowed): set this machine's clock right",
			ErrClockAhead, now.UTC().Format(time.RFC3339), l.cfg.Stream, server.UTC().Format(time.RFC3339), ahead.Round(time.Second), MaxClockAhead)
	}
	return nil
}
