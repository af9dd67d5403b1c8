package replay

import (
	"context"
	"errors"
	"path/filepath"
	"sync"
	"testing"
)

// A verify takes no lock: it may run while a rebuild (rekey, migrate)
// of the same read model holds it. It removed every "<db>.rebuild-*"
// beside the read model as a leftover, the running rebuild's database
// under construction among them, and that rebuild then failed at its
// swap ("stat <db>.rebuild-...: no such file or directory"), its work
// lost. Leftovers are the writer's to remove, under its lock.
func TestVerifyDuringARebuildLeavesItsBuildAlone(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 1, 40)
	key := rawDBKey(t, 0xA1)
	live := filepath.Join(t.TempDir(), "a.db")
	mustRebuild(t, l, instA, live, key)

	ctx := context.Background()
	var once sync.Once
	var verr error
	opts := rebuildOpts(false)
	opts.BatchSize = 5
	opts.SkipMLSCheck = true
	opts.Progress = func(Progress) {
		once.Do(func() {
			if m, _ := filepath.Glob(live + ".rebuild-*"); len(m) == 0 {
				verr = errors.New("no rebuild-* file beside the read model while it rebuilds")
				return
			}
			_, verr = Verify(ctx, l, instA, live, key, testReplayOptions())
		})
	}
	res, err := Rebuild(ctx, l, instA, live, key, opts)
	if verr != nil {
		t.Fatalf("verify during the rebuild: %v", verr)
	}
	if err != nil {
		t.Fatalf("rebuild with a verify run meanwhile: %v", err)
	}
	if res.Replayed == 0 {
		t.Fatalf("rebuild replayed nothing: %+v", res)
	}
	if _, err := Verify(ctx, l, instA, live, key, testReplayOptions()); err != nil {
		t.Fatalf("verify after the rebuild: %v", err)
	}
	noLeftovers(t, live)
}
