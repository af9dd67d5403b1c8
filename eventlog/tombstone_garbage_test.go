package eventlog

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
	"github.com/epochlog/epochlog/internal/syncbuf"
)

// TestGarbageOnALiveInstallationsTombstoneSubject: messages that are not
// instA's tombstone (garbage, instB's genuine tombstone copied there) on
// the tombstone subject of instA, which was never erased, leave it live:
// reads from the start and from past its end, LastSeq, the erased check,
// appends and a follow (which reads the tombstone subject too, and is
// delivered one more such message while it runs) all go on. Until
// 2026-12-07 each failed with a *RecordError naming the message, for
// good, and the documented remedy (erase) would have erased instA.
func TestGarbageOnALiveInstallationsTombstoneSubject(t *testing.T) {
	l, srv := newLog(t)
	ctx := context.Background()
	n := writeMixed(t, l, instA)
	writeMixed(t, l, instB)
	subjA, err := l.TombstoneSubject(instA)
	if err != nil {
		t.Fatal(err)
	}
	subjB, err := l.TombstoneSubject(instB)
	if err != nil {
		t.Fatal(err)
	}
	publishOn(t, l, subjA, []byte("not a tombstone"))
	bTomb, err := events.SealTombstone(l.keys, l.binding(subjB), events.Tombstone{Installation: instB, By: "forger"})
	if err != nil {
		t.Fatal(err)
	}
	last := publishOn(t, l, subjA, bTomb)

	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	if got := readAll(t, fresh, instA, 0); len(got) != n {
		t.Fatalf("read of %s from the start: %d records, want %d", instA, len(got), n)
	}
	if got := readAll(t, fresh, instA, last+1); len(got) != 0 {
		t.Fatalf("read of %s from past its end: %d records", instA, len(got))
	}
	if err := fresh.CheckNotErased(ctx, instA); err != nil {
		t.Fatalf("erased check of the live %s: %v", instA, err)
	}
	if _, _, found, err := fresh.Tombstone(ctx, instA); err != nil || found {
		t.Fatalf("tombstone of the live %s: found %v, %v", instA, found, err)
	}
	if seq, err := fresh.LastSeq(ctx, instA); err != nil || seq == 0 {
		t.Fatalf("last seq of the live %s: %d, %v", instA, seq, err)
	}

	f := startFollow(t, fresh, instA)
	f.waitFor(t, n)
	publishOn(t, l, subjA, []byte("garbage while following"))
	g := group(instA, "g1")
	mustAppend(t, fresh, 6, msg(g, 7, "after the garbage"))
	if recs := f.waitFor(t, n+1); content(recs[n].Event) != "after the garbage" {
		t.Fatalf("follow delivered %q after the garbage", content(recs[n].Event))
	}
	f.cancel()
	if err := <-f.done; !errors.Is(err, context.Canceled) {
		t.Fatalf("follow of the live %s ended with %v, want context.Canceled", instA, err)
	}
}

// TestGarbageFloodOnATombstoneSubjectIsReadOnce: a Log reads the messages
// on a live installation's tombstone subject that are not its tombstone
// once: one more published after them costs its next erased check that
// message, not the whole subject again (counted in requests the Log's
// connection sends). A genuine tombstone written after the flood is
// still found, with more garbage after it. Until 2026-12-07 every check
// after one more message read the whole subject again, one request a
// message: a publisher adding one message per check made every read of
// the installation as slow as all it had published.
func TestGarbageFloodOnATombstoneSubjectIsReadOnce(t *testing.T) {
	const flood = 200
	l, srv, subjA := instAUnderGarbage(t, flood)
	ctx := context.Background()
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	if err := fresh.CheckNotErased(ctx, instA); err != nil {
		t.Fatalf("erased check of the live %s under %d garbage messages: %v", instA, flood, err)
	}
	for i := range 3 {
		publishOn(t, l, subjA, []byte("one more"))
		before := fresh.Conn().Stats().OutMsgs
		if err := fresh.CheckNotErased(ctx, instA); err != nil {
			t.Fatalf("erased check %d of the live %s: %v", i, instA, err)
		}
		if sent := fresh.Conn().Stats().OutMsgs - before; sent > flood/4 {
			t.Fatalf("erased check %d after one more garbage message sent %d requests: the %d read before were read again", i, sent, flood)
		}
	}

	res, err := l.Erase(ctx, instA, &EraseOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	publishOn(t, l, subjA, []byte("after the tombstone"))
	var eerr *ErasedError
	if err := fresh.CheckNotErased(ctx, instA); !errors.As(err, &eerr) || eerr.Seq != res.TombstoneSeq {
		t.Fatalf("erased check after the erase, garbage after the tombstone: %v, want the *ErasedError at seq %d", err, res.TombstoneSeq)
	}
}

// TestGarbageFloodOnATombstoneSubjectIsReadInBatches: a fresh Log's first
// erased check of an installation whose tombstone subject holds a flood
// of messages that are not its tombstone sends far fewer requests than
// there are messages (counted on the Log's connection), still passes
// over each of them with one Warn, and asks nothing of them again. A
// tombstone in the middle of such a flood (garbage, a copy of it and
// more garbage after it) is found by a fresh Log as cheaply, and Erase, which reads
// the whole subject, resumes from it and removes every other message.
// Until 2026-12-07 the first check was a message get per message: every
// fresh process paid the flood in round trips.
func TestGarbageFloodOnATombstoneSubjectIsReadInBatches(t *testing.T) {
	const flood = 1200
	l, srv, subjA := instAUnderGarbage(t, flood)
	ctx := context.Background()
	var logs syncbuf.Buffer
	cfg := testConfig(srv)
	cfg.Logger = slog.New(slog.NewTextHandler(&logs, nil))
	fresh := openLog(t, cfg, keyring(t, 1, 0x11))
	before := fresh.Conn().Stats().OutMsgs
	if err := fresh.CheckNotErased(ctx, instA); err != nil {
		t.Fatalf("erased check of the live %s under %d garbage messages: %v", instA, flood, err)
	}
	if sent := fresh.Conn().Stats().OutMsgs - before; sent > flood/20 {
		t.Fatalf("a fresh Log's first erased check under %d garbage messages sent %d requests", flood, sent)
	}
	const passed = "not the installation's tombstone; ignored"
	if n := strings.Count(logs.String(), passed); n != flood {
		t.Fatalf("%d Warns passed over a garbage message, want %d (one each)", n, flood)
	}
	if err := fresh.CheckNotErased(ctx, instA); err != nil {
		t.Fatalf("second erased check of the live %s: %v", instA, err)
	}
	if n := strings.Count(logs.String(), passed); n != flood {
		t.Fatalf("the second check logged %d more Warns", n-flood)
	}

	tomb, err := events.SealTombstone(l.keys, l.binding(subjA), events.Tombstone{Installation: instA, By: "an earlier erase"})
	if err != nil {
		t.Fatal(err)
	}
	tombSeq := publishOn(t, l, subjA, tomb)
	for range flood / 4 {
		publishOn(t, l, subjA, []byte("after the tombstone"))
	}
	copySeq := publishOn(t, l, subjA, tomb)
	publishOn(t, l, subjA, []byte("last"))

	fresh2 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	before = fresh2.Conn().Stats().OutMsgs
	var eerr *ErasedError
	if err := fresh2.CheckNotErased(ctx, instA); !errors.As(err, &eerr) || eerr.Seq != tombSeq {
		t.Fatalf("erased check of %s, its tombstone at seq %d amid garbage: %v, want the *ErasedError at that seq", instA, tombSeq, err)
	}
	if sent := fresh2.Conn().Stats().OutMsgs - before; sent > flood/20 {
		t.Fatalf("a fresh Log's first erased check of %s, its tombstone amid %d garbage messages, sent %d requests", instA, flood+flood/4, sent)
	}

	before = l.Conn().Stats().OutMsgs
	res, err := l.Erase(ctx, instA, &EraseOptions{By: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if sent := l.Conn().Stats().OutMsgs - before; sent > flood/2 {
		t.Fatalf("erase under %d messages before its tombstone and %d after sent %d requests", flood, flood/4+2, sent)
	}
	if !res.Resumed || res.TombstoneSeq != tombSeq {
		t.Fatalf("erase under the flood: resumed %v at seq %d, want resumed at seq %d", res.Resumed, res.TombstoneSeq, tombSeq)
	}
	if want := flood + flood/4 + 2; len(res.Removed) != want {
		t.Fatalf("erase removed %d messages from the tombstone subject, want %d", len(res.Removed), want)
	}
	if r := res.Removed[len(res.Removed)-2]; r.Seq != copySeq || !strings.Contains(r.Why, "a copy") {
		t.Fatalf("message removed before the last: %+v, want the copy at seq %d", r, copySeq)
	}
	if seqs := tombstoneSubjectSeqs(t, l, subjA); len(seqs) != 1 || seqs[0] != tombSeq {
		t.Fatalf("tombstone subject after the erase holds %v, want only the tombstone at %d", seqs, tombSeq)
	}
}

// instAUnderGarbage writes instA's events on a fresh Log's stream, then
// n messages that are not its tombstone on its tombstone subject (as
// anyone who may publish on the stream can): the Log, its server and
// the subject.
func instAUnderGarbage(t *testing.T, n int) (*Log, *natstest.Server, string) {
	t.Helper()
	l, srv := newLog(t)
	writeMixed(t, l, instA)
	subjA, err := l.TombstoneSubject(instA)
	if err != nil {
		t.Fatal(err)
	}
	for range n {
		publishOn(t, l, subjA, []byte("not a tombstone"))
	}
	return l, srv, subjA
}
