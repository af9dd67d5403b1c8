package projections

import (
	"errors"
	"fmt"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// received is a message of group 1 received from peer-1 (leaf 1) in
// epoch, numbered n, at generation gen; gen < 0 is one recorded before
// application.message_received v2 (its generation not recorded).
func (s *streamBuilder) received(epoch uint64, n int, gen int) ReceivedGeneration {
	b := events.ApplicationMessageReceived{GroupID: gid(1), Epoch: epoch, SenderLeaf: 1, Sender: "peer-1",
		MessageID: fmt.Appendf(nil, "r-%d", n), Content: events.NewSecret(fmt.Appendf(nil, "hi %d", n))}
	if gen >= 0 {
		b.Generation, b.GenerationKnown = uint32(gen), true
	}
	s.group(1, b)
	return ReceivedGeneration{Epoch: epoch, SenderLeaf: 1, Generation: uint32(max(gen, 0))}
}

// A v10 read model migrated in place to v11 holds what a fresh v11 build
// of the same (v1) events holds: no generation. The messages received
// after it (v2) are listed by MessagesReceivedSinceState in both, while
// the state might not have seen them: those of the current epoch after
// the state recorded last (an epoch's start, a proposal), and those of
// the past epochs held; not those of a retired epoch.
func TestMigrateToV11InPlace(t *testing.T) {
	s := newStream("inst-a")
	s.installation()
	s.group(1, events.GroupCreated{GroupID: gid(1), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-0")),
		Members: members(0, "inst-a")})
	s.ownCommit(1, members(1, "peer-1"), nil, &events.OwnOutput{Welcome: []byte("welcome-1")})
	s.received(1, 0, -1) // before v2: no generation
	before := len(s.recs)
	s.received(1, 1, 1)
	s.othersCommit(2, nil, nil)
	r2 := s.received(2, 2, 0)
	s.received(1, 3, 7) // a late message of epoch 1, held
	s.group(1, events.ProposalStaged{GroupID: gid(1), Epoch: 2, ProposalRef: []byte("ref-peer"), ProposalType: 3, SenderLeaf: 1,
		Sender: []byte("peer-1"), Proposal: []byte("remove"), Message: []byte("msg-peer"), MessageID: []byte("id-peer"), State: events.NewSecret([]byte("s-2-p"))})
	r4 := s.received(2, 4, 1)
	recs := s.recs

	dir := t.TempDir()
	k := newKey(t)
	path := filepath.Join(dir, "migrated.db")
	old := build(t, path, k, &Options{SchemaVersion: 10}, recs[:before])
	if got, err := old.MessagesReceivedSinceState(ctx, gid(1)); err != nil || got != nil {
		t.Fatalf("schema 10: received generations %v, %v; want none", got, err)
	}
	old.Close()
	if f, to, err := MigrateInPlace(ctx, path, k, &Options{SchemaVersion: 11}); err != nil || f != 10 || to != 11 {
		t.Fatalf("MigrateInPlace from v10: %d -> %d, %v", f, to, err)
	}
	migrated := mustOpen(t, path, k, &Options{SchemaVersion: 11})
	defer migrated.Close()
	fresh := build(t, filepath.Join(dir, "fresh.db"), newKey(t), &Options{SchemaVersion: 11}, recs[:before])
	defer fresh.Close()
	same := func(when string) { t.Helper(); sameAsFresh(t, fresh, migrated, 11, when) }
	same("migrated")
	check := func(when string, want []ReceivedGeneration) {
		t.Helper()
		for name, db := range map[string]*DB{"migrated": migrated, "fresh": fresh} {
			got, err := db.MessagesReceivedSinceState(ctx, gid(1))
			if err != nil || !reflect.DeepEqual(got, want) {
				t.Fatalf("%s, %s: received generations\n got %+v, %v\nwant %+v", when, name, got, err, want)
			}
		}
	}
	check("migrated", nil)

	s.recs = nil
	applyAll(t, migrated, recs[before:])
	applyAll(t, fresh, recs[before:])
	same("after received messages")
	// The proposal's state saw r2 and, in epoch 1 (held), r1 and the late
	// message (received before it), not r4.
	check("after a proposal", []ReceivedGeneration{r4})

	s.recs = nil
	r6 := s.received(1, 6, 8) // a late message of epoch 1 after the proposal
	applyAll(t, migrated, s.recs)
	applyAll(t, fresh, s.recs)
	check("after a late message", []ReceivedGeneration{r4, r6})

	s.recs = nil
	s.group(1, events.EpochSecretsRetired{GroupID: gid(1), Epochs: []uint64{1}})
	applyAll(t, migrated, s.recs)
	applyAll(t, fresh, s.recs)
	same("after retiring epoch 1")
	check("after retiring epoch 1", []ReceivedGeneration{r4})

	s.recs = nil
	s.othersCommit(3, nil, nil)
	r5 := s.received(3, 5, 0)
	applyAll(t, migrated, s.recs)
	applyAll(t, fresh, s.recs)
	same("after a commit")
	// Epoch 2 is now past and held: all its messages are listed (the
	// commit's state saw them; MarkReceived passes those over).
	check("after a commit", []ReceivedGeneration{r2, r4, r5})

	s.recs = nil
	s.group(1, events.StateRecorded{GroupID: gid(1), Epoch: 3, State: events.NewSecret([]byte("s-3-r"))})
	r7 := s.received(3, 7, 1)
	applyAll(t, migrated, s.recs)
	applyAll(t, fresh, s.recs)
	same("after a recorded state")
	// A state recorded as it stood (before retention) saw them all.
	check("after a recorded state", []ReceivedGeneration{r7})
}

// A v10 file that applies a received message recording its generation
// notes it, and MigrateInPlace refuses to take it to v11 (a fresh build
// keeps the generation, so the migrated file would differ from it).
func TestMigrateInPlaceRefusesGenerationsNotKept(t *testing.T) {
	s := newStream("inst-a")
	s.installation()
	s.group(1, events.GroupCreated{GroupID: gid(1), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-0")),
		Members: members(0, "inst-a")})
	s.ownCommit(1, members(1, "peer-1"), nil, &events.OwnOutput{Welcome: []byte("welcome-1")})
	s.received(1, 0, 3)
	path := filepath.Join(t.TempDir(), "v10.db")
	k := newKey(t)
	build(t, path, k, &Options{SchemaVersion: 10}, s.recs).Close()
	f, to, err := MigrateInPlace(ctx, path, k, nil)
	if !errors.Is(err, ErrOutputsNotKept) || f != 10 || to != 10 {
		t.Fatalf("MigrateInPlace of a v10 file that applied a generation: %d -> %d, %v; want ErrOutputsNotKept", f, to, err)
	}
}

// Retention keeps the own messages since the group's state, which
// SentSinceState counts (a reload moves the sending ratchet past them),
// until a state is recorded after them (group.state_recorded): then they
// are deleted, and not counted.
func TestRetentionKeepsOwnMessagesSinceState(t *testing.T) {
	s := newStream("inst-a")
	s.installation()
	s.group(1, events.GroupCreated{GroupID: gid(1), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-0")),
		Members: members(0, "inst-a")})
	s.ownCommit(1, members(1, "peer-1"), nil, &events.OwnOutput{Welcome: []byte("welcome-1")})
	for i := range 3 {
		s.ownMessage(1, i, true)
	}
	db := build(t, filepath.Join(t.TempDir(), "v11.db"), newKey(t), nil, s.recs)
	defer db.Close()
	count := func(when string, epoch uint64, want int) {
		t.Helper()
		if n, err := db.SentSinceState(ctx, gid(1), epoch); err != nil || n != want {
			t.Fatalf("%s: %d sent since the state, %v; want %d", when, n, err, want)
		}
	}
	count("before retention", 1, 3)
	cut := s.t0.Add(24 * time.Hour)
	if n, err := db.DeleteMessagesBefore(ctx, cut); err != nil || n != 0 {
		t.Fatalf("retention deleted %d, %v; want 0", n, err)
	}
	if ids, err := db.GroupsToRecordBefore(ctx, cut); err != nil || len(ids) != 1 || string(ids[0]) != string(gid(1)) {
		t.Fatalf("groups to record %x, %v; want group 1", ids, err)
	}
	count("after retention", 1, 3)
	s.recs = nil
	s.group(1, events.StateRecorded{GroupID: gid(1), Epoch: 1, State: events.NewSecret([]byte("s-1-r"))})
	applyAll(t, db, s.recs)
	count("after a recorded state", 1, 0)
	if ids, err := db.GroupsToRecordBefore(ctx, cut); err != nil || len(ids) != 0 {
		t.Fatalf("groups to record after the recorded state %x, %v", ids, err)
	}
	if n, err := db.DeleteMessagesBefore(ctx, cut); err != nil || n != 3 {
		t.Fatalf("retention after the recorded state deleted %d, %v; want 3", n, err)
	}
	count("after retention", 1, 0)
	s.recs = nil
	s.ownMessage(1, 3, true)
	applyAll(t, db, s.recs)
	count("one more", 1, 1)
	s.recs = nil
	s.othersCommit(2, nil, nil)
	applyAll(t, db, s.recs)
	count("after a commit", 2, 0)
}
