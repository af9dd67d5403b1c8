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

// ErrClockBehind means this process's clock is behind the NATS
// server's by more than MaxClockBehind: the Log refuses appends. A
// message or delivery event is sealed under the key of its UTC day, and
// a writer that still dates events in a day other processes' retention
// has shredded (by the time it is everywhere else) would seal them
// under a key no one else holds any more: nothing would open them.
var ErrClockBehind = errors.New("eventlog: this process's clock is behind the server's")

// MaxClockBehind is how far this process's clock may lag the server's
// for a Log to append. It is half replay.RetentionGrace, the hour
// retention waits after a day ended, so that a writer it lets append
// dates no event in a day retention may already have shredded, even
// with an append being retried for a while.
const MaxClockBehind = 30 * time.Minute

// clockRecheck is how long a check of the Log's clock against the
// server's answers for (checkNotBehind): one stream info request per
// that long, not one per append.
const clockRecheck = 10 * time.Second

// clockStep is how far the wall clock may move against the monotonic
// one between checks before the last check no longer answers (the clock
// was set, or stepped by NTP).
const clockStep = time.Second

// clockCheck is the outcome of the last check of the Log's clock.
type clockCheck struct {
	at  time.Time // the Log's clock then, with its monotonic reading when it has one
	err error     // nil: not behind
}

// fresh reports whether c still answers at now: taken less than
// clockRecheck before it, and the wall clock not stepped since.
func (c *clockCheck) fresh(now time.Time) bool {
	mono := now.Sub(c.at)                   // monotonic when both readings have it
	wall := now.Round(0).Sub(c.at.Round(0)) // wall clock alone
	step := wall - mono
	return mono >= 0 && mono < clockRecheck && step > -clockStep && step < clockStep
}

// checkNotBehind returns an error wrapping ErrClockBehind when the
// Log's clock is more than MaxClockBehind behind the server's, as the
// server stamps its answer to a stream info request. The outcome is
// kept for clockRecheck (on the Log's monotonic clock; a step of its
// wall clock asks again at once), so appends pay one round trip per
// clockRecheck at most. The round trip makes the server's stamp earlier
// than the local reading taken after it, never later, so it can only
// hide a lag, not invent one. A server that stamps no time (older than
// 2.10), or one on this machine (the same clock), tells nothing.
//
// A request left unanswered within firstTry refuses nothing: the
// append's publish meets the same server and reports it. The last
// outcome then stands for another clockRecheck, so a server that does
// not answer costs appends one such wait per clockRecheck, not one each.
func (l *Log) checkNotBehind(ctx context.Context) error {
	prev := l.clock.Load()
	if prev != nil && prev.fresh(l.now()) {
		return prev.err
	}
	ictx, cancel := context.WithTimeout(ctx, firstTry)
	info, err := l.stream.Info(ictx)
	cancel()
	if err != nil {
		c := &clockCheck{at: l.now()}
		if prev != nil {
			c.err = prev.err
		}
		l.clock.Store(c)
		l.logger.Debug("eventlog: clock check: the server did not say its time", "stream", l.cfg.Stream, "err", err)
		return c.err
	}
	return l.noteClock(info.TimeStamp, l.now())
}

// noteClock keeps the outcome of comparing the server's clock, server,
// with the Log's, now (read after the server answered), and returns it.
func (l *Log) noteClock(server, now time.Time) error {
	c := &clockCheck{at: now}
	if behind := server.Sub(now); !server.IsZero() && behind > MaxClockBehind {
		c.err = fmt.Errorf("%w: this process's clock reads %s, the server of stream %s answered at %s (%s behind, at most %s allowed): appends are refused until this machine's clock is set right",
			ErrClockBehind, now.UTC().Format(time.RFC3339), l.cfg.Stream, server.UTC().Format(time.RFC3339), behind.Round(time.Second), MaxClockBehind)
	}
	l.clock.Store(c)
	return c.err
}
