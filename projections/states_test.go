package projections

import (
	"bytes"
	"errors"
	"fmt"
	"iter"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// groupStates is everything a read model answers about one group's
// states: the current one, the one its epoch started with, and every
// epoch's (nil once retired).
type groupStates struct {
	current, start []byte
	epochs         []Epoch
}

func statesOf(t *testing.T, db *DB, ids [][]byte) map[string]groupStates {
	t.Helper()
	out := map[string]groupStates{}
	for _, id := range ids {
		cur, err := db.GroupState(ctx, id)
		if err != nil {
			t.Fatalf("group %x: %v", id, err)
		}
		start, err := db.EpochStartState(ctx, id)
		if err != nil {
			t.Fatalf("group %x: %v", id, err)
		}
		both, bothStart, err := db.GroupStates(ctx, id)
		if err != nil || !bytes.Equal(both.Bytes(), cur.Bytes()) || !bytes.Equal(bothStart.Bytes(), start.Bytes()) {
			t.Fatalf("group %x: GroupStates differs from GroupState and EpochStartState (%v)", id, err)
		}
		eps, err := db.Epochs(ctx, id)
		if err != nil {
			t.Fatalf("group %x: %v", id, err)
		}
		out[string(id)] = groupStates{current: cur.Bytes(), start: start.Bytes(), epochs: eps}
	}
	return out
}

func sameStates(t *testing.T, what string, want, got map[string]groupStates) {
	t.Helper()
	for id, w := range want {
		g := got[id]
		if !bytes.Equal(w.current, g.current) || !bytes.Equal(w.start, g.start) {
			t.Fatalf("%s: group %x: current or epoch-start state differs", what, id)
		}
		if len(w.epochs) != len(g.epochs) {
			t.Fatalf("%s: group %x: %d epochs, want %d", what, id, len(g.epochs), len(w.epochs))
		}
		for i := range w.epochs {
			we, ge := w.epochs[i], g.epochs[i]
			if we.Epoch != ge.Epoch || we.Retired != ge.Retired || !bytes.Equal(we.EpochAuthenticator, ge.EpochAuthenticator) || !bytes.Equal(we.State.Bytes(), ge.State.Bytes()) {
				t.Fatalf("%s: group %x epoch %d: another state or row (%d-byte state, retired %v; want %d bytes, retired %v)", what, id, we.Epoch, ge.State.Len(), ge.Retired, we.State.Len(), we.Retired)
			}
		}
	}
}

// everyBatch builds a v5 read model of recs in each of batches (events
// per transaction; the first 1) and yields each, after checking that it
// answers want's states for ids and that its digest is the first one's.
func everyBatch(t *testing.T, recs []Record, ids [][]byte, want map[string]groupStates, batches ...int) iter.Seq2[int, *DB] {
	return func(yield func(int, *DB) bool) {
		var first Digest
		for i, batch := range batches {
			db := build(t, filepath.Join(t.TempDir(), "v5.db"), newKey(t), &Options{BatchSize: batch}, recs)
			sameStates(t, fmt.Sprintf("batch %d", batch), want, statesOf(t, db, ids))
			d, err := db.Digest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if i == 0 {
				first = d
			} else if diff := Compare(first, d); diff != nil {
				t.Fatalf("batch %d: another read model than batch %d's: %v", batch, batches[0], diff)
			}
			if !yield(batch, db) {
				return
			}
		}
	}
}

func sampleGroups(recs []Record) [][]byte {
	var ids [][]byte
	for _, r := range recs {
		if r.Event.Aggregate.Type != events.AggGroup {
			continue
		}
		var id []byte
		switch b := r.Event.Body.(type) {
		case events.GroupCreated:
			id = b.GroupID
		case events.WelcomeProcessed:
			id = b.GroupID
		case events.ExternalJoined:
			id = b.GroupID
		}
		if id != nil && !slices.ContainsFunc(ids, func(x []byte) bool { return bytes.Equal(x, id) }) {
			ids = append(ids, id)
		}
	}
	return ids
}

// sampleWithProposalLeft is sampleStreamV3 with a proposal left cached
// at the end in group 0 (at epoch 6): the read model then holds its state.
func sampleWithProposalLeft() []Record {
	s := newStream("inst-a")
	buildSample(s, 2, 40)
	v3Extras(s, 950)
	externalJoins(s, 951)
	pskEvents(s)
	s.group(0, events.ProposalStaged{GroupID: gid(0), Epoch: 6, ProposalRef: []byte("prop-left"), ProposalType: 2, SenderLeaf: 0,
		Proposal: []byte("update"), Sender: []byte("inst-a"), State: events.NewSecret([]byte("placeholder: withStateDeltas sets it"))})
	return s.recs
}

// From schema v5 a group's state is stored once: the v5 read model
// answers every state query as a v4 one does (current, epoch start,
// every held epoch's), whatever its batches, while it stores the current
// epoch's state whole once and each held past epoch's as a small delta,
// and no epoch row carries a state.
func TestStateStoredOnce(t *testing.T) {
	recs := withStateDeltas(sampleWithProposalLeft(), true, false)
	ids := sampleGroups(recs)
	v4 := build(t, filepath.Join(t.TempDir(), "v4.db"), newKey(t), &Options{SchemaVersion: 4}, recs)
	defer v4.Close()
	want := statesOf(t, v4, ids)
	for batch, db := range everyBatch(t, recs, ids, want, 1, 7, 512) {
		var cols int
		if err := db.sql.QueryRow(`SELECT count(*) FROM pragma_table_info('epochs') WHERE name = 'state'`).Scan(&cols); err != nil || cols != 0 {
			t.Fatalf("epochs has a state column (%d, %v)", cols, err)
		}
		// One row per held past epoch, each a delta far smaller than
		// the 8 KiB states of the sample.
		var rows, past, biggest, proposals int
		db.sql.QueryRow(`SELECT count(*), coalesce(max(length(state_delta)), 0) FROM epoch_states`).Scan(&rows, &biggest)
		db.sql.QueryRow(`SELECT count(*) FROM epochs e JOIN groups g USING (group_id) WHERE e.retired = 0 AND e.epoch < g.epoch`).Scan(&past)
		db.sql.QueryRow(`SELECT count(*) FROM groups WHERE proposal_state IS NOT NULL`).Scan(&proposals)
		if rows == 0 || rows != past || biggest > 8192/8 {
			t.Fatalf("batch %d: %d epoch_states rows (largest %d bytes) for %d held past epochs", batch, rows, biggest, past)
		}
		if proposals == 0 {
			t.Fatalf("batch %d: no group holds a proposal's state: the sample does not cover it", batch)
		}
		db.Close()
	}
}

// A v4 read model migrated in place to v5 holds what a fresh v5 build
// of the same events holds, and answers the same states.
func TestMigrateToV5InPlace(t *testing.T) {
	recs := withStateDeltas(sampleWithProposalLeft(), true, false)
	ids := sampleGroups(recs)
	dir := t.TempDir()
	v5 := &Options{SchemaVersion: 5}
	fresh := build(t, filepath.Join(dir, "v5.db"), newKey(t), v5, recs)
	defer fresh.Close()
	want, err := fresh.Digest(ctx)
	if err != nil || want.Schema != 5 {
		t.Fatalf("fresh build at schema %d, %v", want.Schema, err)
	}
	k := newKey(t)
	path := filepath.Join(dir, "v4.db")
	v4 := build(t, path, k, &Options{SchemaVersion: 4}, recs)
	states := statesOf(t, v4, ids)
	v4.Close()
	if f, to, err := MigrateInPlace(ctx, path, k, v5); err != nil || f != 4 || to != 5 {
		t.Fatalf("MigrateInPlace from v4: %d -> %d, %v", f, to, err)
	}
	db := mustOpen(t, path, k, v5)
	defer db.Close()
	got, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(want, got); d != nil {
		dd, _ := CompareDB(ctx, fresh, db)
		t.Fatalf("v4 migrated in place differs from a fresh v5 build: %v (%v)", d, dd)
	}
	sameStates(t, "migrated", states, statesOf(t, db, ids))
	var fk int
	if err := db.sql.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
		t.Fatalf("foreign keys %d after the migration, %v", fk, err)
	}
}

// Retiring a held epoch that is not the oldest (the engine never does;
// another writer may) keeps every other held epoch's state: the deltas
// are made again from the next held epoch's, the same in every batch
// size, and the result is what v4 answers.
func TestRetireMiddleEpochKeepsOtherStates(t *testing.T) {
	s := newStream("inst-a")
	buildSample(s, 1, 40) // group 0 at epoch 6, epochs 3 to 5 held
	s.group(0, events.EpochSecretsRetired{GroupID: gid(0), Epochs: []uint64{4}})
	s.commit(0, 7, nil, nil) // epoch 6 becomes past, above the gap
	s.group(0, events.EpochSecretsRetired{GroupID: gid(0), Epochs: []uint64{6, 5}})
	recs := withStateDeltas(s.recs, true, false)
	ids := [][]byte{gid(0)}
	v4 := build(t, filepath.Join(t.TempDir(), "v4.db"), newKey(t), &Options{SchemaVersion: 4}, recs)
	defer v4.Close()
	want := statesOf(t, v4, ids)
	held := 0
	for _, e := range want[string(gid(0))].epochs {
		if !e.State.IsZero() {
			held++
		}
	}
	if held != 2 { // epochs 3 and 7
		t.Fatalf("the v4 build holds %d epochs' states, want 2: the test does not cover the gap", held)
	}
	for _, db := range everyBatch(t, recs, ids, want, 1, 3, 512) {
		db.Close()
	}
}

// Random histories of one group (commits retiring random held epochs, or
// none; retirements of their own; proposals left cached) answer in v5
// the states v4 answers, whatever the batch size; v5 builds of one
// history in different batch sizes, and the v4 build migrated in place,
// are the same read model.
func TestRandomRetirementsKeepStates(t *testing.T) {
	for seed := uint64(1); seed <= 8; seed++ { // 5 and 6 found a retired base a held delta started from
		t.Run(fmt.Sprint("seed ", seed), func(t *testing.T) {
			t.Parallel()
			randomRetirements(t, seed)
		})
	}
}

func randomRetirements(t *testing.T, seed uint64) {
	{
		r := rand.New(rand.NewPCG(seed, 7))
		s := newStream("inst-a")
		s.installation()
		s.group(0, events.GroupCreated{GroupID: gid(0), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("set by withStateDeltas"))})
		held := []uint64{0}
		epoch := uint64(0)
		retire := func() []uint64 {
			var out []uint64
			for _, e := range held {
				if e < epoch && r.IntN(3) == 0 {
					out = append(out, e)
				}
			}
			r.Shuffle(len(out), func(i, j int) { out[i], out[j] = out[j], out[i] })
			held = slices.DeleteFunc(held, func(e uint64) bool { return slices.Contains(out, e) })
			return out
		}
		for i := 0; i < 40; i++ {
			switch r.IntN(4) {
			case 0, 1:
				epoch++
				held = append(held, epoch)
				rec := s.commit(0, epoch, nil, nil)
				c := rec.Event.Body.(events.CommitApplied)
				c.RetiredEpochs = retire()
				s.recs[len(s.recs)-1].Event.Body = c
			case 2:
				if out := retire(); len(out) > 0 {
					s.group(0, events.EpochSecretsRetired{GroupID: gid(0), Epochs: out})
				}
			case 3:
				s.group(0, events.ProposalStaged{GroupID: gid(0), Epoch: epoch, ProposalRef: fmt.Appendf(nil, "p-%d", i), ProposalType: 2,
					Proposal: []byte("update"), Sender: []byte("inst-a"), State: events.NewSecret([]byte("set by withStateDeltas"))})
			}
		}
		recs := withStateDeltas(s.recs, seed%2 == 0, false)
		ids := [][]byte{gid(0)}
		path, k := filepath.Join(t.TempDir(), "v4.db"), newKey(t)
		v4 := build(t, path, k, &Options{SchemaVersion: 4}, recs)
		want := statesOf(t, v4, ids)
		v4.Close()
		var fresh Digest
		for batch, db := range everyBatch(t, recs, ids, want, 1, 1+r.IntN(6), 512) {
			if batch == 1 {
				fresh, _ = db.Digest(ctx)
			}
			db.Close()
		}
		// And the v4 file migrated in place is the same read model.
		if _, _, err := MigrateInPlace(ctx, path, k, nil); err != nil {
			t.Fatal(err)
		}
		db := mustOpen(t, path, k, nil)
		defer db.Close()
		sameStates(t, "migrated", want, statesOf(t, db, ids))
		if got, err := db.Digest(ctx); err != nil || Compare(fresh, got) != nil {
			t.Fatalf("migrated in place: %v, %v", Compare(fresh, got), err)
		}
	}
}

// A stored delta that does not apply (damage the page HMACs cannot see:
// a bug, or a file edited with the key) is ErrCorrupt, naming the group
// and the epoch, from every query that rebuilds a state from it, and from
// the projection when a retirement must make the deltas again.
func TestCorruptStateDeltaNamed(t *testing.T) {
	recs := withStateDeltas(sampleWithProposalLeft(), true, false)
	db := build(t, filepath.Join(t.TempDir(), "v5.db"), newKey(t), nil, recs)
	defer db.Close()
	var epoch uint64
	if err := db.w.QueryRow(`SELECT max(epoch) FROM epoch_states WHERE group_id = ?`, gid(0)).Scan(&epoch); err != nil || epoch == 0 {
		t.Fatalf("no held past epoch of group 0 (%v)", err)
	}
	// A delta reading past its base's end, and a proposal's delta cut short.
	if _, err := db.w.Exec(`UPDATE epoch_states SET state_delta = x'01ff7f' WHERE group_id = ? AND epoch = ?`, gid(0), epoch); err != nil {
		t.Fatal(err)
	}
	if _, err := db.w.Exec(`UPDATE groups SET proposal_state = substr(proposal_state, 1, 3) WHERE group_id = ?`, gid(0)); err != nil {
		t.Fatal(err)
	}
	_, err := db.Epochs(ctx, gid(0))
	if !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("state of epoch %d", epoch)) || !strings.Contains(err.Error(), fmt.Sprintf("%x", gid(0))) {
		t.Fatalf("Epochs over a damaged delta: %v, want ErrCorrupt naming group %x and epoch %d", err, gid(0), epoch)
	}
	if _, err := db.GroupState(ctx, gid(0)); !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), "proposal") {
		t.Fatalf("GroupState over a damaged proposal state: %v, want ErrCorrupt naming the proposal's state", err)
	}
	// The epoch start, stored whole, still reads.
	if st, err := db.EpochStartState(ctx, gid(0)); err != nil || st.Len() == 0 {
		t.Fatalf("EpochStartState: %d bytes, %v", st.Len(), err)
	}
	// Retiring an epoch above an older held one rebuilds the states: the
	// projection stops at that event, naming the damage.
	var oldest uint64
	db.w.QueryRow(`SELECT min(epoch) FROM epoch_states WHERE group_id = ?`, gid(0)).Scan(&oldest)
	if oldest == epoch {
		t.Fatal("one held past epoch only: the sample no longer has a retirement above another to check")
	}
	s := newStream("inst-a")
	s.seq = recs[len(recs)-1].Seq
	s.pos = map[events.Aggregate]uint64{}
	for _, r := range recs {
		s.pos[r.Event.Aggregate] = r.Event.Position
	}
	s.group(0, events.EpochSecretsRetired{GroupID: gid(0), Epochs: []uint64{epoch}})
	err = db.Apply(ctx, s.recs)
	var ae *ApplyError
	if !errors.As(err, &ae) || !errors.Is(err, ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprintf("state of epoch %d", epoch)) {
		t.Fatalf("retirement over a damaged delta: %v, want an ApplyError wrapping ErrCorrupt naming epoch %d", err, epoch)
	}
}

// A commit whose state has the size of the one before, changed in a few
// places (a commit at 1,000 members changes one path of the tree), has
// SQLite rewrite in place only the pages of groups.state that changed:
// the v5 row keeps its size (nothing else in it grows with the commit),
// so SQLite overwrites the record instead of writing it anew and blanking
// the old one. A 180 KiB state is 45 pages; a commit here writes about 20
// pages in all (98 when each state is a byte longer than the last).
func TestStateRewrittenInPlace(t *testing.T) {
	const size = 180 << 10
	r := rand.New(rand.NewPCG(1, 2))
	st := make([]byte, size)
	for i := range st {
		st[i] = byte(r.Uint32())
	}
	s := newStream("inst-a")
	s.installation()
	s.group(0, events.GroupCreated{GroupID: gid(0), Ciphersuite: 3, Epoch: 0, State: events.NewSecret(bytes.Clone(st))})
	const commits = 24
	for e := uint64(1); e <= commits; e++ {
		for range 15 { // a dozen or so runs, as a path update changes
			at := r.IntN(size - 32)
			for j := range 32 {
				st[at+j] = byte(r.Uint32())
			}
		}
		rec := s.commit(0, e, nil, nil)
		c := rec.Event.Body.(events.CommitApplied)
		c.State = events.NewSecret(bytes.Clone(st))
		if e > 3 {
			c.RetiredEpochs = []uint64{e - 4}
		}
		s.recs[len(s.recs)-1].Event.Body = c
	}
	path := filepath.Join(t.TempDir(), "inplace.db")
	db := mustOpen(t, path, newKey(t), &Options{BatchSize: 1})
	defer db.Close()
	const frame = 24 + PageSize
	wal := func() int64 {
		fi, err := os.Stat(path + "-wal")
		if err != nil {
			return 0
		}
		return fi.Size() / frame
	}
	var grew []int64
	for i, rec := range s.recs {
		w0 := wal()
		applyAll(t, db, []Record{rec})
		if _, ok := rec.Event.Body.(events.CommitApplied); ok && i > 8 {
			if d := wal() - w0; d > 0 { // 0: the WAL started over
				grew = append(grew, d)
			}
		}
	}
	slices.Sort(grew)
	if len(grew) < commits/2 {
		t.Fatalf("the WAL grew in %d commits of %d", len(grew), commits)
	}
	if median := grew[len(grew)/2]; median > size/PageSize*2/3 {
		t.Fatalf("a commit of a same-size state wrote %d pages (median; all %v): the state is not rewritten in place", median, grew)
	}
	t.Logf("pages per commit: %v", grew)
}
