package projections

import (
	"os"
	"path/filepath"
	"testing"
)

// Many small transactions keep the WAL near walTargetPages, checkpointed
// in the background, well under walSafetyPages, where the writer would
// checkpoint in a commit; Close waits for a running checkpoint and
// leaves no WAL.
func TestWALCheckpointedInBackground(t *testing.T) {
	recs := mlsSizedStream(t, "inst-a", 8, 300)
	path := filepath.Join(t.TempDir(), "wal.db")
	db := mustOpen(t, path, newKey(t), &Options{BatchSize: 1})
	const frame = 24 + PageSize
	var largest int64
	for i := 0; i < len(recs); i += 4 { // about 800 commits
		applyAll(t, db, recs[i:min(i+4, len(recs))])
		if fi, err := os.Stat(path + "-wal"); err == nil {
			largest = max(largest, fi.Size())
		}
	}
	db.ckpt.mu.Lock()
	every, lastErr := db.ckpt.every, db.ckpt.lastErr
	db.ckpt.mu.Unlock()
	if lastErr != nil {
		t.Fatalf("background checkpoint: %v", lastErr)
	}
	if every == firstCheckpointAfter {
		t.Fatalf("no background checkpoint learnt the pages per commit (every %d commits)", every)
	}
	if largest == 0 || largest/frame >= walSafetyPages*3/4 {
		t.Fatalf("the WAL reached %d pages; background checkpoints keep it near %d", largest/frame, walTargetPages)
	}
	t.Logf("WAL at most %d pages; a checkpoint every %d commits", largest/frame, every)
	if err := db.Close(); err != nil {
		t.Fatal(err)
	}
	if fi, err := os.Stat(path + "-wal"); err == nil && fi.Size() != 0 {
		t.Fatalf("WAL of %d bytes after Close", fi.Size())
	}
}
