package projections

import (
	"path/filepath"
	"strings"
	"testing"
)

// A v3 read model migrated in place to v4 holds what a fresh v4 build of
// the same events holds (the digest, schema aside, of a v3 build too),
// and its tables that carry states and commits are rowid tables with the
// large columns last.
func TestMigrateToV4InPlace(t *testing.T) {
	s := newStream("inst-a")
	s.mlsSizes = true
	buildSample(s, 3, 30)
	removedFromGroup(s, 960)
	v3Extras(s, 950)
	recs := s.recs
	dir := t.TempDir()
	k := newKey(t)
	v4 := &Options{SchemaVersion: 4}
	fresh := build(t, filepath.Join(dir, "v4.db"), newKey(t), v4, recs)
	defer fresh.Close()
	want, err := fresh.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want.Schema != 4 {
		t.Fatalf("fresh build at schema %d", want.Schema)
	}
	path := filepath.Join(dir, "v3.db")
	v3 := build(t, path, k, &Options{SchemaVersion: 3}, recs)
	old, err := v3.Digest(ctx)
	v3.Close()
	if err != nil {
		t.Fatal(err)
	}
	old.Schema = want.Schema
	if d := Compare(want, old); d != nil {
		t.Fatalf("a v3 build differs from a v4 build beyond the schema version: %v", d)
	}
	if f, to, err := MigrateInPlace(ctx, path, k, v4); err != nil || f != 3 || to != 4 {
		t.Fatalf("MigrateInPlace from v3: %d -> %d, %v", f, to, err)
	}
	for name, db := range map[string]*DB{"migrated": mustOpen(t, path, k, &Options{SchemaVersion: 4, NoMigrate: true}), "fresh": fresh} {
		if name == "migrated" {
			defer db.Close()
			got, err := db.Digest(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if d := Compare(want, got); d != nil {
				dd, _ := CompareDB(ctx, fresh, db)
				t.Fatalf("v3 migrated in place differs from a fresh v4 build: %v (%v)", d, dd)
			}
			if err := db.IntegrityCheck(ctx); err != nil {
				t.Fatal(err)
			}
		}
		checkRowidLargeLast(t, name, db, map[string]string{"groups": "state", "epochs": "state", "past_epochs": "commit_message"})
		var idx int
		db.sql.QueryRow(`SELECT count(*) FROM sqlite_master WHERE type = 'index' AND name = 'groups_by_activity'`).Scan(&idx)
		if idx != 1 {
			t.Fatalf("%s: groups_by_activity index missing", name)
		}
		var fk int
		if err := db.sql.QueryRow(`PRAGMA foreign_keys`).Scan(&fk); err != nil || fk != 1 {
			t.Fatalf("%s: foreign keys %d, %v", name, fk, err)
		}
	}
}

// checkRowidLargeLast checks that each table of lastColumn is a rowid
// table whose last column is the one named.
func checkRowidLargeLast(t *testing.T, name string, db *DB, lastColumn map[string]string) {
	t.Helper()
	for table, last := range lastColumn {
		var ddl string
		if err := db.sql.QueryRow(`SELECT sql FROM sqlite_master WHERE type = 'table' AND name = ?`, table).Scan(&ddl); err != nil {
			t.Fatalf("%s: %s: %v", name, table, err)
		}
		if strings.Contains(strings.ToUpper(ddl), "WITHOUT ROWID") {
			t.Errorf("%s: %s is still WITHOUT ROWID", name, table)
		}
		var col string
		if err := db.sql.QueryRow(`SELECT name FROM pragma_table_info(?) ORDER BY cid DESC LIMIT 1`, table).Scan(&col); err != nil || col != last {
			t.Errorf("%s: %s's last column is %q (%v), want %q", name, table, col, err, last)
		}
	}
}
