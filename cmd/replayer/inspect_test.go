package main

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// failingWriter fails every write, like a closed pipe or a full disk.
type failingWriter struct{}

func (failingWriter) Write([]byte) (int, error) { return 0, errors.New("no space left on device") }

// TestInspectWriteFailureIsNotVerificationFailure: exit 3 is for events
// that do not check out; an output that cannot be written is an I/O
// failure, exit 1.
func TestInspectWriteFailureIsNotVerificationFailure(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("inspect-a")
	createInstallation(t, l, dir, id)
	var errb bytes.Buffer
	code := run(ctx, ringEnv(failingWriter{}, &errb, nil), []string{"inspect", "--nats", srv.URL(), "--installation", string(id)})
	if code != exitFailure || strings.Contains(errb.String(), "verification failed") {
		t.Fatalf("inspect with an unwritable stdout: exit %d, want %d; stderr: %s", code, exitFailure, errb.String())
	}
	// The same listing to a working stdout succeeds.
	var out bytes.Buffer
	errb.Reset()
	if code := run(ctx, ringEnv(&out, &errb, nil), []string{"inspect", "--nats", srv.URL(), "--installation", string(id)}); code != exitOK || !strings.Contains(out.String(), "installation.created") {
		t.Fatalf("inspect: exit %d, stdout %s, stderr %s", code, out.String(), errb.String())
	}
}

// An id the stream holds no event of (a typo) is an error naming it, not
// an empty listing that exits 0.
func TestInspectOfAnUnknownInstallation(t *testing.T) {
	srv, l := startLog(t)
	createInstallation(t, l, t.TempDir(), "inspect-b")
	var out, errb bytes.Buffer
	code := run(context.Background(), ringEnv(&out, &errb, nil), []string{"inspect", "--nats", srv.URL(), "--installation", "inspect-bb"})
	if code == exitOK || !strings.Contains(errb.String(), "holds no event of installation inspect-bb") || out.Len() != 0 {
		t.Fatalf("inspect of an unknown id: exit %d, stdout %q, stderr %q", code, out.String(), errb.String())
	}
}
