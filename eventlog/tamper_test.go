package eventlog

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/epochlog/epochlog/events"
	"github.com/nats-io/nats.go"
)

// rawPublish stores data on subject behind the Log's back, as someone with
// write access to the bus could.
func rawPublish(t *testing.T, l *Log, subject string, data []byte) uint64 {
	t.Helper()
	ack, err := l.js.PublishMsg(context.Background(), &nats.Msg{Subject: subject, Data: data})
	if err != nil {
		t.Fatalf("raw publish: %v", err)
	}
	return ack.Sequence
}

// wantRecordError checks that err is a *RecordError for seq wrapping target.
func wantRecordError(t *testing.T, err error, seq uint64, target error) {
	t.Helper()
	var re *RecordError
	if !errors.As(err, &re) {
		t.Fatalf("got %v (%T), want a *RecordError", err, err)
	}
	if re.Seq != seq || re.Stream != DefaultStream || re.Subject == "" {
		t.Fatalf("record error names stream %s seq %d subject %q, want %s seq %d", re.Stream, re.Seq, re.Subject, DefaultStream, seq)
	}
	if !errors.Is(err, target) {
		t.Fatalf("error %v does not wrap %v", err, target)
	}
	if !strings.Contains(err.Error(), fmt.Sprintf("seq %d", seq)) {
		t.Fatalf("error text %q does not name seq %d", err, seq)
	}
}

func TestTamperedRawPublishRefused(t *testing.T) {
	l, _ := newLog(t)
	agg := group(instA, "tamper")
	res := mustAppend(t, l, 0, msg(agg, 1, "one"), msg(agg, 2, "two"))
	orig := rawGet(t, l, res[1].Seq).Data

	// Every region of the envelope: header, nonce, ciphertext, tag.
	for _, off := range []int{5, 20, 40, len(orig) / 2, len(orig) - 1} {
		altered := append([]byte(nil), orig...)
		altered[off] ^= 0x01
		seq := rawPublish(t, l, res[1].Subject, altered)
		_, err := tryReadAll(l, instA, 0)
		var re *RecordError
		if !errors.As(err, &re) || re.Seq != seq {
			t.Fatalf("byte %d altered: got %v, want a record error at seq %d", off, err, seq)
		}
		if !errors.Is(err, events.ErrTampered) && !errors.Is(err, events.ErrWrongKey) && !errors.Is(err, events.ErrUnknownKey) && !errors.Is(err, events.ErrMoved) {
			t.Fatalf("byte %d altered: %v is not a verification error", off, err)
		}
		// Remove it again to test the next offset on a clean stream.
		if err := l.stream.DeleteMsg(context.Background(), seq); err != nil {
			t.Fatal(err)
		}
	}
	// A ciphertext byte specifically is tampering.
	altered := append([]byte(nil), orig...)
	altered[len(orig)-20] ^= 0x80
	seq := rawPublish(t, l, res[1].Subject, altered)
	_, err := tryReadAll(l, instA, 0)
	wantRecordError(t, err, seq, events.ErrTampered)

	// Garbage that is not an envelope at all.
	if err := l.stream.DeleteMsg(context.Background(), seq); err != nil {
		t.Fatal(err)
	}
	seq = rawPublish(t, l, res[1].Subject, []byte("not an envelope"))
	_, err = tryReadAll(l, instA, 0)
	wantRecordError(t, err, seq, events.ErrMalformed)
}

func TestReplayedEventRefused(t *testing.T) {
	l, _ := newLog(t)
	agg := group(instA, "replay")
	res := mustAppend(t, l, 0, msg(agg, 1, "one"), msg(agg, 2, "two"))
	// An unaltered copy of event 1 republished: it opens, but repeats a position.
	seq := rawPublish(t, l, res[0].Subject, rawGet(t, l, res[0].Seq).Data)
	_, err := tryReadAll(l, instA, 0)
	wantRecordError(t, err, seq, ErrOutOfOrder)
}

func TestDeletedOrRewrittenMessageRefused(t *testing.T) {
	l, _ := newLog(t)
	agg := group(instA, "gap")
	res := mustAppend(t, l, 0, msg(agg, 1, "one"), msg(agg, 2, "two"), msg(agg, 3, "three"))
	orig := rawGet(t, l, res[1].Seq).Data
	if err := l.stream.DeleteMsg(context.Background(), res[1].Seq); err != nil {
		t.Fatal(err)
	}
	// A gap: position 3 follows position 1.
	_, err := tryReadAll(l, instA, 0)
	wantRecordError(t, err, res[2].Seq, ErrOutOfOrder)

	// "Rewritten": the deleted event published again (it lands at the end).
	// The gap at position 3 is still reported first.
	rawPublish(t, l, res[1].Subject, orig)
	_, err = tryReadAll(l, instA, 0)
	wantRecordError(t, err, res[2].Seq, ErrOutOfOrder)

	// The first event of an aggregate deleted: position 2 comes first.
	agg2 := group(instB, "gap2")
	res2 := mustAppend(t, l, 0, msg(agg2, 1, "one"), msg(agg2, 2, "two"))
	if err := l.stream.DeleteMsg(context.Background(), res2[0].Seq); err != nil {
		t.Fatal(err)
	}
	_, err = tryReadAll(l, instB, 0)
	wantRecordError(t, err, res2[1].Seq, ErrOutOfOrder)
}

func TestMovedToAnotherInstallation(t *testing.T) {
	l, _ := newLog(t)
	a, b := group(instA, "same-id"), group(instB, "same-id")
	resA := mustAppend(t, l, 0, msg(a, 1, "alice's"))
	mustAppend(t, l, 0, msg(b, 1, "bob's"))
	subjB, err := l.Subject(b)
	if err != nil {
		t.Fatal(err)
	}
	// Alice's envelope copied onto Bob's aggregate subject, as if it were his
	// second event: it names a data key of Alice's, which Bob does not
	// have (data key names cover the installation), so it cannot be
	// opened as his.
	seq := rawPublish(t, l, subjB, rawGet(t, l, resA[0].Seq).Data)
	_, err = tryReadAll(l, instB, 0)
	wantRecordError(t, err, seq, ErrNoDataKey)
	wantRecordError(t, err, seq, events.ErrUnknownKey)

	// Copied onto another aggregate of the same installation.
	other, _ := l.Subject(group(instA, "other"))
	seq = rawPublish(t, l, other, rawGet(t, l, resA[0].Seq).Data)
	_, err = tryReadAll(l, instA, 0)
	wantRecordError(t, err, seq, events.ErrMoved)
}

func TestWrongAndUnknownKey(t *testing.T) {
	srv := natstestStart(t)
	// The writer's ring: key 1 anchors the pseudonyms, key 2 seals.
	w := keyring(t, 1, 0x11)
	if err := w.Rotate(2, rootKey(t, 0x22)); err != nil {
		t.Fatal(err)
	}
	lw := openLog(t, testConfig(srv), w)
	agg := group(instA, "keys")
	res := mustAppend(t, lw, 0, msg(agg, 1, "sealed with key 2"))

	// Same pseudonym key, but another key under id 2.
	wrong := keyring(t, 1, 0x11)
	if err := wrong.Rotate(2, rootKey(t, 0x33)); err != nil {
		t.Fatal(err)
	}
	_, err := tryReadAll(openLog(t, testConfig(srv), wrong), instA, 0)
	wantRecordError(t, err, res[0].Seq, events.ErrWrongKey)

	// No key 2 at all.
	_, err = tryReadAll(openLog(t, testConfig(srv), keyring(t, 1, 0x11)), instA, 0)
	wantRecordError(t, err, res[0].Seq, events.ErrUnknownKey)

	// An append on top of an event the writer cannot open is refused too.
	lr := openLog(t, testConfig(srv), wrong)
	if _, err := lr.Append(context.Background(), 1, msg(agg, 2, "x")); !errors.Is(err, events.ErrWrongKey) {
		t.Fatalf("append after an unreadable tail: %v, want ErrWrongKey", err)
	}
}

// TestKeyRotation: a rotated root key wraps the data keys created from
// then on; a period's key made before stays wrapped under the old root
// (re-wrapping is reseal's job), so both roots are needed to read both.
func TestKeyRotation(t *testing.T) {
	srv := natstestStart(t)
	r := keyring(t, 1, 0x11)
	l := openLog(t, testConfig(srv), r)
	agg := group(instA, "rotate")
	mustAppend(t, l, 0, msg(agg, 1, "old key"))
	if err := r.Rotate(2, rootKey(t, 0x22)); err != nil {
		t.Fatal(err)
	}
	next := msg(agg, 2, "new key")
	next.Time = next.Time.Add(24 * time.Hour) // a new messages period: a new data key
	res := mustAppend(t, l, 1, next)

	recs := readAll(t, l, instA, 0)
	if len(recs) != 2 || content(recs[0].Event) != "old key" || content(recs[1].Event) != "new key" {
		t.Fatalf("after rotation read %d records", len(recs))
	}
	for i, want := range []events.KeyID{1, 2} {
		if id := wrappingKeyID(t, l, rawGet(t, l, recs[i].Seq).Data, instA); id != want {
			t.Fatalf("event %d's data key is wrapped under root key %d, want %d", i, id, want)
		}
	}
	// The second event's data key really is under root key 2: a ring
	// without it cannot open it (but still finds it: subjects survive
	// rotation).
	_, err := tryReadAll(openLog(t, testConfig(srv), keyring(t, 1, 0x11)), instA, 0)
	wantRecordError(t, err, res[0].Seq, events.ErrUnknownKey)
	// A reader with both keys, added in the other order, reads both.
	both := keyring(t, 2, 0x22)
	if err := both.Add(1, rootKey(t, 0x11)); err != nil {
		t.Fatal(err)
	}
	if recs := readAll(t, openLog(t, testConfig(srv), both), instA, 0); len(recs) != 2 {
		t.Fatalf("reader with both keys read %d records", len(recs))
	}
}

// wrappingKeyID returns the root key id that wraps the data key of a
// format-3 envelope of inst, read from the key bucket.
func wrappingKeyID(t testing.TB, l *Log, env []byte, inst events.InstallationID) events.KeyID {
	t.Helper()
	id, ok, err := events.EnvelopeDataKeyID(env)
	if err != nil || !ok {
		t.Fatalf("not a format-3 envelope: %v", err)
	}
	e, err := l.kv.Get(context.Background(), id.Name(l.instPseudonym(inst)))
	if err != nil {
		t.Fatalf("data key %s: %v", id, err)
	}
	kid, err := events.WrappedKeyID(e.Value())
	if err != nil {
		t.Fatal(err)
	}
	return kid
}

func TestRecordErrorContract(t *testing.T) {
	cause := fmt.Errorf("open: %w", events.ErrTampered)
	var err error = &RecordError{Stream: "S", Subject: "p.a.group.b", Seq: 42, Op: "open", Err: cause}
	wrapped := fmt.Errorf("replay: %w", err)
	if !errors.Is(wrapped, events.ErrTampered) || errors.Is(wrapped, events.ErrMoved) {
		t.Fatal("errors.Is through RecordError")
	}
	var re *RecordError
	if !errors.As(wrapped, &re) || re.Seq != 42 || re.Op != "open" {
		t.Fatal("errors.As to *RecordError")
	}
	for _, s := range []string{"stream S", "seq 42", "p.a.group.b", "open"} {
		if !strings.Contains(err.Error(), s) {
			t.Fatalf("%q lacks %q", err.Error(), s)
		}
	}
	if !errors.Is(fmt.Errorf("x: %w", ErrConflict), ErrConflict) || errors.Is(ErrConflict, ErrOutOfOrder) {
		t.Fatal("sentinels")
	}
}

func TestOpenRefusesAnotherKeyring(t *testing.T) {
	srv := natstestStart(t)
	l := openLog(t, testConfig(srv), keyring(t, 1, 0x11))
	mustAppend(t, l, 0, msg(group(instA, "ring"), 1, "under ring 0x11"))

	// Another oldest key means other pseudonyms: this ring would find
	// nothing, so Open refuses it rather than reading an empty history.
	_, err := Open(context.Background(), testConfig(srv), keyring(t, 1, 0x44))
	if !errors.Is(err, ErrKeyringMismatch) {
		t.Fatalf("open under another keyring: %v, want ErrKeyringMismatch", err)
	}
	// A rotated ring keeps its oldest key, and with it the stream.
	rotated := keyring(t, 1, 0x11)
	if err := rotated.Rotate(2, rootKey(t, 0x22)); err != nil {
		t.Fatal(err)
	}
	if recs := readAll(t, openLog(t, testConfig(srv), rotated), instA, 0); len(recs) != 1 {
		t.Fatalf("rotated ring read %d events, want 1", len(recs))
	}
}
