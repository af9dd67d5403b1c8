package eventlog

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// TestReadOfAnErasedInstallationFromAnySequence: every read of an
// erased installation is its *ErasedError, whatever sequence it starts
// from (a checkpoint, inspect --from N), through every read path, in a
// Log that learned nothing of the erase; the other installation read
// with it, or alone, reads as before. Until 2026-12-07 a read from past
// sequence 1 returned nothing and no error.
func TestReadOfAnErasedInstallationFromAnySequence(t *testing.T) {
	l, srv := newLog(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	writeMixed(t, l, instA)
	writeMixed(t, l, instB)
	before := rawOf(t, l, instA)
	res, err := l.Erase(ctx, instA, &EraseOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	after := mustAppend(t, l, 6, msg(group(instB, "g1"), 7, "after the erase"))
	lastB := after[0].Seq
	fA, err := l.InstallationFilter(instA)
	if err != nil {
		t.Fatal(err)
	}
	subjA := before[1].subject
	none := func(Record) error { return nil }
	both := []events.InstallationID{instA, instB}
	for _, from := range []uint64{2, res.TombstoneSeq, res.TombstoneSeq + 1, lastB + 10} {
		reads := map[string]func(l *Log) error{
			"Read":              func(l *Log) error { return l.Read(ctx, instA, from, none) },
			"ReadInstallations": func(l *Log) error { return l.ReadInstallations(ctx, both, from, none) },
			"ReadSubject":       func(l *Log) error { return l.ReadSubject(ctx, instA, subjA, from, none) },
		}
		if from <= lastB {
			reads["ReadInstallationsTo"] = func(l *Log) error { return l.ReadInstallationsTo(ctx, both, from, lastB, none) }
			reads["ScanTo"] = func(l *Log) error { return l.ScanTo(ctx, both, from, lastB, none) }
		}
		// ReadN, the engine's read after each operation, does not ask
		// (a request each time): it finds nothing.
		if n, _, err := openLog(t, testConfig(srv), keyring(t, 1, 0x11)).ReadN(ctx, instA, fA, from, 10, none); err != nil || n != 0 {
			t.Fatalf("ReadN of the erased %s from seq %d: %d records, %v; want none and no error", instA, from, n, err)
		}
		for name, read := range reads {
			fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11)) // knows nothing of the erase
			err := read(fresh)
			var ee *ErasedError
			if !errors.As(err, &ee) || ee.Installation != instA || ee.Seq != res.TombstoneSeq {
				t.Fatalf("%s of the erased %s from seq %d: %v, want its *ErasedError (tombstone at seq %d)", name, instA, from, err, res.TombstoneSeq)
			}
		}
	}
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	if _, err := fresh.EventAt(ctx, instA, before[2].seq); !errors.Is(err, ErrErased) {
		t.Fatalf("EventAt of a purged event of the erased %s: %v, want ErrErased", instA, err)
	}
	var got []Record
	if err := fresh.Read(ctx, instB, 2, func(r Record) error { got = append(got, r); return nil }); err != nil || len(got) == 0 || got[len(got)-1].Seq != lastB {
		t.Fatalf("read of %s from seq 2: %d records, %v; want through seq %d", instB, len(got), err, lastB)
	}
	fB, err := fresh.InstallationFilter(instB)
	if err != nil {
		t.Fatal(err)
	}
	if n, _, err := fresh.ReadN(ctx, instB, fB, lastB+1, 10, none); err != nil || n != 0 {
		t.Fatalf("ReadN of %s past its end: %d, %v; want nothing and no error", instB, n, err)
	}
}
