package replay

import (
	"context"
	"crypto/sha256"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/projections"
)

// sha256File is the SHA-256 of the file at path.
func sha256File(t *testing.T, path string) [sha256.Size]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}

// TestSnapshotOfAnotherInstallationIsNotImported: a snapshot stored as
// instA's that holds instB's read model (at the checkpoint it is stored
// at) is passed over before anything is written: the fresh read model it
// was to be imported into is left byte for byte as it was, the Warn names
// both installations, and a rebuild of instA replays from the start. It
// was imported and committed first, and only then found to be another
// installation's, which failed the whole replay ("left the fresh
// database non-empty").
func TestSnapshotOfAnotherInstallationIsNotImported(t *testing.T) {
	l, _, logs := observedLog(t)
	ctx := context.Background()
	// instB's history first: its checkpoint is within instA's history.
	writeHistory(t, l, instB, 2, 40)
	writeHistory(t, l, instA, 2, 40)
	key := rawDBKey(t, 0x5A)

	// instB's snapshot, stored as instA's at instB's checkpoint.
	liveB := filepath.Join(t.TempDir(), "b.db")
	if _, err := Rebuild(ctx, l, instB, liveB, key, &RebuildOptions{Options: *fromStart()}); err != nil {
		t.Fatal(err)
	}
	snapB, err := Snapshot(ctx, l, instB, liveB, key, snapshotOpts())
	if err != nil {
		t.Fatal(err)
	}
	plain, err := l.OpenSnapshot(ctx, instB, snapB.Checkpoint)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := l.PutSnapshot(ctx, instA, snapB.Checkpoint, plain); err != nil {
		t.Fatal(err)
	}
	refs, err := l.Snapshots(ctx, instA)
	if err != nil || len(refs) != 1 || refs[0].Checkpoint != snapB.Checkpoint {
		t.Fatalf("instA's snapshots: %+v %v", refs, err)
	}

	// A fresh read model, closed (its WAL folded in) and hashed.
	path := filepath.Join(t.TempDir(), "fresh.db")
	fresh, err := projections.Open(path, key, &projections.Options{Argon2: fastArgon2})
	if err != nil {
		t.Fatal(err)
	}
	if err := fresh.Close(); err != nil {
		t.Fatal(err)
	}
	before := sha256File(t, path)

	fresh = openDB(t, path, key)
	base, err := importSnapshot(ctx, l, instA, fresh, refs, snapB.Checkpoint, logs.Logger())
	if cerr := fresh.Close(); cerr != nil {
		t.Fatal(cerr)
	}
	if err != nil || base != nil {
		t.Fatalf("import of instA's only snapshot, which is instB's: base %+v, %v; want none and no error (replay from the start)", base, err)
	}
	if _, err := os.Stat(path + "-wal"); err == nil {
		t.Fatalf("%s-wal is left after the close", path)
	}
	if after := sha256File(t, path); after != before {
		t.Fatalf("the fresh read model changed (sha256 %x, was %x): the snapshot of another installation was written into it", after, before)
	}
	warns := logs.Find(t, "WARN", "snapshot cannot be used")
	if len(warns) != 1 {
		t.Fatalf("want one Warn for the snapshot:\n%s", logs.String())
	}
	if msg := warns[0].Str("err"); !strings.Contains(msg, string(instA)) || !strings.Contains(msg, string(instB)) {
		t.Fatalf("the Warn's error %q does not name both %s and %s", msg, instA, instB)
	}

	// A rebuild of instA passes over it and replays from the start.
	res, err := Rebuild(ctx, l, instA, filepath.Join(t.TempDir(), "a.db"), key, &RebuildOptions{Options: *testReplayOptions()})
	if err != nil || res.FromSnapshot != 0 {
		t.Fatalf("rebuild of instA past instB's snapshot: %+v, %v; want from the start", res, err)
	}
}
