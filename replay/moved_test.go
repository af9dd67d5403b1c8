package replay

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/internal/natstest"
)

// The installation's last event (the last of its aggregate; nothing links
// to it yet) republished at the stream's end and the original deleted:
// every event the read model holds is on the stream, the last at a later
// sequence. The read model's checkpoint names no event any more and its
// catch-up stops at the moved event, which it holds. Verify and Rebuild
// agree: verify reports drift of the checkpoint (ErrDrift, rebuild it),
// not a stream holding less (ErrBehind, keep it), and the rebuild takes
// the event at its new sequence, after which verify passes. Until
// 2026-12-06 verify said ErrBehind with "keep this database".
func TestVerifyAndRebuildAgreeOnAnEventMovedLater(t *testing.T) {
	ctx := context.Background()
	l, _ := newLog(t)
	writeHistory(t, l, instA, 2, 30)
	key := rawDBKey(t, 0xA1)
	live := filepath.Join(t.TempDir(), "a.db")
	mustRebuild(t, l, instA, live, key)
	last := lastSeq(t, l, instA)
	moved := natstest.MoveMsg(t, l.Conn(), l.Stream(), last)

	// The live read model cannot go on from this stream.
	db := openDB(t, live, key)
	_, _, err := CatchUp(ctx, l, instA, db, testReplayOptions())
	db.Close()
	if err == nil {
		t.Fatalf("catch-up of the read model at %d after its last event moved to %d: no error", last, moved)
	}
	before := readFile(t, live)

	_, err = Verify(ctx, l, instA, live, key, testReplayOptions())
	var de *DriftError
	if !errors.As(err, &de) || errors.Is(err, ErrBehind) || de.Table != "checkpoint" || !IsVerificationFailure(err) {
		t.Fatalf("verify with the last event moved from %d to %d: %v, want drift of the checkpoint (not ErrBehind)", last, moved, err)
	}
	if msg := err.Error(); !strings.Contains(msg, "rebuild") || !strings.Contains(msg, "loses nothing") {
		t.Fatalf("verify's error %q does not say a rebuild loses nothing", msg)
	}
	unchanged(t, live, before)

	res, err := Rebuild(ctx, l, instA, live, key, rebuildOpts(false))
	if err != nil {
		t.Fatalf("rebuild with the last event moved: %v", err)
	}
	if res.PreviousCheckpoint != last || res.Checkpoint != moved || res.Dropped != "" || res.KeptReplaced != "" {
		t.Fatalf("rebuild: checkpoint %d -> %d, dropped %q, kept %q; want %d -> %d, nothing dropped", res.PreviousCheckpoint, res.Checkpoint, res.Dropped, res.KeptReplaced, last, moved)
	}
	if _, err := Verify(ctx, l, instA, live, key, testReplayOptions()); err != nil {
		t.Fatalf("verify after the rebuild: %v", err)
	}
}
