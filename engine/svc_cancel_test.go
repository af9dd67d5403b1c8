package engine

import (
	"context"
	"errors"
	"io/fs"
	"os"
	"testing"

	"github.com/epochlog/epochlog/projections"
)

// TestCreateInstallationUnderAnEndedContextLeavesNoFile: a create whose
// context has ended records nothing and removes the read model file it
// made, so a create again under another key (a service that draws one
// per try) works; the file was left under the first key, and every
// later create or open under another was ErrWrongKey.
func TestCreateInstallationUnderAnEndedContextLeavesNoFile(t *testing.T) {
	b := newBackend(t)
	ctx := context.Background()
	ended, cancel := context.WithCancel(ctx)
	cancel()
	k1, _ := projections.GenerateRawKey()
	if _, err := CreateInstallation(ended, b.log, "svc", b.dbPath("svc"), k1, b.opts()); err == nil || errors.Is(err, ErrOutcomeUnknown) {
		t.Fatalf("create under an ended context: %v; want a plain error", err)
	}
	if _, err := os.Stat(b.dbPath("svc")); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("read model file after a create that recorded nothing: %v", err)
	}
	k2, _ := projections.GenerateRawKey()
	in, err := CreateInstallation(ctx, b.log, "svc", b.dbPath("svc"), k2, b.opts())
	if err != nil {
		t.Fatalf("create again under another key: %v", err)
	}
	b.insts["svc"], b.keys["svc"] = in, k2
	b.checkRebuild("svc")
}
