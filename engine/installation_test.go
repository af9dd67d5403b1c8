package engine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
	"github.com/nats-io/nats.go/jetstream"
)

func jetstreamFor(l *eventlog.Log) (jetstream.JetStream, error) { return jetstream.New(l.Conn()) }

const (
	alice events.InstallationID = "alice-phone"
	bob   events.InstallationID = "bob-laptop"
	carol events.InstallationID = "carol-tablet"
)

// setupGroups creates alice, bob and carol; group 1 by alice with bob and
// carol, group 2 by bob with carol.
func setupGroups(t *testing.T, b *backend) (g1, g2 []byte) {
	t.Helper()
	ctx := context.Background()
	for _, id := range []events.InstallationID{alice, bob, carol} {
		b.create(id)
	}
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	g1 = created.GroupID
	co, err := b.insts[alice].AddMembers(ctx, g1, b.keyPackage(bob), b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	if len(co.Added) != 2 || co.Welcome == nil || len(co.Recipients) != 0 {
		t.Fatalf("add to a group of one: added %v, recipients %v", co.Added, co.Recipients)
	}
	b.deliverCommit(co)
	b.drainAll()
	if created, err = b.insts[bob].CreateGroup(ctx, nil); err != nil {
		t.Fatal(err)
	}
	g2 = created.GroupID
	co, err = b.insts[bob].AddMembers(ctx, g2, b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drainAll()
	for _, id := range []events.InstallationID{alice, bob, carol} {
		e1, _ := b.insts[id].Epoch(ctx, g1)
		if e1 != 1 {
			t.Fatalf("%s in group 1 at epoch %d, want 1", id, e1)
		}
	}
	return g1, g2
}

// exchange sends n messages round-robin among senders in gid, delivering
// as it goes, and checks every member received exactly what was sent.
func exchange(t *testing.T, b *backend, gid []byte, senders []events.InstallationID, n int, tag string) {
	t.Helper()
	for i := 0; i < n; i++ {
		from := senders[i%len(senders)]
		text := fmt.Sprintf("%s %d from %s", tag, i, from)
		out := b.send(from, gid, text)
		for _, r := range out.Recipients {
			got := b.drain(r)
			if len(got) != 1 || string(got[0].Content.Bytes()) != text || got[0].Sender != from || !bytes.Equal(got[0].MessageID, out.MessageID) {
				t.Fatalf("%s got %d messages after %q from %s", r, len(got), text, from)
			}
		}
		if i%97 == 0 {
			b.now = b.now.Add(10 * time.Minute)
		}
	}
}

func messageCount(t *testing.T, in *Installation, gid []byte) int {
	t.Helper()
	return countMessages(t, in, gid, func(projections.Message) bool { return true })
}

// countMessages is how many of gid's messages in in's read model keep
// holds for.
func countMessages(t *testing.T, in *Installation, gid []byte, keep func(projections.Message) bool) int {
	t.Helper()
	n := 0
	p := projections.Page{Limit: 1000}
	for {
		page, err := in.DB().Messages(context.Background(), gid, p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			if keep(m) {
				n++
			}
		}
		if page.Next == 0 {
			return n
		}
		p.Before = page.Next
	}
}

func TestScenarioThreeInstallationsTwoGroups(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, g2 := setupGroups(t, b)

	exchange(t, b, g1, []events.InstallationID{alice, bob, carol}, 300, "g1a")
	exchange(t, b, g2, []events.InstallationID{bob, carol}, 200, "g2a")

	// Carol updates in group 1, then alice removes her.
	co, err := b.insts[carol].Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drainAll()
	co, err = b.insts[alice].RemoveMembers(ctx, g1, carol)
	if err != nil {
		t.Fatal(err)
	}
	if len(co.Recipients) != 2 {
		t.Fatalf("remove commit goes to %v, want bob and carol", co.Recipients)
	}
	b.deliverCommit(co)
	b.drainAll()
	ms, err := b.insts[bob].Members(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	if len(ms) != 2 {
		t.Fatalf("group 1 members after removing carol: %v", ms)
	}
	if _, err := b.insts[carol].Send(ctx, g1, []byte("still here?"), nil); !errors.Is(err, mls.ErrNotMember) {
		t.Fatalf("a removed member sent: %v", err)
	}
	if _, err := b.insts[alice].RemoveMembers(ctx, g1, carol); err == nil {
		t.Fatal("removing a non-member succeeded")
	}

	exchange(t, b, g1, []events.InstallationID{alice, bob}, 300, "g1b")
	// Bob updates group 2 explicitly; carol re-added to group 1.
	co, err = b.insts[bob].Update(ctx, g2)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drainAll()
	exchange(t, b, g2, []events.InstallationID{carol, bob}, 200, "g2b")

	if got := messageCount(t, b.insts[alice], g1); got != 600 {
		t.Fatalf("alice has %d messages in group 1, want 600", got)
	}
	if got := messageCount(t, b.insts[carol], g2); got != 400 {
		t.Fatalf("carol has %d messages in group 2, want 400", got)
	}
	// Every member agrees on each group's epoch authenticator.
	for _, gid := range [][]byte{g1, g2} {
		var auth []byte
		for _, id := range []events.InstallationID{alice, bob, carol} {
			ms, _ := b.insts[id].Members(ctx, gid)
			if !slices.Contains(ms, id) {
				continue
			}
			in := b.insts[id]
			in.mu.Lock()
			gs, err := in.loadGroup(ctx, gid)
			in.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			if !gs.g.Active() {
				continue
			}
			if auth == nil {
				auth = gs.g.EpochAuthenticator()
			} else if !bytes.Equal(auth, gs.g.EpochAuthenticator()) {
				t.Fatalf("%s disagrees on group %x's epoch authenticator", id, gid)
			}
		}
	}
	// Operations read the few events they need with message gets: the
	// thousands of operations above left no pile of consumers behind
	// (the server allows 1000 per stream).
	js, err := jetstreamFor(b.log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, b.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	info, err := st.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if info.State.Consumers > 10 {
		t.Fatalf("stream has %d consumers after the scenario", info.State.Consumers)
	}
	for _, id := range []events.InstallationID{alice, bob, carol} {
		b.checkRebuild(id)
	}
}

func TestBackendRestartMidScenario(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, g2 := setupGroups(t, b)
	exchange(t, b, g1, []events.InstallationID{alice, bob, carol}, 30, "before")
	// Queue messages nobody has fetched yet, then stop the process.
	pending := b.send(alice, g1, "sent before the restart")
	b.close()

	b.open()
	b.reopen()
	// The new process finds the queued message and the recipients open it.
	for _, r := range pending.Recipients {
		got := b.drain(r)
		if len(got) != 1 || string(got[0].Content.Bytes()) != "sent before the restart" {
			t.Fatalf("%s after restart got %d messages", r, len(got))
		}
	}
	// Sending resumes on the same epoch without reusing a ratchet key:
	// the receivers would refuse a reused generation.
	exchange(t, b, g1, []events.InstallationID{alice, bob, carol}, 30, "after")
	exchange(t, b, g2, []events.InstallationID{bob, carol}, 10, "after")
	co, err := b.insts[bob].AddMembers(ctx, g2, b.keyPackage(alice))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drainAll()
	exchange(t, b, g2, []events.InstallationID{alice, bob, carol}, 10, "three")
	for _, id := range []events.InstallationID{alice, bob, carol} {
		b.checkRebuild(id)
	}
	// A retried fan-out with the same idempotency key enqueues nothing.
	before, _ := b.del.Fetch(ctx, bob, mlsChannel, 0)
	b.send(alice, g1, "once")
	got1, _ := b.del.Fetch(ctx, bob, mlsChannel, 0)
	if len(got1) != len(before)+1 {
		t.Fatalf("fan-out queued %d, want 1", len(got1)-len(before))
	}
}

func TestTwoProcessesRaceOnOneGroup(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)

	// A second process acting for alice: its own Log connection and its
	// own read model, caught up from the log.
	l2, err := eventlog.Open(ctx, testConfig(b.srv), b.ring)
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Close()
	k := b.keys[alice]
	alice2, err := OpenInstallation(ctx, l2, alice, b.dbPath(alice)+"-p2", k, b.opts())
	if err != nil {
		t.Fatal(err)
	}
	defer alice2.Close()
	alice1 := b.insts[alice]
	// Both load the group at the same epoch, then both commit: the second
	// append loses, catches up and commits again on the new epoch.
	if _, err := alice2.Epoch(ctx, g1); err != nil {
		t.Fatal(err)
	}
	co1, err := alice1.Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	co2, err := alice2.Update(ctx, g1)
	if err != nil {
		t.Fatalf("the losing process did not retry: %v", err)
	}
	if co1.Epoch != 2 || co2.Epoch != 3 {
		t.Fatalf("epochs %d and %d, want 2 then 3", co1.Epoch, co2.Epoch)
	}
	// Messages racing the same way: both succeed, with distinct ratchet
	// generations (receivers refuse a reused one).
	s1, err := alice1.Send(ctx, g1, []byte("from process 1"), nil)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := alice2.Send(ctx, g1, []byte("from process 2"), nil)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co1)
	b.deliverCommit(co2)
	for _, s := range []*SendOutput{s1, s2} {
		if _, err := b.del.FanOut(ctx, s.Recipients, mlsChannel, s.Message, time.Time{}, fmt.Sprintf("%x", s.MessageID)); err != nil {
			t.Fatal(err)
		}
	}
	got := b.drain(bob)
	if len(got) != 2 || string(got[0].Content.Bytes()) != "from process 1" || string(got[1].Content.Bytes()) != "from process 2" {
		t.Fatalf("bob got %d messages", len(got))
	}
	b.drain(carol)
	// Both processes and bob agree on the epoch: no fork.
	if err := alice1.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	d1, _ := alice1.DB().Digest(ctx)
	d2, _ := alice2.DB().Digest(ctx)
	if !d1.Equal(d2) {
		t.Fatal("the two processes' read models differ")
	}
	e, _ := b.insts[bob].Epoch(ctx, g1)
	if e != 3 {
		t.Fatalf("bob at epoch %d, want 3", e)
	}
	b.checkRebuild(alice)

	// Concurrent racing from two goroutines: every operation lands once.
	errs := make(chan error, 2)
	for _, in := range []*Installation{alice1, alice2} {
		go func() {
			for i := 0; i < 10; i++ {
				if _, err := in.Send(ctx, g1, []byte("race"), nil); err != nil {
					errs <- err
					return
				}
			}
			errs <- nil
		}()
	}
	for range 2 {
		if err := <-errs; err != nil {
			t.Fatal(err)
		}
	}
	if err := alice1.CatchUp(ctx); err != nil {
		t.Fatal(err)
	}
	if n := messageCount(t, alice1, g1); n != 22 {
		t.Fatalf("alice has %d messages, want 22", n)
	}
	b.checkRebuild(alice)
}

func TestTamperedCommitDetectedOnReplay(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	exchange(t, b, g1, []events.InstallationID{alice, bob}, 5, "x")
	if _, err := replay.VerifyMLS(ctx, b.log, bob); err != nil {
		t.Fatalf("untampered history: %v", err)
	}
	// Forge bob's next commit_applied: a real-looking transition with a
	// wrong epoch authenticator, published raw on the group subject.
	bobIn := b.insts[bob]
	bobIn.mu.Lock()
	gs, err := bobIn.loadGroup(ctx, g1)
	bobIn.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	ng, res, err := gs.g.Commit(mls.CommitOptions{ForcePath: true})
	if err != nil {
		t.Fatal(err)
	}
	wire, _ := res.Commit.Marshal()
	st, _ := ng.MarshalBinary()
	wrong := bytes.Clone(ng.EpochAuthenticator())
	wrong[0] ^= 1
	agg := bobIn.groupAgg(g1)
	ev := events.Event{Aggregate: agg, Position: gs.pos + 1, Time: b.now, Body: events.CommitApplied{
		GroupID: g1, Epoch: ng.Epoch(), EpochAuthenticator: wrong, Commit: wire, State: events.NewSecret(st)}}
	subj, err := b.log.Subject(agg)
	if err != nil {
		t.Fatal(err)
	}
	env, err := events.Seal(b.ring, events.Binding{Stream: b.log.Stream(), Subject: subj}, ev)
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstreamFor(b.log)
	if err != nil {
		t.Fatal(err)
	}
	ack, err := js.Publish(ctx, subj, env)
	if err != nil {
		t.Fatal(err)
	}
	_, err = replay.VerifyMLS(ctx, b.log, bob)
	mustErrIs(t, err, replay.ErrMLSMismatch)
	var re *eventlog.RecordError
	if !errors.As(err, &re) || re.Seq != ack.Sequence {
		t.Fatalf("replay stopped at %v, want stream sequence %d", err, ack.Sequence)
	}
	// A rebuild re-derives as it replays and refuses the forged history
	// before swapping anything in; opting out of the check rebuilds it.
	path := filepath.Join(b.dir, "bob-rebuilt.db")
	_, err = replay.Rebuild(ctx, b.log, bob, path, b.keys[bob], nil)
	mustErrIs(t, err, replay.ErrMLSMismatch)
	if !errors.As(err, &re) || re.Seq != ack.Sequence {
		t.Fatalf("rebuild stopped at %v, want stream sequence %d", err, ack.Sequence)
	}
	if _, statErr := os.Stat(path); !errors.Is(statErr, fs.ErrNotExist) {
		t.Fatalf("refused rebuild left %s behind: %v", path, statErr)
	}
	if _, err := replay.Rebuild(ctx, b.log, bob, path, b.keys[bob], &replay.RebuildOptions{Options: replay.Options{SkipMLSCheck: true}}); err != nil {
		t.Fatalf("rebuild without the MLS check: %v", err)
	}
	// The other installations are unaffected.
	if _, err := replay.VerifyMLS(ctx, b.log, alice); err != nil {
		t.Fatal(err)
	}
}

func TestRetiredEpochMessageRefused(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	b.drainAll()
	// Bob's update first (joiners update before their first message).
	exchange(t, b, g1, []events.InstallationID{bob}, 1, "warm")
	b.drainAll()
	// A message of the current epoch, held back.
	late, err := b.insts[bob].Send(ctx, g1, []byte("late"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if late.Update != nil {
		t.Fatal("unexpected update")
	}
	// Alice moves the group on by more than maximum_past_epochs.
	for i := 0; i < mls.DefaultMaxPastEpochs+1; i++ {
		co, err := b.insts[alice].Update(ctx, g1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := b.insts[carol].Receive(ctx, co.Commit); err != nil {
			t.Fatal(err)
		}
	}
	_, err = b.insts[carol].Receive(ctx, late.Message)
	mustErrIs(t, err, ErrEpochRetired)
	// The retirement is recorded and the read model holds no secrets of
	// the retired epochs.
	eps, err := b.insts[carol].DB().Epochs(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	retired := 0
	for _, e := range eps {
		if e.Retired {
			retired++
			if !e.State.IsZero() {
				t.Fatalf("retired epoch %d keeps its state", e.Epoch)
			}
		}
	}
	if retired == 0 {
		t.Fatal("no epoch retired")
	}
	// Each commit records its retirements itself (one event, no atomic
	// batch): no group.epoch_secrets_retired is written.
	var n int
	if err := b.log.Read(ctx, carol, 0, func(r eventlog.Record) error {
		switch body := r.Event.Body.(type) {
		case events.CommitApplied:
			n += len(body.RetiredEpochs)
		case events.EpochSecretsRetired:
			t.Fatalf("seq %d: group.epoch_secrets_retired written beside a commit", r.Seq)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if n != retired {
		t.Fatalf("commits list %d retired epochs, the read model retired %d", n, retired)
	}
	b.checkRebuild(carol)
}

func TestKeyPackageRotation(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	a, bo := b.create(alice), b.create(bob)
	kp1 := b.keyPackage(bob)
	var gids [][]byte
	for range 3 {
		created, err := a.CreateGroup(ctx, nil)
		if err != nil {
			t.Fatal(err)
		}
		gid := created.GroupID
		gids = append(gids, gid)
	}
	join := func(gid, kp []byte) error {
		co, err := a.AddMembers(ctx, gid, kp)
		if err != nil {
			t.Fatal(err)
		}
		_, err = bo.Receive(ctx, co.Welcome)
		return err
	}
	if err := join(gids[0], kp1); err != nil {
		t.Fatal(err)
	}
	// kp1 was rotated: the new one is available, kp1 keeps its keys as the
	// previous one, so a Welcome already in flight for it still works.
	avail, err := bo.DB().AvailableKeyPackages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(avail) != 1 || bytes.Equal(avail[0].KeyPackage, kp1) {
		t.Fatalf("after rotation %d key packages available", len(avail))
	}
	kp2 := avail[0].KeyPackage
	if err := join(gids[1], kp1); err != nil {
		t.Fatalf("welcome for the previous key package: %v", err)
	}
	if err := join(gids[2], kp2); err != nil {
		t.Fatal(err)
	}
	// kp2 rotated too: kp1 is two rotations old and its keys are gone.
	created, err := a.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	g4 := created.GroupID
	mustErrIs(t, join(g4, kp1), ErrNoKeyPackage)
	// Two key pairs held: the current package's and the previous one's.
	avail, err = bo.DB().AvailableKeyPackages(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(avail) != 1 || bytes.Equal(avail[0].KeyPackage, kp2) {
		t.Fatalf("after the second rotation %d key packages available", len(avail))
	}
	for _, c := range []struct {
		name string
		kp   []byte
		held bool
	}{{"kp1", kp1, false}, {"kp2 (previous)", kp2, true}, {"current", avail[0].KeyPackage, true}} {
		_, held, err := bo.DB().HeldKeyPackage(ctx, keyPackageRef(t, c.kp))
		if err != nil {
			t.Fatal(err)
		}
		if held != c.held {
			t.Errorf("%s: key pair held %v, want %v", c.name, held, c.held)
		}
	}
	b.checkRebuild(bob)
}

func TestCreateInstallationTwice(t *testing.T) {
	b := newBackend(t)
	b.create(alice)
	k := b.keys[alice]
	_, err := CreateInstallation(context.Background(), b.log, alice, b.dbPath(alice)+"2", k, nil)
	mustErrIs(t, err, ErrInstallationExists)
	_, err = OpenInstallation(context.Background(), b.log, "nobody", b.dbPath("nobody"), k, nil)
	mustErrIs(t, err, ErrNoInstallation)
}

func TestReopenedInstallationDoesNotReuseRatchetKeys(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	exchange(t, b, g1, []events.InstallationID{alice}, 5, "before")
	// Only alice's process restarts; bob keeps his in-memory state, which
	// remembers the generations alice already used and refuses a reuse.
	b.restart(alice)
	exchange(t, b, g1, []events.InstallationID{alice}, 5, "after")
	if n := messageCount(t, b.insts[bob], g1); n != 10 {
		t.Fatalf("bob has %d messages, want 10", n)
	}
}

func TestMissingCommitStopsReplay(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	co, err := b.insts[alice].Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drainAll()
	exchange(t, b, g1, []events.InstallationID{alice}, 2, "after the commit")
	var commit uint64
	if err := b.log.Read(ctx, bob, 0, func(r eventlog.Record) error {
		if c, ok := r.Event.Body.(events.CommitApplied); ok && bytes.Equal(c.GroupID, g1) {
			commit = r.Seq
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.VerifyMLS(ctx, b.log, bob); err != nil {
		t.Fatal(err)
	}
	// Delete bob's record of the commit: the group's positions now have a
	// gap, and replay stops at the event after it.
	js, err := jetstreamFor(b.log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, b.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, commit); err != nil {
		t.Fatal(err)
	}
	// The event after it in the group, or the first one linking to it,
	// stops the replay, whichever comes first.
	_, err = replay.VerifyMLS(ctx, b.log, bob)
	if !errors.Is(err, eventlog.ErrOutOfOrder) && !errors.Is(err, eventlog.ErrMissingEvent) {
		t.Fatalf("replay after a deleted commit: %v, want ErrOutOfOrder or ErrMissingEvent", err)
	}
	var re *eventlog.RecordError
	if !errors.As(err, &re) || re.Seq <= commit {
		t.Fatalf("replay stopped at %v, want a sequence after %d", err, commit)
	}
}

func TestPathUpdatePolicy(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	// The creator's group creation counts as its first update.
	s, err := b.insts[alice].Send(ctx, g1, []byte("from the creator"), nil)
	if err != nil || s.Update != nil {
		t.Fatalf("creator's first message: %v, update %v", err, s)
	}
	if _, err := b.del.FanOut(ctx, s.Recipients, mlsChannel, s.Message, time.Time{}, "creator"); err != nil {
		t.Fatal(err)
	}
	if got := b.drain(bob); len(got) != 1 {
		t.Fatalf("bob got %d messages", len(got))
	}
	// A joiner updates before its first message, not before the second.
	first, err := b.insts[bob].Send(ctx, g1, []byte("first"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if first.Update == nil || first.Update.Epoch != 2 || first.Epoch != 2 {
		t.Fatalf("first message from a joiner: update %v, epoch %d", first.Update, first.Epoch)
	}
	second, err := b.insts[bob].Send(ctx, g1, []byte("second"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if second.Update != nil {
		t.Fatal("second message updated again")
	}
	// Once the last update is older than UpdateInterval, the next message
	// updates first, also after the installation is reopened.
	b.now = b.now.Add(2 * time.Hour)
	in := b.restart(bob)
	third, err := in.Send(ctx, g1, []byte("third"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if third.Update == nil || third.Update.Epoch != 3 {
		t.Fatalf("stale member's message: update %v", third.Update)
	}
}
