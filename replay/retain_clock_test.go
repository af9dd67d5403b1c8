package replay_test

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// TestRetainRefusesClockAhead: retention by age on a machine whose clock
// is a year ahead of the server's (a wrong clock, a VM restored with a
// bad RTC) would shred every day the installation ever wrote, and delete
// the events compaction's History covers. Retain and Compact refuse
// with eventlog.ErrClockAhead and change nothing; with the clock right
// they go on.
func TestRetainRefusesClockAhead(t *testing.T) {
	ctx := context.Background()
	l, _ := logtest.New(t)
	key := logtest.RawDBKey(t, 0x31)
	id := events.InstallationID("retain-clock")
	in, err := engine.CreateInstallation(ctx, l, id, filepath.Join(t.TempDir(), "a.db"), key, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	gid := []byte("retain-clock-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"one", "two", "three"} {
		if _, err := in.Send(ctx, gid, []byte(m), nil); err != nil {
			t.Fatal(err)
		}
	}
	ahead := func() time.Time { return time.Now().AddDate(1, 0, 0) }
	policy := replay.RetentionPolicy{Messages: 30 * 24 * time.Hour, Delivery: 30 * 24 * time.Hour}
	res, err := replay.Retain(ctx, l, id, in.DB(), policy, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}, Now: ahead})
	if !errors.Is(err, eventlog.ErrClockAhead) {
		t.Fatalf("retain with the clock a year ahead: %+v, %v; want ErrClockAhead", res, err)
	}
	page, err := in.DB().Messages(ctx, gid, projections.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 3 {
		t.Fatalf("messages after the refused retain: %d, want 3", len(page.Messages))
	}
	if _, err := in.Send(ctx, gid, []byte("four"), nil); err != nil {
		t.Fatalf("send after the refused retain (today's key must be there): %v", err)
	}
	if _, err := replay.SnapshotDB(ctx, l, id, in.DB(), &replay.SnapshotOptions{Options: replay.Options{SkipMLSCheck: true}}); err != nil {
		t.Fatal(err)
	}
	if _, err := replay.Compact(ctx, l, id, &replay.CompactOptions{History: 30 * 24 * time.Hour, Now: ahead}); !errors.Is(err, eventlog.ErrClockAhead) {
		t.Fatalf("compact --history with the clock a year ahead: %v; want ErrClockAhead", err)
	}
	if through, err := l.CompactedThrough(ctx, id); err != nil || through != 0 {
		t.Fatalf("compacted through %d (%v) after the refused compaction, want 0", through, err)
	}
	// The right clock: nothing is old enough, nothing goes, no error.
	res, err = replay.Retain(ctx, l, id, in.DB(), policy, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}})
	if err != nil || res.RowsDeleted != 0 || res.KeysShredded != 0 {
		t.Fatalf("retain with the right clock: %+v, %v", res, err)
	}
}

// TestRetainSkewedWriterAtMidnight: a writer in another process whose
// clock is a little behind (or whose append is still in flight) seals
// a message into the day that just ended, with the key it cached, while
// retention elsewhere (keeping no day past its end) shreds that day a
// moment after midnight. The append succeeded, but no other process can
// open the message: every replay after the snapshot stops at it
// (ErrRetainedOut), and the writer's own read model holds a message the
// history no longer gives. Retention leaves a day alone until it ended
// RetentionGrace ago, so what was sealed into it stays readable.
func TestRetainSkewedWriterAtMidnight(t *testing.T) {
	ctx := context.Background()
	lw, srv := logtest.New(t)
	lr := logtest.Open(t, logtest.Config(srv), logtest.Keyring(t, 1, 0x11)) // the retaining process
	key := logtest.RawDBKey(t, 0x32)
	id := events.InstallationID("retain-midnight")
	midnight := time.Now().UTC().Truncate(24 * time.Hour)
	clock := midnight.Add(-2 * time.Minute) // the writer's clock: behind
	in, err := engine.CreateInstallation(ctx, lw, id, filepath.Join(t.TempDir(), "a.db"), key, &engine.InstallationOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	gid := []byte("retain-midnight-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	if _, err := in.Send(ctx, gid, []byte("before midnight"), nil); err != nil {
		t.Fatal(err)
	}
	// The retaining machine's clock: a few seconds past midnight.
	retainAt := func() time.Time { return midnight.Add(5 * time.Second) }
	res, err := replay.Retain(ctx, lr, id, in.DB(), replay.RetentionPolicy{Messages: replay.KeepNone}, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}, Now: retainAt})
	if err != nil {
		t.Fatal(err)
	}
	from := uint64(1)
	if res.Snapshot != nil {
		from = res.Snapshot.Checkpoint + 1
	}
	clock = clock.Add(time.Minute) // still yesterday for the writer
	_, sendErr := in.Send(ctx, gid, []byte("a minute later, by the writer's clock"), nil)
	if sendErr != nil && !errors.Is(sendErr, eventlog.ErrRetainedOut) {
		t.Fatal(sendErr)
	}
	// Whatever the writer's append did, what the history holds after
	// the retention's snapshot must open for a process that did not
	// cache the key.
	var read int
	if err := lr.Read(ctx, id, from, func(eventlog.Record) error {
		read++
		return nil
	}); err != nil {
		t.Fatalf("read the history after the snapshot in another process (%d events read; the send: %v): %v", read, sendErr, err)
	}
}

// TestRetainCreatedByClockAhead: the installation was created on a
// machine whose clock was days ahead (its recorded creation time is in
// the future of the messages its writers date by their right clocks).
// Retention looked for day periods from a day before the creation only,
// so it deleted the old messages from the read model but found and
// shredded no key: the events stayed readable on the stream, a
// forward-secrecy gap nobody was told about. The days are now looked for
// from the oldest message the read model holds as well.
func TestRetainCreatedByClockAhead(t *testing.T) {
	ctx := context.Background()
	l, _ := logtest.New(t)
	key := logtest.RawDBKey(t, 0x33)
	id := events.InstallationID("retain-created-ahead")
	clock := time.Now().AddDate(0, 0, 10) // the creating machine's clock
	in, err := engine.CreateInstallation(ctx, l, id, filepath.Join(t.TempDir(), "a.db"), key, &engine.InstallationOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	clock = time.Now().AddDate(0, 0, -3) // the writers' clocks: right, the messages are old
	gid := []byte("retain-created-ahead-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"old 1", "old 2"} {
		if _, err := in.Send(ctx, gid, []byte(m), nil); err != nil {
			t.Fatal(err)
		}
	}
	clock = time.Now()
	// Through the engine, which records the group's state first: the
	// messages are of its current epoch, which a reload still needs.
	res, err := in.Retain(ctx, replay.RetentionPolicy{Messages: 24 * time.Hour}, &engine.RetainOptions{SkipMLSCheck: true})
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsDeleted != 2 || len(res.Periods) != 1 || res.KeysShredded != 1 {
		t.Fatalf("retain: %d rows deleted, %d periods, %d keys shredded; want 2, 1, 1 (the old day's key must go with its messages)", res.RowsDeleted, len(res.Periods), res.KeysShredded)
	}
}

// TestRetentionGraceCoversLaggingWriters: the grace retention waits after
// a day ended must exceed how far a writer's clock may lag the server's
// and still append (eventlog.MaxClockBehind), with room for an append
// sealed then retried for the engine's outcome timeout; else a writer
// allowed to append seals into a day already shredded.
func TestRetentionGraceCoversLaggingWriters(t *testing.T) {
	if eventlog.MaxClockBehind+engine.DefaultOutcomeTimeout+eventlog.MaxClockAhead >= replay.RetentionGrace {
		t.Fatalf("MaxClockBehind %s + outcome timeout %s + the retaining clock's MaxClockAhead %s is not within RetentionGrace %s",
			eventlog.MaxClockBehind, engine.DefaultOutcomeTimeout, eventlog.MaxClockAhead, replay.RetentionGrace)
	}
}
