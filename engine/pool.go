package engine

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"runtime"
	"slices"
	"sync"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/fdlimit"
	"github.com/epochlog/epochlog/projections"
)

// Defaults of PoolOptions.
const (
	// DefaultMaxOpen is how many installations a Pool keeps open at most.
	// An open installation holds its writer lock and its read model's
	// connections (the database and its WAL for the writer and each idle
	// reader, the shared-memory file): 6 file descriptors measured, more
	// while several readers run (docs/engine.md, "Many installations in
	// one process").
	DefaultMaxOpen = 256
	// DefaultPoolWait bounds how long an acquire waits for a slot when
	// every open installation is in use.
	DefaultPoolWait = 30 * time.Second
)

// Sentinel errors of a Pool.
var (
	// ErrNotRegistered means an acquire named an installation the Pool
	// was not given with Register.
	ErrNotRegistered = errors.New("engine: installation not registered with the pool")

	// ErrPoolFull means an acquire found every open installation in use
	// (PoolOptions.MaxOpen of them) and none was released within
	// PoolOptions.Wait, or asked for more installations at once than
	// MaxOpen.
	ErrPoolFull = errors.New("engine: pool full: every open installation is in use")

	// ErrPoolClosed means the Pool was closed.
	ErrPoolClosed = errors.New("engine: pool closed")

	// ErrPoolInUse means Unregister named an installation an acquire
	// holds, or one being opened or closed.
	ErrPoolInUse = errors.New("engine: installation in use in the pool")
)

// KeyFunc returns the read model key of an installation. A Pool calls it
// each time it opens the installation, so an idle installation holds no
// key in memory, under the context of the acquire that started the open
// (or the Pool's end, if that comes first). Its error is returned by the
// acquire (wrapped, naming the installation); it must not carry the key.
type KeyFunc func(ctx context.Context, id events.InstallationID) (projections.Key, error)

// PoolOptions tune a Pool. The zero value (or nil) means defaults.
type PoolOptions struct {
	// MaxOpen caps how many installations are open at once (read models
	// and their files), in use or idle (default DefaultMaxOpen). It is a
	// hard cap: an acquire that needs a slot while all MaxOpen are in use
	// waits for a release (see Wait). Below 0 counts as 1. It is kept
	// under what the process's open-file limit lets it keep open (6
	// descriptors a read model, 256 kept for the rest; package
	// internal/fdlimit), with a warning in the log: past the limit,
	// every open would fail.
	MaxOpen int
	// Wait bounds how long an acquire waits for a slot when all MaxOpen
	// open installations are in use (default DefaultPoolWait); it then
	// fails with ErrPoolFull. The acquire's context bounds it too. Below
	// 0: no wait at all, an acquire that finds no slot fails at once.
	Wait time.Duration
	// OpenParallelism bounds how many installations one AcquireMany opens
	// at once (default twice GOMAXPROCS).
	OpenParallelism int
	// Installation are the options every installation is opened with.
	Installation *InstallationOptions
}

// Pool holds many installations of one process with few of them open: a
// service registers every installation it acts for (an id, the path of
// its read model; the keys come from a KeyFunc), and acquires the ones it
// works on. An acquire opens a closed installation on demand
// (OpenInstallation: it catches up with the log), and keeps it open after
// release, in a least-recently-used list, until its slot is needed: at
// most MaxOpen installations are open at once, and one is closed to make
// room only when nobody holds it. An installation in use is never closed.
//
// Acquires of the same closed installation open it once; the others wait
// for that open. The open (OpenInstallation, once the KeyFunc returned
// the key) runs on the Pool's lifetime, not its acquire's: an acquire
// whose context ends first returns the context's error and leaves the
// open running, a later acquire waits for that same open, and an open
// nobody waits for any more leaves the installation idle, as a release
// does. So an open longer than any one acquire's deadline (a read model
// migrated by replay) still finishes, once. A failed open (a wrong key, a
// read model that is not the installation's, an id with no installation
// on the log) is returned to the acquires waiting for it, naming the
// installation and its read model, and leaves the installation closed:
// the next acquire tries again. A key lookup that failed because its own
// acquire's context ended is not the others' error: each of them whose
// context goes on opens the installation again. AcquireMany takes
// several installations at once, all or none, so that callers who need
// sets (a Host call) never hold some while waiting for others.
//
// The Installations it hands out are the Pool's: use them between acquire
// and release, pass them to a Host, but do not Close them or keep them
// after release. A Pool is safe for concurrent use.
type Pool struct {
	log     *eventlog.Log
	keys    KeyFunc
	max     int
	wait    time.Duration
	par     int
	instOpt *InstallationOptions

	// ctx is the opens' lifetime: Close cancels it, and waits for opens
	// (each counted in opens from its reservation to its end).
	ctx    context.Context
	cancel context.CancelFunc
	opens  sync.WaitGroup

	mu      sync.Mutex
	entries map[events.InstallationID]*poolEntry
	// held counts the installations opening, open or closing: each holds,
	// or is about to hold, a read model's files. An acquire that evicts
	// counts its new installations at once and its victims until they are
	// closed, and opens only after they are, so the files open never
	// exceed max.
	held int
	// live counts the installations whose read model is open or being
	// opened or closed right now: never more than max.
	live int
	// idle is the LRU list of open installations nobody holds: most
	// recently released at head, the next to evict at tail.
	head, tail *poolEntry
	nIdle      int
	// changed is closed (and replaced) when a slot may have come free,
	// for the acquires waiting for one (waiters > 0).
	changed chan struct{}
	waiters int
	closed  bool
	// closeErrs are the first errors of closing evicted installations,
	// at most maxCloseErrs, for Close to report (an eviction's failure is
	// not its acquirer's); every one is logged and counted in stats.
	closeErrs []error
	stats     PoolStats
}

// poolState is where an installation of a Pool is.
type poolState uint8

const (
	poolClosed  poolState = iota // no Installation
	poolOpening                  // being opened for an acquire (op set), which may have given up
	poolOpen                     // in, in use (refs > 0) or idle (in the LRU list)
	poolClosing                  // being closed (op set)
)

// poolEntry is one registered installation. Idle, it is a few words: the
// id and path, and no key, no Installation, no file.
type poolEntry struct {
	id         events.InstallationID
	path       string
	state      poolState
	inIdle     bool
	refs       int32         // acquires holding it (or waiting for its open); 0 while opening: an open nobody waits for
	in         *Installation // when open
	op         *poolOp       // the open or close in progress
	prev, next *poolEntry    // the idle list
	// drop: Unregister closes it; it leaves entries once closed.
	drop bool
}

// poolOp is an open or close in progress: done is closed when it ends,
// err is a failed open's error.
type poolOp struct {
	done chan struct{}
	err  error
	// abandoned: the open failed once its context had ended (its
	// opener's, during the key lookup, or the Pool's), which says
	// nothing of the installation to the acquires that joined.
	abandoned bool
}

// PoolStats are a Pool's counts.
type PoolStats struct {
	Registered int // installations registered
	Open       int // read models open (in use or idle), being opened or being closed
	InUse      int // held by at least one acquire
	Opens      int64
	OpenErrors int64
	Evictions  int64
	// EvictionErrors counts the closes of evicted installations that
	// failed (each logged; Close returns the first few).
	EvictionErrors int64
	// Waits counts the times an acquire waited for a slot or for an
	// eviction of one of its installations to finish.
	Waits int64
}

// NewPool returns a Pool of installations on l whose read model keys come
// from keys.
func NewPool(l *eventlog.Log, keys KeyFunc, opts *PoolOptions) *Pool {
	var o PoolOptions
	if opts != nil {
		o = *opts
	}
	maxOpen := max(cmp.Or(o.MaxOpen, DefaultMaxOpen), 1)
	if fit, limit := fdlimit.ReadModels(); fit > 0 && maxOpen > fit {
		l.Logger().Warn("engine: pool: keeping fewer installations open than asked: the open-file limit has room for no more",
			"stream", l.Stream(), "max_open", maxOpen, "kept_open_at_most", fit, "open_file_limit", limit,
			"descriptors_each", fdlimit.PerReadModel)
		maxOpen = fit
	}
	ctx, cancel := context.WithCancel(context.Background())
	return &Pool{
		log: l, keys: keys, ctx: ctx, cancel: cancel,
		max:     maxOpen,
		wait:    cmp.Or(o.Wait, DefaultPoolWait),
		par:     max(cmp.Or(o.OpenParallelism, 2*runtime.GOMAXPROCS(0)), 1),
		instOpt: o.Installation,
		entries: map[events.InstallationID]*poolEntry{},
		changed: make(chan struct{}),
	}
}

// MaxOpen returns the cap on open installations.
func (p *Pool) MaxOpen() int { return p.max }

// Register adds installation id, whose read model is at dbPath, to the
// Pool, closed: nothing is opened or read until it is acquired. The
// installation must exist on the log (CreateInstallation) by its first
// acquire; a read model missing at dbPath is then rebuilt from the log,
// as OpenInstallation does. Registering an id again with the same path
// does nothing; with another path it is an error.
func (p *Pool) Register(id events.InstallationID, dbPath string) error {
	if err := id.Validate(); err != nil {
		return fmt.Errorf("engine: pool: register: %w", err)
	}
	if dbPath == "" {
		return fmt.Errorf("engine: pool: register installation %s: empty read model path", id)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.closed {
		return fmt.Errorf("engine: pool: register installation %s: %w", id, ErrPoolClosed)
	}
	if e, ok := p.entries[id]; ok {
		if e.path != dbPath {
			return fmt.Errorf("engine: pool: register installation %s at %s: already registered at %s", id, dbPath, e.path)
		}
		e.drop = false // registered again while Unregister closes it: it stays
		return nil
	}
	p.entries[id] = &poolEntry{id: id, path: dbPath}
	return nil
}

// Unregister removes installation id from the Pool, closing it first if
// it is open: a long-running service drops the installations it no
// longer serves (erased, moved to another process), which would
// otherwise stay registered for as long as the Pool lives. An
// installation an acquire holds, or one being opened or closed, is
// refused with ErrPoolInUse (unregister it once released); one not
// registered is ErrNotRegistered. A failure to close it is an
// eviction's (logged, and returned by Close). Acquires of id fail with
// ErrNotRegistered from then on, until it is registered again.
func (p *Pool) Unregister(id events.InstallationID) error {
	p.mu.Lock()
	e := p.entries[id]
	switch {
	case e == nil || e.drop:
		p.mu.Unlock()
		return fmt.Errorf("engine: pool: unregister installation %s: %w", id, ErrNotRegistered)
	case e.refs > 0 || e.state == poolOpening || e.state == poolClosing:
		p.mu.Unlock()
		return fmt.Errorf("engine: pool: unregister installation %s: %w", id, ErrPoolInUse)
	case e.state == poolClosed:
		delete(p.entries, id)
		p.mu.Unlock()
		return nil
	}
	// Open and idle: closed as an eviction closes, and kept in entries
	// (closing) until then, so an acquire or a Register of id meanwhile
	// waits for its writer lock to be let go.
	p.unidle(e)
	e.state = poolClosing
	e.op = &poolOp{done: make(chan struct{})}
	e.drop = true
	p.mu.Unlock()
	p.closeEntry(e)
	return nil
}

// Stats returns the Pool's counts.
func (p *Pool) Stats() PoolStats {
	p.mu.Lock()
	defer p.mu.Unlock()
	s := p.stats
	s.Registered = len(p.entries)
	s.Open = p.live
	for _, e := range p.entries {
		if e.refs > 0 && e.state == poolOpen {
			s.InUse++
		}
	}
	return s
}

// Acquire returns installation id, open, and the function that releases
// it; call release exactly once when done with the installation (further
// calls do nothing). An installation that is not open is opened
// (OpenInstallation, which catches up with the log); when MaxOpen are
// open, the least recently used one that nobody holds is closed first,
// and when all are in use Acquire waits for a release, up to
// PoolOptions.Wait (ErrPoolFull) or the end of ctx. An open that ctx
// does not leave time for goes on after Acquire returned ctx's error, for
// the next acquire (see Pool). Several goroutines may hold the same
// installation at once (its operations serialize).
func (p *Pool) Acquire(ctx context.Context, id events.InstallationID) (*Installation, func(), error) {
	ins, release, err := p.AcquireMany(ctx, []events.InstallationID{id})
	if err != nil {
		return nil, nil, err
	}
	return ins[0], release, nil
}

// With runs f with installation id acquired, and releases it when f
// returns. It returns f's error, or the acquire's.
func (p *Pool) With(ctx context.Context, id events.InstallationID, f func(*Installation) error) error {
	in, release, err := p.Acquire(ctx, id)
	if err != nil {
		return err
	}
	defer release()
	return f(in)
}

// AcquireMany acquires every installation of ids at once, all or none,
// and returns them in the order of ids (a repeated id gives the same
// Installation) with the function that releases them all: for a
// Host.Send or Host.Deliver over a batch. It waits, holding none of them,
// until the ones not open can all be opened within MaxOpen; more
// distinct ids than MaxOpen are refused at once with ErrPoolFull. The
// installations not open are opened in parallel, and go on when ctx
// ends first (see Pool). If any open fails, the others are released (and
// stay open, idle) and the error names the installation and its read
// model.
func (p *Pool) AcquireMany(ctx context.Context, ids []events.InstallationID) ([]*Installation, func(), error) {
	if len(ids) == 0 {
		return nil, func() {}, nil
	}
	var r reservation
	var release func()
	for {
		var err error
		if r, err = p.reserve(ctx, ids); err != nil {
			return nil, nil, err
		}
		release = func() {
			for _, e := range r.entries {
				p.release(e)
			}
		}
		p.evict(r.evict)
		p.openAll(ctx, r.open)
		retry, err := r.settle(ctx)
		if err == nil && !retry {
			break
		}
		release()
		if err != nil {
			return nil, nil, err
		}
		// An open this acquire joined ended with its opener's context
		// (or the Pool's: the next reserve says so), not its own: open
		// again under this one.
	}
	out := make([]*Installation, len(ids))
	p.mu.Lock()
	if len(r.entries) == 1 {
		for i := range out {
			out[i] = r.entries[0].in
		}
	} else {
		by := make(map[events.InstallationID]*Installation, len(r.entries))
		for _, e := range r.entries {
			by[e.id] = e.in
		}
		for i, id := range ids {
			out[i] = by[id]
		}
	}
	p.mu.Unlock()
	var once sync.Once
	return out, func() { once.Do(release) }, nil
}

// reservation is what an acquire committed to: the entries acquired
// (each pinned once), the opens it waits for (its own and other
// acquires' it joined), the entries it opens itself, and the idle ones
// it closes first to make room.
type reservation struct {
	entries []*poolEntry
	ops     []pendingOpen
	open    []*poolEntry
	evict   []*poolEntry
}

// pendingOpen is an open an acquire waits for, and whose.
type pendingOpen struct {
	id events.InstallationID
	op *poolOp
}

// reserve returns the reservation of the distinct entries of ids once
// every one of them can be had: none is being closed, and the closed ones
// fit in free slots plus idle installations (not among ids) to evict. It
// pins them, marks the closed ones opening and the victims closing. As
// long as that is not possible it waits for a change, holding nothing.
func (p *Pool) reserve(ctx context.Context, ids []events.InstallationID) (reservation, error) {
	var timer *time.Timer
	var timeout <-chan time.Time
	defer func() {
		if timer != nil {
			timer.Stop()
		}
	}()
	p.mu.Lock()
	for {
		if p.closed {
			p.mu.Unlock()
			return reservation{}, fmt.Errorf("engine: pool: acquire %s: %w", describeIDs(ids), ErrPoolClosed)
		}
		es, err := p.lookup(ids)
		if err != nil {
			p.mu.Unlock()
			return reservation{}, err
		}
		if len(es) > p.max {
			p.mu.Unlock()
			return reservation{}, fmt.Errorf("engine: pool: acquire %s: more than MaxOpen (%d) at once: %w", describeIDs(ids), p.max, ErrPoolFull)
		}
		if r, ok := p.plan(es); ok {
			if err := ctx.Err(); err != nil && len(r.open) > 0 {
				// An open nobody will wait for: not started (one that
				// outlives its acquire is for an acquire that gave up
				// while it ran).
				p.mu.Unlock()
				return reservation{}, fmt.Errorf("engine: pool: acquire %s: %w", describeIDs(ids), err)
			}
			p.commit(&r)
			p.mu.Unlock()
			return r, nil
		}
		// Wait for a release, a finished close or a failed open, holding
		// nothing.
		p.stats.Waits++
		p.waiters++
		ch := p.changed
		p.mu.Unlock()
		if timer == nil {
			timer = time.NewTimer(p.wait)
			timeout = timer.C
		}
		var werr error
		select {
		case <-ch:
		case <-ctx.Done():
			werr = fmt.Errorf("engine: pool: acquire %s: waiting for a slot (MaxOpen %d): %w", describeIDs(ids), p.max, ctx.Err())
		case <-timeout:
			werr = fmt.Errorf("engine: pool: acquire %s: none of the %d open installations released within %v: %w", describeIDs(ids), p.max, p.wait, ErrPoolFull)
		}
		p.mu.Lock()
		p.waiters--
		if werr != nil {
			p.mu.Unlock()
			return reservation{}, werr
		}
	}
}

// describeIDs names the installations of an acquire, shortened.
func describeIDs(ids []events.InstallationID) string {
	switch len(ids) {
	case 1:
		return "installation " + string(ids[0])
	default:
		return fmt.Sprintf("%d installations (%s, ...)", len(ids), ids[0])
	}
}

// lookup returns the distinct entries of ids. p.mu is held.
func (p *Pool) lookup(ids []events.InstallationID) ([]*poolEntry, error) {
	es := make([]*poolEntry, 0, len(ids))
	var seen map[*poolEntry]bool
	if len(ids) > 8 {
		seen = make(map[*poolEntry]bool, len(ids))
	}
	for _, id := range ids {
		e := p.entries[id]
		if e == nil {
			return nil, fmt.Errorf("engine: pool: installation %s: %w", id, ErrNotRegistered)
		}
		if seen != nil {
			if seen[e] {
				continue
			}
			seen[e] = true
		} else if slices.Contains(es, e) {
			continue
		}
		es = append(es, e)
	}
	return es, nil
}

// plan decides what acquiring es takes; ok is false while it must wait.
// p.mu is held.
func (p *Pool) plan(es []*poolEntry) (r reservation, ok bool) {
	r.entries = es
	for _, e := range es {
		switch e.state {
		case poolClosing:
			// Its close must finish (its writer lock) before it reopens.
			return r, false
		case poolClosed:
			r.open = append(r.open, e)
		}
	}
	need := len(r.open) - (p.max - p.held)
	if need <= 0 {
		return r, true
	}
	if p.nIdle < need {
		return r, false
	}
	var mine map[*poolEntry]bool
	if len(es) > 8 {
		mine = make(map[*poolEntry]bool, len(es))
		for _, e := range es {
			mine[e] = true
		}
	}
	for v := p.tail; v != nil && len(r.evict) < need; v = v.prev {
		if mine != nil && !mine[v] || mine == nil && !slices.Contains(es, v) {
			r.evict = append(r.evict, v)
		}
	}
	return r, len(r.evict) == need
}

// commit pins r's entries, marks the ones to open opening and the
// victims closing, and notes the opens r waits for. p.mu is held.
func (p *Pool) commit(r *reservation) {
	for _, e := range r.entries {
		e.refs++
		switch e.state {
		case poolOpen:
			p.unidle(e)
		case poolClosed:
			e.state = poolOpening
			e.op = &poolOp{done: make(chan struct{})}
			p.held++
			p.opens.Add(1) // here, under mu and not closed: Close waits for it
			r.ops = append(r.ops, pendingOpen{e.id, e.op})
		case poolOpening:
			// Another acquire's open, or one whose acquires all gave
			// up: join it.
			r.ops = append(r.ops, pendingOpen{e.id, e.op})
		}
	}
	for _, v := range r.evict {
		p.unidle(v)
		v.state = poolClosing
		v.op = &poolOp{done: make(chan struct{})}
		p.stats.Evictions++
	}
}

// evict closes the victims an acquire chose (they stay counted in held
// until closed, so their slots are not taken twice).
func (p *Pool) evict(vs []*poolEntry) {
	if len(vs) == 0 {
		return
	}
	var wg sync.WaitGroup
	for _, v := range vs {
		wg.Go(func() { p.closeEntry(v) })
	}
	wg.Wait()
}

// closeEntry closes an entry marked closing and marks it closed.
func (p *Pool) closeEntry(v *poolEntry) {
	err := v.in.Close()
	p.mu.Lock()
	defer p.mu.Unlock()
	if err != nil {
		p.stats.EvictionErrors++
		if len(p.closeErrs) < maxCloseErrs {
			p.closeErrs = append(p.closeErrs, fmt.Errorf("engine: pool: close installation %s (read model %s): %w", v.id, v.path, err))
		}
		p.log.Logger().Warn("engine: pool: closing an evicted installation failed", "installation", string(v.id), "path", v.path, "err", err)
	}
	v.in = nil
	v.state = poolClosed
	close(v.op.done)
	v.op = nil
	p.held--
	p.live--
	if v.drop && p.entries[v.id] == v {
		delete(p.entries, v.id)
	}
	p.signal()
}

// openAll starts the opens of the entries an acquire marked opening, up
// to OpenParallelism at once, and returns: they run on after the
// acquire gave up (see open), and each reports through its poolOp.
func (p *Pool) openAll(ctx context.Context, es []*poolEntry) {
	switch len(es) {
	case 0:
		return
	case 1:
		go p.openEntry(ctx, es[0])
		return
	}
	go func() {
		sem := make(chan struct{}, p.par)
		for _, e := range es {
			sem <- struct{}{}
			go func() {
				defer func() { <-sem }()
				p.openEntry(ctx, e)
			}()
		}
	}()
}

// openEntry opens an entry marked opening and marks it open, or closed
// with the error in its op. An open no acquire waits for any more
// becomes idle, as a release leaves it, or is closed if the Pool is.
func (p *Pool) openEntry(ctx context.Context, e *poolEntry) {
	defer p.opens.Done()
	p.mu.Lock()
	p.live++
	p.mu.Unlock()
	in, abandoned, err := p.open(ctx, e)
	p.mu.Lock()
	op := e.op
	e.op = nil
	defer close(op.done)
	if err != nil {
		op.err = err
		op.abandoned = abandoned
		e.state = poolClosed
		p.held--
		p.live--
		p.stats.OpenErrors++
		if e.refs == 0 && !abandoned {
			// No acquire waits for it to be told: an operator is.
			p.log.Logger().Warn("engine: pool: an open whose acquires gave up failed", "installation", string(e.id), "path", e.path, "err", err)
		}
		p.signal()
		p.mu.Unlock()
		return
	}
	e.in = in
	e.state = poolOpen
	p.stats.Opens++
	switch {
	case e.refs > 0: // its acquires take it
	case p.closed:
		e.state = poolClosing
		e.op = &poolOp{done: make(chan struct{})}
		p.mu.Unlock()
		p.closeEntry(e)
		return
	default:
		p.toIdle(e)
		p.signal()
	}
	p.mu.Unlock()
}

// open opens e's installation with its key. The key is looked up under
// ctx, the acquire's that started the open, so a key service that does
// not answer is bounded by the acquire's deadline; OpenInstallation then
// runs on the Pool's lifetime (ctx's values, not its end), since it may
// take longer than any acquire's deadline (a read model migrated by
// replay) and would otherwise be started over by every acquire. Both
// end at Close. abandoned reports a failure once the context had ended.
func (p *Pool) open(ctx context.Context, e *poolEntry) (in *Installation, abandoned bool, err error) {
	kctx, cancel := p.bound(ctx)
	defer cancel()
	key, err := p.keys(kctx, e.id)
	if err != nil {
		return nil, kctx.Err() != nil, fmt.Errorf("engine: pool: installation %s: read model key: %w", e.id, err)
	}
	octx, cancel := p.bound(context.WithoutCancel(ctx))
	defer cancel()
	in, err = OpenInstallation(octx, p.log, e.id, e.path, key, p.instOpt)
	if err != nil {
		return nil, octx.Err() != nil, fmt.Errorf("engine: pool: open installation %s (read model %s): %w", e.id, e.path, err)
	}
	return in, false, nil
}

// bound returns ctx ended at the Pool's Close too.
func (p *Pool) bound(ctx context.Context) (context.Context, context.CancelFunc) {
	ctx, cancel := context.WithCancel(ctx)
	stop := context.AfterFunc(p.ctx, cancel)
	return ctx, func() { stop(); cancel() }
}

// settle waits for the opens r waits for, up to ctx, and returns the
// errors of those that failed; an open still running when ctx ends goes
// on (see Pool.open). retry reports an open that failed only because its
// context ended while ctx goes on: the acquire is to be made again.
func (r *reservation) settle(ctx context.Context) (retry bool, err error) {
	var errs []error
	for _, w := range r.ops {
		op := w.op
		select {
		case <-op.done:
		case <-ctx.Done():
		}
		// ctx's end wins over an open ending at the same time: the
		// acquire's caller has given up.
		if ctx.Err() != nil {
			return false, fmt.Errorf("engine: pool: acquire: waiting for the open of installation %s (it goes on, for the next acquire): %w", w.id, ctx.Err())
		}
		switch {
		case op.err == nil:
		case op.abandoned && ctx.Err() == nil:
			retry = true
		default:
			errs = append(errs, op.err)
		}
	}
	return retry, errors.Join(errs...)
}

// release lets go of one hold on e; the last makes it idle (most
// recently used), or closes it once the Pool is closed.
func (p *Pool) release(e *poolEntry) {
	p.mu.Lock()
	e.refs--
	if e.refs > 0 || e.state != poolOpen {
		p.mu.Unlock()
		return
	}
	if p.closed {
		e.state = poolClosing
		e.op = &poolOp{done: make(chan struct{})}
		p.mu.Unlock()
		p.closeEntry(e)
		return
	}
	p.toIdle(e)
	p.signal()
	p.mu.Unlock()
}

// signal wakes the acquires waiting for a change. p.mu is held.
func (p *Pool) signal() {
	if p.waiters > 0 {
		close(p.changed)
		p.changed = make(chan struct{})
	}
}

// toIdle puts e at the head of the idle list. p.mu is held.
func (p *Pool) toIdle(e *poolEntry) {
	e.inIdle = true
	e.prev, e.next = nil, p.head
	if p.head != nil {
		p.head.prev = e
	}
	p.head = e
	if p.tail == nil {
		p.tail = e
	}
	p.nIdle++
}

// unidle takes e out of the idle list, if it is there. p.mu is held.
func (p *Pool) unidle(e *poolEntry) {
	if !e.inIdle {
		return
	}
	if e.prev != nil {
		e.prev.next = e.next
	} else {
		p.head = e.next
	}
	if e.next != nil {
		e.next.prev = e.prev
	} else {
		p.tail = e.prev
	}
	e.prev, e.next, e.inIdle = nil, nil, false
	p.nIdle--
}

// Close closes every open installation nobody holds, stops the opens in
// progress and waits for them and for the closes in progress, and
// refuses acquires and registrations from then on (ErrPoolClosed: the
// acquires waiting for a stopped open get it too). An installation still
// held is closed when it is released, as is one whose open completed
// for an acquire anyway. It returns the errors of the closes it did and of
// earlier evictions: the first 16, and how many more failed (all are
// logged and counted in PoolStats.EvictionErrors). The Log stays open
// (it is shared).
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	var victims []*poolEntry
	var pending []*poolOp
	for e := p.tail; e != nil; e = p.tail {
		p.unidle(e)
		e.state = poolClosing
		e.op = &poolOp{done: make(chan struct{})}
		victims = append(victims, e)
	}
	for _, e := range p.entries {
		if e.state == poolClosing && !slices.Contains(victims, e) {
			pending = append(pending, e.op)
		}
	}
	// Wake every waiting acquire: they find the Pool closed.
	close(p.changed)
	p.changed = make(chan struct{})
	p.mu.Unlock()
	p.cancel() // the opens in progress: their acquires retry, and find it closed
	p.evict(victims)
	for _, op := range pending {
		<-op.done
	}
	p.opens.Wait() // an open that completed anyway closed its installation if nobody held it
	p.mu.Lock()
	defer p.mu.Unlock()
	errs := p.closeErrs
	if n := p.stats.EvictionErrors - int64(len(errs)); n > 0 {
		errs = append(errs, fmt.Errorf("engine: pool: %d more closes of evicted installations failed (logged)", n))
	}
	p.closeErrs = nil
	return errors.Join(errs...)
}

// maxCloseErrs bounds the eviction errors a Pool keeps for Close: a
// process running for months with a failing disk would otherwise keep
// one per eviction.
const maxCloseErrs = 16
