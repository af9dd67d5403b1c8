package engine

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// A late application message of a past epoch names the member who sent
// it, not whoever holds the sender's leaf now.
func TestLateMessageNamesItsSenderAfterLeafReuse(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	b.create(carol)
	gid := b.pair(alice, bob)
	out, err := b.insts[bob].Send(ctx, gid, []byte("from bob"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Update == nil {
		t.Fatal("no update before bob's first message")
	}
	if _, err := b.insts[alice].Receive(ctx, out.Update.Commit); err != nil {
		t.Fatal(err)
	}
	// alice removes bob and adds carol (who takes bob's leaf) before bob's
	// message reaches her.
	if _, err := b.insts[alice].RemoveMembers(ctx, gid, bob); err != nil {
		t.Fatal(err)
	}
	co, err := b.insts[alice].AddMembers(ctx, gid, b.keyPackage(carol))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[carol].Receive(ctx, co.Welcome); err != nil {
		t.Fatal(err)
	}
	r, err := b.insts[alice].Receive(ctx, out.Message)
	if err != nil {
		t.Fatal(err)
	}
	if r.Sender != bob {
		t.Errorf("late message of epoch %d sent by %s (leaf %d) is attributed to %s", r.Epoch, bob, r.SenderLeaf, r.Sender)
	}
	page, err := b.insts[alice].DB().Messages(ctx, gid, projections.Page{Limit: 1000})
	if err != nil {
		t.Fatal(err)
	}
	i := slices.IndexFunc(page.Messages, func(m projections.Message) bool { return bytes.Equal(m.ID, r.MessageID) })
	if i < 0 {
		t.Fatalf("read model has no message %x", r.MessageID)
	}
	if sender := page.Messages[i].Sender; sender != bob {
		t.Errorf("read model records the message as sent by %q", sender)
	}
}

// A negative MaxPastEpochs is refused before anything is recorded: it
// would otherwise refuse messages of the current epoch and never retire a
// past epoch's secrets.
func TestNegativeMaxPastEpochsRefused(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	k, err := projections.GenerateRawKey()
	if err != nil {
		t.Fatal(err)
	}
	o := &InstallationOptions{Now: b.clock, MaxPastEpochs: -1}
	if _, err := CreateInstallation(ctx, b.log, alice, b.dbPath(alice), k, o); err == nil || !strings.Contains(err.Error(), "MaxPastEpochs -1") {
		t.Fatalf("create with MaxPastEpochs -1: %v, want a refusal naming the option", err)
	}
	if seq, err := b.log.LastSeq(ctx, alice); err != nil || seq != 0 {
		t.Errorf("after the refusal alice's log ends at seq %d (%v), want nothing recorded", seq, err)
	}
	b.create(alice)
	if _, err := OpenInstallation(ctx, b.log, alice, b.dir+"/alice-2.db", k, o); err == nil {
		t.Error("open with MaxPastEpochs -1 accepted")
	}
}

// VerifyMLS compares a commit's recorded membership change (Added and
// Removed, from which the read model builds its members) with what the
// commit does.
func TestVerifyMLSChecksTheRecordedMembershipChange(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	gid := b.pair(alice, bob)
	co, err := b.insts[alice].Update(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	in := b.insts[bob]
	gs, err := in.loadGroup(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	var m mls.MLSMessage
	if err := m.Unmarshal(co.Commit); err != nil {
		t.Fatal(err)
	}
	ng, _, err := gs.g.ProcessCommit(&m)
	if err != nil {
		t.Fatal(err)
	}
	ca, err := in.commitEvent(ctx, gs.g, ng, gs.epochStart.Bytes(), co.Commit, nil, events.Committer{Leaf: 0, Identity: []byte(alice)})
	if err != nil {
		t.Fatal(err)
	}
	// An inconsistent summary (a buggy or compromised writer): the commit
	// is a plain update, the record says alice left and mallory joined.
	ca.Removed = []events.Member{{Leaf: 0, Identity: []byte(alice)}}
	ca.Added = []events.Member{{Leaf: 7, Identity: []byte("mallory")}}
	if err := in.appendAndProject(ctx, in.groupAgg(gid), gs.pos, ca); err != nil {
		t.Fatal(err)
	}
	ms, _ := in.Members(ctx, gid)
	t.Logf("bob's read model members now: %v", ms)
	_, err = replay.VerifyMLS(ctx, b.log, bob)
	if !errors.Is(err, replay.ErrMLSMismatch) {
		t.Errorf("VerifyMLS of a commit_applied whose Added/Removed contradict the commit: %v, want replay.ErrMLSMismatch", err)
	}
}

// VerifyMLS checks the members a join records (group.created,
// group.welcome_processed and group.external_joined list them since
// version 2) against the group's tree: a record that adds a member the
// tree does not hold is refused, a true one passes.
func TestVerifyMLSChecksTheJoinsMembers(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	in := b.create(alice)
	b.create(bob)
	b.pair(alice, bob) // a true group.created and a true Welcome
	if _, err := replay.VerifyMLS(ctx, b.log, bob); err != nil {
		t.Fatalf("VerifyMLS of bob's true join: %v", err)
	}
	kp, secrets, err := mls.NewKeyPackage(in.cs.ID(), in.cred, in.sig, in.capabilities())
	if err != nil {
		t.Fatal(err)
	}
	opts := in.mlsOptions()
	g, err := mls.NewGroup(nil, kp, secrets, &opts)
	if err != nil {
		t.Fatal(err)
	}
	st, err := g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	forged := events.GroupCreated{GroupID: g.GroupID(), Ciphersuite: uint16(in.cs.ID()), Epoch: g.Epoch(), State: events.NewSecret(st),
		Members: []events.Member{{Leaf: 0, Identity: []byte(alice)}, {Leaf: 1, Identity: []byte("mallory")}}}
	if err := in.appendAndProject(ctx, in.groupAgg(g.GroupID()), 0, forged); err != nil {
		t.Fatal(err)
	}
	_, err = replay.VerifyMLS(ctx, b.log, alice)
	if !errors.Is(err, replay.ErrMLSMismatch) || !strings.Contains(err.Error(), "mallory") {
		t.Errorf("VerifyMLS of a group.created listing a member its tree lacks: %v, want replay.ErrMLSMismatch naming mallory", err)
	}
}

// The read model retires exactly the epochs the log lists, with no window
// of its own: an installation running with MaxPastEpochs 5 records a late
// message of an epoch the default window (3) would have retired, and a
// rebuild with default options, or a second process with them, still
// applies it.
func TestRebuildDoesNotDependOnMaxPastEpochs(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	in := b.createWith(alice, &InstallationOptions{Now: b.clock, UpdateInterval: time.Hour, MaxPastEpochs: 5})
	k := b.keys[alice]
	b.create(bob)
	gid := b.pair(alice, bob)
	out, err := b.insts[bob].Send(ctx, gid, []byte("late"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Receive(ctx, out.Update.Commit); err != nil {
		t.Fatal(err)
	}
	for ep, _ := in.Epoch(ctx, gid); ep < out.Epoch+5; ep, _ = in.Epoch(ctx, gid) {
		if _, err := in.Update(ctx, gid); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := in.Receive(ctx, out.Message); err != nil {
		t.Fatalf("late message within MaxPastEpochs 5: %v", err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, alice)
	if _, err := replay.Rebuild(ctx, b.log, alice, b.dbPath(alice), k, nil); err != nil {
		t.Errorf("rebuild of alice's read model with default options: %v", err)
	}
	// A second process of alice with the default options.
	if _, err := OpenInstallation(ctx, b.log, alice, b.dir+"/alice-2.db", k, b.opts()); err != nil {
		t.Errorf("second process of alice (default MaxPastEpochs): %v", err)
	}
}

// Removing an installation that is not in the group is mls.ErrNotMember,
// refused before anything is recorded.
func TestRemoveNonMemberRefused(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	b.create(carol)
	gid := b.pair(alice, bob)
	before := b.lastSeq(alice)
	if _, err := b.insts[alice].RemoveMembers(ctx, gid, carol); !errors.Is(err, mls.ErrNotMember) || !strings.Contains(err.Error(), string(carol)) || strings.Contains(err.Error(), "sender") {
		t.Fatalf("removing %s, not a member: %v, want mls.ErrNotMember naming it (and no sender: there is none)", carol, err)
	}
	if after := b.lastSeq(alice); after != before {
		t.Errorf("the refused removal appended to alice's log (last seq %d -> %d)", before, after)
	}
}

// A Welcome to a group of more than 1,000 members is recorded as one
// event listing them, on a server with nats-server's default limits: it
// was one event per member in one atomic batch, past the default limit
// of 1,000 messages per batch, so nobody could join such a group unless
// the deployment raised it.
func TestWelcomeToALargeGroupIsOneEvent(t *testing.T) {
	const peers = 1000
	ctx := context.Background()
	b := newBackend(t)
	a := b.create(alice)
	b.create(bob)
	created, err := a.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	peerKPs, err := foreignKeyPackages(peers)
	if err != nil {
		t.Fatal(err)
	}
	kps := append([][]byte{b.keyPackage(bob)}, peerKPs...)
	co, err := a.AddMembers(ctx, gid, kps...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := b.insts[bob].Receive(ctx, co.Welcome); err != nil {
		t.Fatalf("bob joins a group of %d from its Welcome: %v", peers+2, err)
	}
	ms, err := b.insts[bob].Members(ctx, gid)
	if err != nil || len(ms) != peers+2 {
		t.Fatalf("bob's read model holds %d members (%v), want %d", len(ms), err, peers+2)
	}
	var joins, others int
	if err := b.log.Read(ctx, bob, 0, func(r eventlog.Record) error {
		if r.Event.Aggregate.Type != events.AggGroup {
			return nil
		}
		if w, ok := r.Event.Body.(events.WelcomeProcessed); ok && len(w.Members) == peers+2 {
			joins++
		} else {
			others++
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if joins != 1 || others != 0 {
		t.Fatalf("bob's group history: %d welcome_processed listing %d members, %d other events; want the one", joins, peers+2, others)
	}
	b.checkRebuild(bob)
}

// What a commit appended (too large to read back) is applied from
// memory when the stream shows nothing else of the installation landed
// since the read model's checkpoint, with other aggregates beside the
// group (four key packages): an own commit, a processed one. A delivery
// queued meanwhile makes the next commit's events read back instead.
func TestAppliedFromMemoryWhenProven(t *testing.T) {
	for _, proof := range []string{"first-after", "counts"} {
		t.Run(proof, func(t *testing.T) { proofBy(t, proof); testAppliedFromMemoryWhenProven(t) })
	}
}

// proofBy makes applyAppended prove with one proof whatever the events'
// size: "first-after" (one message get) or "counts" (the stream's count
// per subject), until t ends.
func proofBy(t *testing.T, proof string) {
	was := proofByGetMaxBytes
	t.Cleanup(func() { proofByGetMaxBytes = was })
	switch proof {
	case "first-after":
		proofByGetMaxBytes = math.MaxInt
	case "counts":
		proofByGetMaxBytes = -1
	default:
		t.Fatalf("no proof %q", proof)
	}
}

func testAppliedFromMemoryWhenProven(t *testing.T) {
	ctx := context.Background()
	o := newObservedBackend(t)
	o.createKnown(alice)
	o.createKnown(bob)
	gid := o.pair(alice, bob)
	for range 3 {
		if _, err := o.insts[alice].PublishKeyPackage(ctx, "directory", false); err != nil {
			t.Fatal(err)
		}
	}
	fromMemory := func(id events.InstallationID) int {
		n := 0
		for _, r := range o.logs.Find(t, "DEBUG", "engine: projected") {
			if r.Str("from") == "memory" && r.Str("installation") == string(id) {
				n++
			}
		}
		return n
	}
	a0, b0 := fromMemory(alice), fromMemory(bob)
	co, err := o.insts[alice].Update(ctx, gid)
	if err != nil || co.ProjectionErr != nil {
		t.Fatalf("alice's update: %v, %v", err, co)
	}
	if rec, err := o.insts[bob].Receive(ctx, co.Commit); err != nil || rec.ProjectionErr != nil {
		t.Fatalf("bob processes it: %v, %v", err, rec)
	}
	if a, b := fromMemory(alice)-a0, fromMemory(bob)-b0; a != 1 || b != 1 {
		t.Fatalf("commits applied from memory: alice %d, bob %d; want 1 each", a, b)
	}
	// A delivery queued to alice meanwhile: her next commit reads back.
	if _, err := o.del.FanOut(ctx, []events.InstallationID{alice}, "inbox", []byte("queued"), time.Time{}, ""); err != nil {
		t.Fatal(err)
	}
	a0 = fromMemory(alice)
	co, err = o.insts[alice].Update(ctx, gid)
	if err != nil || co.ProjectionErr != nil {
		t.Fatalf("alice's second update: %v, %v", err, co)
	}
	if got := fromMemory(alice) - a0; got != 0 {
		t.Fatalf("a commit applied from memory while the read model lacked a delivery")
	}
	if pending, err := o.insts[alice].DB().PendingDeliveries(ctx, alice, "inbox", 0, 10); err != nil || len(pending) != 1 {
		t.Fatalf("alice's queue: %+v, %v", pending, err)
	}
	if g, found, err := o.insts[alice].DB().Group(ctx, gid); err != nil || !found || g.Epoch != co.Epoch {
		t.Fatalf("alice's group at epoch %d (%v, %v), want %d", g.Epoch, found, err, co.Epoch)
	}
}

// A commit's events are applied from memory (they carry the group's
// state, too large to read back) only when the stream proves they are
// all the read model lacks: a delivery queued to the installation by
// another writer meanwhile is read back with them, not skipped (the
// checkpoint would otherwise pass it by for good).
func TestAppliedFromMemoryOnlyWhenNothingElseLanded(t *testing.T) {
	for _, proof := range []string{"first-after", "counts"} {
		t.Run(proof, func(t *testing.T) { proofBy(t, proof); testAppliedFromMemoryOnlyWhenNothingElseLanded(t) })
	}
}

func testAppliedFromMemoryOnlyWhenNothingElseLanded(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	b.create(alice)
	b.create(bob)
	gid := b.pair(alice, bob)
	a := b.insts[alice]
	seqs, err := b.del.FanOut(ctx, []events.InstallationID{alice}, "inbox", []byte("queued meanwhile"), time.Time{}, "")
	if err != nil {
		t.Fatal(err)
	}
	out, err := a.Update(ctx, gid)
	if err != nil || out.ProjectionErr != nil {
		t.Fatalf("update: %v, %v", err, out)
	}
	pending, err := a.DB().PendingDeliveries(ctx, alice, "inbox", 0, 10)
	if err != nil || len(pending) != 1 || pending[0].Seq != seqs[alice] {
		t.Fatalf("alice's read model queues %+v (%v), want the delivery of seq %d", pending, err, seqs[alice])
	}
	if g, found, err := a.DB().Group(ctx, gid); err != nil || !found || g.Epoch != out.Epoch {
		t.Fatalf("alice's read model: group at epoch %d (found %v, %v), want epoch %d", g.Epoch, found, err, out.Epoch)
	}
	b.checkRebuild(alice)
}

// VerifyMLS checks the message an own application message records (the
// output OwnMessages hands out again after a crash): a genuine one
// passes; one whose message id is not its digest, or that is another
// group's message, is refused.
func TestVerifyMLSChecksTheRecordedOwnMessage(t *testing.T) {
	ctx := context.Background()
	for _, c := range []struct {
		name  string
		alter func(b *events.ApplicationMessageSent, other []byte)
	}{
		{"genuine", nil},
		{"message id not its digest", func(b *events.ApplicationMessageSent, _ []byte) { b.MessageID = []byte("0123456789abcdef") }},
		{"another group's message", func(b *events.ApplicationMessageSent, other []byte) {
			b.Message = other
			sum := sha256.Sum256(other)
			b.MessageID = sum[:16]
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			b := newBackend(t)
			b.create(alice)
			b.create(bob)
			b.create(carol)
			gid := b.pair(alice, bob)
			other := b.pair(alice, carol)
			otherOut, err := b.insts[alice].Send(ctx, other, []byte("elsewhere"), nil)
			if err != nil {
				t.Fatal(err)
			}
			out, err := b.insts[alice].Send(ctx, gid, []byte("hello"), nil)
			if err != nil {
				t.Fatal(err)
			}
			if c.alter != nil {
				// A second record of the message, altered (a buggy or
				// compromised writer).
				in := b.insts[alice]
				gs, err := in.loadGroup(ctx, gid)
				if err != nil {
					t.Fatal(err)
				}
				body := events.ApplicationMessageSent{GroupID: gid, Epoch: out.Epoch, SenderLeaf: uint32(gs.g.LeafIndex()), Sender: alice,
					MessageID: out.MessageID, Content: events.NewSecret([]byte("hello")), Message: out.Message}
				c.alter(&body, otherOut.Message)
				if err := in.appendAndProject(ctx, in.groupAgg(gid), gs.pos, body); err != nil {
					t.Fatal(err)
				}
			}
			_, err = replay.VerifyMLS(ctx, b.log, alice)
			if c.alter == nil && err != nil {
				t.Fatalf("VerifyMLS of genuine own messages: %v", err)
			}
			if c.alter != nil && !errors.Is(err, replay.ErrMLSMismatch) {
				t.Fatalf("VerifyMLS: %v, want replay.ErrMLSMismatch", err)
			}
		})
	}
}
