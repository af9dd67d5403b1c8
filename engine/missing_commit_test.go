package engine

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/mls"
)

// TestMessageOfNextEpochHintsMissingCommit: a member that gets an
// application message of the next epoch without the commit that started it
// is told what is missing (the error still wraps mls.ErrWrongEpoch); once
// the commit is delivered the message is received, and its content prints
// redacted.
func TestMessageOfNextEpochHintsMissingCommit(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	b.create(alice)
	b.create(bob)
	created, err := b.insts[alice].CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	co, err := b.insts[alice].AddMembers(ctx, gid, b.keyPackage(bob))
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drain(bob)

	// Alice moves to epoch 2; the commit is not delivered to bob.
	up, err := b.insts[alice].Update(ctx, gid)
	if err != nil {
		t.Fatal(err)
	}
	out, err := b.insts[alice].Send(ctx, gid, []byte("after the update"), nil)
	if err != nil {
		t.Fatal(err)
	}
	if out.Update != nil {
		t.Fatal("Send made a path update of its own; the test wants one commit missing")
	}
	_, err = b.insts[bob].Receive(ctx, out.Message)
	if !errors.Is(err, mls.ErrWrongEpoch) {
		t.Fatalf("bob receives a message of epoch 2 at epoch 1: %v, want mls.ErrWrongEpoch", err)
	}
	for _, want := range []string{"for epoch 2", "is in epoch 1", "a commit is missing: deliver the commit (SendOutput/CommitOutput .Commit) to this member before messages of the next epoch"} {
		if !strings.Contains(err.Error(), want) {
			t.Fatalf("error %q does not say %q", err, want)
		}
	}

	if _, err := b.del.FanOut(ctx, up.Recipients, mlsChannel, up.Commit, time.Time{}, fmt.Sprintf("commit-%x-%d", up.GroupID, up.Epoch)); err != nil {
		t.Fatal(err)
	}
	b.drain(bob)
	rec, err := b.insts[bob].Receive(ctx, out.Message)
	if err != nil {
		t.Fatalf("after the commit: %v", err)
	}
	if string(rec.Content.Bytes()) != "after the update" {
		t.Fatalf("received %d bytes, not the message sent", rec.Content.Len())
	}
	for _, s := range []string{fmt.Sprint(rec.Content), fmt.Sprintf("%+v", rec), fmt.Sprintf("%#v", *rec)} {
		if strings.Contains(s, "after the update") {
			t.Fatalf("the message body printed: %s", s)
		}
	}
}

// The last event of bob's group deleted from the stream while his read
// model holds it: his next operations on the group say that an event of
// the history is missing, naming the positions, at once; not that they
// lost every race, which would have the caller retry for good.
func TestOperationAfterALostTailSaysAnEventIsMissing(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	co, err := b.insts[alice].Update(ctx, g1)
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drainAll()
	subject, err := b.log.Subject(b.insts[bob].groupAgg(g1))
	if err != nil {
		t.Fatal(err)
	}
	js, err := jetstreamFor(b.log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, b.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	last, err := st.GetLastMsgForSubject(ctx, subject)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, last.Sequence); err != nil {
		t.Fatal(err)
	}
	for _, restart := range []bool{false, true} {
		if restart {
			b.restart(bob)
		}
		_, err := b.insts[bob].Send(ctx, g1, []byte("after the loss"), nil)
		// In the process that wrote it, the aggregate's position says it;
		// after a restart the read model's checkpoint may say it first.
		if !errors.Is(err, eventlog.ErrMissingEvent) || errors.Is(err, ErrTooManyConflicts) || errors.Is(err, eventlog.ErrConflict) ||
			!strings.Contains(err.Error(), "the stream's last event of it is at position") && !(restart && strings.Contains(err.Error(), "which the stream no longer holds")) {
			t.Fatalf("Send after the group's last event was lost (restarted %v): %v, want eventlog.ErrMissingEvent naming the positions", restart, err)
		}
	}
}

// A process that restarts after the stream lost its installation's last
// event (deleted, or dropped with a damaged block) must not link its next
// event, of any aggregate, over the hole: the stream would then show a
// complete history without the event its read model holds. The first
// append asks the stream for the installation's head and finds it before
// the read model's checkpoint (eventlog.Log.ExpectThrough). Until
// 2026-12-06 only an append to the aggregate whose event was lost
// noticed, and only in the process that had written it.
func TestRestartedWriterRefusesToLinkOverALostEvent(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	last := loseBobsLastEvent(t, b)
	// The processes restart (a server crash truncated its last block; the
	// services came back with it): fresh Log, installations reopened from
	// their read models.
	b.close()
	b.open()
	b.reopen()
	_, err := b.insts[bob].PublishKeyPackage(ctx, "kp-server", false)
	if !errors.Is(err, eventlog.ErrMissingEvent) {
		t.Fatalf("bob's first append after the stream lost his event at seq %d (his read model holds it): err = %v, want eventlog.ErrMissingEvent; the new event links over the hole and every reader of the stream now sees a complete history", last, err)
	}
}

// An application message naming an epoch far ahead (up to 2^64-1) is a
// message of an epoch the group has not reached, mls.ErrWrongEpoch, as the
// same bytes are as a commit. Until 2026-12-06 the retention arithmetic
// wrapped (ErrEpochRetired), or from 2^63 the read model's driver refused
// the integer, naming the database's path.
func TestApplicationMessageOfAFarFutureEpoch(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	out, err := b.insts[alice].Send(ctx, g1, []byte("hi"), nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, ep := range []uint64{math.MaxUint64 - 1, math.MaxUint64, 1 << 63} {
		var m mls.MLSMessage
		if err := m.Unmarshal(out.Message); err != nil {
			t.Fatal(err)
		}
		m.PrivateMessage.Epoch = ep
		wire, _ := m.Marshal()
		_, err := b.insts[bob].Receive(ctx, wire)
		if !errors.Is(err, mls.ErrWrongEpoch) {
			t.Errorf("message naming epoch %d: %v, want mls.ErrWrongEpoch", ep, err)
		}
	}
	if _, err := b.insts[bob].Receive(ctx, out.Message); err != nil {
		t.Fatalf("the real message after them: %v", err)
	}
}

// The same, after a delivery service appended to the installation over the
// hole (its own Log, or the same Log before the installation was opened):
// the stream's last event of the installation is past the read model's
// checkpoint again, but the event at the checkpoint is gone, and the
// installation's own next append still refuses to link on. Until later on
// 2026-12-06 it compared the last event only.
func TestRestartedWriterRefusesToLinkAfterAnotherWriterDid(t *testing.T) {
	for _, sameProcess := range []bool{false, true} {
		t.Run(map[bool]string{false: "own-process-DS", true: "same-Log-DS-before-open"}[sameProcess], func(t *testing.T) {
			linkedOverByADeliveryService(t, sameProcess)
		})
	}
}

func linkedOverByADeliveryService(t *testing.T, sameProcess bool) {
	ctx := context.Background()
	b := newBackend(t)
	last := loseBobsLastEvent(t, b)
	b.close()
	b.open()
	if sameProcess {
		// one process: the delivery service takes an enqueue for bob
		// before bob's installation is opened (a Host opens them lazily)
		if _, err := b.del.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, []byte("early payload"), time.Time{}, "early"); err != nil {
			t.Fatalf("enqueue before open: %v", err)
		}
	}
	b.reopen() // bob's Log now has the floor

	// the delivery service, its own process: its own Log
	dsLog, err := eventlog.Open(ctx, testConfig(b.srv), b.ring)
	if err != nil {
		t.Fatal(err)
	}
	defer dsLog.Close()
	ds := NewDeliveries(dsLog, b.clock)
	if _, err := ds.FanOut(ctx, []events.InstallationID{bob}, mlsChannel, []byte("some payload"), time.Time{}, "after-the-loss"); err != nil {
		t.Fatalf("delivery service enqueue: %v", err)
	}
	_, err = b.insts[bob].PublishKeyPackage(ctx, "kp-server", false)
	if !errors.Is(err, eventlog.ErrMissingEvent) {
		t.Fatalf("bob's read model holds seq %d, which the stream lost; after the delivery service linked an event over the hole, bob's own append: err = %v, want eventlog.ErrMissingEvent", last, err)
	}
}

// loseBobsLastEvent gives bob a group and a message sent in it, delivers
// everything, then deletes bob's last event from the stream (his read
// model holds it) and returns its sequence.
func loseBobsLastEvent(t *testing.T, b *backend) uint64 {
	t.Helper()
	ctx := context.Background()
	g1, _ := setupGroups(t, b)
	b.send(bob, g1, "the last thing bob did")
	b.drainAll()
	// drainAll may have written more events of bob; the last one is lost.
	last := b.lastSeq(bob)
	js, err := jetstreamFor(b.log)
	if err != nil {
		t.Fatal(err)
	}
	st, err := js.Stream(ctx, b.log.Stream())
	if err != nil {
		t.Fatal(err)
	}
	if err := st.DeleteMsg(ctx, last); err != nil {
		t.Fatal(err)
	}
	return last
}

// An installation erased while a read model of it was kept (a device
// that kept its file, or a service restarted after an erase by another
// process or an older replayer): reopened from that read model, its
// reopening it is refused as erased (its catch-up finds the tombstone),
// not its first append as events the stream lost (eventlog.ErrMissingEvent,
// whose hint is to verify the read model). Until 2026-12-07 the reopen
// succeeded (a catch-up from past sequence 1 found nothing and said
// nothing) and the first append was refused as erased.
func TestReopenedErasedInstallationRefusesAsErased(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	setupGroups(t, b)
	b.close()
	b.open()
	if _, err := b.log.Erase(ctx, bob, nil); err != nil {
		t.Fatal(err)
	}
	b.close()
	b.open()
	in, err := OpenInstallation(ctx, b.log, bob, b.dbPath(bob), b.keys[bob], b.opts())
	if err == nil {
		in.Close()
	}
	if !errors.Is(err, eventlog.ErrErased) {
		t.Fatalf("reopen of an erased installation from its read model: %v, want eventlog.ErrErased", err)
	}
}
