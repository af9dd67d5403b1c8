package replay

import (
	"context"
	"encoding/hex"
	"errors"
	"maps"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// TestResealRetained re-seals a stream where one installation's history
// retention trimmed (a day shredded, compacted) and another's is whole:
// the trimmed history is carried by its snapshot into the new stream
// under a new keyring, and rebuilds there give the live read model (but
// for the checkpoint, the new stream's sequence); a replay from the
// start names the compaction; the installation appends on in the new
// stream, also to aggregates none of whose events were copied; running
// it again changes nothing; a trimmed installation without a snapshot is
// refused before anything is copied.
func TestResealRetained(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t)
	h := retainHistory(t, l, 30)
	writeHistory(t, l, instB, 1, 12)
	key := rawDBKey(t, 0x44)
	live := filepath.Join(t.TempDir(), "a.db")
	if _, err := Rebuild(ctx, l, instA, live, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatal(err)
	}
	db := openDB(t, live, key)
	defer db.Close()
	if _, err := Retain(ctx, l, instA, db, retainPolicy, &RetainOptions{Options: *testReplayOptions(), Now: func() time.Time { return retainNow }}); err != nil {
		t.Fatal(err)
	}
	if _, err := Compact(ctx, l, instA, nil); err != nil {
		t.Fatal(err)
	}
	// A tail after the snapshot.
	h.t = retainNow
	h.messages(5, 2)
	if _, err := h.flush(ctx, l); err != nil {
		t.Fatal(err)
	}
	if _, _, err := CatchUp(ctx, l, instA, db, testReplayOptions()); err != nil {
		t.Fatal(err)
	}
	if trimmed, err := l.HistoryTrimmed(ctx, instA); err != nil || !trimmed {
		t.Fatalf("instA trimmed: %v %v", trimmed, err)
	}
	if trimmed, err := l.HistoryTrimmed(ctx, instB); err != nil || trimmed {
		t.Fatalf("instB trimmed: %v %v", trimmed, err)
	}

	newRing := keyring(t, 7, 0x77)
	dst, err := eventlog.OpenBeside(ctx, l, "EPOCHLOG_R", "epochlog_r", newRing)
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	insts := []events.InstallationID{instA, instB}
	res, err := Reseal(ctx, l, dst, &eventlog.ResealOptions{Installations: insts})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := res.Anchors[instA]; !ok || len(res.Anchors) != 1 || res.Copied == 0 || res.Verified != res.Copied {
		t.Fatalf("reseal: %+v", res)
	}
	again, err := Reseal(ctx, l, dst, &eventlog.ResealOptions{Installations: insts})
	if err != nil || again.Copied != 0 || again.Skipped != res.Copied || again.Anchors[instA] != res.Anchors[instA] {
		t.Fatalf("reseal again: %+v %v", again, err)
	}

	fresh := openLog(t, eventlog.Config{NATSURL: srv.URL(), Stream: "EPOCHLOG_R", SubjectPrefix: "epochlog_r"}, keyring(t, 7, 0x77))
	liveDigest, err := db.Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	withoutCheckpoint := func(d projections.Digest) projections.Digest {
		d.Tables = slices.DeleteFunc(slices.Clone(d.Tables), func(t projections.TableDigest) bool { return t.Name == "checkpoint" })
		return d
	}
	p := filepath.Join(t.TempDir(), "from-new.db")
	if _, err := Rebuild(ctx, fresh, instA, p, key, &RebuildOptions{Options: *testReplayOptions()}); err != nil {
		t.Fatalf("rebuild of the carried history from the new stream: %v", err)
	}
	d, cp := digestOf(t, p, key)
	if diff := projections.Compare(withoutCheckpoint(d), withoutCheckpoint(liveDigest)); diff != nil {
		t.Fatalf("rebuild from the new stream differs from the live read model: %v", diff)
	}
	if last, err := fresh.LastSeq(ctx, instA); err != nil || cp != last {
		t.Fatalf("rebuilt to checkpoint %d, the new stream's last event of %s is %d (%v)", cp, instA, last, err)
	}
	o := *testReplayOptions()
	o.FromStart = true
	if _, err := Rebuild(ctx, fresh, instA, filepath.Join(t.TempDir(), "full.db"), key, &RebuildOptions{Options: o}); !errors.Is(err, eventlog.ErrCompacted) {
		t.Fatalf("rebuild of the carried history from the start: %v, want ErrCompacted", err)
	}
	pb := filepath.Join(t.TempDir(), "b.db")
	if _, err := Rebuild(ctx, fresh, instB, pb, key, &RebuildOptions{Options: o}); err != nil {
		t.Fatalf("rebuild of the whole history from the new stream: %v", err)
	}

	// Appends go on in the new stream: to an aggregate whose last events
	// came over, and to one none of whose events did (a key package).
	rebuilt := openDB(t, p, key)
	defer rebuilt.Close()
	kp := events.Aggregate{Installation: instA, Type: events.AggKeyPackage}
	pkgs, err := rebuilt.AvailableKeyPackages(ctx)
	if err != nil || len(pkgs) == 0 {
		t.Fatalf("key packages in the rebuilt read model: %d %v", len(pkgs), err)
	}
	kp.ID = hex.EncodeToString(pkgs[0].Ref)
	pos, err := rebuilt.Position(ctx, kp)
	if err != nil || pos == 0 {
		t.Fatalf("key package position %d %v", pos, err)
	}
	if _, err := fresh.Append(ctx, pos, events.Event{Aggregate: kp, Time: retainNow, Body: events.KeyPackageConsumed{Ref: pkgs[0].Ref, GroupID: genGroupID(0), LastResort: pkgs[0].LastResort}}); err != nil {
		t.Fatalf("append to a carried aggregate with no event in the new stream: %v", err)
	}
	if _, err := fresh.Append(ctx, pos, events.Event{Aggregate: kp, Time: retainNow, Body: events.KeyPackageConsumed{Ref: pkgs[0].Ref, GroupID: genGroupID(1), LastResort: pkgs[0].LastResort}}); !errors.Is(err, eventlog.ErrConflict) {
		t.Fatalf("a second append at the same position: %v, want ErrConflict", err)
	}
	if _, _, err := CatchUp(ctx, fresh, instA, rebuilt, testReplayOptions()); err != nil {
		t.Fatalf("catch up on the new stream: %v", err)
	}

	// A trimmed installation without a snapshot: refused before copying.
	const instC events.InstallationID = "inst-carol"
	writeHistory(t, l, instC, 1, 6)
	until := baseTime.Add(48 * time.Hour)
	ps, _, err := l.OldDayPeriods(ctx, instC, events.ClassMessages, []string{hex.EncodeToString(genGroupID(0))}, until, until)
	if err != nil || len(ps) == 0 {
		t.Fatalf("periods of %s: %v %v", instC, ps, err)
	}
	if _, err := l.ShredDataKeys(ctx, instC, []events.DataKeyID{ps[0].ID}); err != nil {
		t.Fatal(err)
	}
	if _, err := Reseal(ctx, l, dst, &eventlog.ResealOptions{Installations: []events.InstallationID{instA, instB, instC}}); !errors.Is(err, ErrNoSnapshotToReseal) {
		t.Fatalf("reseal of a trimmed installation without a snapshot: %v, want ErrNoSnapshotToReseal", err)
	}
	if n, err := fresh.LastSeq(ctx, instC); err != nil || n != 0 {
		t.Fatalf("the refused reseal wrote %s's events to the new stream (last seq %d, %v)", instC, n, err)
	}
}

// After a re-seal the new stream's sequences are lower than those a read
// model of the old one was checkpointed at. A rebuild over that read model
// from the new stream compares what it holds by aggregate positions,
// which the re-seal keeps: it needs no --force (which would switch the
// check off), and events the new stream lacks are still refused.
func TestRebuildAfterAResealComparesPositions(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t)
	writeHistory(t, l, instB, 1, 40) // first: instA's sequences on the old stream are the higher
	writeHistory(t, l, instA, 1, 20)
	key := rawDBKey(t, 0x45)
	live := filepath.Join(t.TempDir(), "a.db")
	mustRebuild(t, l, instA, live, key)
	dst, err := eventlog.OpenBeside(ctx, l, "EPOCHLOG_R", "epochlog_r", keyring(t, 7, 0x77))
	if err != nil {
		t.Fatal(err)
	}
	// instB erased: its events are not copied, so instA's come first on
	// the new stream (as after purges).
	if _, err := l.Erase(ctx, instB, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Reseal(ctx, l, dst, &eventlog.ResealOptions{Installations: []events.InstallationID{instA, instB}}); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	r := openLog(t, eventlog.Config{NATSURL: srv.URL(), Stream: "EPOCHLOG_R", SubjectPrefix: "epochlog_r"}, keyring(t, 7, 0x77))
	if r.ResealedFrom() != l.Stream() {
		t.Fatalf("the new stream records its source as %q, want %s", r.ResealedFrom(), l.Stream())
	}
	_, liveCP := digestOf(t, live, key)
	if last := lastSeq(t, r, instA); last >= liveCP {
		t.Fatalf("instA's last event on the new stream at %d, the read model's checkpoint %d: want it lower for this test", last, liveCP)
	}
	if _, err := Rebuild(ctx, r, instA, live, key, rebuildOpts(false)); err != nil {
		t.Fatalf("rebuild over the old stream's read model from the new stream, unforced: %v", err)
	}
	before := readFile(t, live)
	deleteMsg(t, r, lastSeq(t, r, instA))
	if _, err := Rebuild(ctx, r, instA, live, key, rebuildOpts(false)); !errors.Is(err, ErrBehind) {
		t.Fatalf("rebuild from a new stream that lost an event: %v, want ErrBehind", err)
	}
	unchanged(t, live, before)
}

// A re-seal target made by an older replayer records no source in its
// metadata; the active-stream pointer that switched to it names the
// source. A rebuild over a read model of the source from it compares by
// aggregate positions as from a target that records its source (it was
// refused with ErrBehind, exit 3, and status called every read model
// ahead of the stream); a rollback's pointer (the older stream current)
// makes no stream a target.
func TestRebuildAfterAnOlderResealComparesPositions(t *testing.T) {
	ctx := context.Background()
	l, srv := newLog(t)
	writeHistory(t, l, instB, 1, 40)
	writeHistory(t, l, instA, 1, 20)
	key := rawDBKey(t, 0x46)
	live := filepath.Join(t.TempDir(), "a.db")
	mustRebuild(t, l, instA, live, key)
	dst, err := eventlog.OpenBeside(ctx, l, "EPOCHLOG_R", "epochlog_r", keyring(t, 7, 0x77))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.Erase(ctx, instB, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := Reseal(ctx, l, dst, &eventlog.ResealOptions{Installations: []events.InstallationID{instA, instB}}); err != nil {
		t.Fatal(err)
	}
	dst.Close()
	// What an older replayer left: no source in the target's metadata,
	// a pointer without sequences.
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	s, err := js.Stream(ctx, "EPOCHLOG_R")
	if err != nil {
		t.Fatal(err)
	}
	cfg := s.CachedInfo().Config
	cfg.Metadata = maps.Clone(cfg.Metadata)
	delete(cfg.Metadata, "epochlog_reseal_of")
	if _, err := js.UpdateStream(ctx, cfg); err != nil {
		t.Fatal(err)
	}
	base := eventlog.StreamRef{Stream: l.Stream(), SubjectPrefix: "epochlog"}
	target := eventlog.StreamRef{Stream: "EPOCHLOG_R", SubjectPrefix: "epochlog_r"}
	a, err := l.SetActive(ctx, eventlog.Active{Base: l.Stream()}, eventlog.Active{Current: target, Previous: &base})
	if err != nil {
		t.Fatal(err)
	}
	r := openLog(t, eventlog.Config{NATSURL: srv.URL(), Stream: "EPOCHLOG_R", SubjectPrefix: "epochlog_r", ReadOnly: true}, keyring(t, 7, 0x77))
	if r.ResealedFrom() != l.Stream() {
		t.Fatalf("the older re-seal's target is taken as re-sealed from %q, want %s", r.ResealedFrom(), l.Stream())
	}
	if _, err := Rebuild(ctx, r, instA, live, key, rebuildOpts(false)); err != nil {
		t.Fatalf("rebuild over the old stream's read model from an older re-seal's target, unforced: %v", err)
	}

	// Rolled back: the base is current again, and no re-seal's target.
	if _, err := l.SetActive(ctx, a, eventlog.Active{Current: base, Previous: &target}); err != nil {
		t.Fatal(err)
	}
	b := openLog(t, eventlog.Config{NATSURL: srv.URL(), ReadOnly: true}, keyring(t, 1, 0x11))
	if src := b.ResealedFrom(); src != "" {
		t.Fatalf("after a rollback the base stream is taken as re-sealed from %q", src)
	}
}

// TestResealRefusesACarrierThatDidNotKeepOutputs: a trimmed history is
// not carried by a snapshot that did not keep own commit outputs the
// history before it still holds (a follower's read model kept at schema
// 8): the re-seal copies nothing before the snapshot, and the new stream
// would have lost them. Until 2026-12-06 it was carried, and a rebuild
// from the new stream lacked the Welcome.
func TestResealRefusesACarrierThatDidNotKeepOutputs(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	snapshotWithoutOutputs(t, l, true)
	if _, err := Compact(ctx, l, instA, &CompactOptions{History: KeepNone}); err != nil {
		t.Fatal(err) // through the older snapshot, which kept them
	}
	dst, err := eventlog.OpenBeside(ctx, l, "EPOCHLOG_R", "epochlog_r", keyring(t, 7, 0x77))
	if err != nil {
		t.Fatal(err)
	}
	defer dst.Close()
	_, err = Reseal(ctx, l, dst, &eventlog.ResealOptions{Installations: []events.InstallationID{instA}})
	if !errors.Is(err, ErrNoSnapshotToReseal) || !errors.Is(err, projections.ErrOutputsNotKept) {
		t.Fatalf("reseal carried by a snapshot that did not keep the outputs: %v; want ErrNoSnapshotToReseal and ErrOutputsNotKept", err)
	}
	if n, err := dst.LastSeq(ctx, instA); err != nil || n != 0 {
		t.Fatalf("the refused reseal wrote %s's events to the new stream (last seq %d, %v)", instA, n, err)
	}
}
