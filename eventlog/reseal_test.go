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

// TestResealNewStream re-seals a stream holding three installations
// (one with an event of format 2), and an erased one, into a new stream
// under a keyring that shares no key with the old one: interrupted once
// and resumed, every event reads back equal, the tombstone is carried,
// the new stream holds format 3 only and the old keys open none of its
// events and none of its wraps. The old stream is untouched; the pointer
// switches with a compare-and-set, rolls back, and finalize deletes.
func TestResealNewStream(t *testing.T) {
	srv := natstestStart(t)
	cfg := testConfig(srv)
	ctx := context.Background()
	oldRing := ringOf(t, 1, 2)
	src := openLog(t, cfg, oldRing)
	const instC events.InstallationID = "inst-carol"
	const gone events.InstallationID = "inst-gone"
	insts := []events.InstallationID{instA, instB, instC, gone}
	writeMixed(t, src, instA)
	src.sealRoot = true
	mustAppend(t, src, 0, msg(group(instC, "g-old"), 1, "format 2"))
	src.sealRoot = false
	writeMixed(t, src, instB)
	writeMixed(t, src, instC)
	mustAppend(t, src, 1, msg(group(instC, "g-old"), 2, "format 3"))
	writeMixed(t, src, gone)
	if _, err := src.Erase(ctx, gone, nil); err != nil {
		t.Fatal(err)
	}
	want := map[events.InstallationID][]Record{}
	for _, inst := range insts[:3] {
		want[inst] = readAll(t, src, inst, 0)
	}
	srcMsgs := streamMsgs(t, src)

	newRing := ringOf(t, 7)
	dst, err := OpenBeside(ctx, src, "EPOCHLOG_R2", "epochlog_r2", newRing)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })

	if _, err := Reseal(ctx, src, dst, &ResealOptions{Installations: insts[:2]}); !errors.Is(err, ErrUnknownInstallations) {
		t.Fatalf("reseal naming two of four: %v", err)
	}
	// Interrupted after 5 events, then resumed.
	cctx, cancel := context.WithCancel(ctx)
	n := 0
	_, err = Reseal(cctx, src, dst, &ResealOptions{Installations: insts, step: func() {
		if n++; n == 5 {
			cancel()
		}
	}})
	cancel()
	if err == nil {
		t.Fatal("interrupted reseal returned no error")
	}
	if got := streamMsgs(t, src); got != srcMsgs {
		t.Fatalf("source has %d messages after an interrupted reseal, %d before", got, srcMsgs)
	}
	res, err := Reseal(ctx, src, dst, &ResealOptions{Installations: insts})
	if err != nil {
		t.Fatal(err)
	}
	total := len(want[instA]) + len(want[instB]) + len(want[instC])
	if res.Skipped < 4 || res.Copied+res.Skipped != total || res.Verified != total || res.Tombstones != 1 || res.Installations != 3 {
		t.Fatalf("resumed reseal: %+v, %d events", res, total)
	}

	// A fresh Log on the new stream reads everything, equal.
	fresh, err := OpenBeside(ctx, src, "EPOCHLOG_R2", "epochlog_r2", ringOf(t, 7))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = fresh.Close() })
	for _, inst := range insts[:3] {
		got := readAll(t, fresh, inst, 0)
		if len(got) != len(want[inst]) {
			t.Fatalf("%s: %d events in the new stream, %d in the old", inst, len(got), len(want[inst]))
		}
		for i := range got {
			sameEvent(t, got[i].Event, want[inst][i].Event)
		}
	}
	if _, err := fresh.LastSeq(ctx, gone); !errors.Is(err, ErrErased) {
		t.Fatalf("erased installation in the new stream: %v", err)
	}
	// The old keys open nothing of the new stream: no event, no wrap.
	info, err := fresh.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	byPseudo := map[string]events.InstallationID{}
	for _, inst := range insts {
		byPseudo[fresh.instPseudonym(inst)] = inst
	}
	for seq := info.State.FirstSeq; seq <= info.State.LastSeq; seq++ {
		m := rawGet(t, fresh, seq)
		if _, ok, err := events.EnvelopeDataKeyID(m.Data); err != nil || !ok {
			if seq != 1 { // the tombstone, written first
				t.Fatalf("new stream seq %d is not format 3: %v", seq, err)
			}
			continue
		}
		for _, inst := range insts {
			if _, err := events.Open(oldRing, inst, fresh.binding(m.Subject), m.Data); err == nil {
				t.Fatalf("the old ring opens new stream seq %d", seq)
			}
		}
	}
	for name, w := range bucketKeys(t, fresh) {
		pseudo, id, err := events.ParseDataKeyName(name)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := oldRing.UnwrapDataKey("EPOCHLOG_R2", byPseudo[pseudo], id, w); err == nil {
			t.Fatalf("the old ring unwraps %s", name)
		}
	}

	// The pointer: switch, a stale switch conflicts, rollback, finalize.
	a, err := src.ActiveStream(ctx, "EPOCHLOG")
	if err != nil || a.Revision != 0 || a.Current.Stream != "EPOCHLOG" {
		t.Fatalf("pointer before: %+v %v", a, err)
	}
	old := a.Current
	sw, err := src.SetActive(ctx, a, Active{Current: StreamRef{"EPOCHLOG_R2", "epochlog_r2"}, Previous: &old})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := src.SetActive(ctx, a, Active{Current: old}); !errors.Is(err, ErrSwitchConflict) {
		t.Fatalf("stale switch: %v", err)
	}
	rcfg := cfg
	rcfg.ResolveActive, rcfg.ReadOnly = true, true
	resolved := openLog(t, rcfg, ringOf(t, 7))
	if resolved.Stream() != "EPOCHLOG_R2" || len(readAll(t, resolved, instA, 0)) != len(want[instA]) {
		t.Fatalf("resolved to %s", resolved.Stream())
	}
	rb, err := src.SetActive(ctx, sw, Active{Current: *sw.Previous, Previous: &sw.Current})
	if err != nil {
		t.Fatal(err)
	}
	if back := openLog(t, rcfg, oldRing); back.Stream() != "EPOCHLOG" || len(readAll(t, back, instA, 0)) != len(want[instA]) {
		t.Fatalf("rolled back to %s", back.Stream())
	}
	// Switch again and finalize: the old stream and buckets are gone.
	sw, err = src.SetActive(ctx, rb, Active{Current: *rb.Previous, Previous: &rb.Current})
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.DeleteStreamAndBuckets(ctx, *sw.Previous); err != nil {
		t.Fatal(err)
	}
	if _, err := fresh.SetActive(ctx, sw, Active{Current: sw.Current}); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"EPOCHLOG", "KV_EPOCHLOG_KEYS", "OBJ_EPOCHLOG_SNAPSHOTS"} {
		if _, err := fresh.js.Stream(ctx, name); !errors.Is(err, jetstream.ErrStreamNotFound) {
			t.Fatalf("stream %s after finalize: %v", name, err)
		}
	}
	if got := readAll(t, fresh, instB, 0); len(got) != len(want[instB]) {
		t.Fatalf("new stream after finalize: %d events", len(got))
	}
}

// A read model built from the source before a re-seal holds the source's
// sequences. A writer on the new stream that it sets its floor for is
// refused (ErrMissingEvent, as for any checkpoint the stream does not
// hold), and the error says why here: the stream was re-sealed, and the
// cure is a rebuild. Until 2026-12-06 it said only that events were gone.
func TestMissingEventOnAResealedStreamNamesTheReseal(t *testing.T) {
	srv := natstestStart(t)
	ctx := context.Background()
	ring := ringOf(t, 1)
	src := openLog(t, testConfig(srv), ring)
	const gone events.InstallationID = "inst-gone"
	// The erased installation's events keep their sequences on the
	// source; the new stream holds only its tombstone, so instA's events
	// sit at lower sequences there.
	writeMixed(t, src, gone)
	if _, err := src.Erase(ctx, gone, nil); err != nil {
		t.Fatal(err)
	}
	writeMixed(t, src, instA)
	floor, err := src.LastSeq(ctx, instA)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := OpenBeside(ctx, src, "EPOCHLOG_R2", "epochlog_r2", ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	if _, err := Reseal(ctx, src, dst, &ResealOptions{Installations: []events.InstallationID{instA, gone}}); err != nil {
		t.Fatal(err)
	}
	if last, err := dst.LastSeq(ctx, instA); err != nil || last >= floor {
		t.Fatalf("instA's last event on the new stream: seq %d (%v), want below the source's %d", last, err, floor)
	}

	dst.ExpectThrough(instA, floor)
	q := events.Aggregate{Installation: instA, Type: events.AggDelivery, ID: "inbox"}
	_, err = dst.Append(ctx, 1, events.Event{Aggregate: q, Time: baseTime, Body: events.DeliveryEnqueued{Recipient: instA, Channel: "inbox", Sequence: 2,
		Payload: []byte("p2"), ExpiresAt: baseTime.Add(time.Hour), IdempotencyKey: "k2"}})
	if !errors.Is(err, ErrMissingEvent) {
		t.Fatalf("append after a floor from the source: %v, want ErrMissingEvent", err)
	}
	for _, want := range []string{"re-sealed from EPOCHLOG", "rebuild"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not say %q", err, want)
		}
	}
}
