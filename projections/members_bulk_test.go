package projections

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// peers returns members at leaves from..to-1 named peer-<leaf>-<tag>.
func peers(from, to int, tag string) []events.Member {
	var ms []events.Member
	for l := from; l < to; l++ {
		ms = append(ms, events.Member{Leaf: uint32(l), Identity: fmt.Appendf(nil, "peer-%d-%s", l, tag)})
	}
	return ms
}

// joinedWith is the stream of installation inst-bulk joining group 1 at
// epoch 2 by a Welcome listing members.
func joinedWith(members []events.Member) *streamBuilder {
	s := newStream("inst-bulk")
	s.installation()
	s.keyPackage(1, false)
	s.group(1, events.WelcomeProcessed{GroupID: gid(1), Epoch: 2, KeyPackageRef: kref(1), Welcome: []byte("w"),
		EpochAuthenticator: []byte("auth-2"), State: events.NewSecret([]byte("state-2")), Members: members})
	return s
}

// Members are added in upserts of addMembersChunk rows: a join listing
// 600 members, a commit adding 300 more in leaves that were never used
// and leaves of removed members, the same members listed twice, give the
// rows adding them one by one gives; a leaf held by another member is
// refused, naming the leaf, with nothing applied.
func TestMembersAddedInBulk(t *testing.T) {
	ctx := context.Background()
	s := joinedWith(peers(0, 600, "a"))
	// Remove leaves 100..399, then add 300 members: 200 over removed
	// leaves (200..399) and 100 in leaves never used (600..699).
	s.commit(1, 3, nil, peers(100, 400, "a"))
	added := append(peers(200, 400, "b"), peers(600, 700, "b")...)
	s.commit(1, 4, added, nil)
	// The same 400 members again: no change (a chunk whose upsert changed
	// nothing, then one by one).
	s.commit(1, 5, append(append(peers(600, 700, "b"), peers(0, 100, "a")...), peers(400, 600, "a")...), nil)
	db := mustOpen(t, filepath.Join(t.TempDir(), "bulk.db"), newKey(t), nil)
	applyAll(t, db, s.recs)
	got, err := db.Members(ctx, gid(1))
	if err != nil {
		t.Fatal(err)
	}
	want := map[uint32]string{}
	for _, m := range append(append(peers(0, 100, "a"), peers(400, 600, "a")...), added...) {
		want[m.Leaf] = string(m.Identity)
	}
	if len(got) != len(want) {
		t.Fatalf("%d members, want %d", len(got), len(want))
	}
	for _, m := range got {
		if want[m.Leaf] != string(m.Identity) {
			t.Fatalf("leaf %d holds %q, want %q", m.Leaf, m.Identity, want[m.Leaf])
		}
		wantEpoch := uint64(2)
		if m.Leaf >= 200 && m.Leaf < 400 || m.Leaf >= 600 {
			wantEpoch = 4
		}
		if m.AddedEpoch != wantEpoch {
			t.Fatalf("leaf %d added in epoch %d, want %d", m.Leaf, m.AddedEpoch, wantEpoch)
		}
	}
	before, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Another member over an occupied leaf, in the middle of a chunk.
	bad := peers(700, 1000, "c")
	bad[150] = events.Member{Leaf: 450, Identity: []byte("intruder")}
	r := s.commit(1, 6, bad, nil)
	err = db.Apply(ctx, []Record{r})
	var ae *ApplyError
	if !errors.Is(err, ErrCannotApply) || !errors.As(err, &ae) || ae.Seq != r.Seq {
		t.Fatalf("a member over an occupied leaf: %v, want ErrCannotApply at seq %d", err, r.Seq)
	}
	if msg := err.Error(); !strings.Contains(msg, "leaf 450") {
		t.Fatalf("the refusal does not name the leaf: %v", err)
	}
	if after, _ := db.Digest(ctx); Compare(before, after) != nil {
		t.Fatalf("a refused commit changed the read model: %v", Compare(before, after))
	}
}

// Members are removed in updates of addMembersChunk rows: a commit
// removing 300 members (this installation among them, whose membership
// then ends), another listing 300 of which some twice, give the rows
// removing them one by one gives; a member whose identity does not match
// its leaf is refused, naming the leaf, with nothing applied.
func TestMembersRemovedInBulk(t *testing.T) {
	ctx := context.Background()
	join := peers(0, 1000, "a")
	join[700] = events.Member{Leaf: 700, Identity: []byte("inst-bulk")}
	s := joinedWith(join)
	s.commit(1, 3, nil, peers(0, 300, "a"))
	twice := append(peers(300, 560, "a"), peers(300, 340, "a")...)
	s.commit(1, 4, nil, twice)
	db := mustOpen(t, filepath.Join(t.TempDir(), "bulk.db"), newKey(t), nil)
	applyAll(t, db, s.recs)
	got, err := db.Members(ctx, gid(1))
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 440 || got[0].Leaf != 560 {
		t.Fatalf("%d members from leaf %d, want 440 from leaf 560", len(got), got[0].Leaf)
	}
	before, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// This installation among 300 removed: its membership ends.
	self := append(peers(560, 700, "a"), join[700])
	self = append(self, peers(701, 860, "a")...)
	r := s.commit(1, 5, nil, self)              // applied after the refusal below
	bad := peers(701, 701+addMembersChunk, "a") // one chunk, without this installation
	bad[100] = events.Member{Leaf: bad[100].Leaf, Identity: []byte("someone-else")}
	rb := s.commit(1, 5, nil, bad)
	rb.Seq, rb.Event.Position = r.Seq, r.Event.Position // the same slot in another history
	err = db.Apply(ctx, []Record{rb})
	if !errors.Is(err, ErrCannotApply) || !strings.Contains(err.Error(), fmt.Sprintf("leaf %d", bad[100].Leaf)) {
		t.Fatalf("a member whose identity does not match: %v, want ErrCannotApply naming leaf %d", err, bad[100].Leaf)
	}
	if after, _ := db.Digest(ctx); Compare(before, after) != nil {
		t.Fatalf("a refused commit changed the read model: %v", Compare(before, after))
	}
	if err := db.Apply(ctx, []Record{r}); err != nil {
		t.Fatal(err)
	}
	if got, err := db.Members(ctx, gid(1)); err != nil || len(got) != 140 || got[0].Leaf != 860 {
		t.Fatalf("%d members (%v), want 140 from leaf 860", len(got), err)
	}
	ms, err := db.Memberships(ctx, gid(1))
	if err != nil || len(ms) != 1 || ms[0].Left != "removed" || ms[0].LeftEpoch != 5 {
		t.Fatalf("memberships %+v (%v), want one removed in epoch 5", ms, err)
	}
}
