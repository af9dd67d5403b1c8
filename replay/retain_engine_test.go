package replay_test

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/nats-io/nats.go/jetstream"

	"github.com/epochlog/epochlog/engine"
	"github.com/epochlog/epochlog/eventlog"
	"github.com/epochlog/epochlog/events"
	"github.com/epochlog/epochlog/internal/logtest"
	"github.com/epochlog/epochlog/projections"
	"github.com/epochlog/epochlog/replay"
)

// TestRetainOpenInstallation applies retention to an installation the
// engine has open (real MLS): the old day's messages go, the engine keeps
// sending and receiving into the same read model, a send dated in the
// shredded day is refused, and the read model verifies against the
// snapshot plus the tail.
func TestRetainOpenInstallation(t *testing.T) {
	ctx := context.Background()
	l, _ := logtest.New(t)
	dir := t.TempDir()
	key := logtest.RawDBKey(t, 0x24)
	id := events.InstallationID("retain-engine")
	path := filepath.Join(dir, "a.db")
	clock := time.Now().Add(-72 * time.Hour)
	in, err := engine.CreateInstallation(ctx, l, id, path, key, &engine.InstallationOptions{Now: func() time.Time { return clock }})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	gid := []byte("retain-engine-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	for _, m := range []string{"old 1", "old 2", "old 3"} {
		if _, err := in.Send(ctx, gid, []byte(m), nil); err != nil {
			t.Fatal(err)
		}
	}
	old := clock
	clock = time.Now()
	if _, err := in.Send(ctx, gid, []byte("today"), nil); err != nil {
		t.Fatal(err)
	}
	res, err := replay.Retain(ctx, l, id, in.DB(), replay.RetentionPolicy{Messages: 24 * time.Hour}, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}})
	if err != nil {
		t.Fatal(err)
	}
	if res.RowsDeleted != 3 || len(res.Periods) != 1 || res.KeysShredded != 1 {
		t.Fatalf("retain: %+v", res)
	}
	if _, err := in.Send(ctx, gid, []byte("after"), nil); err != nil {
		t.Fatalf("send after retention: %v", err)
	}
	page, err := in.DB().Messages(ctx, gid, projections.Page{})
	if err != nil {
		t.Fatal(err)
	}
	if len(page.Messages) != 2 || string(page.Messages[0].Content.Bytes()) != "after" || string(page.Messages[1].Content.Bytes()) != "today" {
		t.Fatalf("messages after retention: %d", len(page.Messages))
	}
	clock = old
	if _, err := in.Send(ctx, gid, []byte("late"), nil); !errors.Is(err, eventlog.ErrRetainedOut) {
		t.Fatalf("send dated in the shredded day: %v, want ErrRetainedOut", err)
	}
	clock = time.Now()
	if _, err := replay.Compact(ctx, l, id, nil); err != nil {
		t.Fatal(err)
	}
	if err := in.Close(); err != nil {
		t.Fatal(err)
	}
	v, err := replay.Verify(ctx, l, id, path, key, nil)
	if err != nil {
		t.Fatalf("verify after retention, compaction and more sends: %v", err)
	}
	p := filepath.Join(dir, "rebuilt.db")
	if _, err := replay.Rebuild(ctx, l, id, p, key, nil); err != nil {
		t.Fatal(err)
	}
	if diff := projections.Compare(digestOfFile(t, p, key), v.Digest); diff != nil {
		t.Fatalf("rebuild differs from the live read model: %v", diff)
	}
	// The MLS check replays from the start: it names the compaction, not
	// a missing event (a verification failure, as if the history were
	// altered).
	if _, err := replay.VerifyMLS(ctx, l, id); !errors.Is(err, eventlog.ErrCompacted) || replay.IsVerificationFailure(err) {
		t.Fatalf("MLS verification of a compacted history: %v, want ErrCompacted", err)
	}
}

// TestRetainPastEpochs applies retention by epoch count to an
// installation the engine has open (real MLS, maximum_past_epochs 2):
// the keys of the recorded states of the epochs the policy and the
// member no longer keep are destroyed, and every key material the Logs,
// the keyring and the key bucket still hold opens none of those epochs'
// events, purged or not; the engine goes on committing, rebuild from the
// snapshot and verify agree with the live read model, and a rebuild from
// the start names the retention.
func TestRetainPastEpochs(t *testing.T) {
	ctx := context.Background()
	l, srv := logtest.New(t)
	dir := t.TempDir()
	key := logtest.RawDBKey(t, 0x25)
	id := events.InstallationID("retain-epochs")
	path := filepath.Join(dir, "a.db")
	in, err := engine.CreateInstallation(ctx, l, id, path, key, &engine.InstallationOptions{MaxPastEpochs: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	gid := []byte("retain-epochs-group")
	if _, err := in.CreateGroup(ctx, gid); err != nil {
		t.Fatal(err)
	}
	for i := range 6 {
		if _, err := in.Update(ctx, gid); err != nil {
			t.Fatal(err)
		}
		if _, err := in.Send(ctx, gid, []byte(fmt.Sprint("in epoch ", i+1)), nil); err != nil {
			t.Fatal(err)
		}
	}
	// Epoch 6; the member holds 4, 5 and 6. One past epoch by policy
	// would keep 5 and 6, but the member's window wins: 0-3 go.
	if cur, err := in.Epoch(ctx, gid); err != nil || cur != 6 {
		t.Fatalf("epoch %d %v, want 6", cur, err)
	}
	if held, err := in.DB().HeldEpochs(ctx, gid); err != nil || fmt.Sprint(held) != "[4 5 6]" {
		t.Fatalf("held epochs %v %v, want [4 5 6]", held, err)
	}
	type raw struct {
		seq     uint64
		subject string
		data    []byte
		epoch   uint64
		shred   bool
	}
	var captured []raw
	shredded := 0
	if err := l.Read(ctx, id, 0, func(r eventlog.Record) error {
		env, err := logtest.Envelope(l, r.Seq)
		if err != nil {
			return err
		}
		kid, ok, err := events.EnvelopeDataKeyID(env)
		if err != nil || !ok {
			return fmt.Errorf("seq %d: %v %v", r.Seq, ok, err)
		}
		n, isEpoch := kid.Epoch()
		c := raw{r.Seq, r.Subject, env, n, isEpoch && n < 4}
		if c.shred {
			shredded++
		}
		captured = append(captured, c)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if shredded < 4 { // a creation and three commits at least
		t.Fatalf("only %d events of epochs 0-3", shredded)
	}
	res, err := replay.Retain(ctx, l, id, in.DB(), replay.RetentionPolicy{PastEpochs: 1}, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Epochs) != 1 || res.Epochs[0].From != 0 || res.Epochs[0].Keep != 4 || res.Snapshot == nil || res.RowsDeleted != 0 {
		t.Fatalf("retain: %+v", res)
	}

	// Every key material: the root keys, every entry of the key bucket
	// (the chain derives epochs from 4 on: each of 4 to 12 is tried) and
	// whatever the Logs still cache, through OpenEnvelope.
	ring := logtest.Keyring(t, 1, 0x11)
	var materials []events.DataKey
	js, err := jetstream.New(l.Conn())
	if err != nil {
		t.Fatal(err)
	}
	kv, err := js.KeyValue(ctx, l.KeyBucket())
	if err != nil {
		t.Fatal(err)
	}
	names, err := kv.ListKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for name := range names.Keys() {
		_, kid, err := events.ParseDataKeyName(name)
		if err != nil {
			t.Fatal(err)
		}
		e, err := kv.Get(ctx, name)
		if err != nil {
			t.Fatal(err)
		}
		dk, err := ring.UnwrapDataKey(l.Stream(), id, kid, e.Value())
		if err != nil {
			t.Fatalf("unwrap %s: %v", name, err)
		}
		materials = append(materials, dk)
		if kid.Class == events.ClassEpoch {
			if n, _ := events.WrappedChainEpoch(e.Value()); n != 4 {
				t.Fatalf("the chain is at epoch %d after retention, want 4", n)
			}
			for steps := range uint64(9) {
				c, _ := events.EpochChainKey(dk, steps)
				ek, _ := events.EpochDataKey(c)
				materials = append(materials, c, ek)
			}
		}
	}
	fresh := logtest.Open(t, logtest.Config(srv), logtest.Keyring(t, 1, 0x11))
	checkOpens := func(stage string, gone map[uint64]bool) {
		t.Helper()
		for _, c := range captured {
			if gone[c.seq] {
				continue
			}
			for _, lg := range []*eventlog.Log{l, fresh} {
				_, err := lg.OpenEnvelope(ctx, id, c.subject, c.data)
				switch {
				case c.shred && !errors.Is(err, eventlog.ErrRetainedOut):
					t.Fatalf("%s: event of epoch %d at seq %d: %v, want ErrRetainedOut", stage, c.epoch, c.seq, err)
				case !c.shred && err != nil:
					t.Fatalf("%s: kept event at seq %d: %v", stage, c.seq, err)
				}
			}
			if !c.shred {
				continue
			}
			b := events.Binding{Stream: l.Stream(), Subject: c.subject}
			if _, err := events.Open(ring, id, b, c.data); err == nil {
				t.Fatalf("%s: the root key opened the event of epoch %d", stage, c.epoch)
			}
			for _, m := range materials {
				if _, err := events.OpenData(m, id, b, c.data); err == nil {
					t.Fatalf("%s: a key material from the bucket opened the event of epoch %d at seq %d", stage, c.epoch, c.seq)
				}
			}
		}
	}
	checkOpens("unpurged", nil)

	// The engine goes on: a commit to epoch 7 and a message.
	if _, err := in.Update(ctx, gid); err != nil {
		t.Fatalf("commit after retention: %v", err)
	}
	if _, err := in.Send(ctx, gid, []byte("after"), nil); err != nil {
		t.Fatal(err)
	}
	verifyAndRebuild := func(stage string) {
		t.Helper()
		if err := in.CatchUp(ctx); err != nil {
			t.Fatal(err)
		}
		live, err := in.DB().Digest(ctx)
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), "rebuilt.db")
		if _, err := replay.Rebuild(ctx, fresh, id, p, key, &replay.RebuildOptions{Options: replay.Options{SkipMLSCheck: true}}); err != nil {
			t.Fatalf("%s: rebuild: %v", stage, err)
		}
		if diff := projections.Compare(digestOfFile(t, p, key), live); diff != nil {
			t.Fatalf("%s: rebuild from the snapshot differs from the live read model: %v", stage, diff)
		}
		_, err = replay.Rebuild(ctx, fresh, id, filepath.Join(t.TempDir(), "full.db"), key, &replay.RebuildOptions{Options: replay.Options{FromStart: true}})
		if !errors.Is(err, eventlog.ErrRetainedOut) && !errors.Is(err, eventlog.ErrCompacted) {
			t.Fatalf("%s: rebuild from the start: %v, want the retention named", stage, err)
		}
	}
	verifyAndRebuild("unpurged")

	comp, err := replay.Compact(ctx, l, id, nil)
	if err != nil {
		t.Fatal(err)
	}
	if comp.Deleted != shredded {
		t.Fatalf("compact deleted %d events, want the %d of epochs 0-3", comp.Deleted, shredded)
	}
	gone := map[uint64]bool{}
	for _, c := range captured {
		_, err := logtest.Envelope(l, c.seq)
		if c.shred != (err != nil) {
			t.Fatalf("after compaction, event of epoch %d at seq %d (shredded %v): %v", c.epoch, c.seq, c.shred, err)
		}
		gone[c.seq] = err != nil
	}
	checkOpens("purged", gone)
	verifyAndRebuild("purged")

	// Again at epoch 7, where the member holds 5-7: epoch 4 goes; then
	// nothing is left to advance.
	again, err := replay.Retain(ctx, l, id, in.DB(), replay.RetentionPolicy{PastEpochs: 1}, &replay.RetainOptions{Options: replay.Options{SkipMLSCheck: true}})
	if err != nil || len(again.Epochs) != 1 || again.Epochs[0].From != 4 || again.Epochs[0].Keep != 5 {
		t.Fatalf("retain again at epoch 7 (the member holds 5-7): %+v %v", again, err)
	}
	if r, err := replay.Retain(ctx, l, id, in.DB(), replay.RetentionPolicy{PastEpochs: 1}, nil); err != nil || len(r.Epochs) != 0 || r.Snapshot != nil {
		t.Fatalf("retain a third time: %+v %v", r, err)
	}
	verifyAndRebuild("twice retained")
}

// digestOfFile is the content digest of the read model at path.
func digestOfFile(t *testing.T, path string, key projections.Key) projections.Digest {
	t.Helper()
	db, err := projections.OpenExisting(path, key, &projections.Options{SaltPath: projections.SaltPath(path)})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	d, err := db.Digest(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	return d
}
