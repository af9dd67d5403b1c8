package eventlog

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// A read-only Log creates and changes nothing: a mistyped data directory
// or stream is an error naming it, an existing stream keeps its settings,
// and appends are refused.
func TestReadOnlyCreatesNothing(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	typo := filepath.Join(dir, "datta")
	cfg := DefaultConfig(typo)
	cfg.EmbeddedInProcess, cfg.ReadOnly = true, true
	if _, err := Open(ctx, cfg, keyring(t, 1, 0x11)); !errors.Is(err, ErrNoStore) {
		t.Fatalf("read-only open of a missing data directory: %v, want ErrNoStore", err)
	}
	if _, err := os.Stat(typo); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("read-only open created %s: %v", typo, err)
	}

	l, srv := newLog(t)
	mustAppend(t, l, 0, msg(group(instA, "ro"), 1, "one"))
	before, err := l.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	rcfg := testConfig(srv)
	rcfg.ReadOnly, rcfg.Replicas, rcfg.MaxAge = true, 1, Unbounded
	ro := openLog(t, rcfg, keyring(t, 1, 0x11))
	if recs := readAll(t, ro, instA, 0); len(recs) != 1 {
		t.Fatalf("read-only read: %d records, want 1", len(recs))
	}
	if _, err := ro.Append(ctx, 1, msg(group(instA, "ro"), 2, "two")); !errors.Is(err, ErrReadOnly) {
		t.Fatalf("append on a read-only log: %v, want ErrReadOnly", err)
	}
	after, err := l.stream.Info(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if after.Config.MaxAge != before.Config.MaxAge || after.Config.Replicas != before.Config.Replicas || after.Created != before.Created {
		t.Fatalf("read-only open changed the stream: %+v -> %+v", before.Config, after.Config)
	}
	rcfg.Stream = "NOPE"
	if _, err := Open(ctx, rcfg, keyring(t, 1, 0x11)); !errors.Is(err, ErrNoStream) {
		t.Fatalf("read-only open of a missing stream: %v, want ErrNoStream", err)
	}
}
