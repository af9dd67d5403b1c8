package eventlog

import (
	"context"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/events"
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
	l, srv := newLog(t)
	ctx := context.Background()
	writeMixed(t, l, instA)
	subjA, err := l.TombstoneSubject(instA)
	if err != nil {
		t.Fatal(err)
	}
	const flood = 200
	for range flood {
		publishOn(t, l, subjA, []byte("not a tombstone"))
	}
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
