package eventlog

import (
	"context"
	"errors"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// TestResealCopiesATombstoneOverGarbageOnTheTarget: a message that is
// not the tombstone (anyone who may publish on the target's subjects can
// put one there; the subject is the pseudonym the source's readers see
// under the target's prefix when the keyring is kept) is on an erased
// installation's tombstone subject in the target before the reseal
// copies its tombstone. The copy is written after it, and the target
// says erased. Until 2026-12-07 the copy was written only at subject
// sequence 0: every reseal failed on it for good ("the publish was not
// stored and no tombstone is there").
func TestResealCopiesATombstoneOverGarbageOnTheTarget(t *testing.T) {
	ctx := context.Background()
	src, dst, ring, erased, subj := resealOfAnErased(t)
	publishOn(t, dst, subj, []byte("not a tombstone"))

	res, err := Reseal(ctx, src, dst, &ResealOptions{Installations: []events.InstallationID{instA, resealGone}})
	if err != nil {
		t.Fatalf("reseal with garbage on the target's tombstone subject of %s: %v", resealGone, err)
	}
	if res.Tombstones != 1 {
		t.Fatalf("reseal: %+v, want 1 tombstone", res)
	}
	fresh := openLog(t, dst.config(), ring)
	var eerr *ErasedError
	if err := fresh.CheckNotErased(ctx, resealGone); !errors.As(err, &eerr) || !eerr.ErasedAt.Equal(erased.Tombstone.ErasedAt) {
		t.Fatalf("erased check of %s on the target: %v, want its *ErasedError", resealGone, err)
	}
}

// TestResealUnderAPublisherOnTheTargetsTombstoneSubject: a reseal copies
// an erased installation's tombstone onto the target while a publisher
// puts messages on that tombstone subject as fast as it can; the target
// then says erased. Until this test every try expected the subject's
// last sequence the scan had seen, and the reseal failed for as long as
// the publisher went on.
func TestResealUnderAPublisherOnTheTargetsTombstoneSubject(t *testing.T) {
	ctx := context.Background()
	src, dst, ring, erased, subj := resealOfAnErased(t)
	for range 300 {
		publishOn(t, dst, subj, []byte("not a tombstone"))
	}
	stop := floodWhile(dst, subj)
	_, err := Reseal(ctx, src, dst, &ResealOptions{Installations: []events.InstallationID{instA, resealGone}})
	stop()
	if err != nil {
		t.Fatalf("reseal under a publisher on the target's tombstone subject of %s: %v", resealGone, err)
	}
	var eerr *ErasedError
	if err := openLog(t, dst.config(), ring).CheckNotErased(ctx, resealGone); !errors.As(err, &eerr) || !eerr.ErasedAt.Equal(erased.Tombstone.ErasedAt) {
		t.Fatalf("erased check of %s on the target: %v, want its *ErasedError", resealGone, err)
	}
}

// resealGone is the installation erased in the source of resealOfAnErased.
const resealGone events.InstallationID = "inst-gone"

// resealOfAnErased writes instA's and resealGone's events on a source
// stream, erases resealGone there, and opens a re-seal target beside it:
// the source, the target, the keyring of both, the erase and
// resealGone's tombstone subject in the target.
func resealOfAnErased(t *testing.T) (src, dst *Log, ring *events.Keyring, erased *Erased, subj string) {
	t.Helper()
	ctx := context.Background()
	srv := natstestStart(t)
	ring = ringOf(t, 1)
	src = openLog(t, testConfig(srv), ring)
	writeMixed(t, src, instA)
	writeMixed(t, src, resealGone)
	erased, err := src.Erase(ctx, resealGone, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst, err = OpenBeside(ctx, src, "EPOCHLOG_R2", "epochlog_r2", ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	if subj, err = dst.TombstoneSubject(resealGone); err != nil {
		t.Fatal(err)
	}
	return src, dst, ring, erased, subj
}
