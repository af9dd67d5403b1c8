package events

import (
	"errors"
	"testing"
	"time"
)

// A link is sealed with its event and comes back from Open; it is not part
// of the message id, so a retry that links elsewhere is the same message.
func TestLinkSealedAndOutsideTheMessageID(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	ids, err := NewMessageIDs(r)
	if err != nil {
		t.Fatal(err)
	}
	e := samples(testInst)[KindApplicationMessageSent]
	first := LinkTo(7, []byte("an envelope"))
	e.Prev = first
	id1, env1 := mustSealWithID(t, ids, "p", e, time.Now())
	got, err := Open(r, testInst, testBinding, env1)
	if err != nil {
		t.Fatal(err)
	}
	if got.Prev != first {
		t.Fatalf("opened link %v, sealed %v", got.Prev, first)
	}
	e.Prev = LinkTo(9, []byte("another envelope"))
	id2, env2 := mustSealWithID(t, ids, "p", e, time.Now())
	if id1 != id2 {
		t.Fatalf("message id depends on the link: %s vs %s", id1, id2)
	}
	if got, _ := Open(r, testInst, testBinding, env2); got.Prev == first {
		t.Fatal("second seal kept the first link")
	}
	e.Prev = Link{}
	env0 := mustSeal(t, r, testBinding, e)
	if got, err := Open(r, testInst, testBinding, env0); err != nil || !got.Prev.IsZero() {
		t.Fatalf("event without a link: %v, link %v", err, got.Prev)
	}
}

// A link is bound by the AEAD like the rest of the event: a format 1
// envelope (written before links) cannot be made to carry one, and a
// format newer than this code is an unknown version, not garbage.
func TestEnvelopeFormats(t *testing.T) {
	r := mustRing(t, 1, 0x11)
	e := samples(testInst)[KindGroupCreated]
	env := mustSeal(t, r, testBinding, e)
	if env[3] != envelopeFormat {
		t.Fatalf("sealed format %d, want %d", env[3], envelopeFormat)
	}
	newer := append([]byte(nil), env...)
	newer[3] = envelopeNewest + 1
	if _, err := Open(r, testInst, testBinding, newer); !errors.Is(err, ErrUnknownVersion) {
		t.Fatalf("newer format: %v, want ErrUnknownVersion", err)
	}
	// A format 1 header on a format 2 body fails authentication (the
	// header is associated data).
	older := append([]byte(nil), env...)
	older[3] = envelopeFormat1
	if _, err := Open(r, testInst, testBinding, older); !errors.Is(err, ErrTampered) {
		t.Fatalf("format byte lowered: %v, want ErrTampered", err)
	}
}

func TestLinkTo(t *testing.T) {
	a, b := LinkTo(3, []byte("x")), LinkTo(3, []byte("y"))
	if a.Seq != 3 || a == b || a.IsZero() || !(Link{}).IsZero() {
		t.Fatalf("LinkTo: %v %v", a, b)
	}
	if s := (Link{}).String(); s != "none" {
		t.Fatalf("zero link prints %q", s)
	}
}
