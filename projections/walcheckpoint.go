package projections

import (
	"context"
	"sync"
)

// Checkpoints after the commit, not in it. SQLite checkpoints the WAL
// into the database file in the committing transaction once the WAL
// holds 1,000 pages: the commit that crosses the line pays for all of
// them (at 1,000 members, 18 ms against 1.2 ms for the median commit of
// a processed commit, and about 0.8 ms of the mean). The projector's
// writer now checkpoints in a commit only past walSafetyPages; the read
// model checkpoints itself about every walTargetPages, in a goroutine,
// right after the commit has returned, learning from each checkpoint how
// many pages a commit writes. It runs on the writer's connection, so the
// next write waits for it if it comes before the checkpoint is done: a
// caller's commit no longer does. (Checkpointed from a reader
// connection, alongside the writer, the WAL never started over in a test
// of 800 commits and grew to the writer's own threshold: SQLite rewinds
// it only in a write transaction that begins with it fully
// checkpointed.)
const (
	walTargetPages = 1000 // SQLite's own default threshold
	walSafetyPages = 4 * walTargetPages
	// firstCheckpointAfter is the commits before the first background
	// checkpoint, before any pages per commit are known.
	firstCheckpointAfter = 64
)

// checkpointer runs the background checkpoints of one read model.
type checkpointer struct {
	mu      sync.Mutex
	running bool
	closed  bool
	commits int  // since the last checkpoint started
	applied bool // a transaction of Apply has committed (Close reports a failed checkpoint)
	every   int  // commits between checkpoints
	wg      sync.WaitGroup
	// lastErr is the last checkpoint's failure (nil: it succeeded). A
	// failed one costs nothing but WAL: the writer still checkpoints
	// past walSafetyPages.
	lastErr error
}

// committed counts a committed transaction and starts a checkpoint when
// enough have gone by and none is running.
func (db *DB) committed() {
	c := &db.ckpt
	c.mu.Lock()
	defer c.mu.Unlock()
	c.commits++
	c.applied = true
	if c.every == 0 {
		c.every = firstCheckpointAfter
	}
	if c.running || c.closed || c.commits < c.every {
		return
	}
	n := c.commits
	c.running, c.commits = true, 0
	c.wg.Add(1)
	go db.checkpoint(n)
}

// checkpoint checkpoints the WAL after n commits, and sets how many
// commits the next one waits for from the pages those n wrote.
func (db *DB) checkpoint(n int) {
	c := &db.ckpt
	defer c.wg.Done()
	var busy, frames, done int
	err := db.w.QueryRowContext(context.Background(), `PRAGMA wal_checkpoint(PASSIVE)`).Scan(&busy, &frames, &done)
	c.mu.Lock()
	defer c.mu.Unlock()
	c.running, c.lastErr = false, err
	if err != nil || frames <= 0 {
		return
	}
	// frames counts the WAL since it last started over, which the first
	// write after a complete checkpoint does: about the n commits' pages.
	perCommit := max(frames/n, 1)
	c.every = min(max(walTargetPages/perCommit, 1), 1024)
}

// stopCheckpoints waits for a running checkpoint and starts no other.
func (db *DB) stopCheckpoints() {
	db.ckpt.mu.Lock()
	db.ckpt.closed = true
	db.ckpt.mu.Unlock()
	db.ckpt.wg.Wait()
}
