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
	srv := natstestStart(t)
	ctx := context.Background()
	ring := ringOf(t, 1)
	src := openLog(t, testConfig(srv), ring)
	const gone events.InstallationID = "inst-gone"
	writeMixed(t, src, instA)
	writeMixed(t, src, gone)
	erased, err := src.Erase(ctx, gone, nil)
	if err != nil {
		t.Fatal(err)
	}
	dst, err := OpenBeside(ctx, src, "EPOCHLOG_R2", "epochlog_r2", ring)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dst.Close() })
	subj, err := dst.TombstoneSubject(gone)
	if err != nil {
		t.Fatal(err)
	}
	publishOn(t, dst, subj, []byte("not a tombstone"))

	res, err := Reseal(ctx, src, dst, &ResealOptions{Installations: []events.InstallationID{instA, gone}})
	if err != nil {
		t.Fatalf("reseal with garbage on the target's tombstone subject of %s: %v", gone, err)
	}
	if res.Tombstones != 1 {
		t.Fatalf("reseal: %+v, want 1 tombstone", res)
	}
	fresh := openLog(t, dst.config(), ring)
	var eerr *ErasedError
	if err := fresh.CheckNotErased(ctx, gone); !errors.As(err, &eerr) || !eerr.ErasedAt.Equal(erased.Tombstone.ErasedAt) {
		t.Fatalf("erased check of %s on the target: %v, want its *ErasedError", gone, err)
	}
}
