package main

import (
	"bytes"
	"context"
	"path/filepath"
	"strings"
	"testing"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/natstest"
)

// TestVerifyAndRebuildAgreeOnAMovedEvent: the installation's last event
// republished at the stream's end, the original deleted. Every event the
// read model holds is on the stream, so verify and rebuild agree: verify
// exits 3 naming the checkpoint as what drifted and saying a rebuild loses
// nothing, rebuild exits 0 at the new sequence, and verify then passes.
// Until 2026-12-06 verify said the stream holds less (keep the database),
// which then could never catch up. An event moved past later events of
// its installation (here its first, which they link to) stops both.
func TestVerifyAndRebuildAgreeOnAMovedEvent(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	const id = events.InstallationID("moved")
	createInstallation(t, l, dir, id)
	// Two groups: events of other aggregates after installation.created,
	// linking to it.
	key, err := readDBKeyFile(filepath.Join(dir, string(id)+".key"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := engine.OpenInstallation(ctx, l, id, filepath.Join(dir, string(id)+".db"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, g := range []string{"g1", "g2"} {
		if _, err := in.CreateGroup(ctx, []byte(g)); err != nil {
			t.Fatal(err)
		}
	}
	in.Close()
	args := func(cmd string) []string {
		return []string{cmd, "--nats", srv.URL(), "--installation", string(id),
			"--db", filepath.Join(dir, string(id)+".db"), "--db-key-file", filepath.Join(dir, string(id)+".key")}
	}
	cli := func(cmd string) (int, string) {
		var out, errb bytes.Buffer
		code := run(ctx, ringEnv(&out, &errb, nil), args(cmd))
		return code, out.String() + errb.String()
	}
	if code, out := cli("rebuild"); code != exitOK {
		t.Fatalf("rebuild: exit %d\n%s", code, out)
	}
	last, err := l.LastSeq(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	moved := natstest.MoveMsg(t, l.Conn(), l.Stream(), last)

	code, out := cli("verify")
	if code != exitVerify || !strings.Contains(out, "table checkpoint") || !strings.Contains(out, "loses nothing") || strings.Contains(out, "keep this database") {
		t.Fatalf("verify with the last event moved from %d to %d: exit %d, want 3 naming the checkpoint and not saying to keep the database\n%s", last, moved, code, out)
	}
	if code, out := cli("rebuild"); code != exitOK {
		t.Fatalf("rebuild with the last event moved from %d to %d: exit %d\n%s", last, moved, code, out)
	}
	if code, out := cli("verify"); code != exitOK {
		t.Fatalf("verify after the rebuild: exit %d\n%s", code, out)
	}

	// The first event moved past the others, which link to it: both stop.
	first := uint64(0)
	if err := l.Read(ctx, id, 0, func(r eventlog.Record) error {
		if first == 0 {
			first = r.Seq
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	natstest.MoveMsg(t, l.Conn(), l.Stream(), first)
	for _, cmd := range []string{"verify", "rebuild"} {
		if code, out := cli(cmd); code != exitVerify || !strings.Contains(out, "missing") {
			t.Fatalf("%s with the first event moved to the end: exit %d, want 3 naming what is missing\n%s", cmd, code, out)
		}
	}
}
