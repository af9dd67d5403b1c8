package eventlog

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/events"
)

// TestShredOpensNothing shreds the messages periods of one group before a
// day, then tries every key material the engine, the keyring and the bus
// still hold against every event of those periods captured before, first
// unpurged, then after compaction deleted them: none opens. The retained
// events (state, later messages, the delivery queue, the other
// installation) still open; an append into a shredded day is refused; a
// whole-history read names the retention, then the compaction.
func TestShredOpensNothing(t *testing.T) {
	srv := natstestStart(t)
	ring := keyring(t, 1, 0x11)
	if err := ring.Rotate(2, rootKey(t, 0x22)); err != nil {
		t.Fatal(err)
	}
	l := openLog(t, testConfig(srv), ring)
	ctx := context.Background()
	writeMixed(t, l, instA)
	writeMixed(t, l, instB)
	recs := readAll(t, l, instA, 0)
	cutoff := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC) // the messages of Nov 24 and 25 go, Nov 26 stays
	var shredded, kept []rawEnvelope
	for _, r := range recs {
		m := rawGet(t, l, r.Seq)
		c := rawEnvelope{seq: r.Seq, subject: m.Subject, data: m.Data}
		if _, isMsg := r.Event.Body.(events.ApplicationMessageSent); isMsg && r.Event.Time.Before(cutoff) {
			shredded = append(shredded, c)
		} else {
			kept = append(kept, c)
		}
	}
	if len(shredded) != 3 || len(kept) != 5 {
		t.Fatalf("%d events to shred and %d to keep, want 3 and 5", len(shredded), len(kept))
	}
	beforeB := readAll(t, l, instB, 0)

	periods, _, err := l.OldDayPeriods(ctx, instA, events.ClassMessages, []string{"g1", "other"}, cutoff, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if len(periods) != 2 || periods[0].Day.Format(time.DateOnly) != "2026-11-25" || periods[1].Day.Format(time.DateOnly) != "2026-11-24" {
		t.Fatalf("periods before %s: %+v, want g1's Nov 25 and 24", cutoff, periods)
	}
	ids := []events.DataKeyID{periods[0].ID, periods[1].ID}
	// A state key is not retention's to shred.
	stateID, _, _ := events.EnvelopeDataKeyID(kept[0].data)
	if _, err := l.ShredDataKeys(ctx, instA, []events.DataKeyID{stateID}); err == nil {
		t.Fatal("ShredDataKeys shredded a state key")
	}
	n, err := l.ShredDataKeys(ctx, instA, ids)
	if err != nil || n != 2 {
		t.Fatalf("shred: %d keys, %v; want 2", n, err)
	}
	if again, err := l.ShredDataKeys(ctx, instA, ids); err != nil || again != 0 {
		t.Fatalf("shred again: %d keys, %v; want 0", again, err)
	}
	if p, _, err := l.OldDayPeriods(ctx, instA, events.ClassMessages, []string{"g1"}, cutoff, cutoff); err != nil || len(p) != 0 {
		t.Fatalf("periods left after the shred: %+v %v", p, err)
	}

	fresh := openLog(t, testConfig(srv), ring)
	tryEverything := func(stage string) {
		t.Helper()
		tryAll := func(what string, open func(rawEnvelope) error) {
			t.Helper()
			for _, c := range shredded {
				if err := open(c); err == nil {
					t.Fatalf("%s: %s opened the shredded event at seq %d", stage, what, c.seq)
				}
			}
		}
		rings, dks := rootKeyMaterials(t, ring)
		for _, r := range rings {
			tryAll("a root key (as a ring), or the whole ring", func(c rawEnvelope) error {
				_, err := events.Open(r, instA, l.binding(c.subject), c.data)
				return err
			})
		}
		// Every wrap left in the bucket, unwrapped under every name of
		// the shredded periods (fails) and under its own (a key that
		// opens nothing shredded).
		all := append(append([]rawEnvelope{}, kept...), rawOf(t, l, instB)...)
		for name, w := range bucketKeys(t, l) {
			if _, _, err := events.ParseDataKeyName(name); err != nil {
				t.Fatalf("%s: key bucket entry %q is not a data key's (the marks live elsewhere): %v", stage, name, err)
			}
			for _, c := range shredded {
				cid, _, _ := events.EnvelopeDataKeyID(c.data)
				if strings.HasSuffix(name, "."+cid.Token()) {
					t.Fatalf("%s: the key of shredded period %s is still in the bucket", stage, cid)
				}
				if _, err := ring.UnwrapDataKey(l.cfg.Stream, instA, cid, w); err == nil {
					t.Fatalf("%s: wrap %s unwrapped as a shredded key", stage, name)
				}
			}
			for _, c := range all {
				cid, ok, _ := events.EnvelopeDataKeyID(c.data)
				for _, inst := range []events.InstallationID{instA, instB} {
					if ok && cid.Name(l.instPseudonym(inst)) == name {
						dk, err := ring.UnwrapDataKey(l.cfg.Stream, inst, cid, w)
						if err != nil {
							t.Fatalf("unwrap %s: %v", name, err)
						}
						dks = append(dks, withEpochKeys(t, dk, cid)...)
					}
				}
			}
		}
		for _, lg := range []*Log{l, fresh} {
			lg.dkCache.mu.Lock()
			for e := lg.dkCache.ll.Front(); e != nil; e = e.Next() {
				dks = append(dks, e.Value.(*dkEntry).dk.Clone())
			}
			lg.dkCache.mu.Unlock()
		}
		if len(dks) < len(ring.IDs())+4 {
			t.Fatalf("only %d key materials to try", len(dks))
		}
		for _, dk := range dks {
			tryAll("a data key", func(c rawEnvelope) error {
				_, err := events.OpenData(dk, instA, l.binding(c.subject), c.data)
				return err
			})
		}
		for _, lg := range []*Log{l, fresh} {
			tryAll("the Log", func(c rawEnvelope) error {
				_, err := lg.OpenEnvelope(ctx, instA, c.subject, c.data)
				if err != nil && !errors.Is(err, ErrRetainedOut) {
					t.Fatalf("%s: the Log opening a shredded event: %v, want ErrRetainedOut", stage, err)
				}
				return err
			})
			for _, c := range kept {
				if _, err := lg.OpenEnvelope(ctx, instA, c.subject, c.data); err != nil {
					t.Fatalf("%s: a retained event at seq %d: %v", stage, c.seq, err)
				}
			}
			if got := readAll(t, lg, instB, 0); len(got) != len(beforeB) {
				t.Fatalf("%s: %s reads %d events, had %d", stage, instB, len(got), len(beforeB))
			}
		}
	}
	tryEverything("unpurged")
	for _, lg := range []*Log{l, fresh} {
		if _, err := tryReadAll(lg, instA, 0); !errors.Is(err, ErrRetainedOut) {
			t.Fatalf("whole-history read after the shred: %v, want ErrRetainedOut", err)
		}
		late := msg(group(instA, "g1"), 7, "dated in a shredded day")
		late.Time = time.Date(2026, 11, 25, 9, 0, 0, 0, time.UTC)
		if _, err := lg.Append(ctx, 6, late); !errors.Is(err, ErrRetainedOut) {
			t.Fatalf("append into a shredded day: %v, want ErrRetainedOut", err)
		}
	}

	// Compaction up to a shredded event deletes what it covers but that
	// event (the anchor at the checkpoint); then up to the end, the rest.
	res, err := l.CompactRetainedOut(ctx, instA, shredded[1].seq, nil)
	if err != nil || res.Deleted != 1 {
		t.Fatalf("compact to seq %d: %+v %v; want 1 deleted", shredded[1].seq, res, err)
	}
	rawGet(t, l, shredded[1].seq)
	last := recs[len(recs)-1].Seq
	res, err = l.CompactRetainedOut(ctx, instA, last, nil)
	if err != nil || res.Deleted != 2 || res.Through != last {
		t.Fatalf("compact to seq %d: %+v %v; want 2 deleted", last, res, err)
	}
	for _, c := range shredded {
		if _, err := l.stream.GetMsg(ctx, c.seq); !errors.Is(err, jetstream.ErrMsgNotFound) {
			t.Fatalf("shredded event at seq %d still on the stream after compaction: %v", c.seq, err)
		}
	}
	for _, c := range kept {
		rawGet(t, l, c.seq)
	}
	tryEverything("purged")
	if err := fresh.CheckNotCompacted(ctx, instA); !errors.Is(err, ErrCompacted) {
		t.Fatalf("CheckNotCompacted after compaction: %v", err)
	}
	if err := fresh.CheckNotCompacted(ctx, instB); err != nil {
		t.Fatalf("CheckNotCompacted of another installation: %v", err)
	}
	if res, err := l.CompactRetainedOut(ctx, instA, last, nil); err != nil || res.Deleted != 0 {
		t.Fatalf("compact again: %+v %v", res, err)
	}

	// Erasing the installation takes its marks too; the other's stay.
	marksOf := func(inst events.InstallationID) uint64 {
		t.Helper()
		s, err := l.js.Stream(ctx, kvStreamName(l.RetentionBucket()))
		if err != nil {
			t.Fatal(err)
		}
		n, err := countUnder(ctx, s, "$KV."+l.RetentionBucket()+"."+l.instPseudonym(inst)+".>")
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	if marksOf(instA) == 0 {
		t.Fatal("no retention marks of the shredded installation before erase")
	}
	bPeriods, _, err := l.OldDayPeriods(ctx, instB, events.ClassMessages, []string{"g1", "other"}, cutoff, cutoff)
	if err != nil || len(bPeriods) == 0 {
		t.Fatalf("the other installation's periods: %+v %v", bPeriods, err)
	}
	if _, err := l.ShredDataKeys(ctx, instB, []events.DataKeyID{bPeriods[0].ID}); err != nil {
		t.Fatal(err)
	}
	bMarks := marksOf(instB)
	if bMarks == 0 {
		t.Fatal("no retention marks of the other installation")
	}
	if _, err := l.Erase(ctx, instA, nil); err != nil {
		t.Fatal(err)
	}
	if n := marksOf(instA); n != 0 {
		t.Fatalf("%d retention marks of the erased installation left", n)
	}
	if n := marksOf(instB); n != bMarks {
		t.Fatalf("erase of another installation changed this one's marks: %d, was %d", n, bMarks)
	}
}

// TestCompactCountsRootSealedEvents: an event a writer built before data
// keys appends (sealed under the root key, envelope format 2) between
// events under data keys is past any shredding: the compaction of its
// shredded day keeps it, readable, and says so (Compacted.RootSealed and
// a warning), where it reported only what it deleted.
func TestCompactCountsRootSealedEvents(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	g := group(instA, "g1")
	mustAppend(t, l, 0, msg(g, 1, "under its data key"))
	l.sealRoot = true // a writer from before data keys
	old := mustAppend(t, l, 1, msg(g, 2, "under the root key"))
	l.sealRoot = false
	last := mustAppend(t, l, 2, msg(g, 3, "under its data key again"))
	until := baseTime.Add(48 * time.Hour)
	periods, _, err := l.OldDayPeriods(ctx, instA, events.ClassMessages, []string{"g1"}, until, until)
	if err != nil || len(periods) != 1 {
		t.Fatalf("periods: %+v %v; want the one day", periods, err)
	}
	if _, err := l.ShredDataKeys(ctx, instA, []events.DataKeyID{periods[0].ID}); err != nil {
		t.Fatal(err)
	}
	res, err := l.CompactRetainedOut(ctx, instA, last[0].Seq, nil)
	if err != nil || res.Deleted != 1 || res.RootSealed != 1 {
		t.Fatalf("compact: %+v %v; want 1 deleted, 1 root-sealed kept", res, err)
	}
	m := rawGet(t, l, old[0].Seq)
	ev, err := l.OpenEnvelope(ctx, instA, m.Subject, m.Data)
	if err != nil || content(ev) != "under the root key" {
		t.Fatalf("the root-sealed event after the compaction: %v; want it kept and readable", err)
	}
}

// TestOldDayPeriodsAccountsForEveryKey: OldDayPeriods finds the keys of
// every day before the cutoff however long before (the search is not
// bounded by a day the caller guesses), keeps the days from the cutoff
// on, and counts the keys of an aggregate it was not given as unknown,
// not old.
func TestOldDayPeriodsAccountsForEveryKey(t *testing.T) {
	l, _ := newLog(t)
	ctx := context.Background()
	writeMixed(t, l, instA) // g1's messages of Nov 24, 25 and 26
	writeMixed(t, l, instB)
	cutoff := time.Date(2026, 11, 26, 0, 0, 0, 0, time.UTC)
	old, unknown, err := l.OldDayPeriods(ctx, instA, events.ClassMessages, []string{"g1", "other"}, cutoff, cutoff)
	if err != nil {
		t.Fatal(err)
	}
	if len(old) != 2 || unknown != 0 || old[0].Day.Format(time.DateOnly) != "2026-11-25" || old[1].Day.Format(time.DateOnly) != "2026-11-24" {
		t.Fatalf("old periods before %s: %+v, %d unknown; want g1's Nov 25 and 24, none unknown", cutoff, old, unknown)
	}
	// Retention run years later: the same two days, found from far off.
	later := cutoff.AddDate(3, 0, 0)
	if old, unknown, err = l.OldDayPeriods(ctx, instA, events.ClassMessages, []string{"g1"}, later, later); err != nil || len(old) != 3 || unknown != 0 {
		t.Fatalf("old periods before %s: %+v, %d unknown, %v; want all three days of g1", later, old, unknown, err)
	}
	// A group it is not told of: its keys are unknown, not old.
	if old, unknown, err = l.OldDayPeriods(ctx, instA, events.ClassMessages, []string{"other"}, cutoff, cutoff); err != nil || len(old) != 0 || unknown != 3 {
		t.Fatalf("old periods of another group: %+v, %d unknown, %v; want none, 3 unknown", old, unknown, err)
	}
	if _, _, err := l.OldDayPeriods(ctx, instA, events.ClassState, []string{"g1"}, cutoff, cutoff); err == nil {
		t.Fatal("OldDayPeriods of the state class: no error")
	}
}

// TestCompactTakesAnEventDeletedMeanwhile: an event another process's
// compaction of the installation deleted first (two replicas retaining
// at once) is deleted as far as this compaction goes, not a failure
// (the server answers "sequence not found", which nats.go does not map
// to jetstream.ErrMsgNotFound); a failure to delete an event still
// there is reported.
func TestCompactTakesAnEventDeletedMeanwhile(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	g := group(instA, "g1")
	first := mustAppend(t, l, 0, msg(g, 1, "deleted by another compaction"))
	mustAppend(t, l, 1, msg(g, 2, "kept"))
	if err := l.stream.DeleteMsg(ctx, first[0].Seq); err != nil {
		t.Fatal(err)
	}
	if err := l.deleteCompacted(ctx, first[0].Seq); err != nil {
		t.Fatalf("delete an event deleted meanwhile: %v, want nil", err)
	}
	cctx, cancel := context.WithCancel(ctx)
	cancel()
	if err := l.deleteCompacted(cctx, first[0].Seq+1); err == nil {
		t.Fatal("a delete that could not run reported none")
	}
}
