package eventlog

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"
)

// A read's watchdog: every wait of a read is bounded by
// Config.ProgressTimeout. The ordered consumer recreates itself on its own
// after a missed heartbeat, a server restart or a sequence it cannot
// follow (a stored message the server cannot load), and would do so
// forever; the watchdog ends a read that delivers nothing for that long
// while the stream holds events it has not delivered, or while the server
// does not answer at all.
type watchdog struct {
	r        *reader
	mu       sync.Mutex
	last     time.Time
	err      error
	stopOnce sync.Once
	quit     chan struct{}
	next     atomic.Uint64 // the read's next sequence, as the read last said
	busy     bool          // the read is in its handler: not waiting on the server
	// touched is set once the read made progress (a delivery, or an
	// idle follow found nothing pending): only then is last progress.
	touched bool
}

// stallProbe bounds the round trip a stalled read makes to tell a server
// that does not answer from a stream that does not deliver.
const stallProbe = 5 * time.Second

// handling marks the read as inside (or out of) its handler; the idle
// clock restarts when it comes out.
func (w *watchdog) handling(in bool) {
	w.mu.Lock()
	w.busy = in
	w.last = time.Now()
	w.mu.Unlock()
}

// watch starts the watchdog of one consumer run; it stops it with
// it.Stop when the read stalls.
func (r *reader) watch(ctx context.Context, it jetstream.MessagesContext, filters []string, end uint64, follow bool) *watchdog {
	w := &watchdog{r: r, last: time.Now(), quit: make(chan struct{})}
	w.next.Store(r.next)
	limit := r.l.cfg.ProgressTimeout
	go func() {
		t := time.NewTicker(max(limit/8, 10*time.Millisecond))
		defer t.Stop()
		for {
			select {
			case <-w.quit:
				return
			case <-ctx.Done():
				return
			case <-t.C:
			}
			w.mu.Lock()
			idle, busy := time.Since(w.last), w.busy
			w.mu.Unlock()
			if idle < limit || busy {
				continue
			}
			pending, err := w.pending(ctx, filters, end, follow)
			if err == nil && !pending {
				w.touch() // an idle follow: nothing to wait for
				continue
			}
			if err == nil {
				// Undelivered events: a server that does not answer at
				// all is not the stream's fault, and says so.
				err = r.l.Responsive(min(r.l.cfg.RequestTimeout, stallProbe))
			}
			if err != nil {
				// Its consumer cannot be deleted either: the server reaps
				// it (consumerInactiveThreshold).
				r.silent.Store(true)
			}
			w.mu.Lock()
			if err != nil {
				w.err = fmt.Errorf("%w: no answer from the server for %v reading after seq %d: %w", ErrStalled, idle.Round(time.Second), w.next.Load()-1, err)
			} else {
				w.err = fmt.Errorf("%w: the stream holds events after seq %d it has not delivered for %v (a stored message it cannot load, or a lost stream leader)", ErrStalled, w.next.Load()-1, idle.Round(time.Second))
			}
			w.mu.Unlock()
			// With the server silent, Stop waits for the ordered
			// consumer's attempt to recreate itself to time out (it holds
			// the consumer's lock meanwhile): nats.go's request timeout.
			it.Stop()
			return
		}
	}()
	return w
}

// pending reports whether the stream holds events of the read's filters
// that the read has not delivered yet. A follow's installation filter
// that holds no event at all has its tombstone subject asked too: an
// erase purges the events it would look at, and its tombstone, stored
// but undelivered (the consumer cannot load it), would otherwise leave
// the follow idle for good. An installation with events costs no
// request more.
func (w *watchdog) pending(ctx context.Context, filters []string, end uint64, follow bool) (bool, error) {
	next := w.next.Load()
	if !follow {
		return next <= end, nil
	}
	ctx, cancel := context.WithTimeout(ctx, w.r.l.cfg.RequestTimeout)
	defer cancel()
	var last uint64
	for _, f := range filters {
		fl, err := w.r.l.lastSeq(ctx, []string{f})
		if err != nil {
			return false, err
		}
		if tomb := w.r.tombOf[f]; fl == 0 && tomb != "" {
			if fl, err = w.r.l.lastSeq(ctx, []string{tomb}); err != nil {
				return false, err
			}
		}
		last = max(last, fl)
	}
	return last >= next, nil
}

// progress records a delivery; it runs on the read's goroutine, after
// the read moved its next sequence on.
func (w *watchdog) progress() {
	w.next.Store(w.r.next)
	w.touch()
	w.r.lastProgress = time.Now()
}

// touch restarts the idle clock.
func (w *watchdog) touch() {
	w.mu.Lock()
	w.last = time.Now()
	w.touched = true
	w.mu.Unlock()
}

// stalled returns the error that stopped the read, if the watchdog did.
func (w *watchdog) stalled() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.err
}

// done stops the watchdog; it runs on the read's goroutine and carries an
// idle follow's progress over to the reader. A run that made none (its
// start is not progress) carries nothing: a follow whose consumers each
// stall on an event they do not deliver ends once the stalls outlast
// Config.ProgressTimeout; were each new consumer to count as progress,
// the follow would try again for good.
func (w *watchdog) done() {
	w.stopOnce.Do(func() { close(w.quit) })
	w.mu.Lock()
	if w.touched && w.last.After(w.r.lastProgress) {
		w.r.lastProgress = w.last
	}
	w.mu.Unlock()
}
