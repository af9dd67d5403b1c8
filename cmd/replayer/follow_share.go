package main

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/lease"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// follow --share NAME: the followers of one share group share out the
// read models they know, one follower each at a time, under leases in a
// JetStream key-value bucket (package lease); a follower that stops or
// dies has its read models taken over by the others. Each read model is
// followed as without --share (follower.run), fenced by its lease: a
// batch is committed only while the lease is valid.

var shareNameRE = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// checkShare checks --share and --lease-ttl.
func (o *followOpts) checkShare() error {
	if o.share == "" {
		if o.leaseTTL != 0 {
			return usageError{"--lease-ttl needs --share"}
		}
		return nil
	}
	if !shareNameRE.MatchString(o.share) {
		return usageError{fmt.Sprintf("--share %q: want 1 to 64 letters, digits, - or _", o.share)}
	}
	if o.leaseTTL != 0 && o.leaseTTL < lease.MinTTL {
		return usageError{fmt.Sprintf("--lease-ttl %v: must be at least %v", o.leaseTTL, lease.MinTTL)}
	}
	return nil
}

// followSet is the read models this process follows or has followed:
// all of them outside a share group, those the group gave it in one.
type followSet struct {
	log  *eventlog.Log
	mu   sync.Mutex
	list []*follower
	byID map[events.InstallationID]*follower
}

func (s *followSet) add(f *follower) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.byID == nil {
		s.byID = map[events.InstallationID]*follower{}
	}
	s.list = append(s.list, f)
	s.byID[f.id] = f
}

func (s *followSet) get(id events.InstallationID) *follower {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byID[id]
}

// all returns every follower, in the order they were added.
func (s *followSet) all() []*follower {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.list)
}

// holding returns the followers that follow their read model now.
func (s *followSet) holding() []*follower {
	var out []*follower
	for _, f := range s.all() {
		f.mu.Lock()
		h := f.holding
		f.mu.Unlock()
		if h {
			out = append(out, f)
		}
	}
	return out
}

// shareRun is this process's membership of a share group.
type shareRun struct {
	env         *cliEnv
	group       string
	bucket      *lease.Bucket
	member      *lease.Member
	set         *followSet
	newFollower func(followTarget) *follower
	// rescan lists the read models again (every *.db of --db-dir), nil
	// when they are listed (--installation, the config file's list).
	rescan func() ([]followTarget, error)

	mu        sync.Mutex
	targets   map[events.InstallationID]followTarget
	order     []events.InstallationID
	rescanErr string // the last rescan error logged
	// resting are the read models this member gave back after failing
	// to follow them, and until when it leaves them to the others.
	resting map[events.InstallationID]time.Time
	// erased are the read models of erased installations this member
	// found: it never takes them again (nor counts them unheld).
	erased map[events.InstallationID]bool

	ctx        context.Context // run's: done when follow stops
	heldAtStop atomic.Int64
}

// openShare opens the share group's lease bucket (creating it with
// --lease-ttl if it does not exist) and returns the member this process
// is in it.
func openShare(ctx context.Context, env *cliEnv, o *followOpts, log *eventlog.Log, set *followSet, targets []followTarget,
	rescan func() ([]followTarget, error), newFollower func(followTarget) *follower) (*shareRun, error) {
	b, err := lease.Open(ctx, log, lease.Config{Group: o.share, TTL: o.leaseTTL})
	if err != nil {
		return nil, fmt.Errorf("share group %s: %w", o.share, err)
	}
	s := &shareRun{env: env, group: o.share, bucket: b, member: b.NewMember(""), set: set,
		newFollower: newFollower, rescan: rescan, targets: map[events.InstallationID]followTarget{},
		resting: map[events.InstallationID]time.Time{}, erased: map[events.InstallationID]bool{}}
	s.setTargets(targets)
	// Past the open-file limit, every read model opened beyond it fails:
	// the member holds no more than it can keep open, and leaves the
	// others to the group.
	capacity, limit := followCapacity()
	s.member.SetMaxHeld(capacity)
	env.logger().Info("following read models as a member of a share group", "group", o.share, "member", s.member.ID(),
		"bucket", b.Name(), "lease_ttl", b.TTL().String(), "read_models_known", len(targets),
		"takeover_within", b.TakeoverBound().String(), "read_models_at_most", capacity, "open_file_limit", limit)
	return s, nil
}

func (s *shareRun) setTargets(ts []followTarget) {
	s.mu.Lock()
	defer s.mu.Unlock()
	clear(s.targets)
	s.order = s.order[:0]
	for _, t := range ts {
		s.targets[t.id] = t
		s.order = append(s.order, t.id)
	}
}

// known lists the read models this member can follow: every *.db of
// --db-dir, listed again at each pass, or the given list.
func (s *shareRun) known() []events.InstallationID {
	if s.rescan != nil {
		ts, err := s.rescan()
		s.mu.Lock()
		msg := ""
		if err != nil {
			msg = err.Error()
		}
		changed := msg != s.rescanErr
		s.rescanErr = msg
		s.mu.Unlock()
		if err != nil && changed {
			s.env.logger().Warn("cannot list the read models again; keeping the last list", "err", err)
		}
		if err == nil {
			s.setTargets(ts)
		}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	now := time.Now()
	out := make([]events.InstallationID, 0, len(s.order))
	for _, id := range s.order {
		if s.erased[id] {
			continue
		}
		if until, ok := s.resting[id]; ok {
			if now.Before(until) {
				continue
			}
			delete(s.resting, id)
		}
		out = append(out, id)
	}
	return out
}

// run takes part in the share group until ctx ends.
func (s *shareRun) run(ctx context.Context) {
	s.ctx = ctx
	_ = s.member.Run(ctx, s.known, s.serve)
}

// serve follows one read model while the share group gives it to this
// member (lease.Serve).
func (s *shareRun) serve(ctx context.Context, ls *lease.Lease) {
	id := ls.Installation()
	f := s.set.get(id)
	if f == nil {
		s.mu.Lock()
		t, ok := s.targets[id]
		s.mu.Unlock()
		if !ok {
			return // no longer known: the member releases it
		}
		f = s.newFollower(t)
		f.log = s.set.log
		s.set.add(f)
	}
	f.mu.Lock()
	f.holding, f.lease, f.released = true, ls, false
	f.mu.Unlock()
	f.lg.Info("the share group gave this follower the read model", "group", s.group, "member", s.member.ID(),
		"taken_over", ls.TakenOver(), "lease_revision", ls.Revision())
	f.run(ctx)
	stopping := s.ctx.Err() != nil
	f.mu.Lock()
	f.holding, f.lease, f.released = false, nil, !stopping
	f.mu.Unlock()
	if stopping {
		s.heldAtStop.Add(1)
	}
	if !stopping {
		why := "handed over to another member"
		f.mu.Lock()
		erased := errors.Is(f.err, eventlog.ErrErased)
		f.mu.Unlock()
		if err := ls.Err(); err != nil {
			why = err.Error()
		} else if erased {
			why = "its installation was erased; this member will not take it again"
			s.mu.Lock()
			s.erased[id] = true
			s.mu.Unlock()
		} else if ctx.Err() == nil {
			// f.run gave up: this member cannot follow it. The others
			// get it first; this member tries again after shareRest.
			why = "this member failed to follow it " + fmt.Sprint(shareGiveUpAfter) + " times in a row; it leaves it to the others for " + shareRest.String()
			s.mu.Lock()
			s.resting[id] = time.Now().Add(shareRest)
			s.mu.Unlock()
		}
		f.lg.Info("read model given up to the share group", "group", s.group, "member", s.member.ID(), "why", why)
	}
}

// shareGiveUpAfter is how many failures in a row (no event applied in
// between) make a share group's member give a read model back, and
// shareRest how long it then leaves it to the others: otherwise a member
// that cannot open a read model (a wrong key) would hold it for good, and
// no member that could would take it over.
const shareGiveUpAfter = 3

// shareRest is a variable, so tests can shorten it.
var shareRest = 2 * time.Minute

// shareLockedRetry bounds the pause before trying again a read model this
// member holds the lease of while another writer still has its file
// locked (follower.run): that writer's lease ended, and it lets go when
// it notices or dies.
const shareLockedRetry = 2 * time.Second

// shareStatus is the share group in /readyz's body.
type shareStatus struct {
	Group   string `json:"group"`
	Member  string `json:"member"`
	Joined  bool   `json:"joined"`
	Members int    `json:"members"`
	// Held counts the read models this member follows now; MaxHeld is
	// the most it may (what its open-file limit lets it keep open; 0: no
	// bound). A member at its bound leaves the others to the group.
	Held    int `json:"held"`
	MaxHeld int `json:"max_held,omitempty"`
	// Unheld counts the read models this member knows that no member
	// held at its last pass though one could have taken each over
	// (lease.Member.Unheld): nobody follows them. They do not make this
	// member unready; epochlog_share_unheld is the series to alert on.
	Unheld   int    `json:"unheld"`
	LeaseTTL string `json:"lease_ttl"`
}

func (s *shareRun) status() *shareStatus {
	n, joined := s.member.Members()
	maxHeld, _ := followCapacity()
	return &shareStatus{Group: s.group, Member: s.member.ID(), Joined: joined, Members: n,
		Held: len(s.member.Held()), MaxHeld: maxHeld, Unheld: s.member.Unheld(), LeaseTTL: s.bucket.TTL().String()}
}

// build makes the read model this follower was given, and does not have,
// from the stream (replay.Rebuild: MLS verified, built aside, swapped
// in): taking over a read model is a rebuild where there is none, a
// catch-up from its own checkpoint where there is one. The lease is asked
// right before the swap and each commit after it: the writer lock covers
// one host only, and a follower that lost its lease while it rebuilt must
// not swap its file in over the new holder's on shared storage.
func (f *follower) build(ctx context.Context, key projections.Key, ls *lease.Lease) error {
	if err := ls.Check(); err != nil {
		return err
	}
	f.lg.Info("no read model here; building it from the stream")
	fence := func(events.InstallationID) error { return ls.Check() }
	res, err := replay.Rebuild(ctx, f.log, f.id, f.path, key, &replay.RebuildOptions{Fence: fence})
	if err != nil {
		return fmt.Errorf("building the read model from the stream: %w", err)
	}
	f.lg.Info("read model built from the stream", "checkpoint", res.Checkpoint, "events", res.Replayed+res.CaughtUp)
	return nil
}
