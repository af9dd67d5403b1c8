package eventlog

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
)

// TestEpochChainShred: a group's state events of 40 epochs, appended in
// one bulk append (sealed concurrently), cost one bucket entry; a fresh
// Log reads them all; after ShredEpochsBefore(30) the earlier epochs
// are unreadable for this Log and a fresh one, sealing into them is
// refused, the later ones read, HasDataKey agrees, and shredding again
// or backwards changes nothing.
func TestEpochChainShred(t *testing.T) {
	ctx := context.Background()
	srv := natstestStart(t)
	l := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	g := group(instA, "0a0b")
	var ts []Transition
	ts = append(ts, Transition{Events: []events.Event{{Aggregate: g, Time: baseTime,
		Body: events.GroupCreated{GroupID: []byte{10, 11}, Ciphersuite: 1, Epoch: 0, State: events.NewSecret([]byte("s0"))}}}})
	for n := uint64(1); n < 40; n++ {
		ts = append(ts, Transition{Expected: n, Events: []events.Event{{Aggregate: g, Time: baseTime,
			Body: events.CommitApplied{GroupID: []byte{10, 11}, Epoch: n, State: events.NewSecret([]byte("s"))}}}})
	}
	if _, err := l.AppendBulk(ctx, ts); err != nil {
		t.Fatal(err)
	}
	if keys := bucketKeys(t, l); len(keys) != 1 {
		t.Fatalf("40 epochs of one group made %d bucket entries, want 1 (the chain)", len(keys))
	}
	if recs := readAll(t, openLog(t, testConfig(srv), keyring(t, 1, 0x11)), instA, 0); len(recs) != 40 {
		t.Fatalf("a fresh Log read %d events, want 40", len(recs))
	}
	envs := rawOf(t, l, instA)
	moved, err := l.ShredEpochsBefore(ctx, instA, g.ID, 30)
	if err != nil || !moved {
		t.Fatalf("shred epochs before 30: %v %v", moved, err)
	}
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	for _, lg := range []*Log{l, fresh} {
		for _, e := range envs {
			id, _, err := events.EnvelopeDataKeyID(e.data)
			if err != nil {
				t.Fatal(err)
			}
			n, _ := id.Epoch()
			_, err = lg.OpenEnvelope(ctx, instA, e.subject, e.data)
			if n < 30 && !errors.Is(err, ErrRetainedOut) || n >= 30 && err != nil {
				t.Fatalf("epoch %d after shredding before 30: %v", n, err)
			}
			has, err := lg.HasDataKey(ctx, instA, id)
			if err != nil || has != (n >= 30) {
				t.Fatalf("HasDataKey of epoch %d: %v %v", n, has, err)
			}
		}
	}
	if _, err := fresh.Append(ctx, 40, events.Event{Aggregate: g, Time: baseTime,
		Body: events.ProposalStaged{GroupID: []byte{10, 11}, Epoch: 12}}); !errors.Is(err, ErrRetainedOut) {
		t.Fatalf("sealing into a shredded epoch: %v", err)
	}
	if _, err := fresh.Append(ctx, 40, events.Event{Aggregate: g, Time: baseTime,
		Body: events.CommitApplied{GroupID: []byte{10, 11}, Epoch: 40, State: events.NewSecret([]byte("s"))}}); err != nil {
		t.Fatalf("a new epoch after shredding: %v", err)
	}
	for _, keep := range []uint64{30, 10} {
		if moved, err := l.ShredEpochsBefore(ctx, instA, g.ID, keep); err != nil || moved {
			t.Fatalf("shred before %d again: moved %v, %v", keep, moved, err)
		}
	}
	if moved, err := l.ShredEpochsBefore(ctx, instA, "ffff", 5); err != nil || moved {
		t.Fatalf("shred a group without a chain: %v %v", moved, err)
	}
	if recs := readAll(t, fresh, instA, 31); len(recs) != 11 {
		t.Fatalf("read %d events from seq 31 (epochs 30 to 40), want 11", len(recs))
	}
}

// TestAppendAfterTailShredded: a group idle since a day retention
// shredded (its last event a message of that day) takes a new event in
// a fresh Log (which must find the group's position without opening the
// unreadable tail), and compaction keeps each subject's last event so
// that the position stays findable, even when all of the subject's
// events are covered.
func TestAppendAfterTailShredded(t *testing.T) {
	ctx := context.Background()
	srv := natstestStart(t)
	l := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	g := group(instA, "0c0d")
	mustAppend(t, l, 0, events.Event{Aggregate: g, Time: baseTime,
		Body: events.GroupCreated{GroupID: []byte{12, 13}, Ciphersuite: 1, State: events.NewSecret([]byte("s0"))}})
	mustAppend(t, l, 1, msg(g, 2, "old day"))
	mustAppend(t, l, 2, msg(g, 3, "old day too"))
	until := baseTime.Add(48 * time.Hour)
	old, _, err := l.OldDayPeriods(ctx, instA, events.ClassMessages, []string{g.ID}, until, until)
	if err != nil || len(old) != 1 {
		t.Fatalf("periods: %v %v", old, err)
	}
	if _, err := l.ShredDataKeys(ctx, instA, []events.DataKeyID{old[0].ID}); err != nil {
		t.Fatal(err)
	}
	fresh := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	res := mustAppend(t, fresh, 3, events.Event{Aggregate: g, Time: baseTime.Add(72 * time.Hour),
		Body: events.HandshakeFormatSet{GroupID: []byte{12, 13}, WireFormat: 1}})
	// Compact through the new event: the two shredded messages go, but a
	// subject's last event stays, so the position is still found.
	c, err := fresh.CompactRetainedOut(ctx, instA, res[0].Seq, nil)
	if err != nil || c.Deleted != 2 {
		t.Fatalf("compact: %+v %v, want the two messages deleted", c, err)
	}
	again := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	mustAppend(t, again, 4, events.Event{Aggregate: g, Time: baseTime.Add(73 * time.Hour),
		Body: events.HandshakeFormatSet{GroupID: []byte{12, 13}, WireFormat: 2}})
}

// TestRacingWritersAgreeOnEpochChain: two Logs (two processes' worth of
// key caches) start the same group's epoch chain at once, each sealing
// an event of another epoch; the aggregate takes one of them first (the
// other is a conflict, and lands after it), and whatever the order, the
// bucket holds one chain per group and every Log, a fresh one too, reads
// both events. Several groups, so that the creations really overlap.
func TestRacingWritersAgreeOnEpochChain(t *testing.T) {
	ctx := context.Background()
	srv := natstestStart(t)
	l1 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	l2 := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	const groups = 8
	for i := range groups {
		g := group(instA, fmt.Sprintf("%04x", i))
		gid := []byte{byte(i)}
		bodies := []events.Body{
			events.GroupCreated{GroupID: gid, Ciphersuite: 1, Epoch: 0, State: events.NewSecret([]byte("s0"))},
			events.CommitApplied{GroupID: gid, Epoch: 7, State: events.NewSecret([]byte("s7"))},
		}
		errs := make(chan error, 2)
		for j, l := range []*Log{l1, l2} {
			go func() {
				ev := events.Event{Aggregate: g, Time: baseTime, Body: bodies[j]}
				_, err := l.Append(ctx, 0, ev)
				if errors.Is(err, ErrConflict) {
					_, err = l.Append(ctx, 1, ev) // after the other's
				}
				errs <- err
			}()
		}
		for range 2 {
			if err := <-errs; err != nil {
				t.Fatalf("group %d: %v", i, err)
			}
		}
	}
	if n := len(bucketKeys(t, l1)); n != groups {
		t.Fatalf("bucket holds %d entries for %d groups, want one chain each", n, groups)
	}
	for _, l := range []*Log{l1, l2, openLog(t, testConfig(srv), keyring(t, 1, 0x11))} {
		if recs := readAll(t, l, instA, 0); len(recs) != 2*groups {
			t.Fatalf("read %d events, want %d", len(recs), 2*groups)
		}
	}
}
