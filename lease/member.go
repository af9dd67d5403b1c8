package lease

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base32"
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/telemetry"
)

// Serve serves one installation for as long as its ctx lasts: a share
// group's member runs it for each installation it holds. ctx is cancelled
// when the lease is lost, when the installation is handed over to another
// member, and when Run stops; Serve must then return soon, and only then
// is the lease released. It should check ls.Check() right before each
// write (replay.ProjectOptions.Fence), so that it never writes after the
// lease ended, even before it notices ctx. A Serve that returns by itself
// gives the installation up: it is released, and taken again a TTL/3
// later at the earliest.
type Serve func(ctx context.Context, ls *Lease)

// Member is this process's membership of a share group: see Run.
type Member struct {
	b       *Bucket
	id      string
	running atomic.Bool // Run is under way

	mu      sync.Mutex
	held    map[events.InstallationID]*Lease
	members int
	joined  bool
	maxHeld int // 0: no limit
	unheld  int // known installations nobody held at the last pass
}

// SetMaxHeld bounds how many installations the member holds at once (0,
// the default: no bound): what a process can serve (its open files, its
// memory). It takes none beyond it, its own share included, which other
// members take once its owner has left it free for a TTL, as an
// installation its owner does not know; with every member at its bound
// the rest stay unheld. Set it before Run.
func (m *Member) SetMaxHeld(n int) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.maxHeld = max(n, 0)
}

// NewMember returns a member of b's share group. name (letters, digits,
// '-' and '_'; others become '-') starts its id, by default the host's
// name; a random suffix makes the id unique, so a restarted process is a
// new member.
func (b *Bucket) NewMember(name string) *Member {
	if name == "" {
		name, _ = os.Hostname()
	}
	name = memberName(name)
	var r [5]byte
	_, _ = rand.Read(r[:])
	suffix := strings.ToLower(base32.StdEncoding.EncodeToString(r[:]))
	return &Member{b: b, id: name + "-" + suffix, held: map[events.InstallationID]*Lease{}}
}

func memberName(s string) string {
	var b strings.Builder
	for _, c := range s {
		if b.Len() >= 40 {
			break
		}
		if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '-' || c == '_' {
			b.WriteRune(c)
		} else {
			b.WriteByte('-')
		}
	}
	if b.Len() == 0 {
		return "member"
	}
	return b.String()
}

// ID returns the member's id, as it appears in the bucket and in the
// leases it holds.
func (m *Member) ID() string { return m.id }

// Held returns the installations the member holds now, sorted.
func (m *Member) Held() []events.InstallationID {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := make([]events.InstallationID, 0, len(m.held))
	for inst := range m.held {
		out = append(out, inst)
	}
	slices.Sort(out)
	return out
}

// Members returns how many live members (itself included) the member saw
// at its last pass, and whether it has joined (its member key is held).
func (m *Member) Members() (int, bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.members, m.joined
}

// Unheld returns how many of the installations this process knows no
// member of the group held at the member's last pass, though one could
// have taken each over (it had been free for longer than a TTL and a
// pass): installations nobody follows, because every member is at its
// bound (SetMaxHeld) or every attempt to serve them fails.
func (m *Member) Unheld() int {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.unheld
}

// Run makes the member take part in its share group until ctx ends, and
// then returns ctx's error. known lists the installations this process
// can serve (asked at every pass, so it may change); the group shares out
// the union of what its members know. For each installation it holds, Run
// runs serve in a goroutine of its own.
//
// What Run does, every TTL/3 and whenever the bucket changes:
//
//   - keeps the member key "members.<id>" alive, a lease like the others:
//     the live members are those whose key exists and was renewed within
//     the TTL;
//   - gives each known installation an owner among the live members, by
//     rendezvous hashing of member ids and the installation's pseudonym:
//     every member computes the same owner, and a member joining or
//     leaving moves only its own share;
//   - takes the installations it owns when their lease is free (absent,
//     released, expired), and any free installation whose owner left it
//     free for a whole TTL (an owner that does not know it): no installation
//     a live member knows stays without a holder;
//   - hands over an installation it holds to its owner once that member
//     has been live for TTL/3: cancels serve, waits for it to return, then
//     releases the lease, which the owner, watching, takes at once;
//   - releases an installation it no longer knows.
//
// A lease lost (not renewed in time: the bucket unreachable) cancels its
// serve; the member takes the installation again when it can. When ctx
// ends, Run cancels every serve, waits for them, releases every lease and
// its member key (so the others take over at once rather than after a
// TTL), each release bounded by the Config's RequestTimeout.
//
// Run returns an error at once if the member is running already: two
// Runs of one member id would each take the other's leases as their
// own, and serve the same installations at once. Once Run returned, it
// may be called again.
func (m *Member) Run(ctx context.Context, known func() []events.InstallationID, serve Serve) error {
	if !m.running.CompareAndSwap(false, true) {
		return fmt.Errorf("lease: member %s of share group %s is running already", m.id, m.b.group)
	}
	defer m.running.Store(false)
	return m.newRun(known, serve).loop(ctx)
}

// newRun returns the state of one Run.
func (m *Member) newRun(known func() []events.InstallationID, serve Serve) *run {
	return &run{m: m, b: m.b, known: known, serve: serve, view: map[string]*seen{},
		holdings: map[events.InstallationID]*holding{}, pseudos: map[events.InstallationID]string{},
		freeSince: map[string]time.Time{}, cooldown: map[events.InstallationID]time.Time{},
		owners: map[events.InstallationID]string{}, heldKeys: map[string]events.InstallationID{},
		finished: make(chan events.InstallationID), quit: make(chan struct{})}
}

// seen is the latest a member saw of a key in the bucket.
type seen struct {
	st    state
	at    time.Time // when it was seen
	since time.Time // for a member key: since when it has been live
}

// holding is an installation the member holds.
type holding struct {
	ls      *Lease
	cancel  context.CancelFunc
	orphan  bool // taken as nobody's; not handed over
	leaving bool // serve cancelled, release when it returns
}

// run is one Run's state, owned by its loop goroutine.
type run struct {
	m     *Member
	b     *Bucket
	known func() []events.InstallationID
	serve Serve

	self     *Lease // the member key
	watcher  jetstream.KeyWatcher
	synced   bool // the watcher delivered the bucket's current state
	view     map[string]*seen
	holdings map[events.InstallationID]*holding
	heldKeys map[string]events.InstallationID // the lease key of each holding
	pseudos  map[events.InstallationID]string
	// freeSince is when a key was first seen free (for the orphan rule);
	// cooldown keeps an installation whose serve returned by itself from
	// being taken again at once.
	freeSince map[string]time.Time
	cooldown  map[events.InstallationID]time.Time
	// owners caches each installation's owner for the live set liveKey.
	owners   map[events.InstallationID]string
	liveKey  string
	warned   bool // an acquire failure was logged at Warn since the last success
	full     bool // at Member.SetMaxHeld's bound (logged)
	mismatch bool // the bucket changed under the member (logged)
	gone     bool // the last pass found no bucket stream (errBucketGone)
	serving  sync.WaitGroup
	finished chan events.InstallationID
	quit     chan struct{}
}

func (r *run) loop(ctx context.Context) error {
	log := r.b.logger
	every := r.b.RenewEvery()
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	soon := time.NewTimer(time.Hour)
	soon.Stop()
	defer soon.Stop()
	defer r.stop()
	log.Info("lease: joining share group", "group", r.b.group, "member", r.m.id, "bucket", r.b.name, "ttl", r.b.ttl.String())
	r.pass(ctx)
	for {
		var updates <-chan jetstream.KeyValueEntry
		if r.watcher != nil {
			updates = r.watcher.Updates()
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-ticker.C:
			r.pass(ctx)
		case <-soon.C:
			r.pass(ctx)
		case inst := <-r.finished:
			r.ended(ctx, inst)
			soon.Reset(10 * time.Millisecond)
		case e, ok := <-updates:
			if !ok {
				log.Warn("lease: the bucket's watcher stopped; starting another", "group", r.b.group, "member", r.m.id)
				r.watcher = nil
				continue
			}
			interesting := r.saw(e)
			// Take what else is queued, then act once.
		drain:
			for range 1024 {
				select {
				case e, ok := <-updates:
					if !ok {
						r.watcher = nil
						break drain
					}
					interesting = r.saw(e) || interesting
				default:
					break drain
				}
			}
			if interesting {
				soon.Reset(20 * time.Millisecond)
			}
		}
	}
}

// saw records a watched entry and reports whether it may change what the
// member should do (a key freed, a member come or gone, the initial state
// complete), as opposed to a renewal.
func (r *run) saw(e jetstream.KeyValueEntry) bool {
	if e == nil {
		r.synced = true
		return true
	}
	now := time.Now()
	st := state{rev: e.Revision()}
	switch e.Operation() {
	case jetstream.KeyValuePut:
		st.op = opPut
		st.rec = decodeRecord(e.Value())
	case jetstream.KeyValueDelete:
		st.op = opDelete
	default:
		st.op = opExpired
	}
	key := e.Key()
	if inst, ok := r.heldKeys[key]; ok {
		r.foreign(inst, e.Revision(), st)
	}
	old := r.view[key]
	s := &seen{st: st, at: now, since: now}
	if old != nil && old.st.op == opPut && st.op == opPut && now.Sub(old.at) <= r.b.ttl {
		s.since = old.since
	}
	r.view[key] = s
	switch {
	case st.op != opPut:
		return true
	case old == nil || old.st.op != opPut:
		return true
	default:
		return old.st.rec.Token != st.rec.Token
	}
}

// foreign ends the lease of held installation inst if the bucket shows
// its key changed by someone else after this member last wrote it
// (deleted, purged, expired or taken): whoever acquires it now may write
// at once, and renewing, which would notice, may be a TTL/3 away or
// unanswered. Older entries (a watch that lags) are left alone.
func (r *run) foreign(inst events.InstallationID, rev uint64, st state) {
	h := r.holdings[inst]
	if h == nil || rev <= h.ls.Revision() || st.op == opPut && st.rec.Token == h.ls.token {
		return
	}
	why := "deleted, purged or expired on the server (seen by the watch)"
	if st.op == opPut {
		why = "taken by " + st.rec.Holder + " (seen by the watch)"
	}
	h.ls.lose(telemetry.LeaseTaken, why)
}

// live returns the live members and when each became live: those whose
// key was seen renewed within the TTL, and this member while its key is
// valid.
func (r *run) live(now time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for key, s := range r.view {
		id, ok := strings.CutPrefix(key, membersPrefix)
		if ok && s.st.op == opPut && now.Sub(s.at) <= r.b.ttl {
			out[id] = s.since
		}
	}
	delete(out, r.m.id)
	if r.self != nil && r.self.Check() == nil {
		out[r.m.id] = time.Time{}
	}
	return out
}

// forget drops the keys the view holds as free (deleted, expired, or
// not renewed within the TTL), which count the same as keys never seen:
// a restarted process joins as a new member, so the view would otherwise
// keep one more member for every restart of another, as long as this
// member runs.
func (r *run) forget(now time.Time) {
	for key, s := range r.view {
		if s.st.op != opPut || now.Sub(s.at) > r.b.ttl {
			delete(r.view, key)
		}
	}
}

// pass does what the member should do now (see Run).
func (r *run) pass(ctx context.Context) {
	if ctx.Err() != nil {
		return
	}
	err := r.b.unchanged(ctx)
	if errors.Is(err, errBucketGone) && !r.gone {
		// Seen once: perhaps a replica recovering the stream answered.
		// Renewals fail in a bucket really gone, and nobody acquires
		// there; the next pass decides.
		r.gone = true
		r.b.logger.Warn("lease: the share group's bucket was not found; looking again at the next pass", "group", r.b.group, "member", r.m.id, "err", err)
		err = nil
	} else if err == nil {
		r.gone = false
	}
	if errors.Is(err, ErrBucketMismatch) {
		// Every lease held is void there, and a lease taken there would
		// be counted valid for the wrong TTL: give everything up, take
		// nothing, until this process opens the bucket again.
		if !r.mismatch {
			r.mismatch = true
			r.b.logger.Error("lease: the share group's bucket changed under this member; it stops taking part (restart it)", "group", r.b.group, "member", r.m.id, "err", err)
		}
		for _, h := range r.holdings {
			h.ls.loseErr(telemetry.LeaseTaken, err)
		}
		if r.self != nil {
			r.self.loseErr(telemetry.LeaseTaken, err)
		}
		r.m.mu.Lock()
		r.m.joined = false
		r.m.mu.Unlock()
		return
	}
	now := time.Now()
	r.join(ctx)
	if r.watcher == nil {
		w, err := r.b.kv.WatchAll(ctx)
		if err != nil {
			r.b.logger.Warn("lease: cannot watch the bucket; trying again", "group", r.b.group, "member", r.m.id, "err", err)
		} else {
			r.watcher, r.synced = w, false
		}
	}
	r.forget(now)
	live := r.live(now)
	ids := make([]string, 0, len(live))
	for id := range live {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	if key := strings.Join(ids, ","); key != r.liveKey {
		r.liveKey = key
		clear(r.owners)
		if r.synced {
			r.b.logger.Info("lease: share group members", "group", r.b.group, "member", r.m.id, "members", len(ids), "ids", key)
		}
	}
	joined := r.self != nil && r.self.Check() == nil
	r.m.mu.Lock()
	r.m.members, r.m.joined = len(ids), joined
	r.m.mu.Unlock()
	r.b.metrics.ShareMembers(len(ids))

	known := r.known()
	knownSet := make(map[events.InstallationID]bool, len(known))
	for _, inst := range known {
		knownSet[inst] = true
	}
	for inst, h := range r.holdings {
		if !knownSet[inst] && !h.leaving {
			r.leave(inst, h, "no longer known to this process")
		}
	}
	if !r.synced || !joined {
		return
	}
	every := r.b.RenewEvery()
	unheld := 0
	defer func() {
		r.m.mu.Lock()
		r.m.unheld = unheld
		r.m.mu.Unlock()
		r.b.metrics.ShareUnheld(unheld)
	}()
	for _, inst := range known {
		p, ok := r.pseudos[inst]
		if !ok {
			var err error
			if p, err = r.b.pseudonym(inst); err != nil {
				r.b.logger.Warn("lease: installation skipped", "installation", string(inst), "err", err)
				continue
			}
			r.pseudos[inst] = p
		}
		key := installationsPrefix + p
		owner, ok := r.owners[inst]
		if !ok {
			owner = rendezvous(ids, p)
			r.owners[inst] = owner
		}
		if h := r.holdings[inst]; h != nil {
			switch {
			case h.leaving:
			case owner == r.m.id:
				h.orphan = false
			case !h.orphan && now.Sub(live[owner]) >= every:
				r.leave(inst, h, "handing over to its owner "+owner)
			}
			continue
		}
		s := r.view[key]
		free := s == nil || s.st.op != opPut || now.Sub(s.at) > r.b.ttl || s.st.rec.Member == r.m.id
		if !free {
			delete(r.freeSince, key)
			continue
		}
		since, ok := r.freeSince[key]
		if !ok {
			since = now
			r.freeSince[key] = now
		}
		if now.Sub(since) >= r.b.ttl+every {
			// Any member could have taken it as an orphan by now.
			unheld++
		}
		if until, ok := r.cooldown[inst]; ok {
			if now.Before(until) {
				continue
			}
			delete(r.cooldown, inst)
		}
		if !r.roomFor(inst) {
			continue
		}
		switch {
		case owner == r.m.id:
			r.take(ctx, inst, key, false)
		case now.Sub(since) >= r.b.ttl:
			r.take(ctx, inst, key, true)
		}
		if ctx.Err() != nil {
			return
		}
	}
}

// join keeps the member key held.
func (r *run) join(ctx context.Context) {
	if r.self != nil && r.self.Check() == nil {
		return
	}
	if r.self != nil {
		r.b.logger.Warn("lease: membership lapsed (the bucket did not answer in time); joining again", "group", r.b.group, "member", r.m.id, "err", r.self.Err())
		r.self = nil
	}
	ls, err := r.b.acquire(ctx, membersPrefix+r.m.id, "", r.m.id)
	if err != nil {
		if ctx.Err() == nil {
			r.b.logger.Warn("lease: cannot join the share group yet; trying again", "group", r.b.group, "member", r.m.id, "err", err)
		}
		return
	}
	r.self = ls
	r.b.logger.Info("lease: joined share group", "group", r.b.group, "member", r.m.id, "bucket", r.b.name)
}

// roomFor reports whether the member may take one more installation
// (Member.SetMaxHeld); the first refusal since it last had room is logged.
func (r *run) roomFor(inst events.InstallationID) bool {
	r.m.mu.Lock()
	limit := r.m.maxHeld
	r.m.mu.Unlock()
	if limit == 0 || len(r.holdings) < limit {
		r.full = false
		return true
	}
	if !r.full {
		r.full = true
		r.b.logger.Warn("lease: holding as many installations as this member may (SetMaxHeld); leaving the others to the group",
			"group", r.b.group, "member", r.m.id, "held", len(r.holdings), "max", limit, "installation", string(inst))
	}
	return false
}

// rendezvous returns the member of ids with the highest score for the
// installation pseudonym p (ties, which need a hash collision, go to the
// lowest id).
func rendezvous(ids []string, p string) string {
	var best string
	var top uint64
	for _, id := range ids {
		h := sha256.Sum256([]byte(id + "\x00" + p))
		if s := binary.BigEndian.Uint64(h[:8]); best == "" || s > top {
			best, top = id, s
		}
	}
	return best
}

// take acquires inst's lease and starts serving it.
func (r *run) take(ctx context.Context, inst events.InstallationID, key string, orphan bool) {
	ls, err := r.b.acquire(ctx, key, inst, r.m.id)
	var he *HeldError
	switch {
	case errors.As(err, &he):
		// Our view was behind; the watcher will catch up.
		r.view[key] = &seen{st: state{op: opPut, rec: record{Holder: he.Holder, Member: he.Member}}, at: time.Now()}
		return
	case err != nil:
		if ctx.Err() != nil {
			return
		}
		if !r.warned {
			r.warned = true
			r.b.logger.Warn("lease: cannot acquire; trying again at the next pass", "installation", string(inst), "group", r.b.group, "member", r.m.id, "err", err)
		} else {
			r.b.logger.Debug("lease: cannot acquire; trying again at the next pass", "installation", string(inst), "group", r.b.group, "member", r.m.id, "err", err)
		}
		return
	}
	r.warned = false
	delete(r.freeSince, key)
	if orphan {
		r.b.logger.Info("lease: took an installation its owner left free", "installation", string(inst), "group", r.b.group, "member", r.m.id, "owner", r.owners[inst])
	}
	hctx, cancel := context.WithCancel(ctx)
	h := &holding{ls: ls, cancel: cancel, orphan: orphan}
	r.holdings[inst] = h
	r.heldKeys[key] = inst
	r.m.mu.Lock()
	r.m.held[inst] = ls
	r.m.mu.Unlock()
	r.serving.Add(1)
	go func() {
		defer r.serving.Done()
		go func() {
			select {
			case <-ls.Done():
				cancel()
			case <-hctx.Done():
			}
		}()
		r.serve(hctx, ls)
		cancel()
		select {
		case r.finished <- inst:
		case <-r.quit:
		}
	}()
}

// leave cancels inst's serve; its lease is released when serve returns.
func (r *run) leave(inst events.InstallationID, h *holding, why string) {
	h.leaving = true
	r.b.logger.Info("lease: giving an installation up", "installation", string(inst), "group", r.b.group, "member", r.m.id, "why", why)
	h.cancel()
}

// ended handles a serve that returned: releases the lease unless lost.
func (r *run) ended(ctx context.Context, inst events.InstallationID) {
	h := r.holdings[inst]
	if h == nil {
		return
	}
	delete(r.holdings, inst)
	delete(r.heldKeys, h.ls.key)
	r.m.mu.Lock()
	delete(r.m.held, inst)
	r.m.mu.Unlock()
	if !h.leaving && h.ls.Err() == nil {
		r.b.logger.Warn("lease: serve returned by itself; releasing the installation", "installation", string(inst), "group", r.b.group, "member", r.m.id)
		r.cooldown[inst] = time.Now().Add(r.b.RenewEvery())
	}
	if err := h.ls.Release(context.WithoutCancel(ctx)); err != nil {
		r.b.logger.Warn("lease: release failed", "installation", string(inst), "group", r.b.group, "member", r.m.id, "err", err)
	}
}

// stop ends Run: cancels every serve, waits for them, releases every
// lease and the member key, stops watching.
func (r *run) stop() {
	for _, h := range r.holdings {
		h.cancel()
	}
	close(r.quit)
	r.serving.Wait()
	var wg sync.WaitGroup
	sem := make(chan struct{}, 16)
	for inst, h := range r.holdings {
		wg.Go(func() {
			sem <- struct{}{}
			defer func() { <-sem }()
			if err := h.ls.Release(context.Background()); err != nil {
				r.b.logger.Warn("lease: release failed", "installation", string(inst), "group", r.b.group, "member", r.m.id, "err", err)
			}
		})
	}
	wg.Wait()
	r.m.mu.Lock()
	clear(r.m.held)
	r.m.joined = false
	r.m.mu.Unlock()
	if r.self != nil {
		if err := r.self.Release(context.Background()); err != nil {
			r.b.logger.Warn("lease: leaving the share group failed; the others notice within the TTL", "group", r.b.group, "member", r.m.id, "err", err)
		}
	}
	if r.watcher != nil {
		_ = r.watcher.Stop()
	}
	r.b.logger.Info("lease: left share group", "group", r.b.group, "member", r.m.id)
}
