package projections

import (
	"bufio"
	"bytes"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
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

// snapshotPrefix returns the bytes of snap up to the first table's
// columns: what a forged record after them is read with.
func snapshotPrefix(t testing.TB, snap []byte) []byte {
	t.Helper()
	br := bytes.NewReader(snap)
	sr := &snapReader{r: bufio.NewReader(br)}
	if _, err := sr.readMeta(); err != nil {
		t.Fatal(err)
	}
	if tag, err := sr.r.ReadByte(); err != nil || tag != 'T' {
		t.Fatalf("first record %q, %v", tag, err)
	}
	if _, err := sr.str(); err != nil {
		t.Fatal(err)
	}
	n, err := sr.u32()
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		if _, err := sr.str(); err != nil {
			t.Fatal(err)
		}
	}
	return bytes.Clone(snap[:len(snap)-br.Len()-sr.r.Buffered()])
}

// A length field is believed only as far as the bytes it announces are
// there: a snapshot of a few hundred bytes that announces a table name or
// a value of 1 GiB is refused as truncated without allocating the GiB.
func TestSnapshotImportForgedLengths(t *testing.T) {
	recs := sampleStream(t, "inst-a", 1, 3)
	dir := t.TempDir()
	src := build(t, filepath.Join(dir, "src.db"), newKey(t), nil, recs)
	var buf bytes.Buffer
	if _, err := src.ExportSnapshot(ctx, &buf, SnapshotMeta{}); err != nil {
		t.Fatal(err)
	}
	prefix := snapshotPrefix(t, buf.Bytes())
	hdr, err := ReadSnapshotMeta(bytes.NewReader(buf.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	mj, _ := json.Marshal(hdr)
	header := binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32([]byte(snapshotMagic), SnapshotFormat), uint32(len(mj)))
	header = append(header, mj...)
	for name, forged := range map[string][]byte{
		"table name":  binary.BigEndian.AppendUint32(append(slices.Clip(header), 'T'), maxSnapshotString),
		"column name": binary.BigEndian.AppendUint32(binary.BigEndian.AppendUint32(appendLP32(append(slices.Clip(header), 'T'), "t"), 1), maxSnapshotString),
		"text value":  binary.BigEndian.AppendUint64(append(slices.Clip(prefix), 'R', 3), maxSnapshotString),
		"blob value":  binary.BigEndian.AppendUint64(append(slices.Clip(prefix), 'R', 4), maxSnapshotString),
	} {
		db := mustOpen(t, filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".db"), newKey(t), nil)
		runtime.GC()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		_, err := db.Import(ctx, bytes.NewReader(forged))
		runtime.ReadMemStats(&after)
		if !errors.Is(err, ErrSnapshot) {
			t.Errorf("%s of %d bytes in a %d-byte snapshot: %v, want ErrSnapshot", name, maxSnapshotString, len(forged), err)
		}
		if got := after.TotalAlloc - before.TotalAlloc; got > 64<<20 {
			t.Errorf("%s of %d bytes in a %d-byte snapshot: the import allocated %d MiB", name, maxSnapshotString, len(forged), got>>20)
		}
	}
}

// FuzzImportSnapshot imports real snapshots (of two read models) and
// mutations of them into a fresh read model. Import must never panic, fail
// only with ErrSnapshot (a refused import leaves the read model empty, to
// be used again), allocate no more than the snapshot's length fields are
// backed by bytes, and what imports must export to a snapshot whose
// header reads back the digest and checkpoint imported.
func FuzzImportSnapshot(f *testing.F) {
	dir := f.TempDir()
	for i, recs := range [][]Record{sampleStream(f, "inst-a", 1, 3), sampleStream(f, "inst-b", 2, 6)} {
		src := mustOpen(f, filepath.Join(dir, fmt.Sprintf("src%d.db", i)), newKey(f), nil)
		applyAll(f, src, recs)
		var buf bytes.Buffer
		if _, err := src.ExportSnapshot(ctx, &buf, SnapshotMeta{CreatedAt: time.Date(2026, 12, 7, 0, 0, 0, 0, time.UTC)}); err != nil {
			f.Fatal(err)
		}
		f.Add(buf.Bytes())
		if i == 0 {
			f.Add(binary.BigEndian.AppendUint64(append(snapshotPrefix(f, buf.Bytes()), 'R', 4), maxSnapshotString))
		}
	}
	f.Add([]byte(snapshotMagic))
	key, err := GenerateRawKey()
	if err != nil {
		f.Fatal(err)
	}
	n := 0
	var dst *DB
	fresh := func(t testing.TB) { // a read model to import into, kept while imports fail
		if dst != nil {
			dst.Close()
		}
		n++
		if dst, err = Open(filepath.Join(dir, fmt.Sprintf("dst%d.db", n)), key, nil); err != nil {
			t.Fatal(err)
		}
	}
	fresh(f)
	f.Cleanup(func() { dst.Close() })
	f.Fuzz(func(t *testing.T, snap []byte) {
		meta, err := dst.Import(ctx, bytes.NewReader(snap))
		if err != nil {
			if !errors.Is(err, ErrSnapshot) {
				t.Fatalf("import: %v, want ErrSnapshot", err)
			}
			if cp, err := dst.Checkpoint(ctx); err != nil || cp != 0 {
				t.Fatalf("a refused import left checkpoint %d (%v)", cp, err)
			}
			return
		}
		defer fresh(t)
		var out bytes.Buffer
		again, err := dst.ExportSnapshot(ctx, &out, SnapshotMeta{Head: meta.Head, CreatedAt: meta.CreatedAt})
		if err != nil {
			t.Fatalf("export of an imported snapshot: %v", err)
		}
		if again.Checkpoint != meta.Checkpoint || again.Installation != meta.Installation || !again.Digest.Equal(meta.Digest) {
			t.Fatalf("imported %+v, exported %+v", meta, again)
		}
		if m, err := ReadSnapshotMeta(bytes.NewReader(out.Bytes())); err != nil || !m.Digest.Equal(meta.Digest) {
			t.Fatalf("the export's header: %+v, %v", m, err)
		}
	})
}
