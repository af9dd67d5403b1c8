package eventlog

import (
	"context"
	"errors"
	"fmt"
	"testing"
)

// ReadSubject reads one aggregate's subject of an installation, from the
// start or from a sequence, in order, and nothing of the installation's
// other subjects; a gap in the aggregate's positions (an event deleted from
// the stream) stops it at the sequence after the gap.
func TestReadSubject(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	one, other := group(instA, "one"), group(instA, "other")
	var seqs []uint64
	for i := range 10 {
		seqs = append(seqs, mustAppend(t, l, uint64(i), msg(one, uint64(i)+1, fmt.Sprint(i+1)))[0].Seq)
		mustAppend(t, l, uint64(i), msg(other, uint64(i)+1, "other"))
	}
	subject, err := l.Subject(one)
	if err != nil {
		t.Fatal(err)
	}
	read := func(from uint64) ([]string, error) {
		var got []string
		err := l.ReadSubject(ctx, instA, subject, from, func(r Record) error {
			got = append(got, content(r.Event))
			return nil
		})
		return got, err
	}
	if got, err := read(0); err != nil || fmt.Sprint(got) != "[1 2 3 4 5 6 7 8 9 10]" {
		t.Fatalf("whole subject: %v, %v", got, err)
	}
	if got, err := read(seqs[6]); err != nil || fmt.Sprint(got) != "[7 8 9 10]" {
		t.Fatalf("from the 7th event's sequence: %v, %v", got, err)
	}

	otherInst, err := l.Subject(group(instB, "one"))
	if err != nil {
		t.Fatal(err)
	}
	if err := l.ReadSubject(ctx, instA, otherInst, 0, func(Record) error { return nil }); err == nil {
		t.Errorf("read %s as %s's subject: no error", otherInst, instA)
	}

	if err := l.stream.DeleteMsg(ctx, seqs[4]); err != nil {
		t.Fatal(err)
	}
	_, err = read(0)
	var re *RecordError
	if !errors.Is(err, ErrOutOfOrder) || !errors.As(err, &re) || re.Seq != seqs[5] {
		t.Fatalf("whole subject with its 5th event deleted: %v, want ErrOutOfOrder at stream sequence %d", err, seqs[5])
	}
}
