package projections

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"math/rand"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// checkModel builds a closed read model with data in every table and
// index, and returns its path, its key and its bytes.
func checkModel(t *testing.T) (string, Key, []byte) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "ro.db")
	k := newKey(t)
	db := mustOpen(t, path, k, nil)
	applyAll(t, db, sampleStream(t, "inst-a", 3, 200))
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	if len(b) < 16*PageSize {
		t.Fatalf("test database too small: %d pages", len(b)/PageSize)
	}
	return path, k, b
}

// flippedCopy writes orig with the byte at off XORed with x to a new file.
func flippedCopy(t *testing.T, orig []byte, off int64, x byte) string {
	t.Helper()
	b := slices.Clone(orig)
	b[off] ^= x
	p := filepath.Join(t.TempDir(), "ro.db")
	if err := os.WriteFile(p, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantCorruptPage asserts the error contract of a damaged file: a
// *FileError for path (operation "check file", the hint) wrapping a
// *CorruptionError that names page among the pages failing their HMAC.
func wantCorruptPage(t *testing.T, err error, path string, page uint32) *CorruptionError {
	t.Helper()
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("page %d damaged: want ErrCorrupt, got %v", page, err)
	}
	var fe *FileError
	if !errors.As(err, &fe) || fe.Path != path || fe.Op != opCheckFile || fe.Hint != checkFileHint {
		t.Fatalf("page %d damaged: want a *FileError for %s (check file, hint), got %#v", page, path, err)
	}
	// The hint names what repairs the file without losing it, a command
	// that exists (until 2026-12-06 it sent the operator to a "replayer
	// verify of the stream", which no command does).
	if !strings.Contains(fe.Hint, "replayer rebuild") || !strings.Contains(fe.Hint, ".damaged-") || strings.Contains(fe.Hint, "of the stream") {
		t.Fatalf("page %d damaged: hint %q does not say that replayer rebuild replaces the file and keeps it as <db>.damaged-<time>", page, fe.Hint)
	}
	var ce *CorruptionError
	if !errors.As(err, &ce) {
		t.Fatalf("page %d damaged: no *CorruptionError in %v", page, err)
	}
	if !slices.Contains(ce.Pages, page) {
		t.Fatalf("page %d damaged: error names pages %v: %v", page, ce.Pages, err)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("page %d fails its HMAC", page)) &&
		!strings.Contains(err.Error(), fmt.Sprint(page)) {
		t.Fatalf("page %d damaged: message does not name it: %v", page, err)
	}
	return ce
}

func TestCheckFileUndamaged(t *testing.T) {
	path, k, _ := checkModel(t)
	if err := CheckFile(ctx, path, k, nil); err != nil {
		t.Fatalf("CheckFile of an undamaged file: %v", err)
	}
	db := mustOpen(t, path, k, nil)
	if err := db.CheckFile(ctx); err != nil {
		t.Fatalf("DB.CheckFile of an undamaged file: %v", err)
	}
}

// TestCheckFileSingleByteFlips is the field test: single bytes flipped at
// random offsets past the first page, 30 of them, seeded. Every one must
// be found and its page named. It also counts what the older checks miss:
// what `replayer verify` read of the live file (open and digest) and
// IntegrityCheck (cipher_integrity_check and quick_check).
func TestCheckFileSingleByteFlips(t *testing.T) {
	_, k, orig := checkModel(t)
	const flips = 30
	rng := rand.New(rand.NewSource(20240611))
	var viaDigest, viaOld, viaNew int
	for i := 0; i < flips; i++ {
		off := PageSize + rng.Int63n(int64(len(orig)-PageSize))
		x := byte(1 + rng.Intn(255))
		page := uint32(off/PageSize) + 1
		path := flippedCopy(t, orig, off, x)

		// Before: open + digest (all verify read of the live file), and
		// IntegrityCheck.
		oldDigest, oldCheck := false, false
		if db, err := OpenExisting(path, k, nil); err != nil {
			oldDigest, oldCheck = true, true
		} else {
			_, derr := db.Digest(ctx)
			oldDigest = derr != nil
			oldCheck = db.IntegrityCheck(ctx) != nil
			db.Close()
		}
		err := CheckFile(ctx, path, k, nil)
		if oldDigest {
			viaDigest++
		}
		if oldCheck {
			viaOld++
		}
		if err != nil {
			viaNew++
		}
		t.Logf("flip %2d: page %2d offset %4d: open+digest %-5v IntegrityCheck %-5v CheckFile: %v", i, page, off%PageSize, oldDigest, oldCheck, err)
		wantCorruptPage(t, err, path, page)
	}
	t.Logf("detected of %d flips: open+digest %d (missed %d), IntegrityCheck %d (missed %d), CheckFile %d (missed %d)",
		flips, viaDigest, flips-viaDigest, viaOld, flips-viaOld, viaNew, flips-viaNew)
	if viaNew != flips {
		t.Fatalf("CheckFile detected %d of %d flips", viaNew, flips)
	}
}

// TestCheckFileIndexPages flips a byte in the root page of every index:
// the pages a digest never reads. The error names the page and the table
// the index belongs to.
func TestCheckFileIndexPages(t *testing.T) {
	path, k, orig := checkModel(t)
	db := mustOpen(t, path, k, nil)
	rows, err := db.sql.Query(`SELECT name, tbl_name, rootpage FROM sqlite_master WHERE type = 'index' ORDER BY name`)
	if err != nil {
		t.Fatal(err)
	}
	type index struct {
		name, table string
		root        int64
	}
	var idx []index
	for rows.Next() {
		var x index
		if err := rows.Scan(&x.name, &x.table, &x.root); err != nil {
			t.Fatal(err)
		}
		idx = append(idx, x)
	}
	rows.Close()
	db.Close()
	if len(idx) < 3 {
		t.Fatalf("want at least 3 indexes, got %v", idx)
	}
	for _, x := range idx {
		t.Run(x.name, func(t *testing.T) {
			p := flippedCopy(t, orig, (x.root-1)*PageSize+300, 0x40)
			err := CheckFile(ctx, p, k, nil)
			ce := wantCorruptPage(t, err, p, uint32(x.root))
			if !slices.Contains(ce.Tables, x.table) {
				t.Fatalf("damage in index %s: want table %s named, got %v: %v", x.name, x.table, ce.Tables, err)
			}
			if len(ce.Tables) != 1 {
				t.Fatalf("damage in one index: want one table named, got %v", ce.Tables)
			}
			// The integrity_check rows that only follow from the unreadable
			// page are counted, not listed.
			for _, s := range ce.Problems {
				if strings.Contains(s, "error code=1") || strings.Contains(s, "never used") {
					t.Fatalf("consequential row listed: %q in %v", s, err)
				}
			}
		})
	}
}

// TestCheckFileLiveHandle damages the file under an open DB whose
// connections have read every page: the check must see the disk, not the
// page cache.
func TestCheckFileLiveHandle(t *testing.T) {
	path, k, _ := checkModel(t)
	db := mustOpen(t, path, k, nil)
	if _, err := db.Digest(ctx); err != nil {
		t.Fatal(err)
	}
	if err := db.CheckFile(ctx); err != nil {
		t.Fatalf("before damage: %v", err)
	}
	var root int64
	if err := db.sql.QueryRow(`SELECT rootpage FROM sqlite_master WHERE name = 'groups_by_activity'`).Scan(&root); err != nil {
		t.Fatal(err)
	}
	flip(t, path, (root-1)*PageSize+500)
	err := db.CheckFile(ctx)
	ce := wantCorruptPage(t, err, path, uint32(root))
	if !slices.Contains(ce.Tables, "groups") {
		t.Fatalf("want table groups named, got %v", ce.Tables)
	}
}

// TestCheckFileIndexInconsistent: an index that disagrees with its table,
// in pages that all authenticate, is found by the full integrity_check
// (quick_check, IntegrityCheck's, does not compare index contents), and
// the finding names the index.
func TestCheckFileIndexInconsistent(t *testing.T) {
	path, k, _ := checkModel(t)
	db := mustOpen(t, path, k, nil)
	conn, err := db.sql.Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Make the schema claim groups_by_activity indexes another column: its
	// b-tree, untouched, no longer matches the rows.
	for _, q := range []string{
		`PRAGMA writable_schema = ON`,
		`UPDATE sqlite_master SET sql = 'CREATE INDEX groups_by_activity ON groups(created_at DESC, group_id)' WHERE name = 'groups_by_activity'`,
		`PRAGMA writable_schema = OFF`,
	} {
		if _, err := conn.ExecContext(ctx, q); err != nil {
			t.Fatalf("%s: %v", q, err)
		}
	}
	conn.Close()
	db.Close()

	db = mustOpen(t, path, k, &Options{NoMigrate: true})
	t.Logf("IntegrityCheck (quick_check): %v", db.IntegrityCheck(ctx))
	err = db.CheckFile(ctx)
	if !errors.Is(err, ErrCorrupt) {
		t.Fatalf("want ErrCorrupt, got %v", err)
	}
	var ce *CorruptionError
	if !errors.As(err, &ce) || ce.PagesTotal != 0 || ce.ProblemsTotal == 0 {
		t.Fatalf("want integrity_check findings and no HMAC failures, got %#v", ce)
	}
	if !strings.Contains(err.Error(), "groups_by_activity") || !slices.Contains(ce.Tables, "groups") {
		t.Fatalf("the error does not name the index and its table: %v (tables %v)", err, ce.Tables)
	}
	if len(ce.Problems) > maxReported {
		t.Fatalf("%d problems listed, at most %d", len(ce.Problems), maxReported)
	}
	t.Logf("CheckFile: %v", err)
}

// TestCheckFileFirstPage: damage in page 1 keeps the file from opening:
// CheckFile fails, with ErrCorrupt (naming page 1) or, when the salt
// itself is hit, ErrWrongKey (a damaged salt looks like a wrong key).
func TestCheckFileFirstPage(t *testing.T) {
	_, k, orig := checkModel(t)
	for _, off := range []int64{3, 100, 1000, 2500, PageSize - 70, PageSize - 1} {
		p := flippedCopy(t, orig, off, 0x01)
		err := CheckFile(ctx, p, k, nil)
		switch {
		case errors.Is(err, ErrCorrupt):
			wantCorruptPage(t, err, p, 1)
		case errors.Is(err, ErrWrongKey):
			if off >= 16 {
				t.Fatalf("offset %d (past the salt): ErrWrongKey: %v", off, err)
			}
		default:
			t.Fatalf("offset %d in page 1: want ErrCorrupt or ErrWrongKey, got %v", off, err)
		}
		t.Logf("offset %4d: %v", off, err)
	}
}

func TestCheckFileOtherFailures(t *testing.T) {
	path, k, _ := checkModel(t)
	t.Run("missing file", func(t *testing.T) {
		err := CheckFile(ctx, filepath.Join(t.TempDir(), "none.db"), k, nil)
		if !errors.Is(err, fs.ErrNotExist) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("want fs.ErrNotExist, got %v", err)
		}
	})
	t.Run("wrong key", func(t *testing.T) {
		err := CheckFile(ctx, path, newKey(t), nil)
		if !errors.Is(err, ErrWrongKey) || errors.Is(err, ErrCorrupt) {
			t.Fatalf("want ErrWrongKey, got %v", err)
		}
	})
	t.Run("cancelled", func(t *testing.T) {
		db := mustOpen(t, path, k, nil)
		c, cancel := context.WithCancel(ctx)
		cancel()
		err := db.CheckFile(c)
		if err == nil || errors.Is(err, ErrCorrupt) || !errors.Is(err, context.Canceled) {
			t.Fatalf("want context.Canceled and not ErrCorrupt, got %v", err)
		}
	})
}

func TestCorruptionErrorMessage(t *testing.T) {
	var many []uint32
	for p := uint32(50); p > 0; p-- {
		many = append(many, p)
	}
	for _, tc := range []struct {
		e    CorruptionError
		want string
	}{
		{CorruptionError{Pages: []uint32{7}, PagesTotal: 1, Tables: []string{"messages"}},
			"projections: database is corrupt: page 7 fails its HMAC; in table messages or its indexes"},
		{CorruptionError{Pages: []uint32{7, 12}, PagesTotal: 2, Consequential: 3},
			"projections: database is corrupt: pages 7, 12 fail their HMAC; 3 more rows follow from unreadable pages"},
		{CorruptionError{Problems: []string{"row 3 missing from index idx_x"}, ProblemsTotal: 1, Tables: []string{"a", "b"}},
			"projections: database is corrupt: row 3 missing from index idx_x; in tables a, b or their indexes"},
		{CorruptionError{Pages: []uint32{9}, PagesTotal: 1, Problems: []string{"Page 9: btreeInitPage() returns error code 11"}, ProblemsTotal: 1, Consequential: 1},
			"projections: database is corrupt: page 9 fails its HMAC; Page 9: btreeInitPage() returns error code 11; 1 more row follows from unreadable pages"},
	} {
		if got := tc.e.Error(); got != tc.want {
			t.Errorf("got  %q\nwant %q", got, tc.want)
		}
	}
	var ce CorruptionError
	ce.addPages(many)
	if len(ce.Pages) != maxReported || ce.PagesTotal != 50 || ce.Pages[0] != 1 || !strings.Contains(ce.Error(), "(and 30 more)") {
		t.Fatalf("capped pages: %v total %d: %v", ce.Pages, ce.PagesTotal, ce.Error())
	}
	if err := error(&ce); !errors.Is(err, ErrCorrupt) {
		t.Fatal("CorruptionError does not wrap ErrCorrupt")
	}
}
