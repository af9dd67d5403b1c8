package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
)

// TestRetainRefusesAnErasedInstallation: replayer retain of what is left
// of an erased installation (its read model) is refused as snapshot,
// compact and follow refuse it: exit 1 naming the installation and its
// erase, the read model's bytes unchanged, whatever the policy. Until
// 2026-12-07 it exited 0 saying "nothing left to shred".
func TestRetainRefusesAnErasedInstallation(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("retain-erased")
	clock := time.Now().Add(-72 * time.Hour)
	in, db, keyFile, _ := keyedInstallation(t, l, dir, id, &engine.InstallationOptions{Now: func() time.Time { return clock }})
	gid := []byte("erased-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Send(ctx, gid, []byte("old"), nil); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := l.Erase(ctx, id, &eventlog.EraseOptions{By: "test"}); err != nil {
		t.Fatal(err)
	}
	fileSum := func() [32]byte {
		t.Helper()
		b, err := os.ReadFile(db)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	before := fileSum()
	for _, policy := range [][]string{{"--messages", "1d"}, {"--messages", "none", "--compact"}, {"--past-epochs", "none"}} {
		var out, errb bytes.Buffer
		args := append([]string{"retain", "--nats", srv.URL(), "--installation", string(id), "--db", db, "--db-key-file", keyFile}, policy...)
		code := run(ctx, ringEnv(&out, &errb, nil), args)
		if code != exitFailure || !strings.Contains(errb.String(), "installation retain-erased was erased at") || !strings.Contains(errb.String(), "nothing was changed") {
			t.Errorf("retain %v of an erased installation: exit %d, stdout %q, stderr %q; want exit %d naming the erase", policy, code, out.String(), errb.String(), exitFailure)
		}
		if out.Len() != 0 {
			t.Errorf("retain %v of an erased installation printed a result: %q", policy, out.String())
		}
		if fileSum() != before {
			t.Errorf("a refused retain %v changed the read model", policy)
		}
	}
}
