package projections

import (
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// groupOrdinals reads group i's last_ordinal (schema 12; -1 below it)
// and state_ordinal, and its messages' ordinals paged back with the
// Before cursor (pages of two), oldest first.
func groupOrdinals(t *testing.T, db *DB, i int) (last, state int64, ords []uint64) {
	t.Helper()
	last = -1
	q := `SELECT -1, state_ordinal FROM groups WHERE group_id = ?`
	if db.schema >= 12 {
		q = `SELECT last_ordinal, state_ordinal FROM groups WHERE group_id = ?`
	}
	if err := db.sql.QueryRowContext(ctx, q, gid(i)).Scan(&last, &state); err != nil {
		t.Fatal(err)
	}
	p := Page{Limit: 2}
	for {
		page, err := db.Messages(ctx, gid(i), p)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range page.Messages {
			ords = append(ords, m.Ordinal)
		}
		if page.Next == 0 {
			break
		}
		p.Before = page.Next
	}
	slices.Reverse(ords)
	return last, state, ords
}

// v12Stream is group 1 with peer-1, three received messages and one own,
// and group 2 with no message.
func v12Stream() *streamBuilder {
	s := newStream("inst-a")
	s.installation()
	s.group(1, events.GroupCreated{GroupID: gid(1), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-0")),
		Members: members(0, "inst-a")})
	s.ownCommit(1, members(1, "peer-1"), nil, &events.OwnOutput{Welcome: []byte("welcome-1")})
	for n := range 3 {
		s.received(1, n, n)
	}
	s.ownMessage(1, 3, true)
	s.group(2, events.GroupCreated{GroupID: gid(2), Ciphersuite: 3, Epoch: 0, State: events.NewSecret([]byte("s-2-0")),
		Members: members(0, "inst-a")})
	return s
}

// A v11 read model migrated in place to v12 holds what a fresh v12
// build of the same events holds (groups.last_ordinal, the highest
// ordinal, 0 for a group without messages), and both go on alike: the
// next messages follow it; retention that deletes every message of the
// group leaves it and the state's ordinal as they were, so the next
// message takes the ordinal after the highest ever handed out (not 1
// again, as below schema 12), counts as sent since the state, and the
// Before cursor pages it; and so after the file is closed and opened
// again.
func TestMigrateToV12InPlace(t *testing.T) {
	s := v12Stream()
	recs := s.recs
	dir := t.TempDir()
	k := newKey(t)
	path := filepath.Join(dir, "migrated.db")
	build(t, path, k, &Options{SchemaVersion: 11}, recs).Close()
	if f, to, err := MigrateInPlace(ctx, path, k, nil); err != nil || f != 11 || to != 12 {
		t.Fatalf("MigrateInPlace from v11: %d -> %d, %v", f, to, err)
	}
	migrated := mustOpen(t, path, k, nil)
	fresh := build(t, filepath.Join(dir, "fresh.db"), newKey(t), &Options{BatchSize: 1}, recs)
	defer fresh.Close()
	same := func(when string) { t.Helper(); sameAsFresh(t, fresh, migrated, 12, when) }
	check := func(when string, wantLast, wantState int64, want ...uint64) {
		t.Helper()
		for name, db := range map[string]*DB{"migrated": migrated, "fresh": fresh} {
			last, state, ords := groupOrdinals(t, db, 1)
			if last != wantLast || state != wantState || !slices.Equal(ords, want) {
				t.Fatalf("%s, %s: last_ordinal %d, state_ordinal %d, ordinals %v; want %d, %d, %v", when, name, last, state, ords, wantLast, wantState, want)
			}
			if last, _, ords := groupOrdinals(t, db, 2); last != 0 || len(ords) != 0 {
				t.Fatalf("%s, %s: group 2 without messages: last_ordinal %d, %d messages", when, name, last, len(ords))
			}
		}
	}
	same("migrated")
	check("migrated", 4, 0, 1, 2, 3, 4)

	apply := func() {
		t.Helper()
		applyAll(t, migrated, s.recs)
		applyAll(t, fresh, s.recs)
		s.recs = nil
	}
	s.recs = nil
	s.received(1, 4, 3)
	s.group(1, events.StateRecorded{GroupID: gid(1), Epoch: 1, State: events.NewSecret([]byte("s-1-r"))})
	apply()
	same("after a recorded state")
	check("after a recorded state", 5, 5, 1, 2, 3, 4, 5)

	cut := s.t0.Add(24 * time.Hour)
	for name, db := range map[string]*DB{"migrated": migrated, "fresh": fresh} {
		if n, err := db.DeleteMessagesBefore(ctx, cut); err != nil || n != 5 {
			t.Fatalf("%s: retention deleted %d, %v; want 5", name, n, err)
		}
	}
	same("after retention")
	check("after retention", 5, 5)

	s.t0 = cut
	s.ownMessage(1, 5, true)
	apply()
	same("after retention, a message")
	check("after retention, a message", 6, 5, 6)
	for name, db := range map[string]*DB{"migrated": migrated, "fresh": fresh} {
		if n, err := db.SentSinceState(ctx, gid(1), 1); err != nil || n != 1 {
			t.Fatalf("%s: %d sent since the state, %v; want 1 (the message after retention)", name, n, err)
		}
	}

	if err := migrated.Close(); err != nil {
		t.Fatal(err)
	}
	migrated = mustOpen(t, path, k, nil)
	defer migrated.Close()
	s.received(1, 6, 4)
	s.received(1, 7, 5)
	apply()
	same("closed and opened again")
	check("closed and opened again", 8, 5, 6, 7, 8)
}

// A file kept at schema 11 keeps the old behaviour, corrupting nothing:
// retention that deletes every message of a group lowers the state's
// ordinal to 0, and the next message takes ordinal 1 again, which still
// counts as sent since the state. Migrated in place to 12 it goes on
// after the highest ordinal it holds (the deleted ones it cannot know).
func TestRetentionBelowSchema12RestartsOrdinals(t *testing.T) {
	s := v12Stream()
	s.group(1, events.StateRecorded{GroupID: gid(1), Epoch: 1, State: events.NewSecret([]byte("s-1-r"))})
	path := filepath.Join(t.TempDir(), "v11.db")
	k := newKey(t)
	db := build(t, path, k, &Options{SchemaVersion: 11}, s.recs)
	cut := s.t0.Add(24 * time.Hour)
	if n, err := db.DeleteMessagesBefore(ctx, cut); err != nil || n != 4 {
		t.Fatalf("retention deleted %d, %v; want 4", n, err)
	}
	s.recs, s.t0 = nil, cut
	s.ownMessage(1, 4, true)
	applyAll(t, db, s.recs)
	if last, state, ords := groupOrdinals(t, db, 1); state != 0 || !slices.Equal(ords, []uint64{1}) {
		t.Fatalf("schema 11 after retention: state_ordinal %d (last %d), ordinals %v; want 0, [1]", state, last, ords)
	}
	if n, err := db.SentSinceState(ctx, gid(1), 1); err != nil || n != 1 {
		t.Fatalf("schema 11: %d sent since the state, %v; want 1", n, err)
	}
	if err := db.IntegrityCheck(ctx); err != nil {
		t.Fatal(err)
	}
	db.Close()
	if f, to, err := MigrateInPlace(ctx, path, k, nil); err != nil || f != 11 || to != 12 {
		t.Fatalf("MigrateInPlace from v11: %d -> %d, %v", f, to, err)
	}
	db = mustOpen(t, path, k, nil)
	defer db.Close()
	s.recs = nil
	s.received(1, 5, 4)
	applyAll(t, db, s.recs)
	if last, _, ords := groupOrdinals(t, db, 1); last != 2 || !slices.Equal(ords, []uint64{1, 2}) {
		t.Fatalf("migrated to 12: last_ordinal %d, ordinals %v; want 2, [1 2]", last, ords)
	}
}
