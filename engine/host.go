package engine

import (
	"bytes"
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"slices"
	"sync"
	"time"
	"unsafe"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
)

// HostOptions tune a Host. The zero value (or nil) means defaults.
type HostOptions struct {
	// Workers bounds how many installations a Host works on at once
	// (MLS, checks against their read models, projection); default
	// twice GOMAXPROCS.
	Workers int
	// HoldNotYet keeps a delivery that Deliver refuses because its group
	// or epoch is not reached yet queued, unacknowledged with those
	// after it, for HoldNotYet from when this Host first held it (by
	// the Deliveries' clock; not from Delivery.EnqueuedAt, which the
	// enqueuing process stamped on its own clock); then it is
	// acknowledged as settled. The Welcome or commit it waits for may
	// be queued after it: when several processes act for the sender, a
	// commit decided on top of another process's commit can be fanned
	// out first (the other process slow, or killed and redoing its
	// fan-out after a restart), and a member that acknowledged it would
	// stay behind for good. 0 (the default) acknowledges it at the end
	// of the call: for a delivery service that keeps each member's
	// order. A forged payload (the epoch of a PrivateMessage is not
	// authenticated) holds the queue for at most HoldNotYet.
	HoldNotYet time.Duration
}

// Host runs the operations of many installations together, with group
// commit: the transitions of one call (every message of Send, every
// delivery of Deliver) are decided installation by installation, in
// parallel across installations and in order within each; each is
// appended as soon as it is decided, every aggregate's appends in flight
// together (one wait for all of them); and each read model applies the
// batch's events in one transaction, from memory when the stream shows
// they are all there is (else read back with one consumer). A service
// hosting many installations, or working through a backlog, gets the
// throughput of batches from it; an Installation's own methods do one
// operation at a time.
//
// Every transition keeps the guarantees of docs/engine.md ("What every
// operation guarantees"): each is one atomic append at the position its
// installation last saw, checked by the log against another writer (a
// transition that loses the race is decided again, after catching up,
// through the Installation's own method); results are returned only once
// their events are durable, with the read model's lag, if any, in their
// ProjectionErr; an append whose answer was lost is appended again with
// the same events until the server answers. Host takes the installations'
// locks (in a fixed order) for the time of each batch, so their other
// operations wait as they wait for each other.
//
// What it batches is the steady path: application messages sent with no
// path update due, and received application messages of the group's
// current epoch that are neither known nor repeated. Anything else (a
// commit, a Welcome, a late or duplicate message, an update due) goes
// through the Installation's method, in its place in the order. A Host is
// safe for concurrent use.
type Host struct {
	log     *eventlog.Log
	del     *Deliveries
	workers int
	hold    time.Duration // HostOptions.HoldNotYet

	heldMu sync.Mutex
	// heldSince is when this Host first held each delivery refused as
	// not yet (HoldNotYet), by queue and sequence.
	heldSince map[queueKey]map[uint64]time.Time
}

// checkpoint returns a lower bound of in's read model checkpoint: the
// last one a Host saw it reach (Installation.appliedTo), else the read
// model's.
func (h *Host) checkpoint(ctx context.Context, in *Installation) (uint64, error) {
	if cp := in.appliedTo.Load(); cp > 0 {
		return cp, nil
	}
	return in.db.Checkpoint(ctx)
}

// applied records that in's read model holds every event up to seq.
func (h *Host) applied(in *Installation, seq uint64) {
	for {
		cur := in.appliedTo.Load()
		if seq <= cur || in.appliedTo.CompareAndSwap(cur, seq) {
			return
		}
	}
}

// NewHost returns a Host on l, delivering through d.
func NewHost(l *eventlog.Log, d *Deliveries, opts *HostOptions) *Host {
	var o HostOptions
	if opts != nil {
		o = *opts
	}
	return &Host{log: l, del: d, workers: cmp.Or(o.Workers, 2*runtime.GOMAXPROCS(0)), hold: o.HoldNotYet,
		heldSince: map[queueKey]map[uint64]time.Time{}}
}

// holds returns, for the deliveries ds of queue k as a call processed
// them (out), which of those refused as not yet are still held at now,
// and records when this Host first held each. HoldNotYet is counted on
// this Host's clock: the deliveries' EnqueuedAt is the enqueuing
// process's, and one running minutes behind gave no hold at all, one a
// year ahead held the queue for a year. What the call did not reach
// (after ds, or left unprocessed) keeps its time; what is before ds was
// acknowledged and is forgotten.
func (h *Host) holds(k queueKey, ds []Delivery, out []*Delivered, now time.Time) map[int]bool {
	if h.hold <= 0 {
		return nil
	}
	h.heldMu.Lock()
	defer h.heldMu.Unlock()
	old := h.heldSince[k]
	next := map[uint64]time.Time{}
	held := map[int]bool{}
	for j, d := range ds {
		since, seen := old[d.Seq]
		switch {
		case out[j] == nil:
			if seen {
				next[d.Seq] = since
			}
		case out[j].Err != nil && notYet(out[j].Err):
			if !seen {
				since = now
			}
			next[d.Seq] = since
			held[j] = now.Sub(since) < h.hold
		}
	}
	if len(ds) > 0 {
		for seq, since := range old {
			if seq > ds[len(ds)-1].Seq {
				next[seq] = since
			}
		}
	}
	if len(next) == 0 {
		delete(h.heldSince, k)
	} else {
		h.heldSince[k] = next
	}
	return held
}

// SendRequest is one message for Host.Send: Installation.Send's arguments.
type SendRequest struct {
	Installation                        *Installation
	GroupID, Content, AuthenticatedData []byte
}

// SendResult is the outcome of one SendRequest, as Installation.Send
// returns it: an output (with ProjectionErr when the read model lags) or
// an error (with an output holding only its Update, when that happened).
type SendResult struct {
	Output *SendOutput
	Err    error
}

// Send sends every request, in order for each installation, and returns
// their results in the order of reqs. The messages of requests whose
// group needs no path update are sealed, appended together and projected
// together; a request that needs one (see Installation.Send), and the
// installation's requests after it, go through Installation.Send.
func (h *Host) Send(ctx context.Context, reqs []SendRequest) []SendResult {
	out := make([]SendResult, len(reqs))
	works := groupWork(reqs, func(r SendRequest) *Installation { return r.Installation })
	h.batch(ctx, works, "", func(w *hostWork, emit func(*hostOp)) { h.decideSends(ctx, w, reqs, emit) })
	for _, w := range works {
		for _, op := range w.ops {
			if op.err == nil {
				op.send.ProjectionErr = w.projErr
				out[op.idx] = SendResult{Output: op.send}
				w.done[op.idx] = true
			} else if !retried(op.err) {
				err := fmt.Errorf("engine: installation %s: send to group %x: %w", w.in.id, reqs[op.idx].GroupID, op.err)
				if errors.Is(op.err, ErrOutcomeUnknown) && op.send != nil {
					// As Installation.Send: the message, for Decide.
					err = &OutcomeUnknownError{Err: err, Send: op.send, expected: op.expected, evs: op.evs}
				}
				out[op.idx] = SendResult{Err: err}
				w.done[op.idx] = true
			}
		}
	}
	// What the batch did not settle goes the Installation's way, in order.
	h.each(len(works), func(i int) {
		w := works[i]
		for _, idx := range w.idx {
			if w.done[idx] {
				continue
			}
			r := reqs[idx]
			o, err := w.in.Send(ctx, r.GroupID, r.Content, r.AuthenticatedData)
			out[idx] = SendResult{Output: o, Err: err}
		}
	})
	return out
}

// Delivered is one delivery Host.Deliver processed: what Installation.
// Receive returned for it.
type Delivered struct {
	Delivery Delivery
	Received *Received // nil when Err is set
	Err      error
}

// DeliverResult is what Host.Deliver did for one installation.
type DeliverResult struct {
	Installation events.InstallationID
	// Delivered are the deliveries processed, in sequence order: received
	// (Received set, with ProjectionErr when the read model lags) or
	// refused as settled (Err set: see Deliver).
	Delivered []Delivered
	// Acked is the sequence acknowledged on the channel (0: none): the
	// last delivery of the longest run of processed ones.
	Acked uint64
	// Err is what stopped the installation's deliveries, if anything: a
	// delivery's error other than a settled one (it and those after it
	// stay queued, and so do those refused before it that were waiting
	// for their group or epoch: those received meanwhile are in
	// Delivered, and refused as duplicates when delivered again), a
	// failed fetch or acknowledgement.
	Err error
}

// Deliver fetches the pending deliveries of every installation on
// channel (up to limit each; 0: all), receives them in order and
// acknowledges what was processed: Deliveries.Fetch, Installation.Receive
// for each and Deliveries.Acknowledge, as examples/backend does, for
// every installation at once. Runs of application messages are received
// with group commit; anything else goes through Installation.Receive in
// its place. A delivery refused for what it is, which records nothing and
// which every later try would refuse the same way (a redelivery, a stale
// or retired epoch or one not reached, bytes that do not decode or
// authenticate, a group or sender this installation does not have, a
// member refused: see Settled), is acknowledged like the rest, its error
// in its Delivered; any other error (the stream, the read model,
// ErrForked, a CheckMember that could not decide) stops that
// installation's deliveries at it, unacknowledged (the others carry on).
// A delivery refused because its group or epoch is not reached yet (a
// message queued ahead of the Welcome or commit it needs: a delivery
// service that did not keep the member's order) is tried again whenever
// a later delivery of the same call moves its group, and received then;
// only what is still refused at the end is acknowledged as settled (if
// another error stopped the installation, such a delivery stays queued
// with what it may wait for). Up to 64 such deliveries per installation
// and call wait so. With HostOptions.HoldNotYet, such a delivery this
// Host first held less than that long ago is not acknowledged at the end
// either: it stays queued (with those after it) for a later call, as the
// Welcome or commit it needs may be queued after it.
// It returns one result per installation, in the order of insts.
func (h *Host) Deliver(ctx context.Context, channel string, insts []*Installation, limit int) []DeliverResult {
	insts = distinct(insts)
	res := make([]DeliverResult, len(insts))
	ids := make([]events.InstallationID, len(insts))
	for i, in := range insts {
		ids[i] = in.id
		res[i].Installation = in.id
	}
	pending, err := h.del.FetchMany(ctx, ids, channel, limit)
	if err != nil {
		for i := range res {
			res[i].Err = err
		}
		return res
	}
	st := make([]*deliverState, len(insts))
	for i, in := range insts {
		ds := pending[in.id]
		st[i] = &deliverState{in: in, ds: ds, out: make([]*Delivered, len(ds))}
	}
	for {
		var works []*hostWork
		var active []*deliverState
		for _, s := range st {
			if s.err == nil && s.next < len(s.ds) {
				active = append(active, s)
				works = append(works, &hostWork{in: s.in, deliver: s})
			}
		}
		if len(active) == 0 {
			break
		}
		h.batch(ctx, works, channel, func(w *hostWork, emit func(*hostOp)) { h.decideReceives(ctx, w, w.deliver, emit) })
		for i, w := range works {
			s := active[i]
			for _, op := range w.ops {
				switch {
				case op.err == nil:
					op.recv.ProjectionErr = w.projErr
					s.out[op.idx] = &Delivered{Delivery: s.ds[op.idx], Received: op.recv}
				case !retried(op.err):
					// The outcome is not known: stop here, unacknowledged;
					// a redelivery finds out (ErrDuplicateMessage if it
					// was recorded).
					s.out[op.idx] = &Delivered{Delivery: s.ds[op.idx], Err: fmt.Errorf("engine: installation %s: receive: %w", w.in.id, op.err)}
					s.err = s.out[op.idx].Err
				}
			}
			s.advance()
		}
		// The next delivery of each installation that the batch did not
		// take goes the Installation's way.
		h.each(len(active), func(i int) {
			s := active[i]
			if s.err != nil || s.next >= len(s.ds) {
				return
			}
			d := s.ds[s.next]
			r, err := s.in.Receive(ctx, d.Payload)
			s.out[s.next] = &Delivered{Delivery: d, Received: r, Err: err}
			switch {
			case err == nil:
				s.receivedMoved(ctx, r)
			case !Settled(err):
				s.err = err
			default:
				s.wait(s.next, err)
			}
			s.advance()
		})
	}
	acks := map[events.InstallationID]uint64{}
	now := h.del.now()
	for i, s := range st {
		ok := true // every delivery so far processed
		// Stopped, the installation gets its deliveries again from the
		// first one not acknowledged: one still waiting for its group or
		// epoch stays queued with the Welcome or commit it may be waiting
		// for, which the stop left queued too.
		// What a delivery refused as not yet waits for may be queued
		// after it (HoldNotYet).
		held := h.holds(queueKey{s.in.id, channel}, s.ds, s.out, now)
		if s.err != nil {
			if held == nil {
				held = map[int]bool{}
			}
			for _, w := range s.waiting {
				held[w.idx] = true
			}
		}
		for j, d := range s.out {
			if d == nil {
				ok = false
				continue
			}
			// A delivery recorded out of turn (after one that stopped
			// the installation) is returned all the same: it happened.
			res[i].Delivered = append(res[i].Delivered, *d)
			if ok && !held[j] && (d.Err == nil || Settled(d.Err)) {
				res[i].Acked = d.Delivery.Seq
			} else {
				ok = false
			}
		}
		res[i].Err = s.err
		if res[i].Acked > 0 {
			acks[s.in.id] = res[i].Acked
		}
	}
	if len(acks) > 0 {
		errs := h.del.AcknowledgeMany(ctx, channel, acks)
		for i, in := range insts {
			if err := errs[in.id]; err != nil {
				res[i].Acked, res[i].Err = 0, errors.Join(res[i].Err, err)
			}
		}
	}
	return res
}

// deliverState is one installation's deliveries in Deliver.
type deliverState struct {
	in   *Installation
	ds   []Delivery
	out  []*Delivered // by index in ds
	next int          // the first delivery not processed
	err  error        // what stopped it
	// waiting are the deliveries refused because their group or epoch
	// is not reached yet, by index in ds, with their group: each is tried
	// again when a later delivery of the batch moves its group (a
	// Welcome, a commit), and stays refused (settled) otherwise.
	waiting []waitingDelivery
}

type waitingDelivery struct {
	idx   int
	group string
}

// maxWaiting bounds the deliveries of one installation and Deliver call
// that wait for their group or epoch: each is tried again after every
// Welcome or commit of its group in the batch, and a payload's cleartext
// group and epoch are anyone's to forge.
const maxWaiting = 64

// notYet reports whether a settled refusal may turn into a receipt once
// the installation has processed more of its queue: a message of a group
// it does not hold yet (queued ahead of its Welcome), of an epoch not
// reached (ahead of its commit), or reaching it as a non-member (ahead of
// the Welcome that adds it again).
func notYet(err error) bool {
	return errors.Is(err, ErrUnknownGroup) || errors.Is(err, mls.ErrWrongEpoch) || errors.Is(err, mls.ErrNotMember)
}

// wait keeps delivery idx, refused with err, to try again if err may
// pass later (notYet) and the bound allows.
func (s *deliverState) wait(idx int, err error) {
	if !notYet(err) || len(s.waiting) >= maxWaiting {
		return
	}
	var m mls.MLSMessage
	if m.Unmarshal(s.ds[idx].Payload) != nil {
		return
	}
	var gid []byte
	switch {
	case m.PrivateMessage != nil:
		gid = m.PrivateMessage.GroupID
	case m.PublicMessage != nil:
		gid = m.PublicMessage.Content.GroupID
	default:
		return
	}
	s.waiting = append(s.waiting, waitingDelivery{idx: idx, group: string(gid)})
}

// receivedMoved tries the waiting deliveries of r's group again once r,
// a Welcome or a commit, moved it: in queue order, until a pass receives
// none (a received commit may let the next one through). A delivery that
// now passes replaces its refusal; one still refused for what it is stays
// so; any other error stops the installation there, like a delivery of
// its own turn (what was received after it is redelivered and refused as
// a duplicate).
func (s *deliverState) receivedMoved(ctx context.Context, r *Received) {
	if r == nil || (r.Kind != "welcome" && r.Kind != "commit") {
		return
	}
	moved := map[string]bool{string(r.GroupID): true}
	for progress := true; progress && s.err == nil; {
		progress = false
		kept := s.waiting[:0]
		for _, w := range s.waiting {
			if !moved[w.group] || s.err != nil {
				kept = append(kept, w)
				continue
			}
			d := s.ds[w.idx]
			got, err := s.in.Receive(ctx, d.Payload)
			switch {
			case err == nil:
				s.out[w.idx] = &Delivered{Delivery: d, Received: got}
				progress = true
				if got.Kind == "welcome" || got.Kind == "commit" {
					moved[string(got.GroupID)] = true
				}
			case !Settled(err):
				s.out[w.idx] = &Delivered{Delivery: d, Err: err}
				s.err = err
			case notYet(err):
				kept = append(kept, w)
			default:
				s.out[w.idx] = &Delivered{Delivery: d, Err: err}
			}
		}
		s.waiting = kept
	}
}

// advance moves next past the processed deliveries; a delivery whose
// error stopped the installation ends them.
func (s *deliverState) advance() {
	for s.next < len(s.ds) && s.out[s.next] != nil {
		if d := s.out[s.next]; d.Err != nil && !Settled(d.Err) {
			s.next = len(s.ds)
			return
		}
		s.next++
	}
}

// Settled reports whether a delivery's error leaves nothing to do with
// it but acknowledge it (Host.Deliver does; a service draining a queue
// through Installation.Receive should too): the payload itself is
// refused, nothing is recorded, and holding it would stop the
// installation's queue at it, on every delivery, so that what is behind
// it (a Welcome, another group's messages) is never received. That is: a
// redelivery; a commit, proposal or message of an epoch the group left or
// retired; bytes that do not decode or do not authenticate (which anyone
// who can enqueue can send); a message of a group this installation does
// not hold (a commit queued to a joiner ahead of its Welcome) or from a
// sender the epoch does not have; a member refused (ErrMemberRefused);
// a message kind Receive does not take, a Welcome for none of its key
// packages; and a message of an epoch the group has not reached
// (mls.ErrWrongEpoch): a PrivateMessage's epoch is not authenticated
// before it can be decrypted, so anyone who can enqueue can send one, and
// a queue stopped at it would stay stopped. Such a payload is in its
// Delivered (Delivery.Payload, with the error): a service whose commits
// may come by another channel keeps it and hands it to Receive once the
// commit is in. What may go otherwise on a later try stops the queue
// instead: failures of the stream or the read model, an outcome not
// known, ErrForked (the installation must Resync), a pre-shared key not
// registered yet (mls.ErrUnknownPSK), a CheckMember that could not decide.
func Settled(err error) bool {
	for _, s := range settledErrs {
		if errors.Is(err, s) {
			return true
		}
	}
	return false
}

var settledErrs = []error{
	ErrDuplicateMessage, ErrStaleCommit, ErrStaleProposal, ErrEpochRetired, ErrUnknownGroup,
	ErrUnsupportedMessage, ErrNoKeyPackage, ErrMemberRefused,
	mls.ErrDecode, mls.ErrTampered, mls.ErrBadSignature, mls.ErrDecrypt, mls.ErrNotMember,
	mls.ErrWrongGroup, mls.ErrEpochRetired, mls.ErrGenerationReused, mls.ErrTooFarAhead,
	mls.ErrInvalidTree, mls.ErrInvalidLeafNode, mls.ErrInvalidKeyPackage, mls.ErrInvalidUpdatePath,
	mls.ErrInvalidProposal, mls.ErrNoWelcomeSecrets, mls.ErrReInitialized, mls.ErrWrongEpoch,
}

// hostWork is one installation's part of a batch.
type hostWork struct {
	in       *Installation
	idx      []int                  // Send: the requests of this installation, in order
	done     map[int]bool           // Send: requests settled by the batch
	deliver  *deliverState          // Deliver: the installation's deliveries
	ops      []*hostOp              // the transitions decided, in order
	groups   map[string]*groupState // by group: its state after its last op
	last     uint64                 // the stream sequence of its last event recorded
	recorded int                    // how many events the batch recorded for it
	cp       uint64                 // its read model's checkpoint before the batch's read
	projErr  error                  // the read model could not be brought up to date
}

// hostOp is one transition decided in a batch, waiting for the group
// commit.
type hostOp struct {
	idx      int // the request (Send) or delivery (Deliver) it serves
	agg      events.Aggregate
	expected uint64
	evs      []events.Event
	limit    time.Duration // its installation's OutcomeTimeout
	group    string        // string(group id)
	send     *SendOutput
	recv     *Received
	res      []eventlog.Appended
	err      error
}

// errSkipped marks a transition not appended because an earlier one on
// its aggregate failed: it was decided on a state that did not happen.
var errSkipped = errors.New("engine: not appended: an earlier transition of the aggregate failed")

// retried reports whether a batch's transition that failed with err is
// decided again through the Installation (another writer won the
// aggregate, or an earlier transition of it failed) rather than reported:
// nothing of it was recorded.
func retried(err error) bool {
	return errors.Is(err, eventlog.ErrConflict) || errors.Is(err, errSkipped)
}

// groupWork groups items by installation, in order of first appearance.
func groupWork[T any](items []T, inst func(T) *Installation) []*hostWork {
	var works []*hostWork
	by := map[*Installation]*hostWork{}
	for i, it := range items {
		in := inst(it)
		w := by[in]
		if w == nil {
			w = &hostWork{in: in, done: map[int]bool{}}
			by[in] = w
			works = append(works, w)
		}
		w.idx = append(w.idx, i)
	}
	return works
}

// distinct drops repeated installations, keeping the first.
func distinct(insts []*Installation) []*Installation {
	seen := map[*Installation]bool{}
	out := make([]*Installation, 0, len(insts))
	for _, in := range insts {
		if !seen[in] {
			seen[in] = true
			out = append(out, in)
		}
	}
	return out
}

// each runs f(0..n-1) on up to h.workers goroutines and waits.
func (h *Host) each(n int, f func(i int)) {
	if n == 1 {
		f(0)
		return
	}
	sem := make(chan struct{}, h.workers)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			f(i)
		}()
	}
	wg.Wait()
}

// batch runs one group commit over works (of Deliver on channel, or of
// Send: channel empty): with every installation's lock
// held (taken in a fixed order, so that batches and operations cannot
// wait for each other in a circle), decide fills each work's ops (in
// parallel across installations) and hands each to emit as soon as it is
// decided, which appends it meanwhile (committer); once every op is
// settled, each installation's group cache follows what was recorded, and
// the installations with new events are projected together.
func (h *Host) batch(ctx context.Context, works []*hostWork, channel string, decide func(w *hostWork, emit func(*hostOp))) {
	locked := slices.Clone(works)
	slices.SortFunc(locked, func(a, b *hostWork) int {
		if c := cmp.Compare(a.in.id, b.in.id); c != 0 {
			return c
		}
		// Two Installations of one id (two processes' worth in one):
		// by address, which does not change while they live.
		return cmp.Compare(uintptr(unsafe.Pointer(a.in)), uintptr(unsafe.Pointer(b.in)))
	})
	for _, w := range locked {
		w.in.mu.Lock()
	}
	defer func() {
		for _, w := range locked {
			w.in.mu.Unlock()
		}
	}()
	c := newCommitter(ctx, h.log)
	h.each(len(works), func(i int) { decide(works[i], c.add) })
	c.wait()
	n := 0
	for _, w := range works {
		n += len(w.ops)
	}
	if n == 0 {
		return
	}
	var touched []*hostWork
	debug := h.log.Logger().Enabled(ctx, slog.LevelDebug)
	for _, w := range works {
		failed := map[string]bool{}
		for _, op := range w.ops {
			if op.err != nil {
				failed[op.group] = true
				continue
			}
			w.recorded += len(op.evs)
			w.last = max(w.last, op.res[len(op.res)-1].Seq)
			if debug {
				h.log.Logger().Debug("engine: recorded", append(aggAttrs(h.log, op.evs), "seq", op.res[len(op.res)-1].Seq, "duplicate", op.res[0].Duplicate, "batch", n)...)
			}
		}
		// The group after its last transition, when all of them were
		// recorded; a group with a transition that failed (decided on a
		// state that did not happen, or with its outcome unknown) is
		// loaded again when next used.
		for gid, gs := range w.groups {
			if failed[gid] {
				delete(w.in.group, gid)
			} else {
				w.in.group[gid] = gs
			}
		}
		if w.last > 0 {
			touched = append(touched, w)
		}
	}
	if len(touched) > 0 {
		h.project(ctx, touched, channel)
	}
}

// committer appends a batch's transitions while they are being decided:
// each aggregate's transitions are appended in order by a goroutine of
// its own, each waiting for the previous one's answer (which gives the
// next its expected sequence), while other aggregates' appends are in
// flight too, at most eventlog.DefaultMaxInFlight at once. Every append is
// decided (decideAppend: a lost answer is asked again with the same
// events); after a failed one, the aggregate's later transitions fail
// with errSkipped.
type committer struct {
	ctx    context.Context
	log    *eventlog.Log
	sem    chan struct{}
	wg     sync.WaitGroup
	mu     sync.Mutex
	queues map[events.Aggregate]*aggQueue
}

// aggQueue is one aggregate's transitions waiting in a committer.
type aggQueue struct {
	ops     []*hostOp
	running bool // a goroutine appends them
	failed  bool // one of them failed
}

func newCommitter(ctx context.Context, l *eventlog.Log) *committer {
	return &committer{ctx: ctx, log: l, sem: make(chan struct{}, eventlog.DefaultMaxInFlight), queues: map[events.Aggregate]*aggQueue{}}
}

// add queues op after the ones of its aggregate added before.
func (c *committer) add(op *hostOp) {
	c.mu.Lock()
	defer c.mu.Unlock()
	q := c.queues[op.agg]
	if q == nil {
		q = &aggQueue{}
		c.queues[op.agg] = q
	}
	q.ops = append(q.ops, op)
	if !q.running {
		q.running = true
		c.wg.Add(1)
		go c.run(q)
	}
}

// run appends q's transitions until none is waiting.
func (c *committer) run(q *aggQueue) {
	defer c.wg.Done()
	for {
		c.mu.Lock()
		if len(q.ops) == 0 {
			q.running = false
			c.mu.Unlock()
			return
		}
		op, failed := q.ops[0], q.failed
		q.ops = q.ops[1:]
		c.mu.Unlock()
		if failed {
			op.err = errSkipped
			continue
		}
		c.sem <- struct{}{}
		op.res, op.err = decideAppend(c.ctx, c.log, op.expected, op.evs, op.limit)
		<-c.sem
		if op.err != nil {
			c.mu.Lock()
			q.failed = true
			c.mu.Unlock()
		}
	}
}

// wait returns once every transition added is settled.
func (c *committer) wait() { c.wg.Wait() }

// projectFromMemory lets project apply known events from memory
// (projectKnown); tests switch it off to exercise the reads, and must not
// call t.Parallel when they do.
var projectFromMemory = true

// scanDensity: a batch's read-back scans the whole stream over its range
// (eventlog.Log.ScanTo) when the range holds at most this many events per
// event the batch recorded; a sparser range (other installations' traffic)
// is read installation by installation. A consumer filtered on many
// installations is never used: nats-server matches each message against
// every filter, which costs more than scanning several times the events.
const scanDensity = 8

// consumerFrom: an installation reads its part of a sparse range with a
// consumer of its own (eventlog.Log.ReadInstallationsTo) when the batch
// recorded at least this many of its events, else with message gets
// (Installation.CatchUp's way).
const consumerFrom = 8

// project brings the read models of works up to the last event the
// batch recorded for them. An installation whose
// new events are all known here (projectKnown) applies them from memory;
// the others' are read (see scanDensity). Each read model applies its
// events in one transaction. Should a read fail, the installations catch
// up on their own (Installation.CatchUp's way). A failure is the work's
// projErr; the installations' locks are held.
func (h *Host) project(ctx context.Context, works []*hostWork, channel string) {
	fromMemory := make([]bool, len(works))
	if projectFromMemory {
		h.each(len(works), func(i int) { fromMemory[i] = h.projectKnown(ctx, works[i], channel) })
	}
	rest := works[:0:0]
	recorded := 0 // the events the batch recorded for those read back
	for i, w := range works {
		if !fromMemory[i] {
			rest = append(rest, w)
			recorded += w.recorded
		}
	}
	if len(rest) == 0 {
		return
	}
	works = rest
	cps := make([]uint64, len(works))
	errs := make([]error, len(works))
	h.each(len(works), func(i int) { cps[i], errs[i] = h.checkpoint(ctx, works[i].in) })
	var ids []events.InstallationID
	var ok []*hostWork
	cp := map[events.InstallationID]uint64{}
	var from, to uint64
	for i, w := range works {
		if errs[i] != nil {
			w.projErr = fmt.Errorf("%w: engine: installation %s: catch up read model: %w", errNotProjected, w.in.id, errs[i])
			continue
		}
		w.cp = cps[i]
		if len(ok) == 0 || cps[i]+1 < from {
			from = cps[i] + 1
		}
		to = max(to, w.last)
		ids, ok = append(ids, w.in.id), append(ok, w)
		cp[w.in.id] = cps[i]
	}
	if len(ok) == 0 {
		return
	}
	var mu sync.Mutex
	recs := map[events.InstallationID][]projections.Record{}
	collect := func(r eventlog.Record) error {
		id := r.Event.Aggregate.Installation
		if r.Seq > cp[id] {
			mu.Lock()
			recs[id] = append(recs[id], projections.Record{Seq: r.Seq, Event: r.Event})
			mu.Unlock()
		}
		return nil
	}
	scan := len(ok) > 1 && to-from+1 <= scanDensity*uint64(recorded)
	var err error
	if scan {
		// The batch's own events fill the range: read all of it.
		if err = h.log.ScanTo(ctx, ids, from, to, collect); err != nil {
			countApplyError(h.log.Metrics(), err)
			h.log.Logger().Warn("engine: reading a batch's events back failed; each installation catches up on its own",
				"stream", h.log.Stream(), "installations", len(ids), "err", err)
		}
	}
	h.each(len(ok), func(i int) {
		w := ok[i]
		var perr error
		switch {
		case scan && err != nil, !scan && w.recorded < consumerFrom:
			perr = w.in.project(ctx)
		case !scan:
			if perr = h.log.ReadInstallationsTo(ctx, []events.InstallationID{w.in.id}, w.cp+1, w.last, collect); perr != nil {
				countApplyError(h.log.Metrics(), perr)
				perr = w.in.project(ctx) // message gets, as an Installation would
				break
			}
			fallthrough
		default:
			mu.Lock()
			rs := recs[w.in.id]
			mu.Unlock()
			if len(rs) == 0 {
				break
			}
			if perr = w.in.db.Apply(ctx, rs); perr != nil {
				countApplyError(h.log.Metrics(), perr)
				perr = fmt.Errorf("engine: installation %s: project: %w", w.in.id, perr)
			} else {
				countApplied(h.log.Metrics(), rs)
				h.applied(w.in, rs[len(rs)-1].Seq)
			}
		}
		if perr != nil {
			w.projErr = fmt.Errorf("%w: %w", errNotProjected, perr)
		}
	})
}

// projectKnown applies w's new events from memory, without reading the
// log, when it can prove they are all it knows: the events the batch
// recorded for the installation, and the events of its queues (Deliver's
// channel, and those its read model knows) that the Deliveries holds. The proof is the stream's count of
// the installation's events on each subject (one request): on every
// subject, the read model's position plus the events known must account
// for every event up to the last one applied; an event beyond those
// (another process's, a fan-out under way) must come after it, which one
// message get on its subject shows. Anything else, or a failure, returns
// false: the events are read instead.
func (h *Host) projectKnown(ctx context.Context, w *hostWork, channel string) bool {
	in := w.in
	cp, positions, err := in.db.Projected(ctx)
	if err != nil {
		return false
	}
	var recs []projections.Record
	for _, op := range w.ops {
		if op.err != nil {
			continue
		}
		for i, ev := range op.evs {
			ev.Position = op.res[i].Position
			recs = append(recs, projections.Record{Seq: op.res[i].Seq, Event: ev})
		}
	}
	// The installation's queues this process serves: Deliver's channel,
	// and every queue the read model knows of.
	channels := map[string]bool{}
	if channel != "" {
		channels[channel] = true
	}
	for a := range positions {
		if a.Type == events.AggDelivery {
			channels[a.ID] = true
		}
	}
	for ch := range channels {
		k := queueKey{in.id, ch}
		qrs, ok := h.del.recentEvents(k, positions[deliveryAgg(k)])
		if !ok {
			if ch == channel {
				return false
			}
			continue // the count below tells whether the queue moved
		}
		for _, r := range qrs {
			recs = append(recs, projections.Record{Seq: r.Seq, Event: r.Event})
		}
	}
	counts, err := h.log.SubjectCounts(ctx, in.id)
	if err != nil {
		return false
	}
	known := map[string]uint64{}     // by subject: events known
	lastKnown := map[string]uint64{} // by subject: the stream sequence of the last known
	var upTo uint64
	for _, r := range recs {
		if r.Seq <= cp {
			return false // already applied: the read model is not where the batch left it
		}
		subj, err := h.log.Subject(r.Event.Aggregate)
		if err != nil {
			return false
		}
		known[subj]++
		lastKnown[subj] = max(lastKnown[subj], r.Seq)
		upTo = max(upTo, r.Seq)
	}
	held := map[string]uint64{} // by subject: the read model's position
	for a, p := range positions {
		subj, err := h.log.Subject(a)
		if err != nil {
			return false
		}
		held[subj] = p
	}
	for subj := range known {
		if _, ok := counts[subj]; !ok {
			return false
		}
	}
	for subj, n := range counts {
		want := held[subj] + known[subj]
		switch {
		case n < want:
			return false
		case n > want:
			after := lastKnown[subj]
			if after == 0 {
				after = cp
			}
			seq, found, err := h.log.FirstSeqAfter(ctx, subj, after)
			if err != nil || !found || seq <= upTo {
				return false
			}
		}
	}
	if len(recs) == 0 {
		return true
	}
	slices.SortFunc(recs, func(a, b projections.Record) int { return cmp.Compare(a.Seq, b.Seq) })
	if err := in.db.Apply(ctx, recs); err != nil {
		countApplyError(h.log.Metrics(), err)
		return false
	}
	countApplied(h.log.Metrics(), recs)
	h.applied(in, upTo)
	return true
}

// decideSends decides w's requests of reqs, in order, up to the first
// that the batch does not take (a path update due, or a failure, which
// Installation.Send reports as it would).
func (h *Host) decideSends(ctx context.Context, w *hostWork, reqs []SendRequest, emit func(*hostOp)) {
	in := w.in
	now := in.opts.Now()
	states := map[string]*groupState{}
	for _, idx := range w.idx {
		r := reqs[idx]
		gs := states[string(r.GroupID)]
		if gs == nil {
			var err error
			if gs, err = in.loadGroup(ctx, r.GroupID); err != nil {
				return
			}
		}
		if gs.updateDue(now, in.opts.UpdateInterval) {
			return // Send commits a path update first
		}
		ng, msg, err := gs.g.SealApplication(r.Content, r.AuthenticatedData)
		if err != nil {
			return
		}
		wire, err := msg.Marshal()
		if err != nil {
			return
		}
		id := messageID(wire)
		agg := in.groupAgg(r.GroupID)
		after := &groupState{id: gs.id, pos: gs.pos + 1, g: ng, lastUpdate: gs.lastUpdate, epochStart: gs.epochStart}
		w.ops = append(w.ops, &hostOp{idx: idx, agg: agg, expected: gs.pos, limit: in.opts.OutcomeTimeout, group: string(r.GroupID),
			evs: []events.Event{{Aggregate: agg, Time: now.UTC(), Body: events.ApplicationMessageSent{
				GroupID: r.GroupID, Epoch: ng.Epoch(), SenderLeaf: uint32(ng.LeafIndex()), Sender: in.id,
				MessageID: id, Content: events.NewSecret(r.Content), AuthenticatedData: r.AuthenticatedData, Message: wire,
			}}},
			send: &SendOutput{GroupID: bytes.Clone(r.GroupID), Epoch: ng.Epoch(), MessageID: id, Message: wire, Recipients: otherMembers(ng)},
		})
		emit(w.ops[len(w.ops)-1])
		states[string(r.GroupID)] = after
		w.groups = states
	}
}

// decideReceives decides the run of s's deliveries from s.next that are
// application messages of their group's current epoch, neither recorded
// before nor repeated, and that open: the checks and the event of
// Installation.Receive for them. It stops at the first that is anything
// else; Receive then takes that one, and reports it as it would.
func (h *Host) decideReceives(ctx context.Context, w *hostWork, s *deliverState, emit func(*hostOp)) {
	in := w.in
	type candidate struct {
		idx int
		m   *mls.MLSMessage
		id  []byte
	}
	var cands []candidate
	ids := map[string][][]byte{} // by group: the message ids to look up
	for i := s.next; i < len(s.ds); i++ {
		if s.out[i] != nil {
			continue // recorded by an earlier batch, out of turn
		}
		m := new(mls.MLSMessage)
		if err := m.Unmarshal(s.ds[i].Payload); err != nil || m.PrivateMessage == nil || m.PrivateMessage.ContentType != mls.ContentTypeApplication {
			break
		}
		id := messageID(s.ds[i].Payload)
		gid := string(m.PrivateMessage.GroupID)
		cands = append(cands, candidate{idx: i, m: m, id: id})
		ids[gid] = append(ids[gid], id)
	}
	known := map[string]map[string]bool{}
	for gid, list := range ids {
		k, err := in.db.KnownMessages(ctx, []byte(gid), list)
		if err != nil {
			return
		}
		known[gid] = k
	}
	now := in.opts.Now().UTC()
	states := map[string]*groupState{}
	seen := map[string]bool{}
	for _, c := range cands {
		pm := c.m.PrivateMessage
		gid := pm.GroupID
		gs := states[string(gid)]
		if gs == nil {
			var err error
			if gs, err = in.loadGroup(ctx, gid); err != nil {
				return
			}
		}
		key := string(gid) + "\x00" + string(c.id)
		if known[string(gid)][string(c.id)] || seen[key] || pm.Epoch != gs.g.Epoch() {
			return
		}
		ng, rec, err := gs.g.Process(c.m)
		if err != nil || rec.ContentType != mls.ContentTypeApplication {
			return
		}
		sender := events.InstallationID(rec.SenderCredential.Identity)
		if sender.Validate() != nil {
			return
		}
		agg := in.groupAgg(gid)
		after := &groupState{id: gs.id, pos: gs.pos + 1, g: ng, lastUpdate: gs.lastUpdate, epochStart: gs.epochStart}
		ev, recv := applicationReceived(gid, c.id, sender, rec)
		w.ops = append(w.ops, &hostOp{idx: c.idx, agg: agg, expected: gs.pos, limit: in.opts.OutcomeTimeout, group: string(gid),
			evs: []events.Event{{Aggregate: agg, Time: now, Body: ev}}, recv: recv})
		emit(w.ops[len(w.ops)-1])
		states[string(gid)] = after
		w.groups = states
		seen[key] = true
	}
}
