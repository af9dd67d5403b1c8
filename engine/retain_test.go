package engine

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/replay"
)

// TestInstallationRetain applies a retention policy through the engine
// (real MLS): a day of messages and the epochs the member no longer keeps
// go, with compaction; the installation goes on sending and committing,
// a send dated in the shredded day is refused, and the read model
// verifies against the snapshot and the tail.
func TestInstallationRetain(t *testing.T) {
	ctx := context.Background()
	b := newBackend(t)
	alice := b.create("alice")
	created, err := alice.CreateGroup(ctx, nil)
	if err != nil {
		t.Fatal(err)
	}
	gid := created.GroupID
	for i := range 4 {
		if _, err := alice.Update(ctx, gid); err != nil {
			t.Fatal(err)
		}
		if _, err := alice.Send(ctx, gid, []byte(fmt.Sprint("old ", i)), nil); err != nil {
			t.Fatal(err)
		}
	}
	day1 := b.now
	b.now = b.now.Add(48 * time.Hour)
	if _, err := alice.Send(ctx, gid, []byte("new"), nil); err != nil {
		t.Fatal(err)
	}
	held, err := alice.DB().HeldEpochs(ctx, gid)
	if err != nil || len(held) == 0 {
		t.Fatalf("held epochs: %v %v", held, err)
	}
	res, err := alice.Retain(ctx, replay.RetentionPolicy{Messages: 24 * time.Hour, PastEpochs: replay.KeepNoPastEpochs}, &RetainOptions{Compact: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsDeleted != 4 || len(res.Periods) != 1 || len(res.Epochs) != 1 || res.Epochs[0].Keep != held[0] || res.Compacted == nil || res.Compacted.Deleted == 0 {
		t.Fatalf("retain: %+v, compacted %+v", res.RetainResult, res.Compacted)
	}
	if _, err := alice.Update(ctx, gid); err != nil {
		t.Fatalf("commit after retention: %v", err)
	}
	if _, err := alice.Send(ctx, gid, []byte("after"), nil); err != nil {
		t.Fatalf("send after retention: %v", err)
	}
	b.now = day1
	if _, err := alice.Send(ctx, gid, []byte("late"), nil); !errors.Is(err, eventlog.ErrRetainedOut) {
		t.Fatalf("send dated in the shredded day: %v, want ErrRetainedOut", err)
	}
	b.now = day1.Add(48 * time.Hour)
	if err := alice.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Verify(ctx, b.log, "alice", b.dbPath("alice"), b.keys["alice"], nil); err != nil {
		t.Fatalf("verify after retention through the engine: %v", err)
	}
	if _, err := alice.Retain(ctx, replay.RetentionPolicy{}, nil); err == nil {
		t.Fatal("retain on a closed installation")
	}
}
