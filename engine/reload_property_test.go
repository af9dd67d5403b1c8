package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
)

// envReloadSteps sets the number of random steps of each seeded run of
// TestReloadEqualsMemory (default reloadSteps), and envReloadSeeds the
// number of seeds (default 1): `EPOCHLOG_RELOAD_STEPS=3000
// EPOCHLOG_RELOAD_SEEDS=20` is the long run.
const (
	envReloadSteps = "EPOCHLOG_RELOAD_STEPS"
	envReloadSeeds = "EPOCHLOG_RELOAD_SEEDS"
	reloadSteps    = 120
)

const dave events.InstallationID = "dave-watch"

// rtItem is one message queued for an installation: handshakes (commits,
// proposals, Welcomes) are processed in queue order, application messages
// in any order before the next handshake, or after it (late).
type rtItem struct {
	wire      []byte
	handshake bool
	what      string
}

// reloadSim drives random operations on one group over four
// installations and checks that a group reloaded from the read model
// equals the one in memory.
type reloadSim struct {
	t     *testing.T
	b     *backend
	rng   *rand.Rand
	gid   []byte
	ids   []events.InstallationID
	queue map[events.InstallationID][]rtItem
	// got lists the application messages each installation received, to
	// replay them.
	got map[events.InstallationID][][]byte
	log []string
	// refused counts the late messages refused, by error.
	refused map[string]int
	host    *Host
	fanouts int
	// ops counts the handshake operations done, by kind.
	ops map[string]int
	// second holds a second process of an installation (its own read
	// model file), opened at its first use.
	second map[events.InstallationID]*Installation
}

func readIntEnv(t *testing.T, name string, def int) int {
	t.Helper()
	v := os.Getenv(name)
	if v == "" {
		return def
	}
	n, err := strconv.Atoi(v)
	if err != nil || n <= 0 {
		t.Fatalf("$%s=%q: want a positive number", name, v)
	}
	return n
}

// TestReloadEqualsMemory runs random sequences of group operations (sends,
// deliveries in and out of order, late messages of past epochs, own and
// received proposals, commits, adds and removes, Welcome joins, handshake
// wire format changes, PSKs) and, after each step, reloads one
// installation's group from its read model (as a restart, a Pool eviction
// or a lost race does), restarts it or rebuilds its read model: the
// reloaded mls.Group must serialize to the same bytes as the one in
// memory, and the members must go on exchanging messages.
func TestReloadEqualsMemory(t *testing.T) {
	steps := readIntEnv(t, envReloadSteps, reloadSteps)
	seeds := readIntEnv(t, envReloadSeeds, 1)
	for seed := range seeds {
		t.Run(fmt.Sprintf("seed%d", seed), func(t *testing.T) {
			runReloadSim(t, uint64(seed), steps, false)
		})
		// Every operation on an installation opened afresh, as by a Pool
		// of one that evicts between operations (Pool.Acquire opens with
		// OpenInstallation, an eviction is Close).
		t.Run(fmt.Sprintf("seed%d-evicted", seed), func(t *testing.T) {
			runReloadSim(t, uint64(seed), max(steps/4, 1), true)
		})
	}
}

func runReloadSim(t *testing.T, seed uint64, steps int, evict bool) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	b.create(dave)
	s := &reloadSim{t: t, b: b, rng: rand.New(rand.NewPCG(seed, 0x5eed)), gid: g1,
		ids: []events.InstallationID{alice, bob, carol, dave}, queue: map[events.InstallationID][]rtItem{},
		got: map[events.InstallationID][][]byte{}, refused: map[string]int{},
		host: NewHost(b.log, b.del, nil), ops: map[string]int{},
		second: map[events.InstallationID]*Installation{}}
	ctx := context.Background()
	for _, id := range s.ids {
		if err := b.insts[id].RegisterExternalPSK(ctx, []byte("shared-psk"), []byte("the shared secret")); err != nil {
			t.Fatal(err)
		}
	}
	defer func() {
		if t.Failed() {
			t.Logf("seed %d, steps:\n%s", seed, joinLines(s.log))
		}
	}()
	for step := range steps {
		s.step(step)
		if t.Failed() {
			return
		}
		for _, id := range s.ids {
			if evict {
				s.restartCheck(id, false)
			} else {
				s.checkReload(id)
			}
		}
	}
	// Everyone catches up: the members agree and go on talking.
	for _, id := range s.ids {
		s.catchUp(id, len(s.queue[id]))
	}
	for _, id := range s.ids {
		s.checkReload(id)
		s.restartCheck(id, false)
	}
	for _, id := range s.ids {
		if s.member(id) {
			s.send(id)
		}
	}
	for _, id := range s.ids {
		s.catchUp(id, len(s.queue[id]))
		b.checkRebuild(id)
	}
	t.Logf("handshakes: %v; late messages refused: %v", s.ops, s.refused)
}

func joinLines(ls []string) string {
	var buf bytes.Buffer
	for i, l := range ls {
		fmt.Fprintf(&buf, "%4d %s\n", i, l)
	}
	return buf.String()
}

func (s *reloadSim) logf(format string, args ...any) {
	s.log = append(s.log, fmt.Sprintf(format, args...))
}

// member reports whether id holds the group as an active member.
func (s *reloadSim) member(id events.InstallationID) bool {
	in := s.b.insts[id]
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, err := in.loadGroup(context.Background(), s.gid)
	return err == nil && gs.g.Active()
}

func (s *reloadSim) enqueue(to []events.InstallationID, it rtItem) {
	for _, id := range to {
		s.queue[id] = append(s.queue[id], it)
	}
}

func (s *reloadSim) enqueueCommit(co *CommitOutput) {
	s.enqueue(co.Recipients, rtItem{wire: co.Commit, handshake: true, what: fmt.Sprintf("commit to epoch %d", co.Epoch)})
	if co.Welcome != nil {
		s.enqueue(co.Added, rtItem{wire: co.Welcome, handshake: true, what: fmt.Sprintf("welcome to epoch %d", co.Epoch)})
	}
}

// deliver processes the i-th queued message of id.
func (s *reloadSim) deliver(id events.InstallationID, i int) {
	it := s.queue[id][i]
	s.queue[id] = slices.Delete(s.queue[id], i, i+1)
	r, err := s.b.insts[id].Receive(context.Background(), it.wire)
	s.logf("%s receives %s: %v", id, it.what, err)
	s.received(id, it, r, err)
}

// received checks the outcome of id's receipt of it.
func (s *reloadSim) received(id events.InstallationID, it rtItem, r *Received, err error) {
	s.t.Helper()
	switch {
	case err == nil:
		if r.Kind == "application" {
			s.got[id] = append(s.got[id], it.wire)
		}
	case !it.handshake && (errors.Is(err, ErrEpochRetired) || errors.Is(err, mls.ErrEpochRetired) || errors.Is(err, mls.ErrNotMember)):
		// A late message of an epoch the member no longer holds, or
		// of a group it left.
		for _, e := range []error{ErrEpochRetired, mls.ErrEpochRetired, mls.ErrNotMember} {
			if errors.Is(err, e) {
				s.refused[e.Error()]++
				break
			}
		}
	case it.handshake && errors.Is(err, mls.ErrNotMember):
		// Removed, a later commit reached it.
	default:
		s.t.Fatalf("%s receives %s: %v", id, it.what, err)
	}

}

// pick takes one of id's queued messages: an application message before
// the next handshake, or that handshake.
func (s *reloadSim) pick(id events.InstallationID) rtItem {
	q := s.queue[id]
	end := slices.IndexFunc(q, func(it rtItem) bool { return it.handshake })
	if end < 0 {
		end = len(q) - 1
	}
	i := s.rng.IntN(end + 1)
	it := q[i]
	s.queue[id] = slices.Delete(q, i, i+1)
	return it
}

// hostDeliver queues a few messages of each installation, picked as
// deliver picks them, and delivers them with a Host in one call.
func (s *reloadSim) hostDeliver() {
	ctx := context.Background()
	var insts []*Installation
	sent := map[events.InstallationID][]rtItem{}
	for _, id := range s.ids {
		insts = append(insts, s.b.insts[id])
		for range s.rng.IntN(len(s.queue[id]) + 1) {
			it := s.pick(id)
			s.fanouts++
			if _, err := s.b.del.FanOut(ctx, []events.InstallationID{id}, mlsChannel, it.wire, time.Time{}, fmt.Sprintf("rt-%d", s.fanouts)); err != nil {
				s.t.Fatal(err)
			}
			sent[id] = append(sent[id], it)
		}
	}
	for _, res := range s.host.Deliver(ctx, mlsChannel, insts, 0) {
		if res.Err != nil {
			s.t.Fatalf("host delivers to %s: %v", res.Installation, res.Err)
		}
		its := sent[res.Installation]
		if len(res.Delivered) != len(its) {
			s.t.Fatalf("host delivered %d messages to %s, want %d", len(res.Delivered), res.Installation, len(its))
		}
		for i, d := range res.Delivered {
			s.logf("%s receives %s from a host: %v", res.Installation, its[i].what, d.Err)
			s.received(res.Installation, its[i], d.Received, d.Err)
		}
	}
}

// hostSend sends a few messages of a few members with a Host in one call
// (those with no path update due: the others would commit one, maybe at a
// stale epoch).
func (s *reloadSim) hostSend() {
	ctx := context.Background()
	var reqs []SendRequest
	for _, id := range s.ids {
		in := s.b.insts[id]
		in.mu.Lock()
		gs, err := in.loadGroup(ctx, s.gid)
		ok := err == nil && gs.g.Active() && !gs.updateDue(in.opts.Now(), in.opts.UpdateInterval)
		in.mu.Unlock()
		if !ok || s.rng.IntN(2) == 0 {
			continue
		}
		for j := range 1 + s.rng.IntN(3) {
			reqs = append(reqs, SendRequest{Installation: in, GroupID: s.gid, Content: fmt.Appendf(nil, "h%d.%d from %s", len(s.log), j, id)})
		}
	}
	for i, res := range s.host.Send(ctx, reqs) {
		s.logf("%s sends %q from a host: %v", reqs[i].Installation.ID(), reqs[i].Content, res.Err)
		if res.Err != nil {
			s.t.Fatalf("host send of %s: %v", reqs[i].Installation.ID(), res.Err)
		}
		if res.Output.Update != nil {
			s.t.Fatalf("host send of %s made a path update", reqs[i].Installation.ID())
		}
		s.enqueue(res.Output.Recipients, rtItem{wire: res.Output.Message, what: fmt.Sprintf("%q of epoch %d", reqs[i].Content, res.Output.Epoch)})
	}
}

// catchUp delivers id's first n queued messages in order.
func (s *reloadSim) catchUp(id events.InstallationID, n int) {
	for range n {
		s.deliver(id, 0)
	}
}

// catchUpHandshakes delivers id's queue up to its last handshake, so that
// it is at the group's latest epoch; the application messages before it
// are delivered or, at random, left to arrive late.
func (s *reloadSim) catchUpHandshakes(id events.InstallationID) {
	last := -1
	for i, it := range s.queue[id] {
		if it.handshake {
			last = i
		}
	}
	for i := 0; i <= last; {
		if !s.queue[id][i].handshake && s.rng.IntN(3) == 0 {
			i++
			continue
		}
		s.deliver(id, i)
		last--
	}
}

func (s *reloadSim) send(id events.InstallationID) {
	in := s.b.insts[id]
	in.mu.Lock()
	gs, err := in.loadGroup(context.Background(), s.gid)
	due := err == nil && gs.updateDue(in.opts.Now(), in.opts.UpdateInterval)
	in.mu.Unlock()
	if due {
		s.catchUpHandshakes(id)
		if !s.member(id) {
			return
		}
	}
	text := fmt.Sprintf("m%d from %s", len(s.log), id)
	out, err := in.Send(context.Background(), s.gid, []byte(text), nil)
	s.logf("%s sends %q (update %v): %v", id, text, out != nil && out.Update != nil, err)
	if err != nil {
		s.t.Fatalf("%s send: %v", id, err)
	}
	if out.Update != nil {
		s.enqueueCommit(out.Update)
	}
	s.enqueue(out.Recipients, rtItem{wire: out.Message, what: fmt.Sprintf("%q of epoch %d", text, out.Epoch)})
}

// handshake runs one random handshake operation of id, once id is at the
// latest epoch.
func (s *reloadSim) handshake(id events.InstallationID) {
	ctx := context.Background()
	s.catchUpHandshakes(id)
	if !s.member(id) {
		s.joinExternal(id)
		return
	}
	in := s.b.insts[id]
	ms, err := in.Members(ctx, s.gid)
	if err != nil {
		s.t.Fatal(err)
	}
	var others []events.InstallationID
	for _, m := range ms {
		if m != id {
			others = append(others, m)
		}
	}
	var outsiders []events.InstallationID
	for _, o := range s.ids {
		if !slices.Contains(ms, o) {
			outsiders = append(outsiders, o)
		}
	}
	in.mu.Lock()
	gs, _ := in.loadGroup(ctx, s.gid)
	pending := len(gs.g.PendingProposals())
	epoch := gs.g.Epoch()
	in.mu.Unlock()
	var co *CommitOutput
	var po *ProposalOutput
	var what string
	switch op := s.rng.IntN(12); {
	case op == 0:
		what = "update"
		co, err = in.Update(ctx, s.gid)
	case op == 1 && len(outsiders) > 0 && pending == 0:
		o := outsiders[s.rng.IntN(len(outsiders))]
		what = "add " + string(o)
		co, err = in.AddMembers(ctx, s.gid, s.b.keyPackage(o))
	case op == 2 && len(others) > 1:
		o := others[s.rng.IntN(len(others))]
		what = "remove " + string(o)
		co, err = in.RemoveMembers(ctx, s.gid, o)
	case op == 3:
		what = "propose update"
		po, err = in.ProposeUpdate(ctx, s.gid)
	case op == 4 && len(outsiders) > 0 && pending == 0:
		o := outsiders[s.rng.IntN(len(outsiders))]
		what = "propose add " + string(o)
		po, err = in.ProposeAdd(ctx, s.gid, s.b.keyPackage(o))
	case op == 5 && len(others) > 1 && pending == 0:
		o := others[s.rng.IntN(len(others))]
		what = "propose remove " + string(o)
		po, err = in.ProposeRemove(ctx, s.gid, o)
	case op == 6 && pending > 0:
		what = "commit proposals"
		co, err = in.CommitProposals(ctx, s.gid)
	case op == 7:
		wf := []WireFormat{WireFormatDefault, WireFormatPublic, WireFormatPrivate}[s.rng.IntN(3)]
		what = "handshake format " + wf.String()
		err = in.SetHandshakeWireFormat(ctx, s.gid, wf)
	case op == 8 && pending == 0:
		what = "commit resumption psk"
		co, err = in.CommitPreSharedKeys(ctx, s.gid, ResumptionPSK(epoch))
	case op == 9:
		what = "propose external psk"
		po, err = in.ProposePreSharedKey(ctx, s.gid, ExternalPSK([]byte("shared-psk")))
	case op == 10 && len(others) > 0 && pending == 0:
		gi := s.groupInfo(others[s.rng.IntN(len(others))])
		what = "resync"
		co, err = in.Resync(ctx, s.gid, gi, nil, ResyncLost)
	case op == 11 && len(others) > 1 && pending == 0:
		what = "leave"
		po, err = in.Leave(ctx, s.gid)
	default:
		return
	}
	s.logf("%s %s at epoch %d: %v", id, what, epoch, err)
	kind := what
	for _, o := range s.ids {
		kind = strings.ReplaceAll(kind, " "+string(o), "")
	}
	s.ops[kind]++
	if errors.Is(err, mls.ErrInvalidProposal) {
		return
	}
	if err != nil {
		s.t.Fatalf("%s %s: %v", id, what, err)
	}
	if co != nil {
		s.enqueueCommit(co)
	}
	if po != nil {
		s.enqueue(po.Recipients, rtItem{wire: po.Proposal, handshake: true, what: fmt.Sprintf("proposal of epoch %d", po.Epoch)})
	}
}

// groupInfo returns a GroupInfo of the group's latest epoch from member
// id.
func (s *reloadSim) groupInfo(id events.InstallationID) []byte {
	s.catchUpHandshakes(id)
	gio, err := s.b.insts[id].GroupInfo(context.Background(), s.gid, true)
	if err != nil {
		s.t.Fatalf("%s group info: %v", id, err)
	}
	return gio.GroupInfo
}

// joinExternal has id, not a member, join by external commit, at random.
func (s *reloadSim) joinExternal(id events.InstallationID) {
	if s.rng.IntN(2) == 0 {
		return
	}
	s.catchUp(id, len(s.queue[id]))
	var from []events.InstallationID
	for _, o := range s.ids {
		if o != id && s.member(o) {
			from = append(from, o)
		}
	}
	o := from[s.rng.IntN(len(from))]
	in := s.b.insts[o]
	in.mu.Lock()
	gs, _ := in.loadGroup(context.Background(), s.gid)
	pending := len(gs.g.PendingProposals())
	in.mu.Unlock()
	if pending > 0 {
		return
	}
	co, err := s.b.insts[id].JoinExternal(context.Background(), s.groupInfo(o), nil)
	s.logf("%s joins by external commit: %v", id, err)
	s.ops["external join"]++
	if err != nil {
		s.t.Fatalf("%s joins by external commit: %v", id, err)
	}
	s.enqueueCommit(co)
}

// otherProcess has a second process of id send a message or receive one
// of id's queued messages; the first process's state, stale since, is
// then reloaded (after catching up, as a lost race does) and compared
// with the second's in memory.
func (s *reloadSim) otherProcess(id events.InstallationID) {
	ctx := context.Background()
	if !s.member(id) {
		return
	}
	p2 := s.second[id]
	if p2 == nil {
		p2 = s.b.secondProcess(id, nil)
		s.second[id] = p2
	}
	var err error
	if s.rng.IntN(2) == 0 || len(s.queue[id]) == 0 {
		s.catchUpHandshakes(id) // a path update due is made at the latest epoch
		if !s.member(id) {
			return
		}
		text := fmt.Sprintf("m%d from %s's second process", len(s.log), id)
		var out *SendOutput
		out, err = p2.Send(ctx, s.gid, []byte(text), nil)
		s.logf("%s's second process sends %q (update %v): %v", id, text, out != nil && out.Update != nil, err)
		if err != nil {
			s.t.Fatalf("%s's second process sends: %v", id, err)
		}
		if out.Update != nil {
			s.enqueueCommit(out.Update)
		}
		s.enqueue(out.Recipients, rtItem{wire: out.Message, what: fmt.Sprintf("%q of epoch %d", text, out.Epoch)})
	} else {
		it := s.pick(id)
		var r *Received
		r, err = p2.Receive(ctx, it.wire)
		s.logf("%s's second process receives %s: %v", id, it.what, err)
		s.received(id, it, r, err)
	}
	p2.mu.Lock()
	gs, ok := p2.group[string(s.gid)]
	var mem snapshot
	if ok {
		mem = s.snap(p2, gs)
	}
	p2.mu.Unlock()
	in := s.b.insts[id]
	in.mu.Lock()
	defer in.mu.Unlock()
	got, gerr := in.currentGroup(ctx, s.gid)
	if !ok || err != nil {
		// Nothing appended (refused, or recorded by the first process
		// already), or removed: the second process's state may be
		// stale, or gone.
		return
	}
	if gerr != nil {
		if errors.Is(gerr, mls.ErrNotMember) && !gs.g.Active() {
			return
		}
		s.t.Fatalf("%s reload after its second process: %v", id, gerr)
	}
	s.compare(id, "its second process moved the group", mem, s.snap(in, got))
}

// step runs one random operation.
func (s *reloadSim) step(n int) {
	id := s.ids[s.rng.IntN(len(s.ids))]
	switch op := s.rng.IntN(26); {
	case op >= 24:
		s.otherProcess(id)
	case op < 6:
		if s.member(id) {
			s.send(id)
		}
	case op < 8:
		s.hostSend()
	case op < 10:
		s.hostDeliver()
	case op < 16:
		// One queued message, any application message before the next
		// handshake, or that handshake.
		if len(s.queue[id]) == 0 {
			return
		}
		it := s.pick(id)
		r, err := s.b.insts[id].Receive(context.Background(), it.wire)
		s.logf("%s receives %s: %v", id, it.what, err)
		s.received(id, it, r, err)
	case op < 19:
		s.handshake(id)
	case op < 20:
		s.replay(id)
	case op < 22:
		s.restartCheck(id, false)
	case op < 23:
		s.restartCheck(id, true)
	default:
		s.catchUp(id, len(s.queue[id]))
	}
}

// replay delivers again a message id received: it must be refused, and
// nothing recorded.
func (s *reloadSim) replay(id events.InstallationID) {
	got := s.got[id]
	if len(got) == 0 {
		return
	}
	wire := got[s.rng.IntN(len(got))]
	before := messageCount(s.t, s.b.insts[id], s.gid)
	r, err := s.b.insts[id].Receive(context.Background(), wire)
	s.logf("%s receives a replay: %v", id, err)
	if err == nil {
		s.t.Fatalf("%s accepted a replayed message (%s)", id, r.Kind)
	}
	if after := messageCount(s.t, s.b.insts[id], s.gid); after != before {
		s.t.Fatalf("%s recorded a replayed message: %d messages, was %d", id, after, before)
	}
}

// snapshot is what a group's cached state holds that a reload must give
// back.
type snapshot struct {
	state      []byte
	pos        uint64
	epochStart []byte
	lastUpdate string
	wireFormat WireFormat
}

func (s *reloadSim) snap(in *Installation, gs *groupState) snapshot {
	st, err := gs.g.MarshalBinary()
	if err != nil {
		s.t.Fatal(err)
	}
	wf, err := in.handshakeWireFormat(context.Background(), s.gid)
	if err != nil {
		s.t.Fatal(err)
	}
	return snapshot{state: st, pos: gs.pos, epochStart: gs.epochStart.Bytes(), lastUpdate: gs.lastUpdate.UTC().String(), wireFormat: wf}
}

func (s *reloadSim) compare(id events.InstallationID, how string, mem, got snapshot) {
	s.t.Helper()
	if !bytes.Equal(mem.state, got.state) {
		s.t.Errorf("%s after %s: the reloaded group state differs from the one in memory (%d and %d bytes)", id, how, len(got.state), len(mem.state))
	}
	if mem.pos != got.pos {
		s.t.Errorf("%s after %s: position %d, in memory %d", id, how, got.pos, mem.pos)
	}
	if mem.epochStart != nil && !bytes.Equal(mem.epochStart, got.epochStart) {
		s.t.Errorf("%s after %s: the epoch start state differs from the one in memory", id, how)
	}
	if mem.lastUpdate != got.lastUpdate {
		s.t.Errorf("%s after %s: last path update %s, in memory %s", id, how, got.lastUpdate, mem.lastUpdate)
	}
	if mem.wireFormat != got.wireFormat {
		s.t.Errorf("%s after %s: handshake wire format %s, in memory %s", id, how, got.wireFormat, mem.wireFormat)
	}
}

// checkReload drops id's cached group and loads it again from the read
// model, as a lost race does, and compares; it goes on with either.
func (s *reloadSim) checkReload(id events.InstallationID) {
	in := s.b.insts[id]
	in.mu.Lock()
	defer in.mu.Unlock()
	gs, ok := in.group[string(s.gid)]
	if !ok {
		return
	}
	mem := s.snap(in, gs)
	delete(in.group, string(s.gid))
	got, err := in.loadGroup(context.Background(), s.gid)
	if err != nil {
		if errors.Is(err, mls.ErrNotMember) && !gs.g.Active() {
			return
		}
		s.t.Fatalf("%s reload: %v", id, err)
	}
	s.compare(id, "a reload", mem, s.snap(in, got))
	if s.rng.IntN(2) == 0 {
		// Go on with the state in memory: what it holds besides the
		// group (held epochs) is used too.
		in.group[string(s.gid)] = gs
	}
}

// restartCheck restarts id (after rebuilding its read model if rebuild)
// and compares the group it loads with the one it held in memory.
func (s *reloadSim) restartCheck(id events.InstallationID, rebuild bool) {
	in := s.b.insts[id]
	gs, ok := in.group[string(s.gid)]
	var mem snapshot
	if ok {
		mem = s.snap(in, gs)
	}
	how := "a restart"
	if rebuild {
		how = "a rebuild"
		in = s.b.rebuildAndRestart(id)
	} else {
		in = s.b.restart(id)
	}
	s.logf("%s %s", id, how)
	if !ok {
		return
	}
	in.mu.Lock()
	defer in.mu.Unlock()
	got, err := in.loadGroup(context.Background(), s.gid)
	if err != nil {
		if errors.Is(err, mls.ErrNotMember) && !gs.g.Active() {
			return
		}
		s.t.Fatalf("%s load after %s: %v", id, how, err)
	}
	s.compare(id, how, mem, s.snap(in, got))
}

// A Pool of one evicts an installation between every two operations of
// different installations: each operation runs on a group loaded from the
// read model. Messages sent and received that way go on in order, and a
// message received before is refused when delivered again.
func TestPoolOfOneReloadsRatchets(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	for id, in := range b.insts {
		if err := in.Close(); err != nil {
			t.Fatal(err)
		}
		delete(b.insts, id)
	}
	p := NewPool(b.log, func(_ context.Context, id events.InstallationID) (projections.Key, error) { return b.keys[id], nil },
		&PoolOptions{MaxOpen: 1, Installation: b.opts()})
	defer func() {
		if err := p.Close(); err != nil {
			t.Error(err)
		}
	}()
	for _, id := range []events.InstallationID{alice, bob, carol} {
		if err := p.Register(id, b.dbPath(id)); err != nil {
			t.Fatal(err)
		}
	}
	with := func(id events.InstallationID, f func(*Installation) error) {
		t.Helper()
		if err := p.With(ctx, id, f); err != nil {
			t.Fatalf("%s: %v", id, err)
		}
	}
	var sent [][]byte
	for i := range 24 {
		from, to := alice, bob
		if i%3 == 2 {
			from, to = carol, alice
		}
		text := fmt.Sprintf("m%d", i)
		var out *SendOutput
		with(from, func(in *Installation) (err error) {
			out, err = in.Send(ctx, g1, []byte(text), nil)
			return err
		})
		sent = append(sent, out.Message)
		if out.Update != nil { // a member joined by Welcome updates its path first
			for _, r := range out.Update.Recipients {
				with(r, func(in *Installation) error {
					_, err := in.Receive(ctx, out.Update.Commit)
					return err
				})
			}
		}
		with(to, func(in *Installation) error {
			r, err := in.Receive(ctx, out.Message)
			if err == nil && string(r.Content.Bytes()) != text {
				err = fmt.Errorf("received %q, want %q", r.Content.Bytes(), text)
			}
			return err
		})
		if i%3 == 1 {
			with(bob, func(in *Installation) error {
				if _, err := in.Receive(ctx, sent[i-1]); !errors.Is(err, ErrDuplicateMessage) {
					return fmt.Errorf("a message received before, again: %v, want ErrDuplicateMessage", err)
				}
				return nil
			})
		}
	}
	if st := p.Stats(); st.Evictions < 40 {
		t.Fatalf("%d evictions: the test needs one between operations", st.Evictions)
	}
}
