package projections

import (
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// A v5 read model migrated in place to v6 holds what a fresh v6 build of
// the same events holds (v6 adds indexes only), and at v6 the queries
// every commit asks of a group's held epochs, and a group's load of its
// newest own commit, read v6's indexes, not every epoch the group had.
func TestMigrateToV6InPlace(t *testing.T) {
	recs := sampleStream(t, "inst-a", 3, 40)
	dir := t.TempDir()
	v6 := &Options{SchemaVersion: 6}
	fresh := build(t, filepath.Join(dir, "v6.db"), newKey(t), v6, recs)
	defer fresh.Close()
	want, err := fresh.Digest(ctx)
	if err != nil || want.Schema != 6 {
		t.Fatalf("fresh build at schema %d, %v", want.Schema, err)
	}
	k := newKey(t)
	path := filepath.Join(dir, "v5.db")
	v5 := build(t, path, k, &Options{SchemaVersion: 5}, recs)
	v5.Close()
	if f, to, err := MigrateInPlace(ctx, path, k, v6); err != nil || f != 5 || to != 6 {
		t.Fatalf("MigrateInPlace from v5: %d -> %d, %v", f, to, err)
	}
	db := mustOpen(t, path, k, v6)
	defer db.Close()
	got, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(want, got); d != nil {
		t.Fatalf("v5 migrated in place differs from a fresh v6 build: %v", d)
	}
	for q, index := range map[string]string{
		`SELECT min(epoch) FROM epochs WHERE group_id = x'00' AND retired = 0`:                                                                                                "epochs_held",
		`SELECT epoch FROM epochs WHERE group_id = x'00' AND retired = 0 ORDER BY epoch`:                                                                                      "epochs_held",
		`SELECT epoch FROM epochs WHERE group_id = x'00' AND epoch < 9 AND retired = 0`:                                                                                       "epochs_held",
		`SELECT epoch, commit_message, created_at FROM epochs WHERE group_id = x'00' AND own_commit = 1 AND commit_message IS NOT NULL ORDER BY epoch DESC LIMIT 1`:           "epochs_own",
		`SELECT epoch, commit_message, created_at FROM epochs WHERE group_id = x'00' AND own_commit IS NULL AND commit_message IS NOT NULL AND epoch > 3 ORDER BY epoch DESC`: "epochs_committer_unknown",
	} {
		for name, d := range map[string]*DB{"fresh": fresh, "migrated": db} {
			if plan := queryPlan(t, d, q); !strings.Contains(plan, index) {
				t.Errorf("%s: %s\n  plan: %s, want %s", name, q, plan, index)
			}
		}
	}
}

// queryPlan is SQLite's EXPLAIN QUERY PLAN of q, its details joined.
func queryPlan(t *testing.T, db *DB, q string) string {
	t.Helper()
	rows, err := db.sql.QueryContext(ctx, "EXPLAIN QUERY PLAN "+q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var parts []string
	for rows.Next() {
		var id, parent, notused int
		var detail string
		if err := rows.Scan(&id, &parent, &notused, &detail); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, detail)
	}
	return strings.Join(parts, "; ")
}

// At v6 NewestOwnCommit reads the index of own commits and the epochs
// recorded without their committer after the newest one, and answers
// what the scan of every epoch (v5) answers, whatever the commits
// recorded without a committer turn out to be.
func TestNewestOwnCommitIndexedAnswersAsTheScan(t *testing.T) {
	s := newStream("inst-own")
	s.installation()
	s.keyPackage(1, false)
	s.group(1, events.WelcomeProcessed{GroupID: gid(1), Epoch: 2, KeyPackageRef: kref(1), Welcome: []byte("w"),
		EpochAuthenticator: []byte("a-2"), State: events.NewSecret([]byte("s-2")),
		Members: []events.Member{{Leaf: 0, Identity: []byte("peer")}, {Leaf: 1, Identity: []byte("inst-own")}}})
	committers := []string{"own", "peer", "unknown", "peer", "own", "unknown", "peer", "unknown"}
	for i, who := range committers {
		e := uint64(3 + i)
		var c *events.Committer
		switch who {
		case "own":
			c = &events.Committer{Leaf: 1, Identity: []byte("inst-own"), Own: true}
		case "peer":
			c = &events.Committer{Leaf: 0, Identity: []byte("peer")}
		}
		s.group(1, events.CommitApplied{GroupID: gid(1), Epoch: e, EpochAuthenticator: fmt.Appendf(nil, "a-%d", e),
			ConfirmedTranscriptHash: fmt.Appendf(nil, "c-%d", e), Commit: fmt.Appendf(nil, "commit-%d", e),
			State: events.NewSecret([]byte(fmt.Sprintf("s-%d", e))), Committer: c})
	}
	dir := t.TempDir()
	v5 := build(t, filepath.Join(dir, "v5.db"), newKey(t), &Options{SchemaVersion: 5}, s.recs)
	defer v5.Close()
	v6 := build(t, filepath.Join(dir, "v6.db"), newKey(t), nil, s.recs)
	defer v6.Close()
	for name, legacyOwn := range map[string]func([]byte) bool{
		"none":          func([]byte) bool { return false },
		"all":           func([]byte) bool { return true },
		"5 only":        func(c []byte) bool { return string(c) == "commit-5" },
		"8 only":        func(c []byte) bool { return string(c) == "commit-8" },
		"10 only":       func(c []byte) bool { return string(c) == "commit-10" },
		"5 and 10 only": func(c []byte) bool { return string(c) == "commit-5" || string(c) == "commit-10" },
	} {
		want, wantFound, err := v5.NewestOwnCommit(ctx, gid(1), legacyOwn)
		if err != nil {
			t.Fatal(err)
		}
		got, gotFound, err := v6.NewestOwnCommit(ctx, gid(1), legacyOwn)
		if err != nil {
			t.Fatal(err)
		}
		if gotFound != wantFound || got.Epoch != want.Epoch || string(got.Commit) != string(want.Commit) || !got.CreatedAt.Equal(want.CreatedAt) {
			t.Fatalf("%s: v6 answers epoch %d (%v), v5 epoch %d (%v)", name, got.Epoch, gotFound, want.Epoch, wantFound)
		}
		if name == "none" && want.Epoch != 7 || name == "10 only" && want.Epoch != 10 {
			t.Fatalf("%s: epoch %d", name, want.Epoch)
		}
	}
}
