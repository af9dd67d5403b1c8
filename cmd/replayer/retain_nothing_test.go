package main

import (
	"bytes"
	"context"
	"encoding/json"
	"testing"

	"github.com/epochlog/epochlog/events"
)

// retain with a compaction asked for, on an installation with nothing to
// shred and no snapshot yet: the compaction needs a snapshot, so retain
// takes one (as it does when it shreds), and exits 0 having compacted
// what the policy says. Until 2026-12-06 it exited 1 ("no usable
// snapshot"), right after doing nothing.
func TestRetainCompactsWithNothingToShred(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	for _, tc := range []struct {
		id          events.InstallationID
		args        []string
		someDeleted bool
	}{
		{"retain-idle-compact", []string{"--messages", "forever", "--compact"}, false},
		{"retain-idle-history", []string{"--messages", "forever", "--history", "none"}, true},
	} {
		in, db, keyFile, _ := keyedInstallation(t, l, dir, tc.id, nil)
		gid := []byte("idle-group")
		if _, err := in.CreateGroup(ctx, gid); err != nil {
			t.Fatal(err)
		}
		for range 3 {
			if _, err := in.Send(ctx, gid, []byte("hello"), nil); err != nil {
				t.Fatal(err)
			}
		}
		in.Close()
		var out, errb bytes.Buffer
		args := append([]string{"retain", "--db", db, "--db-key-file", keyFile}, tc.args...)
		args = append(args, "--nats", srv.URL(), "--installation", string(tc.id), "--json")
		if code := run(ctx, ringEnv(&out, &errb, nil), args); code != 0 {
			t.Fatalf("%v: exit %d, want 0; stderr: %s", tc.args, code, errb.String())
		}
		var m map[string]any
		if err := json.Unmarshal(out.Bytes(), &m); err != nil {
			t.Fatalf("%v: %v: %s", tc.args, err, out.String())
		}
		comp, _ := m["compact"].(map[string]any)
		if comp == nil || m["snapshot"].(float64) == 0 || (comp["deleted"].(float64) > 0) != tc.someDeleted {
			t.Fatalf("%v: %v", tc.args, m)
		}
		var vout bytes.Buffer
		if code := run(ctx, ringEnv(&vout, &errb, nil), []string{"verify", "--db", db, "--db-key-file", keyFile, "--nats", srv.URL(), "--installation", string(tc.id)}); code != 0 {
			t.Fatalf("%v: verify after: exit %d: %s", tc.args, code, errb.String())
		}
	}
}
