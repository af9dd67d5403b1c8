package eventlog

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// rangeRead is ReadInstallationsTo or ScanTo.
type rangeRead func(l *Log, ctx context.Context, insts []events.InstallationID, from, to uint64, fn func(Record) error) error

var rangeReads = map[string]rangeRead{
	"ReadInstallationsTo": (*Log).ReadInstallationsTo,
	"ScanTo":              (*Log).ScanTo,
}

// Both range reads deliver exactly the installations' events in the range,
// in stream order, as Read does, and nothing of the others'.
func TestRangeReadsDeliverTheRange(t *testing.T) {
	l, _ := newLog(t)
	const instC events.InstallationID = "inst-carol"
	aggs := map[events.InstallationID]events.Aggregate{instA: group(instA, "g"), instB: group(instB, "g"), instC: group(instC, "g")}
	pos := map[events.InstallationID]uint64{}
	last := map[events.InstallationID]uint64{}
	for i := range 30 {
		id := []events.InstallationID{instA, instB, instC}[i%3]
		res := mustAppend(t, l, pos[id], msg(aggs[id], pos[id]+1, fmt.Sprintf("%s %d", id, i)))
		pos[id]++
		last[id] = res[0].Seq
	}
	want := func(from, to uint64, insts ...events.InstallationID) []string {
		var out []string
		for _, r := range readAllOf(t, l, insts) {
			if r.Seq >= from && r.Seq <= to {
				out = append(out, fmt.Sprintf("%d %s", r.Seq, content(r.Event)))
			}
		}
		return out
	}
	for name, read := range rangeReads {
		for _, tc := range []struct {
			from, to uint64
			insts    []events.InstallationID
		}{
			{1, last[instB], []events.InstallationID{instA, instB}},
			{7, last[instA], []events.InstallationID{instA}},
			{12, last[instC], []events.InstallationID{instB, instC}},
			{last[instA] + 1, last[instA], []events.InstallationID{instA}}, // empty range
		} {
			var got []string
			err := read(l, context.Background(), tc.insts, tc.from, tc.to, func(r Record) error {
				got = append(got, fmt.Sprintf("%d %s", r.Seq, content(r.Event)))
				return nil
			})
			if err != nil {
				t.Fatalf("%s %v [%d, %d]: %v", name, tc.insts, tc.from, tc.to, err)
			}
			// Events after to may come too (not here: to is the last of
			// theirs the test stops at, or past it).
			w := want(tc.from, tc.to, tc.insts...)
			if fmt.Sprint(got) != fmt.Sprint(w) {
				t.Fatalf("%s %v [%d, %d]:\ngot  %v\nwant %v", name, tc.insts, tc.from, tc.to, got, w)
			}
		}
	}
}

// readAllOf reads the installations' whole histories, merged.
func readAllOf(t *testing.T, l *Log, insts []events.InstallationID) []Record {
	t.Helper()
	var out []Record
	if err := l.ReadInstallations(context.Background(), insts, 0, func(r Record) error {
		out = append(out, r)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return out
}

// An event of the installations read that does not open stops either
// read with a RecordError naming it; ScanTo passes over the other
// installations' events unopened, whatever they hold.
func TestRangeReadsCheckTheirRecords(t *testing.T) {
	l, _ := newLog(t)
	a, b := group(instA, "g"), group(instB, "g")
	mustAppend(t, l, 0, msg(a, 1, "a1"))
	resB := mustAppend(t, l, 0, msg(b, 1, "b1"))
	junk := rawPublish(t, l, resB[0].Subject, []byte("not an envelope"))
	resA := mustAppend(t, l, 1, msg(a, 2, "a2"))
	for name, read := range rangeReads {
		var got []string
		if err := read(l, context.Background(), []events.InstallationID{instA}, 1, resA[0].Seq, func(r Record) error {
			got = append(got, content(r.Event))
			return nil
		}); err != nil || fmt.Sprint(got) != "[a1 a2]" {
			t.Fatalf("%s of A over B's junk at seq %d: %v, %v", name, junk, got, err)
		}
		err := read(l, context.Background(), []events.InstallationID{instA, instB}, 1, resA[0].Seq, func(Record) error { return nil })
		var re *RecordError
		if !errors.As(err, &re) || re.Seq != junk {
			t.Fatalf("%s of A and B over B's junk at seq %d: %v", name, junk, err)
		}
	}
}
