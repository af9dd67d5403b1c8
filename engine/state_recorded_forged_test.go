package engine

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// A group.state_recorded that the installation did not record as its
// group stood, appended to the stream by whoever holds its key (a wrong
// epoch, a delta whose digest does not match, the state of another group
// of the installation or an older epoch's state of the group), is
// refused by VerifyMLS naming its stream sequence and never used: the
// projection refuses the first two at that sequence; the last two, which
// it cannot tell without decoding MLS states, the engine refuses to load
// (ErrStateMismatch), recording nothing.
func TestForgedStateRecordedRefused(t *testing.T) {
	for _, forge := range []string{"wrong epoch", "another group's state", "an older epoch's state", "delta digest"} {
		t.Run(forge, func(t *testing.T) {
			b := newBackend(t)
			g1, g2 := setupGroups(t, b)
			ctx := context.Background()
			b.send(alice, g1, "first")
			if got := b.drain(bob); len(got) != 1 {
				t.Fatalf("bob received %d, want 1", len(got))
			}
			in := b.insts[bob]
			in.mu.Lock()
			gs1, err := in.loadGroup(ctx, g1)
			if err != nil {
				in.mu.Unlock()
				t.Fatal(err)
			}
			gs2, err := in.loadGroup(ctx, g2)
			in.mu.Unlock()
			if err != nil {
				t.Fatal(err)
			}
			st1, err := gs1.g.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			st2, err := gs2.g.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			var body events.StateRecorded
			switch forge {
			case "wrong epoch":
				body = events.StateRecorded{GroupID: g1, Epoch: gs1.g.Epoch() + 1, State: events.NewSecret(st1)}
			case "another group's state":
				if gs2.g.Epoch() != gs1.g.Epoch() {
					t.Fatalf("groups at epochs %d and %d: the forgery needs one", gs1.g.Epoch(), gs2.g.Epoch())
				}
				body = events.StateRecorded{GroupID: g1, Epoch: gs1.g.Epoch(), State: events.NewSecret(st2)}
			case "an older epoch's state":
				co, err := b.insts[alice].Update(ctx, g1)
				if err != nil {
					t.Fatal(err)
				}
				b.deliverCommit(co)
				b.drain(bob)
				in.mu.Lock()
				gs1, err = in.loadGroup(ctx, g1)
				in.mu.Unlock()
				if err != nil || gs1.g.Epoch() != co.Epoch {
					t.Fatalf("bob after alice's commit: %v", err)
				}
				body = events.StateRecorded{GroupID: g1, Epoch: gs1.g.Epoch(), State: events.NewSecret(st1)}
			case "delta digest":
				body = events.StateRecorded{GroupID: g1, Epoch: gs1.g.Epoch()}.WithStateFrom(gs1.epochStart.Bytes(), st1)
				if body.StateDelta.IsZero() {
					t.Fatal("the state was recorded whole: the forgery needs a delta")
				}
				body.StateSHA256 = append([]byte(nil), body.StateSHA256...)
				body.StateSHA256[0] ^= 1
			}
			app, err := b.log.Append(ctx, gs1.pos, events.Event{Aggregate: in.groupAgg(g1), Time: b.now, Body: body})
			if err != nil {
				t.Fatal(err)
			}
			seq := app[0].Seq
			want := fmt.Sprintf("seq %d", seq)

			_, err = replay.VerifyMLS(ctx, b.log, bob)
			if !replay.IsVerificationFailure(err) || !strings.Contains(err.Error(), want) {
				t.Errorf("VerifyMLS: %v; want a verification failure naming %s", err, want)
			}

			in.mu.Lock()
			err = in.project(ctx)
			in.mu.Unlock()
			if forge == "another group's state" || forge == "an older epoch's state" {
				// The projection does not decode MLS states: it applies it,
				// and the engine refuses to load it (it would seal g1's
				// messages and commits with g2's keys, or an older epoch's,
				// under g1's aggregate).
				if err != nil {
					t.Fatal(err)
				}
				b.restart(bob)
				in = b.insts[bob]
				pos, err := in.position(ctx, events.AggGroup, groupKey(g1))
				if err != nil {
					t.Fatal(err)
				}
				_, err = in.Send(ctx, g1, []byte("after the forgery"), nil)
				mustErrIs(t, err, ErrStateMismatch)
				if after, err := in.position(ctx, events.AggGroup, groupKey(g1)); err != nil || after != pos {
					t.Fatalf("group position %d (%v) after the refused send, want %d", after, err, pos)
				}
				if _, err := in.Receive(ctx, b.send(alice, g1, "to bob").Message); !errors.Is(err, ErrStateMismatch) {
					t.Fatalf("receive with the forged state: %v, want ErrStateMismatch", err)
				}
				return
			}
			var ae *projections.ApplyError
			if !errors.As(err, &ae) || ae.Seq != seq || !errors.Is(err, projections.ErrCannotApply) {
				t.Errorf("projection: %v; want it refused at stream sequence %d", err, seq)
			}
			if cp, err := in.DB().Checkpoint(ctx); err != nil || cp >= seq {
				t.Errorf("read model checkpoint %d (%v), want it before the forged event at %d", cp, err, seq)
			}
		})
	}
}

// A group.state_recorded carrying the state its epoch started with, after
// the installation received a message of that epoch, rolls the sender's
// ratchet back: loaded, it would accept that message again. Everything
// else about it checks out (its group, its epoch, its authenticator, its
// proposals), so it takes the keys' positions to refuse it: VerifyMLS
// and a rebuild, which re-derive the group's state (and mark the messages
// received since the state before), refuse it naming its stream
// sequence; a state recorded as the group stood passes.
func TestForgedStateRecordedRollingBackRatchetsRefused(t *testing.T) {
	b := newBackend(t)
	g1, _ := setupGroups(t, b)
	ctx := context.Background()
	b.send(alice, g1, "first")
	b.send(alice, g1, "second")
	if got := b.drain(bob); len(got) != 2 {
		t.Fatalf("bob received %d, want 2", len(got))
	}
	in := b.insts[bob]
	in.mu.Lock()
	gs, err := in.loadGroup(ctx, g1)
	in.mu.Unlock()
	if err != nil {
		t.Fatal(err)
	}
	st, err := gs.g.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	// As the group stands: the messages consumed. It passes.
	honest := events.StateRecorded{GroupID: g1, Epoch: gs.g.Epoch()}.WithStateFrom(gs.epochStart.Bytes(), st)
	if _, err := b.log.Append(ctx, gs.pos, events.Event{Aggregate: in.groupAgg(g1), Time: b.now, Body: honest}); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.VerifyMLS(ctx, b.log, bob); err != nil {
		t.Fatalf("VerifyMLS of a state recorded as the group stood: %v", err)
	}

	// As the epoch started: before the two messages.
	forged := events.StateRecorded{GroupID: g1, Epoch: gs.g.Epoch(), State: events.NewSecret(gs.epochStart.Bytes())}
	app, err := b.log.Append(ctx, gs.pos+1, events.Event{Aggregate: in.groupAgg(g1), Time: b.now, Body: forged})
	if err != nil {
		t.Fatal(err)
	}
	want := fmt.Sprintf("seq %d", app[0].Seq)
	_, err = replay.VerifyMLS(ctx, b.log, bob)
	if !errors.Is(err, replay.ErrMLSMismatch) || !strings.Contains(err.Error(), want) || !strings.Contains(err.Error(), "rolled back") {
		t.Fatalf("VerifyMLS of a rolled-back state: %v; want ErrMLSMismatch naming %s and the rollback", err, want)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Rebuild(ctx, b.log, bob, b.dbPath(bob), b.keys[bob], nil); !errors.Is(err, replay.ErrMLSMismatch) || !strings.Contains(err.Error(), want) {
		t.Fatalf("rebuild with a rolled-back state: %v; want ErrMLSMismatch naming %s", err, want)
	}
}
