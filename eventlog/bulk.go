package eventlog

import (
	"context"
	"fmt"
	"iter"
	"runtime"
	"sync"
	"time"

	"github.com/epochlog/epochlog/events"
)

// Transition is one append of AppendBulk: events of one aggregate at
// positions Expected+1, Expected+2, ... (the arguments of one Append call).
type Transition struct {
	Expected uint64         // position of the aggregate's last event before this transition
	Events   []events.Event // one aggregate's events, at Expected+1...
}

// inflight is a published transition waiting for its PubAck.
type inflight struct {
	idx   int
	p     *prepared
	ack   pendingAck
	start time.Time // when the transition was first sent
}

// AppendBulk appends many transitions, pipelined: up to Config.MaxInFlight
// publishes are unacknowledged at once, instead of one round trip each. It
// is for bulk loads (many aggregates, or long runs of one).
//
// Each transition has Append's guarantees: atomic, checked against the
// aggregate's last sequence, idempotent. Transitions of different
// aggregates are in flight together; a transition on an aggregate waits for
// the previous one on the same aggregate to be acknowledged (its sequence
// is the next one's expected last sequence). Put a long run of one
// aggregate's events into few transitions of up to MaxBatch events.
//
// It returns the appended events of each transition, in order. On the first
// failure it waits for what is in flight, then returns the results so far
// (nil for transitions not appended) and an error naming the transition.
// Retrying the whole call is safe: transitions already stored are found
// again and reported with Duplicate set. Closing the Log under a call
// ends it with ErrClosed; what was in flight then may or may not be
// stored (Unanswered holds).
func (l *Log) AppendBulk(ctx context.Context, ts []Transition) ([][]Appended, error) {
	results := make([][]Appended, len(ts))
	queue := make([]*inflight, 0, l.cfg.MaxInFlight)
	latest := map[string]*inflight{} // by subject: the last transition in flight
	var firstErr error
	fail := func(i int, err error) {
		if firstErr == nil {
			firstErr = fmt.Errorf("eventlog: bulk append: transition %d: %w", i, err)
		}
	}

	wait := time.NewTimer(time.Hour) // reused by every await of this call
	wait.Stop()
	complete := func(f *inflight) {
		res, err := l.await(ctx, f, wait)
		if err != nil {
			fail(f.idx, err)
		} else {
			l.countAppended(f.p, time.Since(f.start))
		}
		results[f.idx] = res
		if latest[f.p.subject] == f {
			delete(latest, f.p.subject)
		}
	}
	// drainUntil completes queued transitions in order up to and including f.
	drainUntil := func(f *inflight) {
		for len(queue) > 0 {
			h := queue[0]
			queue = queue[1:]
			complete(h)
			if h == f {
				return
			}
		}
	}

	stop := make(chan struct{})
	defer close(stop)
	for w := range l.sealedWindows(ctx, ts, stop) {
		for k, p := range w.preps {
			i := w.start + k
			if firstErr != nil {
				break
			}
			if err := ctx.Err(); err != nil {
				firstErr = err
				break
			}
			if p == nil {
				fail(i, w.err)
				break
			}
			if prev := latest[p.subject]; prev != nil {
				drainUntil(prev)
				if firstErr != nil {
					break
				}
			}
			start := time.Now()
			tl, err := l.tailFor(ctx, p)
			if err != nil {
				fail(i, err)
				break
			}
			if tl.pos != p.expected {
				// A retry of a bulk load, or a conflict: settle it now.
				if results[i], err = l.settle(ctx, p, tl, nil); err != nil {
					fail(i, err)
				} else {
					l.countAppended(p, time.Since(start))
				}
				continue
			}
			f := &inflight{idx: i, p: p, start: start}
			if err = l.publishAsync(p, tl.seq, &f.ack); err != nil {
				// Not sent (connection closed or the client's own limits):
				// the synchronous path retries it and reports what is wrong.
				if results[i], err = l.appendPrepared(ctx, p); err != nil {
					fail(i, err)
				} else {
					l.countAppended(p, time.Since(start))
				}
				continue
			}
			queue = append(queue, f)
			latest[p.subject] = f
			if len(queue) >= l.cfg.MaxInFlight {
				h := queue[0]
				queue = queue[1:]
				complete(h)
			}
		}
		if firstErr != nil {
			break
		}
	}
	for _, f := range queue {
		complete(f)
	}
	return results, firstErr
}

// prepWindow is a run of consecutive transitions, sealed. preps[k] is nil
// from the first one that failed (err says why).
type prepWindow struct {
	start int
	preps []*prepared
	err   error
}

// prepWindowSize is how many transitions are sealed together.
const prepWindowSize = 64

// sealedWindows yields ts sealed in windows, in order, stopping after a
// window with a transition that failed to prepare.
//
// With more than two CPUs (GOMAXPROCS) the windows are sealed ahead, on
// other goroutines, so that sealing overlaps with publishing. With two or
// fewer each window is sealed in the caller's goroutine, just before it
// is published: the publishing loop, the connection's reader and flusher
// (and, in a process that embeds the server, its ingest) need those CPUs,
// and sealing workers that took both delayed them behind whole windows of
// sealing, so that the publishes in flight waited on scheduling rather
// than on work. On two CPUs shared with an in-process server, sealing
// inline took BenchmarkAppendOfRaw from a median of 0.76 to 0.87 of
// rawheaders at 256 B and from 0.77 to 0.81 at 1 KiB (docs/benchmarks.md,
// "Sealing in the publishing goroutine").
func (l *Log) sealedWindows(ctx context.Context, ts []Transition, stop <-chan struct{}) iter.Seq[prepWindow] {
	workers := min(runtime.GOMAXPROCS(0)-2, 4)
	if workers < 1 {
		return func(yield func(prepWindow) bool) {
			for start := 0; start < len(ts); start += prepWindowSize {
				w := l.sealWindow(ctx, ts, start, 1)
				if !yield(w) || w.err != nil {
					return
				}
			}
		}
	}
	out := make(chan prepWindow, 2)
	go func() {
		defer close(out)
		for start := 0; start < len(ts); start += prepWindowSize {
			w := l.sealWindow(ctx, ts, start, workers)
			select {
			case out <- w:
			case <-stop:
				return
			}
			if w.err != nil {
				return
			}
		}
	}()
	return func(yield func(prepWindow) bool) {
		for w := range out {
			if !yield(w) {
				return
			}
		}
	}
}

// sealWindow prepares the window of ts from start, its data keys fetched
// first, split across workers goroutines (in the caller's when 1).
func (l *Log) sealWindow(ctx context.Context, ts []Transition, start, workers int) prepWindow {
	w := prepWindow{start: start, preps: make([]*prepared, min(prepWindowSize, len(ts)-start))}
	window := ts[start : start+len(w.preps)]
	now := l.now().UTC()
	var keys windowKeys
	if l.checkNotBehind(ctx) == nil { // else each seal reports it
		keys = l.prefetchKeys(ctx, window, now)
	}
	defer keys.release()
	first := make([]int, len(window)) // index in keys.keys of each transition's first event
	for k := 1; k < len(window); k++ {
		first[k] = first[k-1] + len(window[k-1].Events)
	}
	errs := make([]error, len(w.preps))
	seal := func(g int) {
		for k := g; k < len(w.preps); k += workers {
			t := window[k]
			var tk []windowKey
			if keys.keys != nil {
				tk = keys.keys[first[k] : first[k]+len(t.Events)]
			}
			w.preps[k], errs[k] = l.prepareAt(ctx, t.Expected, t.Events, now, tk)
		}
	}
	if workers == 1 {
		seal(0)
	} else {
		var wg sync.WaitGroup
		for g := range workers {
			wg.Go(func() { seal(g) })
		}
		wg.Wait()
	}
	for k, err := range errs {
		if err != nil {
			w.preps, w.err = w.preps[:k+1], err
			w.preps[k] = nil
			break
		}
	}
	return w
}

// publishAsync publishes p without waiting: a single event as one async
// publish; several as an atomic batch whose staged messages go without a
// reply and whose commit is the async publish.
func (l *Log) publishAsync(p *prepared, lastSeq uint64, pa *pendingAck) error {
	n := len(p.envs)
	if n == 1 {
		return l.acks.publish(l.nc, l.message(p, 0, lastSeq, ""), l.cfg.RequestTimeout, pa)
	}
	id := newBatchID()
	for i := 0; i < n-1; i++ {
		if err := l.nc.PublishMsg(l.message(p, i, lastSeq, id)); err != nil {
			return err
		}
	}
	return l.acks.publish(l.nc, l.message(p, n-1, lastSeq, id), l.cfg.RequestTimeout, pa)
}

// await waits for f's PubAck. A failed publish goes through the same
// settling as Append: a race is decided by reading the stream; a lost
// reply (timeout, reconnect) is retried synchronously, which is idempotent.
func (l *Log) await(ctx context.Context, f *inflight, t *time.Timer) ([]Appended, error) {
	p := f.p
	if !l.acks.wait(&f.ack, f.start.Add(l.cfg.RequestTimeout), t, ctx.Done()) {
		l.dropTail(p.subject)
		return nil, ctx.Err()
	}
	if err := f.ack.err; err != nil {
		if isRace(err) {
			return l.afterFailedPublish(ctx, p, err)
		}
		l.dropTail(p.subject)
		if l.closed.Load() {
			// Closed under the call: nothing to append again with, and
			// not a loss to count or warn of. Whether it landed is not
			// known (Unanswered holds).
			return nil, fmt.Errorf("%w: PubAck of %s at position %d: %w", ErrClosed, p.subject, p.expected+1, err)
		}
		if reason := retryReason(err); reason != "" {
			l.cfg.Metrics.Retry(reason)
			l.logger.Warn("eventlog: bulk append unanswered; appending the same events again",
				append(appendAttrs(l.cfg.Stream, p), "reason", reason, "err", err)...)
		} else {
			l.logger.Debug("eventlog: bulk append failed; appending again synchronously to learn why",
				append(appendAttrs(l.cfg.Stream, p), "err", err)...)
		}
		return l.appendPrepared(ctx, p)
	}
	seq, n := f.ack.seq, len(p.envs)
	if err := checkBatchAck(n, f.ack.count, seq); n > 1 && err != nil {
		l.dropTail(p.subject)
		return nil, err
	}
	res := make([]Appended, n)
	for i := range res {
		res[i] = Appended{Seq: seq - uint64(n-1-i), Subject: p.subject, Position: p.expected + uint64(i) + 1, Duplicate: f.ack.dup, Size: len(p.envs[i])}
	}
	l.setTail(p.subject, tail{seq: seq, pos: p.last()})
	l.noteAppended(p, res)
	return res, nil
}
