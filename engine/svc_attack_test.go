package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/replay"
)

func replayPolicyZero() replay.RetentionPolicy { return replay.RetentionPolicy{} }

// TestEveryMethodAfterCloseIsErrClosed calls every method of a closed
// Installation that takes a context: each fails with ErrClosed, as
// Close's doc says ("An operation called afterwards fails with
// ErrClosed"), and nothing is appended.
func TestEveryMethodAfterCloseIsErrClosed(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	alice := b.create("alice")
	b.create("bob")
	g, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	kp := b.keyPackage("bob")
	co, err := alice.AddMembers(ctx, g.GroupID, kp)
	if err != nil {
		t.Fatal(err)
	}
	gi, err := alice.GroupInfo(ctx, g.GroupID, true)
	if err != nil {
		t.Fatal(err)
	}
	// Something pending for alice, for Host.Deliver to receive.
	if _, err := b.del.FanOut(ctx, []events.InstallationID{"alice"}, mlsChannel, co.Commit, time.Time{}, "x"); err != nil {
		t.Fatal(err)
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	gid := g.GroupID
	ops := map[string]func() error{
		"AddMembers":                    func() error { _, err := alice.AddMembers(ctx, gid, kp); return err },
		"Branch":                        func() error { _, err := alice.Branch(ctx, gid, nil, kp); return err },
		"CheckEpochAuthenticator":       func() error { return alice.CheckEpochAuthenticator(ctx, gid, 1, []byte("x")) },
		"CommitPreSharedKeys":           func() error { _, err := alice.CommitPreSharedKeys(ctx, gid, ResumptionPSK(0)); return err },
		"CommitProposals":               func() error { _, err := alice.CommitProposals(ctx, gid); return err },
		"EpochAuthenticator":            func() error { _, _, err := alice.EpochAuthenticator(ctx, gid); return err },
		"GroupContextExtensions":        func() error { _, err := alice.GroupContextExtensions(ctx, gid); return err },
		"GroupInfo":                     func() error { _, err := alice.GroupInfo(ctx, gid, true); return err },
		"HandshakeWireFormat":           func() error { _, err := alice.HandshakeWireFormat(ctx, gid); return err },
		"JoinExternal":                  func() error { _, err := alice.JoinExternal(ctx, gi.GroupInfo, nil); return err },
		"Leave":                         func() error { _, err := alice.Leave(ctx, gid); return err },
		"Members":                       func() error { _, err := alice.Members(ctx, gid); return err },
		"OwnCommits":                    func() error { _, err := alice.OwnCommits(ctx, gid, 0); return err },
		"OwnMessages":                   func() error { _, err := alice.OwnMessages(ctx, gid, 0, 0); return err },
		"ProcessWelcome":                func() error { _, err := alice.ProcessWelcome(ctx, co.Welcome); return err },
		"ProposeAdd":                    func() error { _, err := alice.ProposeAdd(ctx, gid, kp); return err },
		"ProposeGroupContextExtensions": func() error { _, err := alice.ProposeGroupContextExtensions(ctx, gid, nil); return err },
		"ProposePreSharedKey":           func() error { _, err := alice.ProposePreSharedKey(ctx, gid, ResumptionPSK(0)); return err },
		"ProposeRemove":                 func() error { _, err := alice.ProposeRemove(ctx, gid, "bob"); return err },
		"ProposeUpdate":                 func() error { _, err := alice.ProposeUpdate(ctx, gid); return err },
		"ReInitOf":                      func() error { _, err := alice.ReInitOf(ctx, gid); return err },
		"Receive":                       func() error { _, err := alice.Receive(ctx, co.Commit); return err },
		"Reinitialize":                  func() error { _, err := alice.Reinitialize(ctx, gid, kp); return err },
		"RemoveMembers":                 func() error { _, err := alice.RemoveMembers(ctx, gid, "bob"); return err },
		"Resync":                        func() error { _, err := alice.Resync(ctx, gid, gi.GroupInfo, nil, ResyncLost); return err },
		"Retain":                        func() error { _, err := alice.Retain(ctx, replayPolicyZero(), nil); return err },
		"RetireExternalPSK":             func() error { return alice.RetireExternalPSK(ctx, []byte("p")) },
		"SetGroupContextExtensions":     func() error { _, err := alice.SetGroupContextExtensions(ctx, gid, nil); return err },
		"SetHandshakeWireFormat":        func() error { return alice.SetHandshakeWireFormat(ctx, gid, WireFormatPublic) },
		"Update":                        func() error { _, err := alice.Update(ctx, gid); return err },
		"Host.Deliver": func() error {
			return NewHost(b.log, b.del, nil).Deliver(ctx, mlsChannel, []*Installation{alice}, 0)[0].Err
		},
	}
	for name, op := range ops {
		if err := op(); !errors.Is(err, ErrClosed) {
			t.Errorf("%s on a closed installation: %v, want ErrClosed", name, err)
		}
	}
}

// TestMembersOfAnUnknownGroup: Members of a group the installation never
// held is ErrUnknownGroup, as for every other operation naming a group
// (it was an empty list and no error, the same as a group with no one
// left); a group it holds lists its members, one it left those that
// stayed.
func TestMembersOfAnUnknownGroup(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	alice := b.create("alice")
	b.create("bob")
	if _, err := alice.Members(ctx, []byte("no such group")); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("Members of an unknown group: %v, want ErrUnknownGroup", err)
	}
	if _, err := alice.Members(ctx, nil); !errors.Is(err, ErrUnknownGroup) {
		t.Fatalf("Members of a nil group id: %v, want ErrUnknownGroup", err)
	}
	gid := b.groupOf(alice, "bob")
	for _, id := range []events.InstallationID{"alice", "bob"} {
		ms, err := b.insts[id].Members(ctx, gid)
		if err != nil || len(ms) != 2 {
			t.Fatalf("%s: members %v, %v; want alice and bob", id, ms, err)
		}
	}
	co, err := alice.RemoveMembers(ctx, gid, "bob")
	if err != nil {
		t.Fatal(err)
	}
	b.deliverCommit(co)
	b.drain("bob")
	ms, err := b.insts["bob"].Members(ctx, gid)
	if err != nil || len(ms) != 1 || ms[0] != "alice" {
		t.Fatalf("members of a group bob was removed from, as bob has them: %v, %v; want alice, who stayed", ms, err)
	}
}

// TestDecideOfNoOutcomeUnknownError: a service that hands Decide what
// errors.As found, nil when the error was no *OutcomeUnknownError (an
// ErrOutcomeUnknown of Receive), gets an error, not a panic.
func TestDecideOfNoOutcomeUnknownError(t *testing.T) {
	b := newBackend(t)
	alice := b.create("alice")
	var u *OutcomeUnknownError
	errors.As(fmt.Errorf("receive: %w", ErrOutcomeUnknown), &u)
	recorded, err := alice.Decide(context.Background(), u)
	if err == nil || recorded {
		t.Fatalf("Decide(nil): %v, %v; want an error", recorded, err)
	}
}

// TestFanOutToAnErasedInstallation: a fan-out naming an erased
// installation (a wiped device still in a group) fails with
// eventlog.ErrErased, not ErrOutcomeUnknown, which had the service
// decide again, and fan out again, for good; without it, the fan-out
// goes through, each recipient's message queued once.
func TestFanOutToAnErasedInstallation(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	b.create("alice")
	b.create("bob")
	b.create("carol")
	if err := b.insts["alice"].Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	if _, err := Erase(ctx, b.log, "alice", nil); err != nil {
		t.Fatal(err)
	}
	for _, rs := range [][]events.InstallationID{{"alice", "bob"}, {"carol", "alice"}} {
		_, err := b.del.FanOut(ctx, rs, mlsChannel, []byte("m"), time.Time{}, "k")
		if !errors.Is(err, eventlog.ErrErased) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("fan-out to %v, alice erased: %v; want eventlog.ErrErased and no ErrOutcomeUnknown", rs, err)
		}
		_, err = b.del.FanOutMany(ctx, []FanOutItem{{Recipients: rs, Channel: "other", Payload: []byte("m"), IdempotencyKey: "k"}})
		if !errors.Is(err, eventlog.ErrErased) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("fan-out many to %v, alice erased: %v; want eventlog.ErrErased and no ErrOutcomeUnknown", rs, err)
		}
	}
	if _, err := b.del.FanOut(ctx, []events.InstallationID{"bob", "carol"}, mlsChannel, []byte("m"), time.Time{}, "k"); err != nil {
		t.Fatalf("fan-out without the erased installation: %v", err)
	}
	for _, id := range []events.InstallationID{"bob", "carol"} {
		ds, err := b.del.Fetch(ctx, id, mlsChannel, 0)
		if err != nil || len(ds) != 1 {
			t.Fatalf("%s: %d deliveries, %v; want the message once", id, len(ds), err)
		}
	}
}

// TestInstallationErasedWhileOpenElsewhere holds Erase's doc to what an
// Installation another process keeps open meets: its next appends fail
// with eventlog.ErrErased (and are not an unknown outcome), its queries
// serve what its read model held, and an open again is refused.
func TestInstallationErasedWhileOpenElsewhere(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	alice := b.create("alice")
	g, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Another process's erase: its own Log, the read model not named.
	other, err := eventlog.Open(ctx, testConfig(b.srv), b.ring)
	if err != nil {
		t.Fatal(err)
	}
	defer other.Close()
	if _, err := Erase(ctx, other, "alice", nil); err != nil {
		t.Fatal(err)
	}
	if _, err := alice.Send(ctx, g.GroupID, []byte("after the erase"), nil); !errors.Is(err, eventlog.ErrErased) || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("send of an installation erased meanwhile: %v; want eventlog.ErrErased", err)
	}
	if _, err := alice.CreateGroup(ctx, nil); !errors.Is(err, eventlog.ErrErased) {
		t.Fatalf("create group of an installation erased meanwhile: %v; want eventlog.ErrErased", err)
	}
	if ep, err := alice.Epoch(ctx, g.GroupID); err != nil || ep != 0 {
		t.Fatalf("epoch from the read model it holds: %d, %v", ep, err)
	}
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	delete(b.insts, "alice")
	if _, err := OpenInstallation(ctx, b.log, "alice", b.dbPath("alice"), b.keys["alice"], b.opts()); !errors.Is(err, eventlog.ErrErased) {
		t.Fatalf("open of the erased installation: %v; want eventlog.ErrErased", err)
	}
}

// TestFanOutIntoAShreddedDeliveryDay: a fan-out dated (the Deliveries'
// clock) in a day whose delivery keys the recipient's retention shredded
// is refused before anything is sent, by every try: eventlog.ErrRetainedOut
// alone, not an unknown outcome a service would decide and try again for
// good.
func TestFanOutIntoAShreddedDeliveryDay(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	bob := b.create("bob")
	day1 := b.now
	if _, err := b.del.FanOut(ctx, []events.InstallationID{"bob"}, mlsChannel, []byte("old"), time.Time{}, "old"); err != nil {
		t.Fatal(err)
	}
	ds, err := b.del.Fetch(ctx, "bob", mlsChannel, 0)
	if err != nil || len(ds) != 1 {
		t.Fatalf("fetch: %d, %v", len(ds), err)
	}
	if err := b.del.Acknowledge(ctx, "bob", mlsChannel, ds[0].Seq); err != nil {
		t.Fatal(err)
	}
	b.now = day1.Add(48 * time.Hour)
	if _, err := b.del.FanOut(ctx, []events.InstallationID{"bob"}, mlsChannel, []byte("new"), time.Time{}, "new"); err != nil {
		t.Fatal(err)
	}
	res, err := bob.Retain(ctx, replay.RetentionPolicy{Messages: replay.KeepForever, Delivery: 24 * time.Hour, History: replay.KeepForever, PastEpochs: replay.KeepAllEpochs}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Periods) == 0 {
		t.Fatalf("retain shredded nothing: %+v", res.RetainResult)
	}
	b.now = day1
	for _, key := range []string{"late", "late-many"} {
		var err error
		if key == "late" {
			_, err = b.del.FanOut(ctx, []events.InstallationID{"bob"}, mlsChannel, []byte("late"), time.Time{}, key)
		} else {
			_, err = b.del.FanOutMany(ctx, []FanOutItem{{Recipients: []events.InstallationID{"bob"}, Channel: mlsChannel, Payload: []byte("late"), IdempotencyKey: key}})
		}
		if !errors.Is(err, eventlog.ErrRetainedOut) || errors.Is(err, ErrOutcomeUnknown) {
			t.Fatalf("fan-out %s dated in a shredded delivery day: %v; want eventlog.ErrRetainedOut and no ErrOutcomeUnknown", key, err)
		}
	}
}

// TestFetchOfANegativeLimit: Fetch, FetchMany and Host.Deliver refuse a
// negative limit, as OwnMessages does (it fetched everything).
func TestFetchOfANegativeLimit(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	bob := b.create("bob")
	if _, err := b.del.FanOut(ctx, []events.InstallationID{"bob"}, mlsChannel, []byte("m"), time.Time{}, "k"); err != nil {
		t.Fatal(err)
	}
	if ds, err := b.del.Fetch(ctx, "bob", mlsChannel, -1); err == nil {
		t.Fatalf("fetch with limit -1: %d deliveries, no error", len(ds))
	}
	if ds, err := b.del.FetchMany(ctx, []events.InstallationID{"bob"}, mlsChannel, -1); err == nil {
		t.Fatalf("fetch many with limit -1: %v, no error", ds)
	}
	if r := NewHost(b.log, b.del, nil).Deliver(ctx, mlsChannel, []*Installation{bob}, -1); r[0].Err == nil {
		t.Fatalf("deliver with limit -1: %+v, no error", r[0])
	}
	if ds, err := b.del.Fetch(ctx, "bob", mlsChannel, 0); err != nil || len(ds) != 1 {
		t.Fatalf("fetch with limit 0: %d, %v; want the message", len(ds), err)
	}
}
