package projections

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// The benchmarks compare each operation with its raw SQLCipher building
// block in the same run (see docs/read-model.md and docs/benchmarks.md):
//
//	BenchmarkApply vs BenchmarkRawInsert: replaying a stream into a fresh
//	read model vs inserting the rows that replay produces with batched,
//	prepared INSERTs (same connection settings, same batch size).
//	BenchmarkRekeyReplay vs BenchmarkRekeyExport: rebuilding under a new
//	key by replay vs SQLCipher's sqlcipher_export() into a new key.

// envBenchBatch sets the events per transaction of the read-model
// benchmarks, both sides (default DefaultBatchSize, what a rebuild uses):
// docs/benchmarks.md compares 512, 1,024, 2,048 and 4,096.
const envBenchBatch = "EPOCHLOG_BENCH_BATCH"

// benchBatch is the events per transaction of both sides of a benchmark.
func benchBatch(b testing.TB) int {
	v := os.Getenv(envBenchBatch)
	if v == "" {
		return DefaultBatchSize
	}
	n, err := strconv.Atoi(v)
	if err != nil || n < 1 {
		b.Fatalf("$%s=%q: want a number of events, at least 1", envBenchBatch, v)
	}
	return n
}

// walPages is how many pages path's WAL holds (0 when there is none):
// after a run that no checkpoint restarted, the pages its commits wrote.
func walPages(b testing.TB, path string) int64 {
	st, err := os.Stat(path + "-wal")
	if err != nil {
		return 0
	}
	return (st.Size() - 32) / (24 + PageSize) // a 32-byte header, then a frame header and a page each
}

// benchStream is the workload: 5189 events of one installation, 4001 of
// them messages, over 8 groups. rows=tiny carries placeholder payloads a
// few bytes long, so the projector's per-event work weighs most;
// rows=mls carries payloads of the sizes real MLS produces (8 KiB group
// states, 900 B commits, 120 B messages; see mlsSized).
func benchStream(b *testing.B, rows string) []Record {
	if rows == "mls" {
		return mlsSizedStream(b, "inst-bench", 8, 500)
	}
	return sampleStream(b, "inst-bench", 8, 500)
}

// withMemorySecurity runs f as sub-benchmarks, with SQLCipher's
// process-wide cipher_memory_security on (this build's default) and off
// (SQLCipher's default since 4.5; it dominates write costs with an
// mlock/munlock pair per allocation), for both workloads of benchStream.
func withMemorySecurity(b *testing.B, f func(b *testing.B, rows string)) {
	onAndOff(b, func(b *testing.B) {
		for _, rows := range []string{"tiny", "mls"} {
			b.Run("rows="+rows, func(b *testing.B) { f(b, rows) })
		}
	})
}

// onAndOff runs f as sub-benchmarks memsec=true and memsec=false, with
// cipher_memory_security set so.
func onAndOff(b *testing.B, f func(b *testing.B)) {
	for _, on := range []bool{true, false} {
		b.Run(fmt.Sprintf("memsec=%v", on), func(b *testing.B) {
			if err := SetMemorySecurity(on); err != nil {
				b.Fatal(err)
			}
			defer SetMemorySecurity(true)
			f(b)
		})
	}
}

func BenchmarkApply(b *testing.B) { withMemorySecurity(b, benchApply) }

func BenchmarkRawInsert(b *testing.B) { withMemorySecurity(b, benchRawInsert) }

func benchApply(b *testing.B, rows string) {
	recs := benchStream(b, rows)
	batch := benchBatch(b)
	dir := b.TempDir()
	var pages int64
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		path := filepath.Join(dir, fmt.Sprintf("apply-%d.db", i))
		db, err := Open(path, mustKey(b), &Options{BatchSize: batch})
		if err != nil {
			b.Fatal(err)
		}
		pages = walPages(b, path)
		b.StartTimer()
		ctx, cancel := context.WithCancel(context.Background())
		err = db.Apply(ctx, recs)
		cancel()
		if err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		pages = walPages(b, path) - pages
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(len(recs))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
	b.ReportMetric(float64(pages), "wal-pages")
}

type tableRows struct {
	insert string
	rows   [][]any
}

// producedRows applies the stream once and reads back every row of every
// table: the raw benchmark writes exactly these.
func producedRows(b *testing.B, recs []Record) ([]tableRows, int) {
	db, err := Open(filepath.Join(b.TempDir(), "src.db"), mustKey(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer db.Close()
	if err := db.Apply(context.Background(), recs); err != nil {
		b.Fatal(err)
	}
	ts, err := db.tables(context.Background(), db.sql)
	if err != nil {
		b.Fatal(err)
	}
	var out []tableRows
	total := 0
	for _, t := range ts {
		if t.name == "epochlog_meta" || t.name == "checkpoint" {
			continue // created with the schema
		}
		var qs []string
		var cols []string
		for _, c := range t.cols {
			cols = append(cols, quoteIdent(c))
			qs = append(qs, "?")
		}
		tr := tableRows{insert: "INSERT INTO " + quoteIdent(t.name) + "(" + strings.Join(cols, ",") + ") VALUES (" + strings.Join(qs, ",") + ")"}
		rows, err := db.sql.Query("SELECT " + strings.Join(cols, ",") + " FROM " + quoteIdent(t.name))
		if err != nil {
			b.Fatal(err)
		}
		for rows.Next() {
			vals := make([]any, len(cols))
			ptrs := make([]any, len(cols))
			for i := range vals {
				ptrs[i] = &vals[i]
			}
			if err := rows.Scan(ptrs...); err != nil {
				b.Fatal(err)
			}
			tr.rows = append(tr.rows, vals)
		}
		rows.Close()
		total += len(tr.rows)
		if t.name == "groups" || t.name == "delivery_queues" {
			// Parents first, so every batch satisfies the foreign keys.
			out = append([]tableRows{tr}, out...)
		} else {
			out = append(out, tr)
		}
	}
	return out, total
}

func benchRawInsert(b *testing.B, rows string) {
	recs := benchStream(b, rows)
	tables, total := producedRows(b, recs)
	batch := benchBatch(b)
	dir := b.TempDir()
	var pages int64
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		path := filepath.Join(dir, fmt.Sprintf("raw-%d.db", i))
		db, err := Open(path, mustKey(b), nil)
		if err != nil {
			b.Fatal(err)
		}
		pages = walPages(b, path)
		b.StartTimer()
		n := 0
		tx, err := db.w.Begin()
		if err != nil {
			b.Fatal(err)
		}
		for _, t := range tables {
			st, err := tx.Prepare(t.insert)
			if err != nil {
				b.Fatal(err)
			}
			for _, r := range t.rows {
				if _, err := st.Exec(r...); err != nil {
					b.Fatal(err)
				}
				n++
				if n%batch == 0 {
					st.Close()
					if _, err := tx.Exec(`UPDATE checkpoint SET seq = ? WHERE id = 1`, n); err != nil {
						b.Fatal(err)
					}
					if err := tx.Commit(); err != nil {
						b.Fatal(err)
					}
					if tx, err = db.w.Begin(); err != nil {
						b.Fatal(err)
					}
					if st, err = tx.Prepare(t.insert); err != nil {
						b.Fatal(err)
					}
				}
			}
			st.Close()
		}
		if _, err := tx.Exec(`UPDATE checkpoint SET seq = ? WHERE id = 1`, n); err != nil {
			b.Fatal(err)
		}
		if err := tx.Commit(); err != nil {
			b.Fatal(err)
		}
		b.StopTimer()
		pages = walPages(b, path) - pages
		db.Close()
		b.StartTimer()
	}
	b.ReportMetric(float64(total)*float64(b.N)/b.Elapsed().Seconds(), "rows/s")
	b.ReportMetric(float64(pages), "wal-pages")
	b.ReportMetric(float64(len(recs))*float64(b.N)/b.Elapsed().Seconds(), "events/s")
}

// BenchmarkRekeyReplay rebuilds the read model under a new key by replay
// (open aside, apply, close), the operation rekey performs.
func BenchmarkRekeyReplay(b *testing.B) { withMemorySecurity(b, benchRekeyReplay) }

func benchRekeyReplay(b *testing.B, rows string) {
	recs := benchStream(b, rows)
	dir := b.TempDir()
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		db, err := Open(filepath.Join(dir, fmt.Sprintf("rekey-%d.db", i)), mustKey(b), &Options{BatchSize: benchBatch(b)})
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Apply(context.Background(), recs); err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRekeyExport is the yardstick: sqlcipher_export() of the same
// read model into a new file under a new key.
func BenchmarkRekeyExport(b *testing.B) { withMemorySecurity(b, benchRekeyExport) }

func benchRekeyExport(b *testing.B, rows string) {
	recs := benchStream(b, rows)
	dir := b.TempDir()
	src, err := Open(filepath.Join(dir, "src.db"), mustKey(b), nil)
	if err != nil {
		b.Fatal(err)
	}
	defer src.Close()
	if err := src.Apply(context.Background(), recs); err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; b.Loop(); i++ {
		if err := src.ExportTo(context.Background(), filepath.Join(dir, fmt.Sprintf("export-%d.db", i)), mustKey(b), nil); err != nil {
			b.Fatal(err)
		}
	}
}

func mustKey(b testing.TB) Key {
	k, err := GenerateRawKey()
	if err != nil {
		b.Fatal(err)
	}
	return k
}

// BenchmarkCreate creates a new read model (Open of a missing file, then
// Close): its schema in one pass (schemaLatest, what Open does) against
// schemaV1 and every migration (how it was made until 2026-12-05), in the
// same run. A rebuild, a rekey and a new installation each create one.
func BenchmarkCreate(b *testing.B) {
	onAndOff(b, func(b *testing.B) {
		for _, by := range []string{"latest", "migrations"} {
			b.Run("by="+by, func(b *testing.B) {
				dir := b.TempDir()
				key := mustKey(b)
				for i := 0; b.Loop(); i++ {
					db, err := Open(filepath.Join(dir, fmt.Sprintf("new-%d.db", i)), key, &Options{createByMigrations: by == "migrations"})
					if err != nil {
						b.Fatal(err)
					}
					if err := db.Close(); err != nil {
						b.Fatal(err)
					}
				}
			})
		}
	})
}

// BenchmarkOpenExisting opens a built read model (the rebuild benchmark's
// stream, MLS-sized rows), asks one query (the checkpoint) and closes it:
// what a pool pays for every cold installation it serves.
func BenchmarkOpenExisting(b *testing.B) {
	onAndOff(b, func(b *testing.B) {
		path := filepath.Join(b.TempDir(), "built.db")
		key := mustKey(b)
		db, err := Open(path, key, nil)
		if err != nil {
			b.Fatal(err)
		}
		if err := db.Apply(context.Background(), benchStream(b, "mls")); err != nil {
			b.Fatal(err)
		}
		if err := db.Close(); err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			db, err := OpenExisting(path, key, nil)
			if err != nil {
				b.Fatal(err)
			}
			if _, err := db.Checkpoint(context.Background()); err != nil {
				b.Fatal(err)
			}
			if err := db.Close(); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkMigrateToV7 migrates in place a v6 read model holding
// $EPOCHLOG_BENCH_MIGRATE_MESSAGES (default 300) application messages of
// 64 KiB to v7, which copies its messages (and deliveries, proposals, key
// packages) into rowid tables: the wait of an engine's first open of such
// a file after an upgrade. Each iteration migrates a fresh copy of the
// same v6 file (MigrateInPlace: the step, then IntegrityCheck); the copy
// is not timed. It reports the file's size (MB).
func BenchmarkMigrateToV7(b *testing.B) {
	n := 300
	if s := os.Getenv("EPOCHLOG_BENCH_MIGRATE_MESSAGES"); s != "" {
		v, err := strconv.Atoi(s)
		if err != nil || v < 1 {
			b.Fatalf("$EPOCHLOG_BENCH_MIGRATE_MESSAGES=%q: want a positive number", s)
		}
		n = v
	}
	s := newStream("inst-a")
	buildSample(s, 3, 10)
	content := make([]byte, 64<<10)
	for i := range n {
		content[0], content[1] = byte(i), byte(i>>8)
		s.group(1, events.ApplicationMessageReceived{GroupID: gid(1), Epoch: 2, SenderLeaf: 1, Sender: "peer-1",
			MessageID: []byte(fmt.Sprintf("big-%d", i)), Content: events.NewSecret(bytes.Clone(content))})
	}
	dir := b.TempDir()
	key := mustKey(b)
	v6 := filepath.Join(dir, "v6.db")
	db, err := Open(v6, key, &Options{SchemaVersion: 6})
	if err != nil {
		b.Fatal(err)
	}
	if err := db.Apply(context.Background(), s.recs); err != nil {
		b.Fatal(err)
	}
	if err := db.Close(); err != nil {
		b.Fatal(err)
	}
	raw, err := os.ReadFile(v6)
	if err != nil {
		b.Fatal(err)
	}
	for i := 0; b.Loop(); i++ {
		b.StopTimer()
		path := filepath.Join(dir, fmt.Sprintf("copy-%d.db", i))
		if err := os.WriteFile(path, raw, 0o600); err != nil {
			b.Fatal(err)
		}
		b.StartTimer()
		if from, to, err := MigrateInPlace(context.Background(), path, key, nil); err != nil || from != 6 || to != 7 {
			b.Fatalf("migrate: %d -> %d, %v", from, to, err)
		}
	}
	b.ReportMetric(float64(len(raw))/1e6, "MB")
}
