package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"testing"
	"time"

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

// A compacted history (retain, compact) is named as such by inspect, as
// by rebuild --from-start and verify --mls: exit 1 saying "compacted" and
// from where the listing can start. Read from the start (or from any
// sequence the compaction covers), the events left linked to the deleted
// ones, and inspect said "verification failed: ... an event of the
// installation's history is missing", exit 3, as for a stream that lost
// or was robbed of events.
func TestInspectOfACompactedHistory(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	id := events.InstallationID("inspect-compacted")
	in, db, keyFile, _ := keyedInstallation(t, l, t.TempDir(), id, nil)
	defer in.Close()
	gid := []byte("inspect-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := in.Send(ctx, gid, []byte("hello"), nil); err != nil {
			t.Fatal(err)
		}
	}
	cli := func(ctx context.Context, args ...string) (int, string, string) {
		t.Helper()
		var out, errb bytes.Buffer
		args = append(args, "--nats", srv.URL(), "--installation", string(id))
		return run(ctx, ringEnv(&out, &errb, nil), args), out.String(), errb.String()
	}
	if code, _, errs := cli(ctx, "snapshot", "--db", db, "--db-key-file", keyFile); code != exitOK {
		t.Fatalf("snapshot: exit %d: %s", code, errs)
	}
	through, err := l.LastSeq(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := in.Send(ctx, gid, []byte("after the snapshot"), nil); err != nil {
		t.Fatal(err)
	}
	if code, out, errs := cli(ctx, "compact", "--history", "none"); code != exitOK || strings.Contains(out, " 0 events deleted") {
		t.Fatalf("compact --history none: exit %d: %s%s", code, out, errs)
	}
	want := fmt.Sprintf("--from %d", through+1)
	for _, from := range []string{"0", "2", strconv.FormatUint(through, 10)} {
		for _, follow := range []bool{false, true} {
			args := []string{"inspect", "--from", from}
			if follow {
				args = append(args, "--follow")
			}
			// A follow that waited instead would end at this bound.
			fctx, cancel := context.WithTimeout(ctx, time.Minute)
			code, out, errs := cli(fctx, args...)
			cancel()
			if code != exitFailure || !strings.Contains(errs, "compacted") || !strings.Contains(errs, want) || strings.Contains(errs, "verification failed") || out != "" {
				t.Errorf("%v of a history compacted through %d: exit %d, want %d naming the compaction and %s; stdout %q, stderr %s",
					args, through, code, exitFailure, want, out, errs)
			}
		}
	}
	// What follows the compaction prints.
	code, out, errs := cli(ctx, "inspect", "--from", strconv.FormatUint(through+1, 10))
	if code != exitOK || !strings.Contains(out, "application.message_sent") {
		t.Errorf("inspect --from %d after a compaction through %d: exit %d, stdout %s, stderr %s", through+1, through, code, out, errs)
	}
}

// TestInspectFromOfAnErasedInstallation: inspect --from N of an erased
// installation says it was erased (exit 1), whatever N. Until
// 2026-12-07 one from past sequence 1 printed nothing and exited 0.
func TestInspectFromOfAnErasedInstallation(t *testing.T) {
	noTerminal(t)
	srv, l := startLog(t)
	dir := t.TempDir()
	createInstallation(t, l, dir, "gone-i")
	createInstallation(t, l, dir, "kept-i")
	res, err := l.Erase(context.Background(), "gone-i", nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, from := range []uint64{0, 2, res.TombstoneSeq + 1} {
		var out, errb bytes.Buffer
		args := []string{"inspect", "--nats", srv.URL(), "--installation", "gone-i", "--from", strconv.FormatUint(from, 10)}
		code := run(context.Background(), ringEnv(&out, &errb, nil), args)
		if code != exitFailure || !strings.Contains(errb.String(), "installation gone-i was erased") || out.Len() != 0 {
			t.Fatalf("%v: exit %d, stdout %q, stderr %q; want exit %d saying it was erased", args, code, out.String(), errb.String(), exitFailure)
		}
	}
}

// TestInspectFromPastTheEnd: --from past the installation's last event
// is an error naming both sequences, exit 1, as an unknown id is; at the
// last event it lists that event. Until 2026-12-07 it printed nothing and
// exited 0, as if the range were listed.
func TestInspectFromPastTheEnd(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	id := events.InstallationID("inspect-end")
	createInstallation(t, l, t.TempDir(), id)
	last, err := l.LastSeq(ctx, id)
	if err != nil || last == 0 {
		t.Fatalf("last seq: %d, %v", last, err)
	}
	var out, errb bytes.Buffer
	past := last + 5
	code := run(ctx, ringEnv(&out, &errb, nil), []string{"inspect", "--nats", srv.URL(), "--installation", string(id), "--from", strconv.FormatUint(past, 10)})
	want := fmt.Sprintf("--from %d is past the last event of installation %s on stream %s, at stream sequence %d", past, id, l.Stream(), last)
	if code != exitFailure || out.Len() != 0 || !strings.Contains(errb.String(), want) {
		t.Fatalf("inspect --from %d (last %d): exit %d, stdout %q, stderr %q; want exit %d saying %q", past, last, code, out.String(), errb.String(), exitFailure, want)
	}
	out.Reset()
	errb.Reset()
	code = run(ctx, ringEnv(&out, &errb, nil), []string{"inspect", "--nats", srv.URL(), "--installation", string(id), "--from", strconv.FormatUint(last, 10)})
	if code != exitOK || strings.Count(out.String(), "\n") != 1 || !strings.Contains(out.String(), fmt.Sprintf(`"seq":%d`, last)) {
		t.Fatalf("inspect --from %d (the last): exit %d, stdout %q, stderr %q", last, code, out.String(), errb.String())
	}
}
