package projections

import (
	"context"
	"fmt"
	"path/filepath"
	"testing"
)

// KnownMessages answers as HasMessage does for each id, sent or received,
// in one statement per 500 ids.
func TestKnownMessages(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "rm.db"), mustKey(t), nil)
	applyAll(t, db, sampleStream(t, "inst-1", 2, 30))
	ctx := context.Background()
	var ids [][]byte
	for n := range 30 {
		ids = append(ids, []byte(fmt.Sprintf("msg-0-%d", n)))
	}
	ids = append(ids, []byte("msg-1-0"), []byte("never sent"))
	for range 600 { // more than one statement's worth
		ids = append(ids, []byte("padding"))
	}
	known, err := db.KnownMessages(ctx, gid(0), ids)
	if err != nil {
		t.Fatal(err)
	}
	for _, id := range ids {
		has, err := db.HasMessage(ctx, gid(0), id)
		if err != nil {
			t.Fatal(err)
		}
		if known[string(id)] != has {
			t.Fatalf("message %q: KnownMessages %v, HasMessage %v", id, known[string(id)], has)
		}
	}
	if len(known) != 30 {
		t.Fatalf("%d known, want the 30 of group 0", len(known))
	}
}

// Projected gives the checkpoint and every aggregate's position, as
// Checkpoint and Position do one at a time.
func TestProjected(t *testing.T) {
	db := mustOpen(t, filepath.Join(t.TempDir(), "rm.db"), mustKey(t), nil)
	recs := sampleStream(t, "inst-1", 2, 30)
	applyAll(t, db, recs)
	ctx := context.Background()
	cp, pos, err := db.Projected(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want, _ := db.Checkpoint(ctx); cp != want || cp != recs[len(recs)-1].Seq {
		t.Fatalf("checkpoint %d, want %d", cp, want)
	}
	seen := map[string]bool{}
	for _, r := range recs {
		a := r.Event.Aggregate
		seen[fmt.Sprint(a)] = true
		if want, _ := db.Position(ctx, a); pos[a] != want || want == 0 {
			t.Fatalf("%v at %d, want %d", a, pos[a], want)
		}
	}
	if len(pos) != len(seen) {
		t.Fatalf("%d aggregates, want %d", len(pos), len(seen))
	}
}
