package projections

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// TestSnapshotRoundTrip exports a read model part-way through its stream,
// imports it into a fresh one, applies the rest there and in the
// original: both end with the same content as a read model built from
// the whole stream at once.
func TestSnapshotRoundTrip(t *testing.T) {
	recs := sampleStreamV3(t, "inst-a")
	half := len(recs) / 2
	dir := t.TempDir()
	src := build(t, filepath.Join(dir, "src.db"), newKey(t), nil, recs[:half])
	var buf bytes.Buffer
	created := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	meta, err := src.ExportSnapshot(ctx, &buf, SnapshotMeta{CreatedAt: created})
	if err != nil {
		t.Fatal(err)
	}
	if meta.Installation != "inst-a" || meta.Checkpoint != recs[half-1].Seq || meta.Schema != LatestSchema || !meta.CreatedAt.Equal(created) || meta.Rows == 0 {
		t.Fatalf("meta %+v", meta)
	}
	// Deterministic: the same content exports to the same bytes.
	var again bytes.Buffer
	if _, err := src.ExportSnapshot(ctx, &again, SnapshotMeta{CreatedAt: created}); err != nil || !bytes.Equal(buf.Bytes(), again.Bytes()) {
		t.Fatalf("second export differs (err %v)", err)
	}
	if m, err := ReadSnapshotMeta(bytes.NewReader(buf.Bytes())); err != nil || m.Checkpoint != meta.Checkpoint || !m.Digest.Equal(meta.Digest) {
		t.Fatalf("ReadSnapshotMeta: %+v, %v", m, err)
	}

	dst := mustOpen(t, filepath.Join(dir, "dst.db"), newKey(t), nil)
	got, err := dst.Import(ctx, bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	if got.Checkpoint != meta.Checkpoint {
		t.Fatalf("imported checkpoint %d", got.Checkpoint)
	}
	if cp, _ := dst.Checkpoint(ctx); cp != meta.Checkpoint {
		t.Fatalf("checkpoint after import %d, want %d", cp, meta.Checkpoint)
	}
	if d, err := CompareDB(ctx, src, dst); err != nil || d != nil {
		t.Fatalf("imported vs exported: %v %v", d, err)
	}
	// Importing twice is refused: the read model is no longer empty.
	if _, err := dst.Import(ctx, bytes.NewReader(buf.Bytes())); !errors.Is(err, ErrSnapshot) {
		t.Fatalf("second import: %v", err)
	}
	applyAll(t, dst, recs[half:])
	full := build(t, filepath.Join(dir, "full.db"), newKey(t), nil, recs)
	if d, err := CompareDB(ctx, full, dst); err != nil || d != nil {
		t.Fatalf("snapshot + tail vs full: %v %v", d, err)
	}
}

func TestSnapshotImportRefusals(t *testing.T) {
	recs := sampleStream(t, "inst-a", 2, 20)
	dir := t.TempDir()
	src := build(t, filepath.Join(dir, "src.db"), newKey(t), nil, recs)
	var buf bytes.Buffer
	if _, err := src.ExportSnapshot(ctx, &buf, SnapshotMeta{}); err != nil {
		t.Fatal(err)
	}
	fresh := func(name string, schema int) *DB {
		return mustOpen(t, filepath.Join(dir, name), newKey(t), &Options{SchemaVersion: schema})
	}
	t.Run("older schema", func(t *testing.T) {
		db := fresh("v2.db", 2)
		if _, err := db.Import(ctx, bytes.NewReader(buf.Bytes())); !errors.Is(err, ErrSnapshotSchema) || !errors.Is(err, ErrSnapshot) {
			t.Fatalf("import into schema 2: %v", err)
		}
	})
	t.Run("damaged", func(t *testing.T) {
		b := buf.Bytes()
		for i, at := range []int{0, len(b) / 3, len(b) / 2, len(b) - 40, len(b) - 1} {
			bad := bytes.Clone(b)
			bad[at] ^= 0x40
			db := fresh(filepath.Base(t.Name())+string(rune('a'+i))+".db", 0)
			if _, err := db.Import(ctx, bytes.NewReader(bad)); !errors.Is(err, ErrSnapshot) {
				t.Fatalf("flip at %d: %v, want ErrSnapshot", at, err)
			}
			if cp, _ := db.Checkpoint(ctx); cp != 0 {
				t.Fatalf("flip at %d: a failed import left checkpoint %d", at, cp)
			}
		}
		db := fresh("short.db", 0)
		if _, err := db.Import(ctx, bytes.NewReader(b[:len(b)/3])); !errors.Is(err, ErrSnapshot) {
			t.Fatalf("truncated: %v", err)
		}
	})
	t.Run("empty read model", func(t *testing.T) {
		db := fresh("empty.db", 0)
		if _, err := db.ExportSnapshot(ctx, &bytes.Buffer{}, SnapshotMeta{}); err == nil {
			t.Fatal("exported an empty read model")
		}
	})
}
