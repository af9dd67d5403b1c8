package lease

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/nats-io/nuid"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/telemetry"
)

// Lease is a held lease: while Check returns nil, its holder, and nobody
// else, may write the installation's read model. It renews itself every
// TTL/3 until released or lost. It is safe for concurrent use.
type Lease struct {
	b      *Bucket
	key    string
	inst   events.InstallationID // "" for a member key
	value  []byte
	token  string
	how    string // telemetry.LeaseFree or LeaseTakeover
	ctx    context.Context
	cancel context.CancelFunc // stops renewing
	exited chan struct{}      // closed when the renewing goroutine returned

	mu         sync.Mutex
	rev        uint64
	sent       instant // when the last successful write was sent (at the latest)
	validUntil instant // on the lease clock (b.now), which counts a suspend
	err        error   // why it ended; nil while held
	done       chan struct{}
}

// Acquire takes inst's lease if nobody holds it and returns it, renewing
// itself until Release; if another holder has it, the error is a
// *HeldError (errors.Is ErrHeld) naming the holder. Each request is
// bounded by the Config's RequestTimeout. A lease whose holder died is
// held until it expires (TTL after its last renewal). Each renewal first
// checks that the bucket is still the one Open found: in a bucket deleted
// and created again the lease ends, its Err wrapping ErrLeaseLost and
// ErrBucketMismatch.
//
// A service that writes an installation's read model (an engine
// installation) takes its lease before opening it and checks it before
// each write; a share group's followers then never project it meanwhile.
func (b *Bucket) Acquire(ctx context.Context, inst events.InstallationID) (*Lease, error) {
	key, err := b.installationKey(inst)
	if err != nil {
		return nil, err
	}
	if err := b.unchanged(ctx); errors.Is(err, ErrBucketMismatch) {
		return nil, fmt.Errorf("lease: acquire installation %s: %w", inst, err)
	}
	return b.acquire(ctx, key, inst, "")
}

// acquire creates key for this holder (member: its share-group member id,
// or "") if its latest message says nobody holds it.
func (b *Bucket) acquire(ctx context.Context, key string, inst events.InstallationID, member string) (*Lease, error) {
	ctx, cancel := context.WithTimeout(ctx, b.timeout)
	defer cancel()
	rec := record{Holder: b.holder, Member: member, Token: nuid.Next(), Since: time.Now().UTC().Truncate(time.Millisecond)}
	value, err := json.Marshal(rec)
	if err != nil {
		return nil, err
	}
	what := "installation " + string(inst)
	if inst == "" {
		what = "member " + member
	}
	var first instant // when the first write that may have landed was sent
	sentAny := false  // first is set
	how := telemetry.LeaseFree
	for attempt := 0; ; attempt++ {
		st, err := b.latest(ctx, key)
		if err != nil {
			if ctx.Err() == nil && attempt < 8 && unansweredRead(err) {
				// No answer (a timeout, a stream leader being elected):
				// read again, as a write whose answer was lost is.
				pause(ctx, time.Duration(attempt+1)*20*time.Millisecond)
				continue
			}
			return nil, fmt.Errorf("lease: acquire %s: reading its lease: %w", what, err)
		}
		var rev uint64
		switch {
		case st.op == opPut && st.rec.Token == rec.Token:
			// An earlier try landed; its answer was lost.
			rev = st.rev
		case st.op == opPut && (member == "" || st.rec.Member != member):
			return nil, &HeldError{Installation: inst, Holder: st.rec.Holder, Member: st.rec.Member, Since: st.rec.Since}
		default:
			// Free, released, expired, or held by this very member under
			// a lease it already counts lost (stopped using it) while
			// the server has not expired it yet.
			if st.op == opExpired {
				how = telemetry.LeaseTakeover
			}
			if !sentAny {
				first, sentAny = b.now(), true
			}
			rev, err = b.put(ctx, key, value, st.rev)
			if err != nil {
				if ctx.Err() == nil && attempt < 8 && (errors.Is(err, errRevision) || eventlog.Unanswered(err)) {
					// Someone was quicker, or a replicated stream refused
					// the revision while the previous write settles, or
					// the answer was lost: read the key again.
					pause(ctx, time.Duration(attempt+1)*20*time.Millisecond)
					continue
				}
				return nil, fmt.Errorf("lease: acquire %s: %w", what, err)
			}
		}
		ls := b.newLease(key, inst, value, rec.Token, rev, first, how)
		if inst != "" {
			b.metrics.LeaseAcquired(how)
			attrs := []any{"installation", string(inst), "bucket", b.name, "revision", rev, "how", how}
			if member != "" {
				attrs = append(attrs, "member", member)
			}
			if how == telemetry.LeaseTakeover {
				b.logger.Info("lease: took over an installation whose holder let its lease expire", attrs...)
			} else {
				b.logger.Info("lease: acquired", attrs...)
			}
		}
		return ls, nil
	}
}

func pause(ctx context.Context, d time.Duration) {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
	case <-t.C:
	}
}

func (b *Bucket) newLease(key string, inst events.InstallationID, value []byte, token string, rev uint64, sent instant, how string) *Lease {
	ls := &Lease{b: b, key: key, inst: inst, value: value, token: token, how: how, rev: rev,
		sent: sent, validUntil: sent.add(b.Validity()), done: make(chan struct{}), exited: make(chan struct{})}
	ls.ctx, ls.cancel = context.WithCancel(context.Background())
	go ls.renewing()
	return ls
}

// Installation returns the installation the lease is for.
func (ls *Lease) Installation() events.InstallationID { return ls.inst }

// Revision returns the lease key's revision as this holder last wrote it:
// a fencing token that grows with every acquisition and renewal.
func (ls *Lease) Revision() uint64 {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.rev
}

// TakenOver reports whether the lease was acquired from a holder that let
// it expire (rather than free or released).
func (ls *Lease) TakenOver() bool { return ls.how == telemetry.LeaseTakeover }

// Check returns nil while the lease is valid, else an error wrapping
// ErrLeaseLost that says why. It asks nothing of the server: the lease
// is valid until 3/4 of the TTL after its last successful renewal was
// sent, and the server frees it a TTL after that renewal arrived, so a
// holder that checks before each write never writes once another holder
// may have it. Call it right before each commit. On Linux the clock it
// reads goes on while the system is suspended, as the server's TTL does:
// a holder suspended past the lease's validity finds it lost on resuming.
func (ls *Lease) Check() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	if ls.err == nil && ls.b.now() >= ls.validUntil {
		ls.loseLocked(telemetry.LeaseExpired, errors.New("not renewed in time"))
	}
	return ls.err
}

// Done is closed when the lease ends: lost or released. Err then says
// why.
func (ls *Lease) Done() <-chan struct{} { return ls.done }

// Err returns nil while the lease is held, else why it ended (wrapping
// ErrLeaseLost). Unlike Check it does not look at the clock.
func (ls *Lease) Err() error {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	return ls.err
}

// Release stops renewing the lease and frees it for another holder at
// once (a delete at the revision this holder last wrote; a lease already
// lost is left alone). From its call on, Check fails. An error (the
// bucket did not answer) leaves the lease to expire within the TTL.
// Calling it again does nothing.
func (ls *Lease) Release(ctx context.Context) error {
	ls.mu.Lock()
	if ls.err != nil {
		ls.mu.Unlock()
		ls.cancel()
		<-ls.exited
		return nil
	}
	ls.err = fmt.Errorf("%w: %s: released", ErrLeaseLost, ls.what())
	close(ls.done)
	ls.mu.Unlock()
	ls.cancel()
	<-ls.exited
	ls.mu.Lock()
	rev := ls.rev
	ls.mu.Unlock()
	if ls.inst != "" {
		ls.b.metrics.LeaseReleased()
	}
	ctx, cancel := context.WithTimeout(ctx, ls.b.timeout)
	defer cancel()
	// A delete at the lease's revision could match in a bucket created
	// again, whose revisions start from 1 again, and free another
	// holder's lease there.
	if err := ls.b.sameSince(ctx, time.Now()); errors.Is(err, ErrBucketMismatch) {
		ls.b.logger.Info("lease: not released: its bucket is gone or was created again, where it is void", "key", ls.key, "bucket", ls.b.name, "err", err)
		return nil
	} else if err != nil {
		return fmt.Errorf("lease: release %s: %w (it expires within %v)", ls.what(), err, ls.b.ttl)
	}
	err := ls.b.del(ctx, ls.key, rev)
	if errors.Is(err, errRevision) {
		// A renewal cut short by the release may have landed after all.
		if st, gerr := ls.b.latest(ctx, ls.key); gerr == nil && st.op == opPut && st.rec.Token == ls.token {
			rev = st.rev
			err = ls.b.del(ctx, ls.key, rev)
		}
	}
	switch {
	case err == nil:
		if ls.inst != "" {
			ls.b.logger.Info("lease: released", "installation", string(ls.inst), "bucket", ls.b.name, "revision", rev)
		}
		return nil
	case errors.Is(err, errRevision):
		// No longer ours (it expired while the renewal was failing).
		return nil
	default:
		return fmt.Errorf("lease: release %s: %w (it expires within %v)", ls.what(), err, ls.b.ttl)
	}
}

func (ls *Lease) what() string {
	if ls.inst != "" {
		return "installation " + string(ls.inst)
	}
	return "member key " + ls.key
}

// loseLocked ends the lease because of cause (ls.mu held).
func (ls *Lease) loseLocked(reason string, cause error) {
	if ls.err != nil {
		return
	}
	ls.err = fmt.Errorf("%w: %s: %w", ErrLeaseLost, ls.what(), cause)
	close(ls.done)
	ls.cancel()
	if ls.inst != "" {
		ls.b.metrics.LeaseLost(reason)
		ls.b.logger.Warn("lease: lost; stopping writes", "installation", string(ls.inst), "bucket", ls.b.name, "reason", reason, "err", ls.err)
	}
}

func (ls *Lease) lose(reason, why string) { ls.loseErr(reason, errors.New(why)) }

// loseErr ends the lease; its Err wraps cause (ErrBucketMismatch, say).
func (ls *Lease) loseErr(reason string, cause error) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.loseLocked(reason, cause)
}

// renewing renews the lease every TTL/3 (from the sending of one
// successful renewal to the next) until it is released or lost.
func (ls *Lease) renewing() {
	defer close(ls.exited)
	every := ls.b.RenewEvery()
	t := time.NewTimer(every)
	defer t.Stop()
	for {
		select {
		case <-ls.ctx.Done():
			return
		case <-t.C:
		}
		if !ls.renew() {
			return
		}
		ls.mu.Lock()
		next := ls.sent.add(every)
		ls.mu.Unlock()
		t.Reset(max(next.sub(ls.b.now()), 0))
	}
}

// renew renews the lease once, trying again while it is valid; it
// returns false when the lease ended.
func (ls *Lease) renew() bool {
	b := ls.b
	var first instant // the first write of this renewal that may have landed
	wait := 20 * time.Millisecond
	warned := false
	for n := 1; ; n++ {
		ls.mu.Lock()
		rev, until, ended := ls.rev, ls.validUntil, ls.err != nil
		ls.mu.Unlock()
		if ended {
			return false
		}
		// sent is on the lease clock, for the validity; asked on
		// time's, for the bucket check begun after it.
		sent, asked := b.now(), time.Now()
		if sent >= until {
			ls.lose(telemetry.LeaseExpired, fmt.Sprintf("not renewed in time: none landed for %v (the bucket did not answer, or the system was suspended)", b.Validity()))
			return false
		}
		if n == 1 {
			first = sent
		}
		ctx, cancel := context.WithTimeout(ls.ctx, min(b.ttl/4, until.sub(sent)))
		// The bucket is asked, before the write, whether it is the one
		// the lease was taken in: a bucket deleted and created again
		// counts revisions from 1 again, so a write at the lease's
		// revision could land there over another holder's lease.
		err := b.sameSince(ctx, asked)
		var got uint64
		if err == nil {
			got, err = b.put(ctx, ls.key, ls.value, rev)
		}
		if err == nil {
			err = ls.landed(ctx, got, sent)
		}
		if err == nil {
			cancel()
			if warned {
				b.logger.Info("lease: renewed again", "installation", string(ls.inst), "bucket", b.name, "attempts", n)
			}
			return true
		}
		if replaced(err) {
			cancel()
			ls.loseErr(telemetry.LeaseTaken, err)
			return false
		}
		if errors.Is(err, errRevision) {
			st, gerr := b.latest(ctx, ls.key)
			switch {
			case gerr != nil:
			case st.op == opPut && st.rec.Token == ls.token && st.rev > rev:
				// An earlier try landed; its answer was lost. It left
				// after first at the earliest.
				if err = ls.landed(ctx, st.rev, first); err == nil {
					cancel()
					return true
				}
				if replaced(err) {
					cancel()
					ls.loseErr(telemetry.LeaseTaken, err)
					return false
				}
			case st.op == opPut && st.rec.Token == ls.token:
				// Refused at our own revision: a replicated stream
				// settling. Try again.
			case st.op == opPut:
				cancel()
				ls.lose(telemetry.LeaseTaken, fmt.Sprintf("taken by %s", st.rec.Holder))
				return false
			default:
				cancel()
				ls.lose(telemetry.LeaseTaken, "deleted or expired on the server")
				return false
			}
		}
		cancel()
		if ls.ctx.Err() != nil {
			return false
		}
		level := slog.LevelDebug
		if !warned {
			level, warned = slog.LevelWarn, true
		}
		ls.mu.Lock()
		left := ls.validUntil.sub(b.now())
		ls.mu.Unlock()
		b.logger.Log(ls.ctx, level, "lease: renewal failed; trying again while the lease lasts", "installation", string(ls.inst), "key", ls.key, "bucket", b.name, "attempt", n, "valid_for", left.Round(time.Millisecond).String(), "err", err)
		pause(ls.ctx, wait)
		wait = min(2*wait, b.RenewEvery()/4)
	}
}

// landed counts a write of the lease that landed at rev, sent at sent,
// as a renewal once a check of the bucket begun after it finds the
// bucket the one the lease was taken in: the write cannot have landed in
// another bucket then, since a bucket, once deleted, never comes back.
// Until it is counted, the next write expects rev all the same.
func (ls *Lease) landed(ctx context.Context, rev uint64, sent instant) error {
	ls.mu.Lock()
	ls.rev = rev
	ls.mu.Unlock()
	if err := ls.b.sameSince(ctx, time.Now()); err != nil {
		return err
	}
	ls.renewed(rev, sent)
	return nil
}

// renewed records a renewal that landed at revision rev, sent at sent. A
// lease that ended meanwhile stays ended, but keeps the revision, so that
// Release deletes the key at the revision it really has.
func (ls *Lease) renewed(rev uint64, sent instant) {
	ls.mu.Lock()
	defer ls.mu.Unlock()
	ls.rev = rev
	if ls.err == nil {
		ls.sent = sent
		ls.validUntil = sent.add(ls.b.Validity())
	}
}
