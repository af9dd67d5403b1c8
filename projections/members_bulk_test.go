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

// Members are added in upserts of addMembersChunk rows: a join listing
// 600 members, a commit adding 300 more in leaves that were never used
// and leaves of removed members, the same members listed twice, give the
// rows adding them one by one gives; a leaf held by another member is
// refused, naming the leaf, with nothing applied.
func TestMembersAddedInBulk(t *testing.T) {
	ctx := context.Background()
	s := newStream("inst-bulk")
	s.installation()
	s.keyPackage(1, false)
	join := peers(0, 600, "a")
	s.group(1, events.WelcomeProcessed{GroupID: gid(1), Epoch: 2, KeyPackageRef: kref(1), Welcome: []byte("w"),
		EpochAuthenticator: []byte("auth-2"), State: events.Secret("state-2"), Members: join})
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
