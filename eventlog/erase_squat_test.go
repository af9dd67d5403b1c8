package eventlog

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"

	"github.com/nats-io/nats.go"
	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// publishOn stores data on subject as any publisher with rights on the
// stream's subjects can, and returns its stream sequence.
func publishOn(t testing.TB, l *Log, subject string, data []byte) uint64 {
	t.Helper()
	ack, err := l.js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Data: data})
	if err != nil {
		t.Fatalf("publish on %s: %v", subject, err)
	}
	return ack.Sequence
}

// tombstoneSubjectSeqs returns the stream sequences of the messages on
// subject.
func tombstoneSubjectSeqs(t testing.TB, l *Log, subject string) []uint64 {
	t.Helper()
	var seqs []uint64
	for next := uint64(1); ; {
		m, err := l.stream.GetMsg(context.Background(), next, jetstream.WithGetMsgSubject(subject))
		if errors.Is(err, jetstream.ErrMsgNotFound) {
			return seqs
		}
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, m.Sequence)
		next = m.Sequence + 1
	}
}

// TestEraseRemovesWhatSquatsOnItsTombstoneSubject: a message on an
// installation's tombstone subject that is not its tombstone (garbage,
// another installation's genuine tombstone copied there) does not make
// it erased (reads go on: TestGarbageOnALiveInstallationsTombstoneSubject)
// nor stop the erase: the erase writes the tombstone, deletes those
// messages and names them; reads then say erased. One published after
// the tombstone does not hide it, and is removed by the next erase. Two erases racing over such a subject
// agree on one tombstone. Until 2026-12-07 the tombstone was written
// only at subject sequence 0: the erase failed for good.
func TestEraseRemovesWhatSquatsOnItsTombstoneSubject(t *testing.T) {
	l, srv := newLog(t)
	ctx := context.Background()
	writeMixed(t, l, instA)
	writeMixed(t, l, instB)
	subjA, err := l.TombstoneSubject(instA)
	if err != nil {
		t.Fatal(err)
	}
	subjB, err := l.TombstoneSubject(instB)
	if err != nil {
		t.Fatal(err)
	}
	garbage := publishOn(t, l, subjA, []byte("not a tombstone"))
	bTomb, err := events.SealTombstone(l.keys, l.binding(subjB), events.Tombstone{Installation: instB, By: "forger"})
	if err != nil {
		t.Fatal(err)
	}
	copied := publishOn(t, l, subjA, bTomb)

	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	if _, err := tryReadAll(fresh, instA, 0); err != nil {
		t.Fatalf("read of %s with a foreign message last on its tombstone subject: %v, want its events", instA, err)
	}

	res, err := l.Erase(ctx, instA, &EraseOptions{By: "test"})
	if err != nil {
		t.Fatalf("erase of %s with messages on its tombstone subject: %v", instA, err)
	}
	if res.Resumed || len(res.Removed) != 2 || res.Removed[0].Seq != garbage || res.Removed[1].Seq != copied ||
		!strings.Contains(res.Removed[0].Why, "malformed") || !strings.Contains(res.Removed[1].Why, "another installation's") {
		t.Fatalf("erase result %+v, want seqs %d and %d removed", res, garbage, copied)
	}
	if got := tombstoneSubjectSeqs(t, l, subjA); len(got) != 1 || got[0] != res.TombstoneSeq {
		t.Fatalf("tombstone subject holds seqs %v, want only the tombstone's %d", got, res.TombstoneSeq)
	}
	fresh = openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	if _, err := tryReadAll(fresh, instA, 0); !errors.Is(err, ErrErased) {
		t.Fatalf("read of the erased %s: %v, want ErrErased", instA, err)
	}
	if got := readAll(t, fresh, instB, 0); len(got) == 0 {
		t.Fatalf("%s lost its events", instB)
	}

	// Garbage after the tombstone: reads still find the tombstone; the
	// next erase keeps it and removes the garbage.
	late := publishOn(t, l, subjA, []byte("later garbage"))
	fresh = openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	var eerr *ErasedError
	if _, err := tryReadAll(fresh, instA, 0); !errors.As(err, &eerr) || eerr.Seq != res.TombstoneSeq {
		t.Fatalf("read of %s with garbage after its tombstone: %v, want its *ErasedError at seq %d", instA, err, res.TombstoneSeq)
	}
	again, err := fresh.Erase(ctx, instA, &EraseOptions{By: "again"})
	if err != nil || !again.Resumed || again.TombstoneSeq != res.TombstoneSeq || again.Tombstone.By != "test" ||
		len(again.Removed) != 1 || again.Removed[0].Seq != late {
		t.Fatalf("erase again: %+v, %v; want the tombstone at seq %d kept and seq %d removed", again, err, res.TombstoneSeq, late)
	}
	fresh = openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	if _, err := tryReadAll(fresh, instA, 0); !errors.Is(err, ErrErased) {
		t.Fatalf("read of the erased %s: %v, want ErrErased", instA, err)
	}

	// Two erases racing over a subject with garbage: one tombstone.
	const racers = 4
	publishOn(t, l, subjB, []byte("garbage for B"))
	var wg sync.WaitGroup
	results := make([]*Erased, racers)
	errs := make([]error, racers)
	for i := range racers {
		li := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
		wg.Add(1)
		go func() {
			defer wg.Done()
			results[i], errs[i] = li.Erase(ctx, instB, &EraseOptions{By: "racer"})
		}()
	}
	wg.Wait()
	fresh = openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	for i := range racers {
		if errs[i] != nil {
			t.Fatalf("racing erase %d: %v", i, errs[i])
		}
		if results[i].TombstoneSeq != results[0].TombstoneSeq {
			t.Fatalf("racing erases disagree on the tombstone: seq %d and %d", results[0].TombstoneSeq, results[i].TombstoneSeq)
		}
	}
	if got := tombstoneSubjectSeqs(t, l, subjB); len(got) != 1 || got[0] != results[0].TombstoneSeq {
		t.Fatalf("after racing erases the tombstone subject holds seqs %v, want only %d", got, results[0].TombstoneSeq)
	}
	if _, err := tryReadAll(fresh, instB, 0); !errors.Is(err, ErrErased) {
		t.Fatalf("read of the erased %s: %v, want ErrErased", instB, err)
	}
}

// TestEraseOfATombstoneMessageIDTakenElsewhere: a publisher stores a
// message on another subject of the stream under the message id the
// erase of instA gives its tombstone ("tombstone-<pseudonym>-<seq>":
// the pseudonym is in instA's subjects, the sequence is the tombstone
// subject's last, 0). The erase still writes its tombstone and erases.
// Until 2026-12-07 the server answered each of its publishes as a
// duplicate of that message, and the erase failed ("another message was
// published there before it 5 times"), again on every try for as long
// as the server remembers the id (the duplicate window, 2 minutes by
// default, which the publisher can renew).
func TestEraseOfATombstoneMessageIDTakenElsewhere(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeMixed(t, l, instA)
	id := "tombstone-" + l.instPseudonym(instA) + "-0"
	if _, err := l.js.PublishMsg(ctx, &nats.Msg{Subject: l.cfg.SubjectPrefix + ".squatter", Data: []byte("x"),
		Header: nats.Header{hdrMsgID: []string{id}}}); err != nil {
		t.Fatal(err)
	}
	res, err := l.Erase(ctx, instA, nil)
	if err != nil {
		t.Fatalf("erase with its tombstone's message id taken: %v", err)
	}
	if res.Resumed || res.EventsPurged == 0 {
		t.Fatalf("erase: %+v, want a new tombstone and the events purged", res)
	}
	if err := l.CheckNotErased(ctx, instA); !errors.Is(err, ErrErased) {
		t.Fatalf("after the erase: %v, want ErrErased", err)
	}
	subj, err := l.TombstoneSubject(instA)
	if err != nil {
		t.Fatal(err)
	}
	if seqs := tombstoneSubjectSeqs(t, l, subj); len(seqs) != 1 || seqs[0] != res.TombstoneSeq {
		t.Fatalf("tombstone subject holds %v, want the tombstone at %d alone", seqs, res.TombstoneSeq)
	}
}
