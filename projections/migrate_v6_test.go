package projections

import (
	"path/filepath"
	"strings"
	"testing"
)

// A v5 read model migrated in place to v6 holds what a fresh v6 build of
// the same events holds (v6 adds an index only), and at v6 the queries
// every commit asks of a group's held epochs read the index of held
// epochs, not every epoch the group ever had.
func TestMigrateToV6InPlace(t *testing.T) {
	recs := sampleStream(t, "inst-a", 3, 40)
	dir := t.TempDir()
	fresh := build(t, filepath.Join(dir, "v6.db"), newKey(t), nil, recs)
	defer fresh.Close()
	want, err := fresh.Digest(ctx)
	if err != nil || want.Schema != 6 {
		t.Fatalf("fresh build at schema %d, %v", want.Schema, err)
	}
	k := newKey(t)
	path := filepath.Join(dir, "v5.db")
	v5 := build(t, path, k, &Options{SchemaVersion: 5}, recs)
	v5.Close()
	if f, to, err := MigrateInPlace(ctx, path, k, nil); err != nil || f != 5 || to != 6 {
		t.Fatalf("MigrateInPlace from v5: %d -> %d, %v", f, to, err)
	}
	db := mustOpen(t, path, k, nil)
	defer db.Close()
	got, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if d := Compare(want, got); d != nil {
		t.Fatalf("v5 migrated in place differs from a fresh v6 build: %v", d)
	}
	for _, q := range []string{
		`SELECT min(epoch) FROM epochs WHERE group_id = x'00' AND retired = 0`,
		`SELECT epoch FROM epochs WHERE group_id = x'00' AND retired = 0 ORDER BY epoch`,
		`SELECT epoch FROM epochs WHERE group_id = x'00' AND epoch < 9 AND retired = 0`,
	} {
		for name, d := range map[string]*DB{"fresh": fresh, "migrated": db} {
			if plan := queryPlan(t, d, q); !strings.Contains(plan, "epochs_held") {
				t.Errorf("%s: %s\n  plan: %s, want the index of held epochs", name, q, plan)
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
