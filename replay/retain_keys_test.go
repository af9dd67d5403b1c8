package replay_test

import (
	"context"
	"encoding/hex"
	"path/filepath"
	"testing"
	"time"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/replay"
)

// TestRetainShredsKeysTheReadModelForgot: a day's messages were deleted
// from the read model but the day's key stayed in the key bucket (a
// retention run of a build that looked for days only from the oldest
// message held, or from the creation). Retention looked for days from
// the oldest message still held, so no later run ever found that key:
// the day's events stayed readable on the stream, a forward-secrecy gap
// nobody was told about. Every key of the installation is now accounted
// for: the old day's key goes, the days the policy keeps (the cutoff's
// day included) and another installation's keys stay.
func TestRetainShredsKeysTheReadModelForgot(t *testing.T) {
	ctx := context.Background()
	l, _ := logtest.New(t)
	now := time.Now().UTC()
	policy := replay.RetentionPolicy{Messages: 30 * 24 * time.Hour}
	cut, _ := policy.MessagesCutoff(now)
	oldDay := now.AddDate(0, 0, -40)

	type inst struct {
		id  events.InstallationID
		in  *engine.Installation
		gid []byte
	}
	clock := now
	open := func(name string, keyByte byte) inst {
		id := events.InstallationID(name)
		clock = now
		in, err := engine.CreateInstallation(ctx, l, id, filepath.Join(t.TempDir(), name+".db"), logtest.RawDBKey(t, keyByte), &engine.InstallationOptions{Now: func() time.Time { return clock }})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { in.Close() })
		gid := []byte(name + "-group")
		if _, err := in.CreateGroup(ctx, gid); err != nil {
			t.Fatal(err)
		}
		for _, at := range []time.Time{oldDay, cut.Add(time.Minute), now} {
			clock = at
			if _, err := in.Send(ctx, gid, []byte("at "+at.Format(time.RFC3339)), nil); err != nil {
				t.Fatal(err)
			}
		}
		clock = now
		return inst{id, in, gid}
	}
	a := open("retain-forgot-a", 0x41)
	b := open("retain-forgot-b", 0x42)

	// periods counts x's message keys of days before before's.
	periods := func(x inst, before time.Time) int {
		t.Helper()
		ps, _, err := l.OldDayPeriods(ctx, x.id, events.ClassMessages, []string{hex.EncodeToString(x.gid)}, before, now)
		if err != nil {
			t.Fatal(err)
		}
		return len(ps)
	}
	// The read model no longer holds the old day's message; its key is
	// still in the bucket.
	if n, err := a.in.DB().DeleteMessagesBefore(ctx, cut); err != nil || n != 1 {
		t.Fatalf("delete the old message from the read model: %d, %v", n, err)
	}
	if n := periods(a, cut); n != 1 {
		t.Fatalf("keys of days before the cutoff before retention: %d, want 1", n)
	}

	res, err := replay.Retain(ctx, l, a.id, a.in.DB(), policy, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}})
	if err != nil {
		t.Fatal(err)
	}
	if res.KeysShredded != 1 || len(res.Periods) != 1 || res.UnknownKeys != 0 {
		t.Fatalf("retain: %d keys shredded, %d periods, %d keys of unknown day; want 1, 1, 0 (the old day's key must go though the read model forgot it)",
			res.KeysShredded, len(res.Periods), res.UnknownKeys)
	}
	if n := periods(a, cut); n != 0 {
		t.Fatalf("keys of days before the cutoff after retention: %d, want 0", n)
	}
	if n := periods(a, now.AddDate(0, 0, 1)); n != 2 {
		t.Fatalf("keys of the days kept (the cutoff's day and today) after retention: %d, want 2", n)
	}
	if n := periods(b, now.AddDate(0, 0, 1)); n != 3 {
		t.Fatalf("keys of the other installation after retention: %d, want 3 (untouched)", n)
	}
	// Again: nothing left to shred.
	res, err = replay.Retain(ctx, l, a.id, a.in.DB(), policy, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}})
	if err != nil || res.KeysShredded != 0 || len(res.Periods) != 0 {
		t.Fatalf("retain again: %+v, %v; want nothing shredded", res, err)
	}
}
