package replay

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/epochlog/epochlog/projections"
)

// A --db that names something other than a regular file (a named pipe, a
// device such as /dev/null) is no read model: every operation refuses it
// with ErrNotOurs, naming it, and leaves it where it was. It has size 0,
// so a rebuild took it for a missing database, "recovered" one and
// renamed it over the pipe or device (as root, rebuild --db /dev/null
// replaced /dev/null); rekey, migrate, verify, snapshot and retain said
// "no such database" of it.
func TestOperationsRefuseWhatIsNoRegularFile(t *testing.T) {
	l, _ := newLog(t)
	writeHistory(t, l, instA, 1, 5)
	key := rawDBKey(t, 0xA1)
	newKey := rawDBKey(t, 0xA2)
	path := filepath.Join(t.TempDir(), "a.db")
	if err := syscall.Mkfifo(path, 0o600); err != nil {
		t.Skipf("cannot make a named pipe: %v", err)
	}
	ctx := context.Background()
	for _, tc := range []struct {
		name string
		op   func() error
	}{
		{"rebuild", func() error { _, err := Rebuild(ctx, l, instA, path, key, rebuildOpts(false)); return err }},
		{"rebuild --force", func() error { _, err := Rebuild(ctx, l, instA, path, key, rebuildOpts(true)); return err }},
		{"rekey", func() error { _, err := Rekey(ctx, l, instA, path, key, newKey, testReplayOptions()); return err }},
		{"migrate", func() error { _, err := Migrate(ctx, l, instA, path, key, newKey, testReplayOptions()); return err }},
		{"verify", func() error { _, err := Verify(ctx, l, instA, path, key, testReplayOptions()); return err }},
		{"snapshot", func() error { _, err := Snapshot(ctx, l, instA, path, key, nil); return err }},
		{"retain", func() error { _, err := RetainFile(ctx, l, instA, path, key, RetentionPolicy{}, nil); return err }},
	} {
		name := tc.name
		err := tc.op()
		if !errors.Is(err, projections.ErrNotOurs) || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "not a regular file") {
			t.Errorf("%s of a named pipe: %v, want ErrNotOurs naming %s, not a regular file", name, err, path)
		}
		st, err := os.Lstat(path)
		if err != nil || st.Mode().Type() != os.ModeNamedPipe {
			t.Fatalf("after %s the named pipe is gone: %v, %v", name, st, err)
		}
	}
}
