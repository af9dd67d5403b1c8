package projections

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"path/filepath"
	"slices"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// withStateDeltas returns recs with every state an event carries made an
// 8 KiB state that differs from the group's previous one in a few bytes,
// and, when deltas is set, every commit's and proposal's state recorded
// as a delta from the state its epoch started with
// (group.commit_applied v4, group.proposal_staged v3), as the engine
// records them: not from a proposal's state before it.
func withStateDeltas(recs []Record, deltas, inMemory bool) []Record {
	out := slices.Clone(recs)
	started := map[string][]byte{} // the state each group's epoch started with
	last := map[string][]byte{}    // the latest state of each group
	next := func(gid []byte, i int, newEpoch bool) []byte {
		st := bytes.Clone(last[string(gid)])
		if st == nil { // random, not periodic: a run is found where it was
			st = make([]byte, 8192)
			r := rand.New(rand.NewPCG(uint64(len(gid)), uint64(i)))
			for j := range st {
				st[j] = byte(r.Uint32())
			}
		}
		st[(i*97)%len(st)] ^= byte(i) | 1
		st = append(st[:len(st)-8], byte(i), byte(i>>8), 'e', 'p', 'o', 'c', 'h', '!')
		last[string(gid)] = st
		if newEpoch {
			started[string(gid)] = st
		}
		return st
	}
	for i, r := range out {
		switch b := r.Event.Body.(type) {
		case events.GroupCreated:
			b.State = events.NewSecret(next(b.GroupID, i, true))
			out[i].Event.Body = b
		case events.WelcomeProcessed:
			b.State = events.NewSecret(next(b.GroupID, i, true))
			out[i].Event.Body = b
		case events.ExternalJoined:
			b.State = events.NewSecret(next(b.GroupID, i, true))
			out[i].Event.Body = b
		case events.ProposalStaged:
			if b.State.Len() > 0 {
				base := started[string(b.GroupID)]
				b.State = events.NewSecret(next(b.GroupID, i, false))
				if deltas {
					if b = b.WithStateFrom(base, b.State.Bytes()); b.StateDelta.IsZero() {
						panic("a proposal of the sample recorded whole")
					}
				}
				out[i].Event.Body = b
			}
		case events.StateRecorded:
			base := started[string(b.GroupID)]
			b.State = events.NewSecret(next(b.GroupID, i, false))
			if deltas {
				if b = b.WithStateFrom(base, b.State.Bytes()); b.StateDelta.IsZero() {
					panic("a recorded state of the sample recorded whole")
				}
			}
			out[i].Event.Body = b
		case events.CommitApplied:
			base := started[string(b.GroupID)]
			st := next(b.GroupID, i, true)
			if deltas {
				b = b.WithStateFrom(base, st)
				if b.StateDelta.IsZero() {
					panic("a commit of the sample recorded whole")
				}
				if inMemory {
					out[i].Event.Body = b
					continue
				}
				// As read from the stream: the writer's memory left behind.
				b = events.CommitApplied{GroupID: b.GroupID, Epoch: b.Epoch, EpochAuthenticator: b.EpochAuthenticator,
					ConfirmedTranscriptHash: b.ConfirmedTranscriptHash, Commit: b.Commit, StateDelta: b.StateDelta,
					StateSHA256: b.StateSHA256, Added: b.Added, Removed: b.Removed, Committer: b.Committer, RetiredEpochs: b.RetiredEpochs}
			} else {
				b.State = events.NewSecret(st)
			}
			out[i].Event.Body = b
		}
	}
	return out
}

// A commit recorded as a state delta projects into the rows of the same
// commit recorded whole: per event, in batches, and across batches (the
// base then comes from the read model), at every schema (the oldest keep
// no proposal's state, which a delta does not start from).
func TestCommitStateDeltasProjectAsWhole(t *testing.T) {
	for schema := 1; schema <= LatestSchema; schema++ {
		recs := sampleStreamV3(t, "inst-a")
		if schema < 3 {
			s := newStream("inst-a") // no rejoin, no external joins
			buildSample(s, 2, 40)
			recs = s.recs[:v3Extras(s, 950)]
		}
		proposals := 0
		for _, r := range recs {
			if p, ok := r.Event.Body.(events.ProposalStaged); ok && p.State.Len() > 0 {
				proposals++
			}
		}
		if proposals == 0 {
			t.Fatal("the sample has no proposal with a state: no delta crosses one")
		}
		o := func(batch int) *Options { return &Options{SchemaVersion: schema, BatchSize: batch} }
		whole := mustOpen(t, filepath.Join(t.TempDir(), "whole.db"), newKey(t), o(0))
		applyAll(t, whole, withStateDeltas(recs, false, false))
		want, err := whole.Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		// Read from the stream, and as the writer's memory holds them
		// (the state taken as it is where the read model knows the base).
		for _, inMemory := range []bool{false, true} {
			deltas := withStateDeltas(recs, true, inMemory)
			for _, batch := range []int{1, 7, 512} {
				db := mustOpen(t, filepath.Join(t.TempDir(), "delta.db"), newKey(t), o(batch))
				applyAll(t, db, deltas)
				got, err := db.Digest(ctx)
				if err != nil {
					t.Fatal(err)
				}
				if d := Compare(want, got); d != nil {
					t.Fatalf("schema %d, batch %d, in memory %v: the deltas project other rows than the whole states: %v", schema, batch, inMemory, d)
				}
			}
		}
	}
}

// A delta that does not rebuild its recorded state from the state the
// read model holds stops the projection at that event, naming it, and
// applies nothing of its batch: one recorded with the digest of another
// state, and one a writer made in this process from another base than
// the read model's (a writer's bug), which the read model does not take
// as the writer knows it.
func TestCommitStateDeltaOnAnotherBaseRefused(t *testing.T) {
	for name, spoil := range map[string]func(b events.CommitApplied, st []byte) events.CommitApplied{
		"another digest": func(b events.CommitApplied, _ []byte) events.CommitApplied {
			b.StateSHA256 = bytes.Clone(b.StateSHA256)
			b.StateSHA256[0] ^= 1
			return b
		},
		"another base in memory": func(b events.CommitApplied, st []byte) events.CommitApplied {
			other := bytes.Clone(st)
			other[len(other)/2] ^= 1
			return b.WithStateFrom(other, st)
		},
	} {
		deltas := withStateDeltas(sampleStreamV3(t, "inst-a"), true, true)
		bad := -1
		for i, r := range deltas {
			if b, ok := r.Event.Body.(events.CommitApplied); ok && i > len(deltas)/2 {
				st, _ := b.KnownState()
				deltas[i].Event.Body = spoil(b, st.Bytes())
				bad = i
				break
			}
		}
		for _, batch := range []int{1, 512} {
			db := mustOpen(t, filepath.Join(t.TempDir(), "bad.db"), newKey(t), &Options{BatchSize: batch})
			err := db.Apply(ctx, deltas)
			var ae *ApplyError
			if !errors.As(err, &ae) || ae.Seq != deltas[bad].Seq || !errors.Is(err, ErrCannotApply) || !errors.Is(err, events.ErrStateBase) {
				t.Fatalf("%s, batch %d: got %v, want an ApplyError at seq %d wrapping ErrCannotApply and events.ErrStateBase", name, batch, err, deltas[bad].Seq)
			}
			if cp, _ := db.Checkpoint(ctx); batch == 1 && cp != deltas[bad-1].Seq {
				t.Fatalf("%s: checkpoint %d after the refused event, want %d", name, cp, deltas[bad-1].Seq)
			}
		}
	}
}
