package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/projections"
)

// replayer retain refuses, changing nothing (neither the file nor the
// stream), a read model a service holds (naming the holder) and another
// installation's read model; on a read model behind the stream it
// catches up first, and deletes what the policy says, a state recorded
// before.
func TestRetainRefusesAndCatchesUp(t *testing.T) {
	ctx := context.Background()
	srv, l := startLog(t)
	dir := t.TempDir()
	id := events.InstallationID("retain-refuse")
	clock := time.Now().Add(-72 * time.Hour)
	opts := &engine.InstallationOptions{Now: func() time.Time { return clock }}
	in, db, keyFile, key := keyedInstallation(t, l, dir, id, opts)
	gid := []byte("retain-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Send(ctx, gid, []byte("old"), nil); err != nil {
		t.Fatal(err)
	}
	other := events.InstallationID("retain-other")
	oin, odb, okeyFile, _ := keyedInstallation(t, l, dir, other, opts)
	if err := oin.Close(); err != nil {
		t.Fatal(err)
	}
	cli := func(inst events.InstallationID, db, keyFile string) (int, string, map[string]any) {
		t.Helper()
		var out, errb bytes.Buffer
		args := []string{"retain", "--nats", srv.URL(), "--installation", string(inst), "--db", db, "--db-key-file", keyFile, "--messages", "1d", "--compact", "--json"}
		code := run(ctx, ringEnv(&out, &errb, nil), args)
		var m map[string]any
		if code == exitOK {
			if err := json.Unmarshal(out.Bytes(), &m); err != nil {
				t.Fatalf("%v: %v: %s", args, err, out.String())
			}
		}
		return code, errb.String(), m
	}
	fileSum := func(p string) [32]byte {
		t.Helper()
		b, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return sha256.Sum256(b)
	}
	lastSeq := func() uint64 {
		t.Helper()
		s, err := l.LastSeq(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}

	// The service holds the read model: refused before the file is
	// opened, its bytes and its WAL's untouched. (Until 2026-12-07 a
	// handle opened to read the file's schema was closed first, which
	// checkpointed the service's WAL into the file.)
	seq := lastSeq()
	before, err := in.DB().Digest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if st, err := os.Stat(db + "-wal"); err != nil || st.Size() == 0 {
		t.Fatalf("the service's WAL: %v (size %v), want one to hold pages", err, st)
	}
	fileBefore, walBefore := fileSum(db), fileSum(db+"-wal")
	code, stderr, _ := cli(id, db, keyFile)
	if code == exitOK || !strings.Contains(stderr, "locked by") || !strings.Contains(stderr, "pid") {
		t.Fatalf("retain of a held read model: exit %d, stderr %s; want it refused naming the holder", code, stderr)
	}
	if got := lastSeq(); got != seq {
		t.Fatalf("the refused retain appended: stream at %d, was %d", got, seq)
	}
	if fileSum(db) != fileBefore || fileSum(db+"-wal") != walBefore {
		t.Fatal("the refused retain wrote to the held read model's file or WAL")
	}
	if after, err := in.DB().Digest(ctx); err != nil || !after.Equal(before) {
		t.Fatalf("the refused retain changed the read model (%v)", err)
	}
	// The service sends more, then stops: the read model is behind the
	// stream once another process sent meanwhile.
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	p2, err := engine.OpenInstallation(ctx, l, id, filepath.Join(dir, "second.db"), key, opts)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := p2.Send(ctx, gid, []byte("old, from another process"), nil); err != nil {
		t.Fatal(err)
	}
	if err := p2.Close(); err != nil {
		t.Fatal(err)
	}

	// A path with a typo: refused naming it, and nothing created there.
	typo, seq := db+".typo", lastSeq()
	if code, stderr, _ := cli(id, typo, keyFile); code == exitOK || !strings.Contains(stderr, typo) {
		t.Fatalf("retain of a missing read model: exit %d, stderr %s; want it refused naming %s", code, stderr, typo)
	}
	if _, err := os.Stat(typo); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("the refused retain left %s behind: %v", typo, err)
	}
	if got := lastSeq(); got != seq {
		t.Fatalf("the retain of a missing read model appended: stream at %d, was %d", got, seq)
	}

	// Another installation's read model.
	seq, sum := lastSeq(), fileSum(odb)
	if code, stderr, _ := cli(id, odb, okeyFile); code == exitOK || !strings.Contains(stderr, string(other)) {
		t.Fatalf("retain of %s on %s's read model: exit %d, stderr %s; want it refused", id, other, code, stderr)
	}
	if lastSeq() != seq || fileSum(odb) != sum {
		t.Fatal("the refused retain changed the stream or the other read model")
	}

	// Behind the stream: caught up, both messages deleted (one state
	// recorded), a snapshot for the compaction.
	code, stderr, m := cli(id, db, keyFile)
	if code != exitOK || m["messages_deleted"] != float64(2) || m["groups_keeping_messages"] != nil || m["snapshot"].(float64) == 0 {
		t.Fatalf("retain of a read model behind the stream: exit %d, %v, stderr %s", code, m, stderr)
	}
	in, err = engine.OpenInstallation(ctx, l, id, db, key, opts)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if page, err := in.DB().Messages(ctx, gid, projections.Page{Limit: 10}); err != nil || len(page.Messages) != 0 {
		t.Fatalf("messages left: %d, %v", len(page.Messages), err)
	}
	// The sender goes on without reusing a generation: its next message
	// is sealed after both deleted ones (a reload counts them in the
	// recorded state).
	if _, err := in.Send(ctx, gid, []byte("after"), nil); err != nil {
		t.Fatal(err)
	}
}
