package engine_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// TestStreamOfAnOlderEngineContinues takes a stream an engine of
// 2026-12-06 wrote (testdata/upgrade-31b2bdc: group.created v2, a branch
// in its two-event form, read models at schema 11) through what a rolling
// upgrade does with it: the current code rebuilds and re-derives its
// histories, opens the installations over their schema 11 read models
// (migrated as they open) and carries both groups on, with the old
// installations' events and its own in one history.
func TestStreamOfAnOlderEngineContinues(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	if err := os.CopyFS(filepath.Join(dir, "nats", "jetstream"), os.DirFS("testdata/upgrade-31b2bdc/jetstream")); err != nil {
		t.Fatal(err)
	}
	root, err := events.NewRootKey(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		t.Fatal(err)
	}
	keys, err := events.NewKeyring(1, root)
	if err != nil {
		t.Fatal(err)
	}
	cfg := eventlog.DefaultConfig(filepath.Join(dir, "nats"))
	cfg.EmbeddedInProcess = true
	log, err := eventlog.Open(ctx, cfg, keys)
	if err != nil {
		t.Fatal(err)
	}
	defer log.Close()
	dbKey := func(b byte) projections.Key {
		k, err := projections.RawKey(bytes.Repeat([]byte{b}, 32))
		if err != nil {
			t.Fatal(err)
		}
		return k
	}
	insts := []events.InstallationID{"alice", "bob"}
	dbKeys := map[events.InstallationID]projections.Key{"alice": dbKey(1), "bob": dbKey(2)}
	path := func(inst events.InstallationID) string { return filepath.Join(dir, string(inst)+".db") }
	for _, inst := range insts {
		// The read model as the older engine kept it: schema 11.
		res, err := replay.Rebuild(ctx, log, inst, path(inst), dbKeys[inst], &replay.RebuildOptions{SchemaVersion: 11})
		if err != nil {
			t.Fatalf("rebuild %s at schema 11: %v", inst, err)
		}
		if res.Schema != 11 || res.Replayed == 0 {
			t.Fatalf("rebuild %s: schema %d, %d events replayed; want schema 11 from the stream", inst, res.Schema, res.Replayed)
		}
		rep, err := replay.VerifyMLS(ctx, log, inst)
		if err != nil {
			t.Fatalf("MLS history of %s as the older engine wrote it: %v", inst, err)
		}
		if rep.Rederived+rep.Own == 0 {
			t.Fatalf("MLS history of %s: nothing checked (%+v)", inst, rep)
		}
	}

	open := func(inst events.InstallationID) *engine.Installation {
		in, err := engine.OpenInstallation(ctx, log, inst, path(inst), dbKeys[inst], nil)
		if err != nil {
			t.Fatalf("open %s over its schema 11 read model: %v", inst, err)
		}
		if got := in.DB().SchemaVersion(); got != projections.LatestSchema {
			t.Errorf("%s opened at schema %d, want %d", inst, got, projections.LatestSchema)
		}
		return in
	}
	alice, bob := open("alice"), open("bob")
	q := engine.NewDeliveries(log, time.Now)
	deliver := func(to *engine.Installation, want ...string) {
		t.Helper()
		ds, err := q.Fetch(ctx, to.ID(), "mls", 100)
		if err != nil {
			t.Fatal(err)
		}
		if len(ds) != len(want) {
			t.Fatalf("%s has %d deliveries pending, want %d", to.ID(), len(ds), len(want))
		}
		for i, d := range ds {
			r, err := to.Receive(ctx, d.Payload)
			if err != nil {
				t.Fatalf("%s receives delivery %d: %v", to.ID(), d.Seq, err)
			}
			if got := string(r.Content.Bytes()); got != want[i] {
				t.Errorf("%s received %q (%s), want %q", to.ID(), got, r.Kind, want[i])
			}
			if err := q.Acknowledge(ctx, to.ID(), "mls", d.Seq); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, g := range [][]byte{[]byte("upgrade-group-0123456789abcdef01"), []byte("branch-group-id-0123456789abcdef")} {
		s, err := alice.Send(ctx, g, []byte("after the upgrade"), nil)
		if err != nil {
			t.Fatalf("alice sends in %s: %v", g, err)
		}
		if _, err := q.FanOut(ctx, s.Recipients, "mls", s.Message, time.Time{}, "new-1-"+string(g)); err != nil {
			t.Fatal(err)
		}
		deliver(bob, "after the upgrade")
		u, err := bob.Update(ctx, g)
		if err != nil {
			t.Fatalf("bob commits in %s: %v", g, err)
		}
		if _, err := q.FanOut(ctx, u.Recipients, "mls", u.Commit, time.Time{}, "new-2-"+string(g)); err != nil {
			t.Fatal(err)
		}
		deliver(alice, "")
		if s, err = alice.Send(ctx, g, []byte("next epoch"), nil); err != nil {
			t.Fatal(err)
		}
		if _, err := q.FanOut(ctx, s.Recipients, "mls", s.Message, time.Time{}, "new-3-"+string(g)); err != nil {
			t.Fatal(err)
		}
		deliver(bob, "next epoch")
	}
	if _, err := alice.CreateGroup(ctx, nil); err != nil { // group.created at its current version
		t.Fatal(err)
	}
	for _, in := range []*engine.Installation{alice, bob} {
		if err := in.Close(); err != nil {
			t.Fatal(err)
		}
	}
	for _, inst := range insts {
		if _, err := replay.Verify(ctx, log, inst, path(inst), dbKeys[inst], nil); err != nil {
			t.Errorf("verify %s after the upgrade: %v", inst, err)
		}
		if _, err := replay.VerifyMLS(ctx, log, inst); err != nil {
			t.Errorf("MLS history of %s, older and newer events: %v", inst, err)
		}
	}
}
